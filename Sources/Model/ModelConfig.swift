import GGUF

/// Hyperparameters of a llama-family model, read from GGUF metadata.
///
/// | property | GGUF key |
/// |---|---|
/// | layerCount | `{arch}.block_count` |
/// | embeddingLength | `{arch}.embedding_length` |
/// | feedForwardLength | `{arch}.feed_forward_length` |
/// | headCount | `{arch}.attention.head_count` |
/// | kvHeadCount | `{arch}.attention.head_count_kv` (default: headCount) |
/// | contextLength | `{arch}.context_length` |
/// | ropeTheta | `{arch}.rope.freq_base` (default 10000) |
/// | rmsEpsilon | `{arch}.attention.layer_norm_rms_epsilon` |
/// | ropeDimensionCount | `{arch}.rope.dimension_count` (default: headDimension) |
/// | vocabularySize | `{arch}.vocab_size`, else the length of `tokenizer.ggml.tokens` |
public struct ModelConfig: Sendable, Equatable {
    public static let supportedArchitectures = ["llama"]

    public var architecture: String
    public var name: String
    public var layerCount: Int
    public var embeddingLength: Int
    public var feedForwardLength: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var contextLength: Int
    public var ropeTheta: Float
    public var rmsEpsilon: Float
    public var vocabularySize: Int

    /// Values per attention head.
    public var headDimension: Int { embeddingLength / headCount }
    /// Width of one row's keys (or values) for all key/value heads.
    public var kvDimension: Int { kvHeadCount * headDimension }
    /// Query heads that share one key/value head (grouped-query attention).
    public var groupSize: Int { headCount / kvHeadCount }

    public init(file: GGUFFile) throws {
        let arch = try file.string("general.architecture")
        guard ModelConfig.supportedArchitectures.contains(arch) else { throw ModelError.unsupportedArchitecture(arch) }
        architecture = arch
        name = file.optionalString("general.name") ?? "model"
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
        guard embeddingLength % headCount == 0 else {
            throw ModelError.invalidHyperparameter(key: "\(arch).attention.head_count", value: String(headCount),
                                                   reason: "it must divide embedding_length \(embeddingLength)")
        }
        guard headCount % kvHeadCount == 0 else {
            throw ModelError.invalidHyperparameter(key: "\(arch).attention.head_count_kv", value: String(kvHeadCount),
                                                   reason: "it must divide head_count \(headCount)")
        }
        guard headDimension % 2 == 0 else {
            throw ModelError.invalidHyperparameter(key: "\(arch).attention.head_count", value: String(headCount),
                                                   reason: "the head dimension \(headDimension) must be even for RoPE")
        }
        if let ropeDims = file.optionalInt("\(arch).rope.dimension_count"), ropeDims != headDimension {
            throw ModelError.invalidHyperparameter(key: "\(arch).rope.dimension_count", value: String(ropeDims),
                                                   reason: "partial rotary embeddings are not supported (head dimension is \(headDimension))")
        }
    }
}
