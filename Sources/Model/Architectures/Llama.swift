extension Architecture {
    /// Llama 1/2/3 and Mistral (GGUF `llama`): the plain block. Llama 3.1+ files carry their RoPE
    /// scaling as `rope_freqs.weight` (per-frequency divisors); `llama.rope.scaling.type` `linear`
    /// with `llama.rope.scaling.factor` divides every angle by the factor.
    public static let llama = Architecture(name: "llama")
}
