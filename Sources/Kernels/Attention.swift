import CKernels

/// How one head row of cached keys or values is laid out (`ck_kv_*`): `f32` and `f16` store the
/// values; `q8_0` stores the head's int8 values followed by one f16 scale per 32 (value = q * d;
/// not the q8_0 weight block layout). Model's `KVCacheType` (the configured storage) names one.
public enum KVRowFormat: CaseIterable, Sendable {
    case f32, f16, q8_0

    /// Bytes of one stored head row of `headDimension` values (a full row of several heads is their
    /// head rows one after another; q8_0 needs a multiple of 32 values).
    public func rowBytes(values headDimension: Int) -> Int {
        precondition(self != .q8_0 || headDimension % 32 == 0, "q8_0 key/value rows hold whole blocks of 32 values")
        return Int(ck_kv_row_bytes(ck, Int64(headDimension)))
    }

    var ck: Int32 {
        switch self {
        case .f32: return Int32(CK_KV_F32)
        case .f16: return Int32(CK_KV_F16)
        case .q8_0: return Int32(CK_KV_Q8_0)
        }
    }
}

/// Where one layer's keys and values of one sequence live, for one key/value head: cached position
/// j (j < cachedCount; blockSize a power of two) has its head row at `base + table[j / blockSize] *
/// blockStride + layerOffset + (j % blockSize) * rowBytes` (keys from `keys`, values from `values`),
/// step row c at `chainKeys[c] + chainOffset` / `chainValues[c] + chainOffset` (ancestors root first,
/// the row itself last). Head rows hold `headDimension` values in `format`. Byte offsets.
public struct KVView {
    var raw: ck_kv_view

    public init(format: KVRowFormat, headDimension: Int, keys: UnsafeRawPointer, values: UnsafeRawPointer,
                table: UnsafePointer<Int32>, blockSize: Int, blockStride: Int, layerOffset: Int, cachedCount: Int,
                chainKeys: UnsafePointer<UnsafePointer<UInt8>?>, chainValues: UnsafePointer<UnsafePointer<UInt8>?>,
                chainOffset: Int, chainCount: Int) {
        precondition(blockSize > 0 && blockSize & (blockSize - 1) == 0, "KVView: blockSize must be a power of two")
        raw = ck_kv_view(type: format.ck, row_bytes: Int64(format.rowBytes(values: headDimension)),
                         k_base: keys.assumingMemoryBound(to: UInt8.self), v_base: values.assumingMemoryBound(to: UInt8.self),
                         table: table, block_size: Int64(blockSize), block_stride: Int64(blockStride),
                         layer_offset: Int64(layerOffset), n_cached: Int64(cachedCount), k_chain: chainKeys,
                         v_chain: chainValues, chain_offset: Int64(chainOffset), n_chain: Int64(chainCount))
    }
}

extension Ops {
    /// Stores `count` f32 values (`count / headDimension` heads) as consecutive head rows in `format`
    /// at `row` (`format.rowBytes(values: headDimension)` bytes each). Bit-identical in every kernel set.
    public static func storeKV(_ x: UnsafePointer<Float>, count: Int, headDimension: Int, as format: KVRowFormat,
                               into row: UnsafeMutableRawPointer, kernels: KernelSet = .current) {
        precondition(headDimension > 0 && count % headDimension == 0)
        ck_kv_store(kernels.table, format.ck, x, Int64(count), Int64(headDimension), row)
    }

    /// Reads one stored head row back as `headDimension` f32 values.
    public static func loadKV(_ row: UnsafeRawPointer, headDimension: Int, as format: KVRowFormat, into y: UnsafeMutablePointer<Float>) {
        ck_kv_load(format.ck, row, Int64(headDimension), y)
    }

    /// The part of `attend` over positions `begin..<end`, unnormalised: `acc` `[group][headDim]`
    /// receives the sum of exp(score - m) * value and `maxSum` `[group][2]` the pair (m, sum of
    /// exp(score - m)) per query head. `scores`: scratch of `group * (end - begin)` floats.
    public static func attendRange(q: UnsafePointer<Float>, group: Int, headDim: Int, scale: Float, view: KVView, begin: Int, end: Int,
                                   scores: UnsafeMutablePointer<Float>, acc: UnsafeMutablePointer<Float>,
                                   maxSum: UnsafeMutablePointer<Float>, kernels: KernelSet = .current) {
        precondition(group >= 1 && group <= 64 && headDim <= 1024 && begin >= 0 && begin < end
                     && end <= Int(view.raw.n_cached + view.raw.n_chain))
        withUnsafePointer(to: view.raw) { v in
            ck_attend_range(kernels.table, q, Int64(group), Int64(headDim), scale, v, Int64(begin), Int64(end), scores, acc, maxSum)
        }
    }

    /// Combines `parts` results of `attendRange` over consecutive ranges, in order, into
    /// normalised attention `out` `[group][headDim]` (the same arithmetic on every kernel set).
    public static func attendMerge(group: Int, headDim: Int, parts: Int, acc: UnsafePointer<Float>, maxSum: UnsafePointer<Float>,
                                   out: UnsafeMutablePointer<Float>) {
        ck_attend_merge(Int64(group), Int64(headDim), Int64(parts), acc, maxSum, out)
    }

    /// Attention of `group` query heads sharing one key/value head (grouped-query attention).
    ///
    /// - Parameters:
    ///   - q: `[group][headDim]` queries, contiguous.
    ///   - view: the sequence's cached rows and this step's ancestor rows, for this layer and head.
    ///   - scores: scratch of `group * (cachedCount + chainCount)` floats.
    ///   - out: `[group][headDim]`.
    /// Positions are reduced in order, so the result does not depend on the rest of the batch.
    public static func attend(q: UnsafePointer<Float>, group: Int, headDim: Int, scale: Float, view: KVView,
                              scores: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>,
                              kernels: KernelSet = .current) {
        precondition(group >= 1 && group <= 64 && headDim <= 1024 && view.raw.n_cached + view.raw.n_chain >= 1)
        withUnsafePointer(to: view.raw) { v in
            ck_attend(kernels.table, q, Int64(group), Int64(headDim), scale, v, scores, out)
        }
    }
}
