extension Architecture {
    /// Gemma 3 text models (GGUF `gemma3`), as llama.cpp and HF transformers run them:
    /// - embedding rows × √embeddingLength;
    /// - QK-norm; RMSNorm after attention and after the feed-forward, before each residual add
    ///   (`post_attention_norm`, `post_ffw_norm`) besides the usual pre-norms. Gemma's RMSNorm
    ///   multiplies by (1 + w); llama.cpp's converter already stores 1 + w in the GGUF, so the
    ///   weights are used as stored;
    /// - gelu-tanh gate; NeoX RoPE;
    /// - attention scale 1/√key_length (query_pre_attn_scalar = head dimension in the released
    ///   models);
    /// - sliding-window attention (window `gemma3.attention.sliding_window`, 512 in the released
    ///   models) on local layers, every 6th layer global unless the file states a pattern; local
    ///   layers use RoPE base 10000, global ones `gemma3.rope.freq_base` (and its scaling);
    /// - final logit soft-capping when `gemma3.final_logit_softcapping` is present.
    public static let gemma3 = Architecture(
        name: "gemma3", ropeStyle: .neox, queryKeyNorms: true, postNorms: true, activation: .geluTanh,
        scalesEmbedding: true, slidingWindow: SlidingWindowLayers(defaultPeriod: 6, localRopeBase: 10000, defaultWindow: 512))
}
