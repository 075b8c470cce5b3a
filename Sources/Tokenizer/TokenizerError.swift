// MARK: - Tokenizer errors

/// Why a tokenizer could not be built from a vocabulary or a GGUF file.
///
/// Each case names the offending key or value and what to do about it.
public enum TokenizerError: Error, CustomStringConvertible, Equatable, Sendable {
    /// `tokenizer.ggml.model` names a tokenizer family this build does not implement.
    case unsupportedModel(String)
    /// `tokenizer.ggml.pre` names a pre-tokenizer this build does not implement.
    case unknownPreTokenizer(String)
    /// A required metadata key is missing or has the wrong type.
    case missingKey(String)
    /// The token text array and the token type array differ in length.
    case tokenTypeCountMismatch(tokens: Int, types: Int)
    /// A merge rule is not of the form "left right".
    case malformedMerge(index: Int, text: String)
    /// The token score array and the token text array differ in length.
    case scoreCountMismatch(tokens: Int, scores: Int)
    /// A special token ID (BOS, EOS) is outside the vocabulary.
    case tokenIDOutOfRange(key: String, id: Int, vocabularySize: Int)

    public var description: String {
        switch self {
        case .unsupportedModel(let name):
            return "tokenizer.ggml.model is \"\(name)\"; supported: \"gpt2\" (byte-level BPE) and \"llama\" (SentencePiece); "
                + "use a model converted with one of them"
        case .unknownPreTokenizer(let name):
            return "tokenizer.ggml.pre is \"\(name)\"; supported pre-tokenizers are \(PreTokenizer.supportedNames.joined(separator: ", ")); "
                + "use a model converted with one of them"
        case .missingKey(let key):
            return "GGUF metadata key \(key) is missing or has the wrong type; re-convert the model with a current llama.cpp convert script"
        case .scoreCountMismatch(let tokens, let scores):
            return "tokenizer.ggml.scores has \(scores) entries but tokenizer.ggml.tokens has \(tokens); the file is inconsistent: re-convert it"
        case .tokenTypeCountMismatch(let tokens, let types):
            return "tokenizer.ggml.tokens has \(tokens) entries but tokenizer.ggml.token_type has \(types); the vocabulary is corrupt, re-convert the model"
        case .malformedMerge(let index, let text):
            return "tokenizer.ggml.merges[\(index)] is \"\(text)\"; expected two tokens separated by one space; re-convert the model"
        case .tokenIDOutOfRange(let key, let id, let size):
            return "\(key) is \(id) but the vocabulary has \(size) tokens; fix the metadata or re-convert the model"
        }
    }
}
