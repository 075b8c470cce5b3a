import GGUF

// MARK: - Loading from GGUF

extension Tokenizer {
    /// Builds the tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.
    ///
    /// `model` "gpt2" (byte-level BPE) reads `pre`, `tokens`, `token_type`, `merges`,
    /// `bos_token_id`, `eos_token_id` and `add_bos_token`; "llama" (SentencePiece) reads `tokens`,
    /// `scores`, `token_type`, `bos_token_id`, `eos_token_id`, `add_bos_token` (default true),
    /// `add_eos_token` (default false) and `add_space_prefix` (default true), as llama.cpp does.
    /// - Throws: `TokenizerError` naming the missing key or the unsupported model / pre-tokenizer;
    ///   `GGUFError` when an array key has the wrong type.
    public convenience init(gguf: GGUFFile) throws {
        guard let modelName = gguf.optionalString("tokenizer.ggml.model") else {
            throw TokenizerError.missingKey("tokenizer.ggml.model")
        }
        guard let model = Model(rawValue: modelName) else { throw TokenizerError.unsupportedModel(modelName) }
        // Array keys throw `GGUFError`, which names the key and the expected and found types.
        let tokens = try gguf.stringArray("tokenizer.ggml.tokens")
        let types = gguf.metadata["tokenizer.ggml.token_type"] == nil
            ? [] : try gguf.intArray("tokenizer.ggml.token_type").map { Int32(truncatingIfNeeded: $0) }
        let bosID = gguf.optionalInt("tokenizer.ggml.bos_token_id").map { Int32(truncatingIfNeeded: $0) }
        let eosID = gguf.optionalInt("tokenizer.ggml.eos_token_id").map { Int32(truncatingIfNeeded: $0) }
        let addsEOS = gguf.optionalBool("tokenizer.ggml.add_eos_token") ?? false
        switch model {
        case .sentencePiece:
            let scores = gguf.metadata["tokenizer.ggml.scores"] == nil ? [] : try gguf.floatArray("tokenizer.ggml.scores")
            try self.init(
                tokens: tokens, tokenTypes: types, merges: [], preTokenizer: .gpt2, bosID: bosID, eosID: eosID,
                addsBOS: gguf.optionalBool("tokenizer.ggml.add_bos_token") ?? true, model: .sentencePiece, scores: scores,
                addsEOS: addsEOS, addsSpacePrefix: gguf.optionalBool("tokenizer.ggml.add_space_prefix") ?? true)
        case .bytePairs:
            // llama.cpp falls back to its "default" rule when `pre` is missing; that rule is not
            // implemented here, so a missing key is reported rather than guessed.
            guard let preName = gguf.optionalString("tokenizer.ggml.pre") else {
                throw TokenizerError.missingKey("tokenizer.ggml.pre")
            }
            let preTokenizer = try PreTokenizer(name: preName)
            let merges = try gguf.stringArray("tokenizer.ggml.merges")
            // llama3-family vocabularies always start with BOS in llama.cpp, whatever the flag says.
            let addsBOS = preTokenizer == .llama3 ? true : gguf.optionalBool("tokenizer.ggml.add_bos_token") ?? false
            try self.init(tokens: tokens, tokenTypes: types, merges: merges, preTokenizer: preTokenizer, bosID: bosID, eosID: eosID,
                          addsBOS: addsBOS, addsEOS: addsEOS)
        }
    }
}
