import Kernels

/// What a learned drafter reads from its target besides the features (`lastLayerFeature`): the
/// token embedding as the forward pass computes it, the output norm and the output head's rows.
extension Transformer {
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
