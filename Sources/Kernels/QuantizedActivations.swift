import CKernels

/// Activations prepared once per step for every matrix that reads the same input (Q, K and V;
/// gate and up). Holds, per row: the f32 values (for F32/F16 weights) and, when inFeatures is a
/// multiple of 32, int8 values with one f32 scale per 32-block (d = amax / 127, q = round-to-even(x / d))
/// and the block and half-block sums the kernels need (the K-quants use these same 32-blocks). Buffers are allocated in `init` for maxRows x maxInFeatures;
/// `quantize` allocates nothing. Not thread-safe: one owner quantizes, then any number of threads read
/// it through `LinearWeights.apply` until the next `quantize`.
public final class QuantizedActivations {
    /// Capacity given at init.
    public let maxRows: Int
    /// Capacity given at init.
    public let maxInFeatures: Int
    /// Rows of the last `quantize` call.
    public private(set) var rows: Int = 0
    /// inFeatures of the last `quantize` call.
    public private(set) var inFeatures: Int = 0
    /// Whether the last `quantize` call produced int8 blocks (inFeatures % 32 == 0).
    public private(set) var hasBlocks: Bool = false

    let acts: UnsafeMutablePointer<ck_acts>
    private let q: UnsafeMutableRawPointer
    private let d: UnsafeMutablePointer<Float>
    private let s: UnsafeMutablePointer<Float>
    private let c: UnsafeMutablePointer<Int32>
    /// Per 16-value half block: d * sum(q) (the formats with a minimum per 16 values read it).
    private let h: UnsafeMutablePointer<Float>
    private let x: UnsafeMutablePointer<Float>

    /// Allocates buffers for up to `maxRows` rows of up to `maxInFeatures` values.
    public init(maxRows: Int, maxInFeatures: Int) {
        precondition(maxRows >= 1 && maxInFeatures >= 1, "QuantizedActivations: capacity must be positive")
        self.maxRows = maxRows
        self.maxInFeatures = maxInFeatures
        let ldq = (maxInFeatures + 63) / 64 * 64
        let ldb = (maxInFeatures + 31) / 32
        q = UnsafeMutableRawPointer.allocate(byteCount: maxRows * ldq, alignment: 64)
        d = .allocate(capacity: maxRows * ldb)
        s = .allocate(capacity: maxRows * ldb)
        c = .allocate(capacity: maxRows * ldb)
        h = .allocate(capacity: maxRows * 2 * ldb)
        x = .allocate(capacity: maxRows * maxInFeatures)
        acts = .allocate(capacity: 1)
        acts.initialize(to: ck_acts(
            q: q.assumingMemoryBound(to: Int8.self), d: d, s: s, c: c, x: UnsafePointer(x),
            ldq: Int64(ldq), ldb: Int64(ldb), ldx: Int64(maxInFeatures), rows: 0, k: 0, h: h))
    }

    deinit {
        q.deallocate(); d.deallocate(); s.deallocate(); c.deallocate(); h.deallocate(); x.deallocate()
        acts.deallocate()
    }

    /// Prepares `rows` rows of `inFeatures` f32 values from `x` (row-major, contiguous). When a pool is
    /// given, rows are split between its threads (the result does not depend on the split).
    public func quantize(_ x: UnsafePointer<Float>, rows: Int, inFeatures: Int, pool: ThreadPool?, kernels: KernelSet = .current) {
        quantize(x, rows: rows, inFeatures: inFeatures, ldx: inFeatures, pool: pool, kernels: kernels)
    }

    /// As `quantize(_:rows:inFeatures:pool:kernels:)` with `ldx` floats between the starts of input
    /// rows. Every kernel set gives the same bits.
    public func quantize(_ x: UnsafePointer<Float>, rows: Int, inFeatures: Int, ldx: Int, pool: ThreadPool?,
                         kernels: KernelSet = .current) {
        precondition(rows >= 0 && rows <= maxRows, "QuantizedActivations: rows \(rows) exceeds capacity \(maxRows)")
        precondition(inFeatures >= 1 && inFeatures <= maxInFeatures,
                     "QuantizedActivations: inFeatures \(inFeatures) exceeds capacity \(maxInFeatures)")
        precondition(ldx >= inFeatures)
        self.rows = rows
        self.inFeatures = inFeatures
        hasBlocks = inFeatures % 32 == 0
        acts.pointee.rows = Int64(rows)
        acts.pointee.k = Int64(inFeatures)
        ck_prepare_acts(pool?.handle, kernels.table, x, Int64(ldx), Int64(rows), Int64(inFeatures), acts, hasBlocks ? 1 : 0)
    }

    /// The int8 value at (row, i) of the last quantization (for tests and diagnostics).
    public func quantizedValue(row: Int, index: Int) -> Int8 {
        precondition(hasBlocks && row < rows && index < inFeatures)
        return acts.pointee.q[row * Int(acts.pointee.ldq) + index]
    }

    /// The f32 scale of block `block` of `row` of the last quantization.
    public func blockScale(row: Int, block: Int) -> Float {
        precondition(hasBlocks && row < rows && block < inFeatures / 32)
        return d[row * Int(acts.pointee.ldb) + block]
    }
}
