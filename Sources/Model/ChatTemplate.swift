import GGUF

// MARK: - Chat template

/// One chat message as the template sees it (`message.role`, `message.content`).
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// A model's chat template (GGUF `tokenizer.chat_template`, Jinja source), parsed once and rendered
/// per request by a small Jinja interpreter with Hugging Face's settings (`trim_blocks`,
/// `lstrip_blocks`, no autoescape, `tojson` as `json.dumps(ensure_ascii=False)`).
///
/// Supported: `{{ }}`, `{% if/elif/else %}`, `{% for %}` (with `loop.*`, `else`, inline `if`,
/// `break`/`continue`), `{% set %}` (names, namespace attributes, blocks), whitespace control,
/// literals, lists, dicts, attributes, subscripts, slices, arithmetic, `~`, comparisons, `and/or/not`,
/// `in`/`not in`, conditional expressions, common filters and tests, `raise_exception`, `namespace`,
/// `range`, and the string/dict methods templates call. Anything else is a `ChatTemplateError`
/// naming the construct and line.
///
/// Thread-safety: immutable; `render` may run concurrently.
public struct ChatTemplate: Sendable {
    /// The Jinja source.
    public let source: String
    private let nodes: [JinjaNode]

    /// Parses a template.
    /// - Throws: `ChatTemplateError.syntax` or `.unsupported` with the line.
    public init(source: String) throws(ChatTemplateError) {
        self.source = source
        self.nodes = try JinjaParser.parse(source)
    }

    /// Reads and parses `tokenizer.chat_template` from a GGUF file.
    /// - Throws: `ChatTemplateError.missingTemplate` if the key is absent, or a parse error.
    public init(gguf: GGUFFile) throws(ChatTemplateError) {
        guard let source = gguf.optionalString("tokenizer.chat_template") else { throw .missingTemplate }
        try self.init(source: source)
    }

    /// Renders the prompt for a conversation.
    ///
    /// - Parameters:
    ///   - messages: the conversation, oldest first.
    ///   - addGenerationPrompt: append the header that starts the assistant's reply.
    ///   - bosToken, eosToken: texts of the model's BOS/EOS tokens (templates often print `bos_token`).
    ///   - variables: extra string variables (e.g. `date_string`); `tools` is always defined as none.
    /// - Returns: the prompt text, to be encoded with `parseSpecial: true`.
    /// - Throws: `ChatTemplateError`, e.g. `.raised` when the template rejects the conversation.
    public func render(
        messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String = "", eosToken: String = "",
        variables: [String: String] = [:]
    ) throws(ChatTemplateError) -> String {
        var globals: [String: JinjaValue] = [
            "messages": .list(messages.map {
                .dictionary(JinjaDictionary([("role", .string($0.role)), ("content", .string($0.content))]))
            }),
            "add_generation_prompt": .bool(addGenerationPrompt),
            "bos_token": .string(bosToken),
            "eos_token": .string(eosToken),
            "tools": .none,
        ]
        for (name, value) in variables { globals[name] = .string(value) }
        var interpreter = JinjaInterpreter(globals: globals)
        return try interpreter.render(nodes)
    }
}
