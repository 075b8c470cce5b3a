import Foundation
import GGUF

/// Hyperparameters of a model, read from GGUF metadata; `architecture` says how its block differs
/// from llama's (Sources/Model/Architectures/).
///
/// | property | GGUF key |
/// |---|---|
/// | architecture | `general.architecture` (one of `Architecture.supported`) |
/// | layerCount | `{arch}.block_count` |
/// | embeddingLength | `{arch}.embedding_length` |
/// | feedForwardLength | `{arch}.feed_forward_length` |
/// | headCount | `{arch}.attention.head_count` |
/// | kvHeadCount | `{arch}.attention.head_count_kv` (default: headCount) |
/// | headDimension | `{arch}.attention.key_length` (= `value_length`; default: embeddingLength / headCount) |
/// | contextLength | `{arch}.context_length` |
/// | ropeTheta | `{arch}.rope.freq_base` (default 10000) |
/// | ropeFrequencyScale | 1 / `{arch}.rope.scaling.factor` when `{arch}.rope.scaling.type` is `linear` (default 1) |
/// | rmsEpsilon | `{arch}.attention.layer_norm_rms_epsilon` |
/// | ropeDimensionCount | `{arch}.rope.dimension_count` (must equal headDimension) |
/// | slidingWindow | `{arch}.attention.sliding_window` (architectures with sliding layers) |
/// | layer pattern | `{arch}.attention.sliding_window_pattern` (period, or one bool per layer: true = sliding) |
/// | finalLogitSoftcap | `{arch}.final_logit_softcapping` (optional) |
/// | vocabularySize | `{arch}.vocab_size`, else the length of `tokenizer.ggml.tokens` |
public struct ModelConfig: Sendable, Equatable {
    /// `general.architecture` values this build runs.
    public static var supportedArchitectures: [String] { Architecture.supported.map(\.name) }

    /// RoPE of one layer: angle_i = frequencyScale * position * base^(-2i/headDim) (divided by the
    /// model's `rope_freqs` factor i on global layers, where the file has one).
    public struct Rope: Sendable, Equatable, Hashable {
        public var base: Float
        public var frequencyScale: Float
        /// Whether the `rope_freqs.weight` factors apply (global layers).
        public var usesFrequencyFactors: Bool
    }

    /// What one layer's attention sees.
    public struct LayerAttention: Sendable, Equatable {
        /// Index into `ropes`.
        public var rope: Int
        /// Positions a row attends to (itself and the window - 1 before it); nil: all.
        public var window: Int?
    }

    public var architecture: String
    public var options: Architecture
    /// The file's quantization as llama.cpp names it (`general.file_type`: "Q4_K_M", "Q8_0", ...),
    /// or "unknown".
    public var quantization: String
    public var name: String
    public var layerCount: Int
    public var embeddingLength: Int
    public var feedForwardLength: Int
    public var headCount: Int
    public var kvHeadCount: Int
    /// Values per attention head.
    public var headDimension: Int
    public var contextLength: Int
    public var ropeTheta: Float
    public var ropeFrequencyScale: Float
    public var rmsEpsilon: Float
    public var vocabularySize: Int
    /// Multiplier of query · key (1/√headDimension).
    public var attentionScale: Float
    /// logits = cap · tanh(logits / cap) when set.
    public var finalLogitSoftcap: Float?
    /// The distinct RoPE settings of the layers (global first).
    public var ropes: [Rope]
    /// Per layer: its RoPE and window.
    public var layers: [LayerAttention]

    /// Width of one row's queries (all query heads).
    public var queryDimension: Int { headCount * headDimension }
    /// Width of one row's keys (or values) for all key/value heads.
    public var kvDimension: Int { kvHeadCount * headDimension }
    /// Query heads that share one key/value head (grouped-query attention).
    public var groupSize: Int { headCount / kvHeadCount }
    /// Whether any layer attends through a sliding window.
    public var hasSlidingWindow: Bool { layers.contains { $0.window != nil } }

    /// llama.cpp's `llama_ftype` values (`general.file_type`) and their names.
    static let fileTypeNames: [Int: String] = [
        0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M",
        13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16",
    ]

    public init(file: GGUFFile) throws {
        let arch = try file.string("general.architecture")
        let options = try Architecture.named(arch)
        self.options = options
        architecture = arch
        name = file.optionalString("general.name") ?? "model"
        quantization = file.optionalInt("general.file_type").flatMap { Self.fileTypeNames[$0] } ?? "unknown"
        func int(_ key: String) throws -> Int {
            guard let v = file.metadata["\(arch).\(key)"] else { throw ModelError.missingHyperparameter(key: "\(arch).\(key)") }
            guard let i = v.intValue, i > 0 else {
                throw ModelError.invalidHyperparameter(key: "\(arch).\(key)", value: v.description, reason: "it must be a positive integer")
            }
            return i
        }
        layerCount = try int("block_count")
        embeddingLength = try int("embedding_length")
        feedForwardLength = try int("feed_forward_length")
        headCount = try int("attention.head_count")
        kvHeadCount = file.metadata["\(arch).attention.head_count_kv"] == nil ? headCount : try int("attention.head_count_kv")
        contextLength = try int("context_length")
        ropeTheta = Float(file.optionalDouble("\(arch).rope.freq_base") ?? 10000)
        guard let eps = file.optionalDouble("\(arch).attention.layer_norm_rms_epsilon") else {
            throw ModelError.missingHyperparameter(key: "\(arch).attention.layer_norm_rms_epsilon")
        }
        rmsEpsilon = Float(eps)
        if let v = file.optionalInt("\(arch).vocab_size") {
            vocabularySize = v
        } else if case .array(let tokens)? = file.metadata["tokenizer.ggml.tokens"] {
            vocabularySize = tokens.count
        } else {
            throw ModelError.missingHyperparameter(key: "\(arch).vocab_size")
        }
        if file.metadata["\(arch).attention.key_length"] != nil {
            headDimension = try int("attention.key_length")
        } else {
            guard embeddingLength % headCount == 0 else {
                throw ModelError.invalidHyperparameter(key: "\(arch).attention.head_count", value: String(headCount),
                                                       reason: "it must divide embedding_length \(embeddingLength)")
            }
            headDimension = embeddingLength / headCount
        }
        if file.metadata["\(arch).attention.value_length"] != nil {
            let v = try int("attention.value_length")
            guard v == headDimension else {
                throw ModelError.invalidHyperparameter(key: "\(arch).attention.value_length", value: String(v),
                                                       reason: "it must equal the key length \(headDimension)")
            }
        }
        guard headCount % kvHeadCount == 0 else {
            throw ModelError.invalidHyperparameter(key: "\(arch).attention.head_count_kv", value: String(kvHeadCount),
                                                   reason: "it must divide head_count \(headCount)")
        }
        guard headDimension % 2 == 0 else {
            throw ModelError.invalidHyperparameter(key: "\(arch).attention.key_length", value: String(headDimension),
                                                   reason: "the head dimension must be even for RoPE")
        }
        if let ropeDims = file.optionalInt("\(arch).rope.dimension_count"), ropeDims != headDimension {
            throw ModelError.invalidHyperparameter(key: "\(arch).rope.dimension_count", value: String(ropeDims),
                                                   reason: "partial rotary embeddings are not supported (head dimension is \(headDimension))")
        }
        attentionScale = 1 / Float(headDimension).squareRoot()
        finalLogitSoftcap = file.optionalDouble("\(arch).final_logit_softcapping").map(Float.init)
        if let cap = finalLogitSoftcap, !(cap > 0) {
            throw ModelError.invalidHyperparameter(key: "\(arch).final_logit_softcapping", value: String(cap), reason: "it must be positive")
        }

        // RoPE scaling: none or linear (yarn and longrope are not implemented).
        ropeFrequencyScale = 1
        if let type = file.optionalString("\(arch).rope.scaling.type"), type != "none" {
            guard type == "linear" else {
                throw ModelError.invalidHyperparameter(key: "\(arch).rope.scaling.type", value: type,
                                                       reason: "supported RoPE scaling types are none and linear")
            }
            if let factor = file.optionalDouble("\(arch).rope.scaling.factor") {
                guard factor > 0 else {
                    throw ModelError.invalidHyperparameter(key: "\(arch).rope.scaling.factor", value: String(factor), reason: "it must be positive")
                }
                ropeFrequencyScale = Float(1 / factor)
            }
        }
        let global = Rope(base: ropeTheta, frequencyScale: ropeFrequencyScale, usesFrequencyFactors: true)
        ropes = [global]

        // Sliding-window layers.
        var sliding = [Bool](repeating: false, count: layerCount)
        var window: Int?
        if let sw = options.slidingWindow {
            window = file.metadata["\(arch).attention.sliding_window"] == nil ? sw.defaultWindow : try int("attention.sliding_window")
            let patternKey = "\(arch).attention.sliding_window_pattern"
            switch file.metadata[patternKey] {
            case nil:
                for l in 0..<layerCount { sliding[l] = (l + 1) % sw.defaultPeriod != 0 }
            case .array(let values)?:
                guard values.count == layerCount else {
                    throw ModelError.invalidHyperparameter(key: patternKey, value: "\(values.count) values",
                                                           reason: "it needs one value per layer (\(layerCount))")
                }
                for (l, v) in values.enumerated() { sliding[l] = v.boolValue ?? ((v.intValue ?? 0) != 0) }
            case let v?:
                guard let period = v.intValue, period > 0 else {
                    throw ModelError.invalidHyperparameter(key: patternKey, value: v.description, reason: "it must be a positive period or a per-layer array")
                }
                for l in 0..<layerCount { sliding[l] = (l + 1) % period != 0 }
            }
            if sliding.contains(true) {
                ropes.append(Rope(base: sw.localRopeBase, frequencyScale: 1, usesFrequencyFactors: false))
            }
        }
        layers = sliding.map { $0 ? LayerAttention(rope: 1, window: window) : LayerAttention(rope: 0, window: nil) }
    }
}
