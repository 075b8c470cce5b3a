import GGUF

/// Everything that can be wrong with a model file or a request to the forward pass.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    case unsupportedArchitecture(String)
    case missingHyperparameter(key: String)
    case invalidHyperparameter(key: String, value: String, reason: String)
    case unsupportedTensorType(tensor: String, type: String)
    case tensorShapeMismatch(tensor: String, expected: [Int], found: [Int])
    case contextOverflow(slot: Int, needed: Int, capacity: Int)
    case tooManyRows(requested: Int, maximum: Int)
    case invalidSlot(Int, slotCount: Int)
    case invalidToken(Int32, vocabularySize: Int)
    case invalidParent(row: Int, parent: Int)
    case outOfCacheBlocks(slot: Int, needed: Int, available: Int)
    case invalidLayerCount(requested: Int, available: Int)
    case invalidLayerList([Int], available: Int)
    /// A key/value cache storage type that does not exist.
    case unknownKVCacheType(String)
    /// Q8_0 key/value storage needs every head's values in whole blocks of 32.
    case kvCacheTypeNeedsBlocks(type: String, headDimension: Int)

    public var description: String {
        switch self {
        case .unsupportedArchitecture(let a):
            return "model architecture '\(a)' is not supported; supported: \(ModelConfig.supportedArchitectures.joined(separator: ", "))"
        case .missingHyperparameter(let key):
            return "required metadata key '\(key)' is missing from the model file; it is not a complete llama-family GGUF"
        case .invalidHyperparameter(let key, let value, let reason):
            return "metadata key '\(key)' = \(value) is invalid: \(reason)"
        case .unsupportedTensorType(let tensor, let type):
            return "tensor '\(tensor)' has type \(type); supported types are "
                + GGMLType.supportedForCompute.map(\.name).joined(separator: ", ")
                + "; re-quantize the model to one of them (llama-quantize)"
        case .tensorShapeMismatch(let tensor, let expected, let found):
            return "tensor '\(tensor)' has shape \(found) but the model's hyperparameters need \(expected); the file is inconsistent"
        case .contextOverflow(let slot, let needed, let capacity):
            return "sequence slot \(slot) needs \(needed) positions but its context holds \(capacity); shorten the prompt or raise the context size"
        case .tooManyRows(let requested, let maximum):
            return "a step of \(requested) rows exceeds the maximum of \(maximum) rows per step; split it into chunks"
        case .invalidSlot(let slot, let count):
            return "sequence slot \(slot) does not exist (the cache has \(count) slots)"
        case .invalidToken(let token, let vocab):
            return "token id \(token) is outside the vocabulary (0..<\(vocab))"
        case .outOfCacheBlocks(let slot, let needed, let available):
            return "sequence slot \(slot) needs \(needed) KV-cache blocks but only \(available) are free; raise the KV budget or run fewer sequences"
        case .invalidLayerCount(let requested, let available):
            return "an early-exit forward of \(requested) layers is invalid; the model has \(available) layers: use 1...\(available)"
        case .invalidLayerList(let list, let available):
            return "layer list \(list) is invalid; list distinct layers of 0..<\(available) in increasing order"
        case .unknownKVCacheType(let name):
            return "unknown key/value cache type '\(name)'; choose one of: \(KVCacheType.allCases.map(\.rawValue).joined(separator: ", "))"
        case .kvCacheTypeNeedsBlocks(let type, let hd):
            return "key/value cache type \(type) stores blocks of 32 values, but this model's head dimension is \(hd); use kv_cache_type f16 or f32"
        case .invalidParent(let row, let parent):
            return "row \(row) names parent row \(parent), which is not an earlier row of the same sequence"
        }
    }
}
