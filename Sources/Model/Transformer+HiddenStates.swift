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

    /// The target's feature at `row` of the last forward call (computed from row 0): the residual
    /// stream after the last decoder layer, before the output norm, `[config.embeddingLength]`
    /// floats. What a feature-level drafter reads (see the learned drafter).
    ///
    /// Points into the model's scratch: valid until the next forward call; engine thread only.
    public func lastLayerFeature(row: Int) -> UnsafePointer<Float> {
        precondition(row >= 0 && row < maxStepRows, "row \(row) outside the step")
        return UnsafePointer(hidden + row * config.embeddingLength)
    }

    /// The input of the first layer for `token`, exactly as the forward pass computes it: its
    /// dequantized embedding row, times √embeddingLength for the architectures that scale it.
    ///
    /// - Parameter out: `[config.embeddingLength]` floats, written. Thread-safe (reads weights only).
    public func tokenEmbedding(_ token: Int32, into out: UnsafeMutablePointer<Float>) {
        precondition(token >= 0 && Int(token) < config.vocabularySize, "token \(token) outside the vocabulary")
        embedding.dequantizeRow(Int(token), into: out)
        if let s = embeddingScale {
            for j in 0..<config.embeddingLength { out[j] *= s }
        }
    }

    /// The output norm's weights `[config.embeddingLength]` (as the forward pass applies them).
    public var outputNormWeights: [Float] { outputNorm }

    /// Row `token` of the output head (the tied embedding where there is no `output.weight`),
    /// dequantized: the head's weights for that token's logit. `out`: `[config.embeddingLength]`.
    public func outputHeadRow(_ token: Int, into out: UnsafeMutablePointer<Float>) {
        outputHead.dequantizeRow(token, into: out)
    }

    /// The weight format of the output head.
    public var outputHeadFormat: WeightFormat { outputHead.format }
}
