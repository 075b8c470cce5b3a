import CKernels

/// Where a sequence's cached keys and values live: row j at
/// `base + table[j / blockSize] * blockStride + (j % blockSize) * rowStride + offset`.
public struct CachedRows {
    public var keys: UnsafePointer<Float>
    public var values: UnsafePointer<Float>
    public var table: UnsafePointer<Int32>
    public var blockSize: Int
    public var blockStride: Int
    public var rowStride: Int
    public var offset: Int
    public var count: Int

    public init(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, table: UnsafePointer<Int32>, blockSize: Int,
                blockStride: Int, rowStride: Int, offset: Int, count: Int) {
        self.keys = keys
        self.values = values
        self.table = table
        self.blockSize = blockSize
        self.blockStride = blockStride
        self.rowStride = rowStride
        self.offset = offset
        self.count = count
    }
}

extension Ops {
    /// Attention of `group` query heads sharing one key/value head (grouped-query attention).
    ///
    /// - Parameters:
    ///   - q: `[group][headDim]` queries, contiguous.
    ///   - cached: the sequence's cached rows for this layer and head.
    ///   - chainKeys, chainValues: `chainCount` pointers to this step's ancestor rows (root first,
    ///     the row itself last); this head's part starts `chainOffset` floats in.
    ///   - scores: scratch of `group * (cached.count + chainCount)` floats.
    ///   - out: `[group][headDim]`.
    /// Positions are reduced in order, so the result does not depend on the rest of the batch.
    public static func attend(q: UnsafePointer<Float>, group: Int, headDim: Int, scale: Float, cached: CachedRows,
                              chainKeys: UnsafePointer<UnsafePointer<Float>?>, chainValues: UnsafePointer<UnsafePointer<Float>?>,
                              chainOffset: Int, chainCount: Int,
                              scores: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) {
        precondition(group >= 1 && group <= 64 && cached.count + chainCount >= 1)
        ck_attend(q, Int64(group), Int64(headDim), scale, cached.keys, cached.values, cached.table, Int64(cached.blockSize),
                  Int64(cached.blockStride), Int64(cached.rowStride), Int64(cached.offset), Int64(cached.count),
                  chainKeys, chainValues, Int64(chainOffset), Int64(chainCount), scores, out)
    }

    /// Scalar reference of `attend` (equal within float rounding).
    public static func attendReference(q: UnsafePointer<Float>, group: Int, headDim: Int, scale: Float, cached: CachedRows,
                                       chainKeys: UnsafePointer<UnsafePointer<Float>?>, chainValues: UnsafePointer<UnsafePointer<Float>?>,
                                       chainOffset: Int, chainCount: Int,
                                       scores: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) {
        ck_attend_reference(q, Int64(group), Int64(headDim), scale, cached.keys, cached.values, cached.table, Int64(cached.blockSize),
                            Int64(cached.blockStride), Int64(cached.rowStride), Int64(cached.offset), Int64(cached.count),
                            chainKeys, chainValues, Int64(chainOffset), Int64(chainCount), scores, out)
    }
}
