extension Architecture {
    /// Qwen 3 (GGUF `qwen3`): the llama block with an RMSNorm on every query and key head before
    /// RoPE (QK-norm), NeoX-style RoPE, no biases; the head dimension comes from
    /// `qwen3.attention.key_length` (it need not be embedding / heads).
    public static let qwen3 = Architecture(name: "qwen3", ropeStyle: .neox, queryKeyNorms: true)
}
