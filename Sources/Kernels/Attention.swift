import CKernels

extension Ops {
    /// Attention of `group` query heads sharing one key/value head (grouped-query attention).
    ///
    /// - Parameters:
    ///   - q: `[group][headDim]` queries, contiguous.
    ///   - cachedKeys, cachedValues: the first cached row of this head; row j is at `+ j * stride`.
    ///   - chainKeys, chainValues: `chainCount` pointers to this step's ancestor rows (root first,
    ///     the row itself last); this head's part starts `chainOffset` floats in.
    ///   - scores: scratch of `group * (cachedCount + chainCount)` floats.
    ///   - out: `[group][headDim]`.
    /// Positions are reduced in order, so the result does not depend on the rest of the batch.
    public static func attend(q: UnsafePointer<Float>, group: Int, headDim: Int, scale: Float,
                              cachedKeys: UnsafePointer<Float>, cachedValues: UnsafePointer<Float>, stride: Int, cachedCount: Int,
                              chainKeys: UnsafePointer<UnsafePointer<Float>?>, chainValues: UnsafePointer<UnsafePointer<Float>?>,
                              chainOffset: Int, chainCount: Int,
                              scores: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) {
        precondition(group >= 1 && group <= 64 && cachedCount + chainCount >= 1)
        ck_attend(q, Int64(group), Int64(headDim), scale, cachedKeys, cachedValues, Int64(stride), Int64(cachedCount),
                  chainKeys, chainValues, Int64(chainOffset), Int64(chainCount), scores, out)
    }

    /// Scalar reference of `attend` (equal within float rounding).
    public static func attendReference(q: UnsafePointer<Float>, group: Int, headDim: Int, scale: Float,
                                       cachedKeys: UnsafePointer<Float>, cachedValues: UnsafePointer<Float>, stride: Int, cachedCount: Int,
                                       chainKeys: UnsafePointer<UnsafePointer<Float>?>, chainValues: UnsafePointer<UnsafePointer<Float>?>,
                                       chainOffset: Int, chainCount: Int,
                                       scores: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) {
        ck_attend_reference(q, Int64(group), Int64(headDim), scale, cachedKeys, cachedValues, Int64(stride), Int64(cachedCount),
                            chainKeys, chainValues, Int64(chainOffset), Int64(chainCount), scores, out)
    }
}
