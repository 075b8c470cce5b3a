import Kernels

/// Seeded SplitMix64; every randomized test prints its seed in failure messages.
struct SeededRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    mutating func float() -> Float { Float(next() >> 40) / Float(1 << 23) - 1 }
    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
    mutating func floats(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in float() * scale } }
}

func f16Bits(_ x: Float) -> UInt16 { Float16(x).bitPattern }
func f16Value(_ bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }

/// Random raw ggml bytes for a matrix, with realistic finite scales.
func randomRawWeights(_ format: WeightFormat, out: Int, inFeatures: Int, rng: inout SeededRandom) -> [UInt8] {
    switch format {
    case .f32:
        return rng.floats(out * inFeatures, scale: 0.1).withUnsafeBytes { Array($0) }
    case .f16:
        return rng.floats(out * inFeatures, scale: 0.1).map { f16Bits($0) }.withUnsafeBytes { Array($0) }
    case .q4_0, .q4_1, .q8_0:
        var bytes: [UInt8] = []
        bytes.reserveCapacity(format.rawByteCount(outFeatures: out, inFeatures: inFeatures))
        for _ in 0..<(out * inFeatures / 32) {
            let d = f16Bits(0.001 + abs(rng.float()) * 0.02)
            bytes += [UInt8(d & 0xFF), UInt8(d >> 8)]
            if format == .q4_1 {
                let m = f16Bits(-abs(rng.float()) * 0.15)
                bytes += [UInt8(m & 0xFF), UInt8(m >> 8)]
            }
            for _ in 0..<(format == .q8_0 ? 32 : 16) { bytes.append(rng.byte()) }
        }
        return bytes
    }
}

/// Independent Swift dequantization of row r straight from the raw ggml bytes (the test oracle).
func referenceDequantRaw(_ format: WeightFormat, _ raw: [UInt8], inFeatures: Int, row r: Int) -> [Float] {
    func u16(_ at: Int) -> UInt16 { UInt16(raw[at]) | UInt16(raw[at + 1]) << 8 }
    var out = [Float](repeating: 0, count: inFeatures)
    switch format {
    case .f32:
        raw.withUnsafeBytes { p in
            for i in 0..<inFeatures { out[i] = p.load(fromByteOffset: (r * inFeatures + i) * 4, as: Float.self) }
        }
    case .f16:
        for i in 0..<inFeatures { out[i] = f16Value(u16((r * inFeatures + i) * 2)) }
    case .q4_0, .q4_1, .q8_0:
        let bpb = format.bytesPerBlock, nb = inFeatures / 32
        for b in 0..<nb {
            let o = (r * nb + b) * bpb
            let d = f16Value(u16(o))
            switch format {
            case .q8_0:
                for i in 0..<32 { out[b * 32 + i] = Float(Int8(bitPattern: raw[o + 2 + i])) * d }
            case .q4_0:
                for i in 0..<16 {
                    out[b * 32 + i] = Float(Int(raw[o + 2 + i] & 0x0F) - 8) * d
                    out[b * 32 + 16 + i] = Float(Int(raw[o + 2 + i] >> 4) - 8) * d
                }
            default:
                let m = f16Value(u16(o + 2))
                for i in 0..<16 {
                    out[b * 32 + i] = Float(raw[o + 4 + i] & 0x0F) * d + m
                    out[b * 32 + 16 + i] = Float(raw[o + 4 + i] >> 4) * d + m
                }
            }
        }
    }
    return out
}

func makeWeights(_ format: WeightFormat, out: Int, inFeatures: Int, raw: [UInt8]) throws -> LinearWeights {
    try raw.withUnsafeBytes { try LinearWeights(format: format, outFeatures: out, inFeatures: inFeatures, bytes: $0) }
}

/// y [rows x out] through `apply`, on `kernels`.
func applied(_ w: LinearWeights, _ x: [Float], rows: Int, pool: ThreadPool, outputs: Range<Int>? = nil,
             kernels: KernelSet = .current) -> [Float] {
    let acts = QuantizedActivations(maxRows: max(rows, 1), maxInFeatures: w.inFeatures)
    x.withUnsafeBufferPointer { acts.quantize($0.baseAddress!, rows: rows, inFeatures: w.inFeatures, pool: pool, kernels: kernels) }
    let range = outputs ?? 0..<w.outFeatures
    var y = [Float](repeating: .nan, count: rows * range.count)
    y.withUnsafeMutableBufferPointer {
        w.apply(acts, outputs: range, into: $0.baseAddress!, ldy: range.count, pool: pool, kernels: kernels)
    }
    return y
}

/// Every kernel set this CPU runs (the scalar reference first); tests run each of them.
let runnableSets = KernelSet.runnable
/// The SIMD sets this CPU runs.
let simdSets = runnableSets.filter { $0.name != .scalar }

func bits(_ v: [Float]) -> [UInt32] { v.map(\.bitPattern) }
