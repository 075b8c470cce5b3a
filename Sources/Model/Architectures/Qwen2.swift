extension Architecture {
    /// Qwen 2 / 2.5 (GGUF `qwen2`): the llama block with biases on the Q, K and V projections and
    /// NeoX-style RoPE.
    public static let qwen2 = Architecture(name: "qwen2", ropeStyle: .neox, queryKeyValueBiases: true)
}
