/// How one model architecture differs from the plain llama block, as options the one forward pass
/// reads (one small file per architecture beside this one states its values).
///
/// The block every architecture shares: embedding lookup, then per layer RMSNorm → Q/K/V → RoPE →
/// grouped-query attention → output projection → residual add, RMSNorm → gated feed-forward →
/// residual add; output RMSNorm and head.
public struct Architecture: Sendable, Equatable {
    /// How RoPE pairs a head's values.
    public enum RopeStyle: Sendable, Equatable {
        /// (x[2i], x[2i+1]): llama GGUFs (the converter permuted Q and K for it).
        case normal
        /// (x[i], x[i + headDim/2]): GPT-NeoX style (Qwen, Gemma).
        case neox
    }

    /// The gate's activation in the gated feed-forward.
    public enum Activation: Sendable, Equatable {
        /// silu(g) = g / (1 + exp(-g)).
        case silu
        /// gelu with the tanh approximation (PyTorch `gelu_pytorch_tanh`).
        case geluTanh
    }

    /// Which layers attend only to a window of recent positions, and their RoPE.
    public struct SlidingWindowLayers: Sendable, Equatable {
        /// Without a pattern in the metadata, every `defaultPeriod`-th layer (1-based) is global and
        /// the others slide.
        public var defaultPeriod: Int
        /// RoPE base of the sliding (local) layers; global layers use `{arch}.rope.freq_base`.
        public var localRopeBase: Float
        /// Window when the file does not state `{arch}.attention.sliding_window`.
        public var defaultWindow: Int
    }

    /// The `general.architecture` value.
    public var name: String
    public var ropeStyle: RopeStyle = .normal
    /// `blk.N.attn_{q,k,v}.bias`: biases added to the query, key and value projections.
    public var queryKeyValueBiases = false
    /// `blk.N.attn_{q,k}_norm.weight`: RMSNorm of each query and key head (before RoPE).
    public var queryKeyNorms = false
    /// `blk.N.post_attention_norm.weight` and `blk.N.post_ffw_norm.weight`: RMSNorm of each block's
    /// output before its residual add.
    public var postNorms = false
    public var activation: Activation = .silu
    /// Whether the embedding rows are multiplied by √embeddingLength.
    public var scalesEmbedding = false
    /// Sliding-window layers, for architectures that have them.
    public var slidingWindow: SlidingWindowLayers?
    /// Whether `{arch}.rope.scaling.*` and a `rope_freqs.weight` tensor (Llama 3) are read.
    public var readsRopeScaling = true

    /// Every architecture the forward pass runs.
    public static let supported: [Architecture] = [.llama, .qwen2, .qwen3, .gemma3]

    /// The architecture named `name` (`general.architecture`).
    /// - Throws: `ModelError.unsupportedArchitecture` naming it and listing the supported ones.
    public static func named(_ name: String) throws -> Architecture {
        guard let a = supported.first(where: { $0.name == name }) else { throw ModelError.unsupportedArchitecture(name) }
        return a
    }
}
