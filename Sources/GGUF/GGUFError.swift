/// Everything that can be wrong with a GGUF file, with the facts needed to fix it.
public enum GGUFError: Error, CustomStringConvertible, Equatable {
    case fileNotFound(path: String)
    case unreadable(path: String, reason: String)
    case badMagic(path: String, found: UInt32)
    case unsupportedVersion(path: String, version: UInt32)
    case truncated(path: String, offset: Int, needed: Int, fileSize: Int, what: String)
    case invalidValueType(path: String, key: String, type: UInt32)
    case invalidString(path: String, offset: Int)
    case invalidAlignment(path: String, alignment: Int)
    case unsupportedTensorType(tensor: String, type: UInt32)
    case tensorOutOfBounds(tensor: String, start: Int, end: Int, fileSize: Int)
    case invalidTensorShape(tensor: String, dimensions: [Int], reason: String)
    case missingKey(key: String)
    case wrongKeyType(key: String, expected: String, found: String)
    case missingTensor(name: String)

    public var description: String {
        switch self {
        case .fileNotFound(let path):
            return "model file not found: \(path); check the path, or run `make model` to fetch the default model"
        case .unreadable(let path, let reason):
            return "cannot read model file \(path): \(reason)"
        case .badMagic(let path, let found):
            return "\(path) is not a GGUF file (magic 0x\(String(found, radix: 16)), expected 0x46554747 'GGUF'); "
                + "convert the model to GGUF (llama.cpp's convert_hf_to_gguf.py) or pass a .gguf file"
        case .unsupportedVersion(let path, let version):
            return "\(path) is GGUF version \(version); supported versions are 2 and 3; re-export it with a current converter"
        case .truncated(let path, let offset, let needed, let fileSize, let what):
            return "\(path) is truncated: reading \(what) needs \(needed) bytes at offset \(offset) but the file has "
                + "\(fileSize) bytes; download the file again"
        case .invalidValueType(let path, let key, let type):
            return "\(path): metadata key '\(key)' has unknown value type \(type); the file is corrupt or from a newer GGUF version"
        case .invalidString(let path, let offset):
            return "\(path): string at offset \(offset) is not valid UTF-8 or has an impossible length; the file is corrupt"
        case .invalidAlignment(let path, let alignment):
            return "\(path): general.alignment is \(alignment); it must be a positive power of two"
        case .unsupportedTensorType(let tensor, let type):
            return "tensor '\(tensor)' has type \(GGMLType.name(of: type)); supported types are "
                + GGMLType.supportedForCompute.map(\.name).joined(separator: ", ")
                + "; re-quantize the model to one of them (llama-quantize)"
        case .tensorOutOfBounds(let tensor, let start, let end, let fileSize):
            return "tensor '\(tensor)' spans bytes \(start)..<\(end) but the file has \(fileSize) bytes; the file is truncated or corrupt"
        case .invalidTensorShape(let tensor, let dimensions, let reason):
            return "tensor '\(tensor)' has shape \(dimensions): \(reason)"
        case .missingKey(let key):
            return "required metadata key '\(key)' is missing from the model file; it is not a complete llama-family GGUF"
        case .wrongKeyType(let key, let expected, let found):
            return "metadata key '\(key)' should be \(expected) but is \(found)"
        case .missingTensor(let name):
            return "required tensor '\(name)' is missing from the model file"
        }
    }
}
