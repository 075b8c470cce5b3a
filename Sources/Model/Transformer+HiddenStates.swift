import Kernels

extension Transformer {
    /// The final hidden state of `row` of the last forward call (computed from row 0), after the
    /// output norm: what the output head reads, used as the row's embedding.
    ///
    /// - Parameter out: `[config.embeddingLength]` floats, written.
    /// Valid until the next forward call; engine thread only, like `forward`.
    public func finalHiddenState(row: Int, into out: UnsafeMutablePointer<Float>) {
        let e = config.embeddingLength
        precondition(row >= 0 && row < maxStepRows, "row \(row) outside the step")
        outputNorm.withUnsafeBufferPointer { w in
            Ops.rmsNorm(hidden + row * e, weight: w.baseAddress!, count: e, epsilon: config.rmsEpsilon, into: out)
        }
    }
}

extension Transformer {
    /// The feature of `row` of the last forward call (counted from the call's first computed
    /// row): the residual stream after the last decoder layer, before the output norm (what a
    /// learned drafter reads; `[config.embeddingLength]` floats).
    ///
    /// Valid until the next forward call; engine thread only, like `forward`.
    public func lastLayerFeature(row: Int) -> UnsafePointer<Float> {
        precondition(row >= 0 && row < maxStepRows, "row \(row) outside the step")
        return UnsafePointer(hidden + row * config.embeddingLength)
    }
}
