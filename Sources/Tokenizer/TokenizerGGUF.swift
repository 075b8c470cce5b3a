import GGUF

// MARK: - Loading from GGUF

extension Tokenizer {
    /// Builds the tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.
    ///
    /// Reads `model` (must be "gpt2"), `pre`, `tokens`, `token_type`, `merges`, `bos_token_id`,
    /// `eos_token_id` and `add_bos_token`.
    /// - Throws: `TokenizerError` naming the missing key or the unsupported model / pre-tokenizer;
    ///   `GGUFError` when an array key has the wrong type.
    public convenience init(gguf: GGUFFile) throws {
        guard let model = gguf.optionalString("tokenizer.ggml.model") else {
            throw TokenizerError.missingKey("tokenizer.ggml.model")
        }
        guard model == "gpt2" else { throw TokenizerError.unsupportedModel(model) }
        // llama.cpp falls back to its "default" rule when `pre` is missing; that rule is not
        // implemented here, so a missing key is reported rather than guessed.
        guard let preName = gguf.optionalString("tokenizer.ggml.pre") else {
            throw TokenizerError.missingKey("tokenizer.ggml.pre")
        }
        let preTokenizer = try PreTokenizer(name: preName)
        // Array keys throw `GGUFError`, which names the key and the expected and found types.
        let tokens = try gguf.stringArray("tokenizer.ggml.tokens")
        let types = gguf.metadata["tokenizer.ggml.token_type"] == nil
            ? [] : try gguf.intArray("tokenizer.ggml.token_type").map { Int32(truncatingIfNeeded: $0) }
        let merges = try gguf.stringArray("tokenizer.ggml.merges")
        // llama3-family vocabularies always start with BOS in llama.cpp, whatever the flag says.
        let addsBOS = preTokenizer == .llama3 ? true : gguf.optionalBool("tokenizer.ggml.add_bos_token") ?? false
        try self.init(
            tokens: tokens, tokenTypes: types, merges: merges, preTokenizer: preTokenizer,
            bosID: gguf.optionalInt("tokenizer.ggml.bos_token_id").map { Int32(truncatingIfNeeded: $0) },
            eosID: gguf.optionalInt("tokenizer.ggml.eos_token_id").map { Int32(truncatingIfNeeded: $0) },
            addsBOS: addsBOS)
    }
}
