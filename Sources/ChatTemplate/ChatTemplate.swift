import GGUF

// MARK: - Chat template

/// One chat message as the template sees it (`message.role`, `message.content`, and any extra
/// keys such as `tool_calls`, `tool_call_id` and `name`).
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String
    /// More keys of the message object, in order (e.g. an assistant turn's `tool_calls`).
    public var extra: [(String, TemplateValue)]

    public init(role: String, content: String, extra: [(String, TemplateValue)] = []) {
        self.role = role
        self.content = content
        self.extra = extra
    }

    public static func == (a: ChatMessage, b: ChatMessage) -> Bool {
        a.role == b.role && a.content == b.content && a.extra.count == b.extra.count
            && zip(a.extra, b.extra).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    }
}

/// A JSON-like value handed to a chat template (tool definitions, tool calls).
public indirect enum TemplateValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case integer(Int)
    case double(Double)
    case string(String)
    case list([TemplateValue])
    case object([(String, TemplateValue)])

    public static func == (a: TemplateValue, b: TemplateValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case (.bool(let x), .bool(let y)): return x == y
        case (.integer(let x), .integer(let y)): return x == y
        case (.double(let x), .double(let y)): return x == y
        case (.string(let x), .string(let y)): return x == y
        case (.list(let x), .list(let y)): return x == y
        case (.object(let x), .object(let y)): return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    var jinja: JinjaValue {
        switch self {
        case .null: return .none
        case .bool(let b): return .bool(b)
        case .integer(let i): return .integer(i)
        case .double(let d): return .float(d)
        case .string(let s): return .string(s)
        case .list(let items): return .list(items.map(\.jinja))
        case .object(let members): return .dictionary(JinjaDictionary(members.map { ($0.0, $0.1.jinja) }))
        }
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
    /// Whether the template renders tool definitions itself (it reads the `tools` variable).
    public var supportsTools: Bool { source.contains("tools") }
    /// Whether the template writes think blocks (`<think>…</think>`, Qwen3, QwQ, DeepSeek-R1): its
    /// model's replies open with reasoning that `ReasoningSplitter` separates from the content.
    public var thinks: Bool { source.contains(ReasoningSplitter.openTag) || source.contains(ReasoningSplitter.closeTag) }
    /// Every variable name the template reads (e.g. `enable_thinking`), from its syntax tree.
    public let variableNames: Set<String>
    /// Variables `render` sets itself, which `context` may not replace.
    public static let reservedVariables: Set<String> = ["messages", "add_generation_prompt", "bos_token", "eos_token", "tools"]
    private let nodes: [JinjaNode]

    /// Parses a template.
    /// - Throws: `ChatTemplateError.syntax` or `.unsupported` with the line.
    public init(source: String) throws(ChatTemplateError) {
        self.source = source
        self.nodes = try JinjaParser.parse(source)
        var names = Set<String>()
        for n in nodes { n.collectVariables(into: &names) }
        variableNames = names
    }

    /// Whether the template reads variable `name`, so a value for it can change the render.
    public func reads(_ name: String) -> Bool { variableNames.contains(name) }

    /// Reads and parses `tokenizer.chat_template` from a GGUF file (else the built-in template of
    /// its architecture, `BuiltInTemplates`).
    /// - Throws: `ChatTemplateError.missingTemplate` if the key is absent, or a parse error.
    public init(gguf: GGUFFile) throws(ChatTemplateError) {
        guard let source = BuiltInTemplates.source(of: gguf) else { throw .missingTemplate }
        try self.init(source: source)
    }

    /// Renders the prompt for a conversation.
    ///
    /// - Parameters:
    ///   - messages: the conversation, oldest first.
    ///   - addGenerationPrompt: append the header that starts the assistant's reply.
    ///   - bosToken, eosToken: texts of the model's BOS/EOS tokens (templates often print `bos_token`).
    ///   - variables: extra string variables (e.g. `date_string`).
    ///   - tools: the `tools` variable (tool definitions), none when nil.
    ///   - context: more variables of any JSON-like value (an API request's `chat_template_kwargs`,
    ///     e.g. `enable_thinking`); none may be one of `reservedVariables` (precondition: callers
    ///     refuse those names with their own error first).
    /// - Returns: the prompt text, to be encoded with `parseSpecial: true`.
    /// - Throws: `ChatTemplateError`, e.g. `.raised` when the template rejects the conversation.
    public func render(
        messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String = "", eosToken: String = "",
        variables: [String: String] = [:], tools: [TemplateValue]? = nil, context: [(String, TemplateValue)] = []
    ) throws(ChatTemplateError) -> String {
        precondition(context.allSatisfy { !Self.reservedVariables.contains($0.0) }, "context may not set render's own variables")
        var globals: [String: JinjaValue] = [
            "messages": .list(messages.map {
                .dictionary(JinjaDictionary([("role", .string($0.role)), ("content", .string($0.content))] + $0.extra.map { ($0.0, $0.1.jinja) }))
            }),
            "add_generation_prompt": .bool(addGenerationPrompt),
            "bos_token": .string(bosToken),
            "eos_token": .string(eosToken),
            "tools": tools.map { .list($0.map(\.jinja)) } ?? .none,
        ]
        for (name, value) in variables { globals[name] = .string(value) }
        for (name, value) in context { globals[name] = value.jinja }
        var interpreter = JinjaInterpreter(globals: globals)
        return try interpreter.render(nodes)
    }
}
