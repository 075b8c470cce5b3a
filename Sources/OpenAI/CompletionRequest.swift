import ChatTemplate
import Foundation
import Grammar
import Model

/// A chat message as the API receives it (content parts flattened to text).
public struct APIMessage: Equatable, Sendable {
    public var role: String
    public var content: String
    /// An assistant turn's tool calls (history).
    public var toolCalls: [APIToolCall] = []
    /// A `tool` message's `tool_call_id` and a message's optional `name`.
    public var toolCallID: String?
    public var name: String?
    /// An assistant turn's reasoning sent back (`reasoning_content` or `reasoning`), for
    /// templates that render it (Qwen3 keeps it for turns after the last user message).
    public var reasoning: String?
}

/// A tool call in the conversation history: id, function name and arguments (JSON text).
public struct APIToolCall: Equatable, Sendable {
    public var id: String
    public var name: String
    public var arguments: String
}

/// A function the model may call (`tools[i].function`).
public struct ToolDefinition: Sendable {
    public var name: String
    public var description: String?
    /// The JSON schema of the arguments (an object schema), in document order.
    public var parameters: JSONValue
}

/// `tool_choice`.
public enum ToolChoice: Equatable, Sendable {
    case none, auto, required
    case function(String)
}

/// Sampling parameters for fields a request leaves out (config.json `sampling_defaults`).
public struct SamplingDefaults: Sendable, Equatable {
    public var temperature: Float
    public var topP: Float
    public var topK: Int
    public var minP: Float
    public var presencePenalty: Float
    public var frequencyPenalty: Float

    public init(temperature: Float, topP: Float, topK: Int, minP: Float, presencePenalty: Float = 0, frequencyPenalty: Float = 0) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.minP = minP
        self.presencePenalty = presencePenalty
        self.frequencyPenalty = frequencyPenalty
    }

    /// OpenAI's own defaults (temperature 1, no truncation).
    public static let openAI = SamplingDefaults(temperature: 1, topP: 1, topK: 0, minP: 0)
    /// llama.cpp's server defaults, what a small model needs to stay coherent.
    public static let llamaCpp = SamplingDefaults(temperature: 0.8, topP: 0.95, topK: 40, minP: 0.05)
}

/// The prompt of a request: chat messages, or completion text / token ids.
public enum APIPrompt: Equatable, Sendable {
    case chat([APIMessage])
    case text(String)
    case tokens([Int32])
}

/// A validated /v1/chat/completions or /v1/completions request. Every field is checked here, so
/// nothing past this type sees JSON; errors name the field and the allowed values.
public struct CompletionRequest: Sendable {
    public var model: String
    /// One prompt (chat) or one or more (completions with a list of prompts).
    public var prompts: [APIPrompt]
    public var maxTokens: Int?
    public var temperature: Float = 1
    public var topP: Float = 1
    public var topK: Int = 0
    public var minP: Float = 0
    public var seed: UInt64?
    public var stop: [String] = []
    public var n = 1
    public var presencePenalty: Float = 0
    public var frequencyPenalty: Float = 0
    public var logprobs = false
    public var topLogprobs = 0
    public var stream = false
    public var includeUsage = false
    public var echo = false
    /// CastServe extension: false turns speculative decoding off for this request.
    public var speculation = true
    /// Added to token logits (`logit_bias`: token id -> -100...100).
    public var logitBias: [Int32: Float] = [:]
    /// The grammar the output must match, as GBNF (from `response_format`, llama.cpp's `grammar`
    /// or `json_schema`, or the tool-call format), and the field it came from (for errors).
    public var outputGrammar: String?
    public var outputGrammarParam: String?
    /// Functions the model may call, and how (`tools`, `tool_choice`, `parallel_tool_calls`).
    public var tools: [ToolDefinition] = []
    public var toolChoice = ToolChoice.auto
    public var parallelToolCalls = true
    /// More chat-template variables (`chat_template_kwargs`, `enable_thinking`; ReasoningOutput),
    /// and the request field that set `enable_thinking` when it is not `chat_template_kwargs`
    /// (`enable_thinking`, or /v1/messages' `thinking`), for errors.
    public var templateContext: [(String, TemplateValue)] = []
    public var enableThinkingParam: String?
    /// Whether tool definitions go to the prompt and the output may be tool calls.
    public var usesTools: Bool { !tools.isEmpty && toolChoice != .none }

    /// Parses and validates a request body. `chat` selects the chat or the completions schema;
    /// `defaults` fill the sampling fields it leaves out.
    public static func parse(_ body: Data, chat: Bool, defaults: SamplingDefaults = .openAI) throws -> CompletionRequest {
        let json = try JSONFields.body(body)
        var r = CompletionRequest(model: "", prompts: [])
        r.model = try json.string("model") ?? ""
        guard !r.model.isEmpty else { throw OpenAIError.invalid("model", "'model' is required: the loaded model's id or 'default' (see GET /v1/models)", code: "missing_required_parameter") }

        if chat {
            guard let raw = json["messages"] else {
                throw OpenAIError.invalid("messages", "'messages' is required: a list of {\"role\", \"content\"}", code: "missing_required_parameter")
            }
            r.prompts = [.chat(try messages(raw))]
        } else {
            guard let raw = json["prompt"] else {
                throw OpenAIError.invalid("prompt", "'prompt' is required: a string, a list of strings, or token ids", code: "missing_required_parameter")
            }
            r.prompts = try prompts(raw, param: "prompt")
        }

        // max_tokens 0 scores an echoed prompt without generating (completions only).
        let least = chat ? 1 : 0
        let maxTokens = try json.int("max_completion_tokens", least...1_048_576) ?? json.int("max_tokens", least...1_048_576)
        r.maxTokens = maxTokens
        r.temperature = try json.number("temperature", 0...2) ?? defaults.temperature
        r.topP = try json.number("top_p", 0...1) ?? defaults.topP
        guard r.topP > 0 else { throw OpenAIError.invalid("top_p", "'top_p' must be greater than 0 and at most 1") }
        r.topK = try json.int("top_k", 0...1_000_000) ?? defaults.topK
        r.minP = try json.number("min_p", 0...1) ?? defaults.minP
        r.presencePenalty = try json.number("presence_penalty", -2...2) ?? defaults.presencePenalty
        r.frequencyPenalty = try json.number("frequency_penalty", -2...2) ?? defaults.frequencyPenalty
        r.n = try json.int("n", 1...16) ?? 1
        if let seed = json["seed"] {
            guard let v = JSONFields.integer(seed) else { throw OpenAIError.invalid("seed", "'seed' must be an integer") }
            r.seed = UInt64(bitPattern: Int64(v))
        }
        r.stop = try stopStrings(json, "stop", limit: 4)
        if chat {
            r.logprobs = try json.bool("logprobs") ?? false
            r.topLogprobs = try json.int("top_logprobs", 0...20) ?? 0
            if r.topLogprobs > 0 && !r.logprobs {
                throw OpenAIError.invalid("top_logprobs", "'top_logprobs' needs 'logprobs': true")
            }
        } else {
            if let lp = try json.int("logprobs", 0...20) {
                r.logprobs = true
                r.topLogprobs = lp
            }
            r.echo = try json.bool("echo") ?? false
            if maxTokens == 0 && !r.echo {
                throw OpenAIError.invalid("max_tokens", "'max_tokens' is 0: nothing would be generated; send 'echo': true with 'logprobs' to score the prompt, or a positive 'max_tokens'")
            }
        }
        r.logitBias = try logitBias(json)
        r.templateContext = try parseTemplateContext(json, chat: chat)
        if json["enable_thinking"] != nil { r.enableThinkingParam = "enable_thinking" }
        try parseStructuredOutput(json, chat: chat, into: &r)
        r.stream = try json.bool("stream") ?? false
        r.speculation = try json.bool("speculation") ?? true
        if json["stream_options"] != nil {
            let o = try json.object("stream_options", expected: "an object like {\"include_usage\": true}")!
            guard r.stream else { throw OpenAIError.invalid("stream_options", "'stream_options' is only allowed when 'stream' is true") }
            r.includeUsage = try o.bool("include_usage") ?? false
        }
        _ = try json.string("user")
        return r
    }

    // MARK: - Field readers

    /// Stop strings at `key`: a string or a list of up to `limit` non-empty strings.
    static func stopStrings(_ json: JSONFields, _ key: String, limit: Int) throws -> [String] {
        guard let raw = json[key] else { return [] }
        let bad = json.invalid(key, "'\(json.name(key))' must be a string or a list of up to \(limit) strings")
        let stops: [String]
        switch raw {
        case .string(let s): stops = [s]
        case .array(let items): stops = try items.map { guard case .string(let s) = $0 else { throw bad }; return s }
        default: throw bad
        }
        guard stops.count <= limit else { throw json.invalid(key, "'\(json.name(key))' takes at most \(limit) strings, got \(stops.count)") }
        guard !stops.contains("") else { throw json.invalid(key, "'\(json.name(key))' strings must not be empty") }
        return stops
    }

    static func messages(_ raw: JSONValue) throws -> [APIMessage] {
        guard case .array(let list) = raw, !list.isEmpty else {
            throw OpenAIError.invalid("messages", "'messages' must be a non-empty list of {\"role\", \"content\"}")
        }
        return try list.enumerated().map { i, item in
            let m = try JSONFields(item, path: "messages[\(i)]")
            guard case .string(let role)? = m["role"], ["system", "user", "assistant", "developer", "tool"].contains(role) else {
                throw OpenAIError.invalid("messages[\(i)].role", "'messages[\(i)].role' must be one of system, user, assistant, developer, tool")
            }
            var calls: [APIToolCall] = []
            if role == "assistant", let raw = m["tool_calls"] {
                calls = try toolCalls(raw, param: "messages[\(i)].tool_calls")
            }
            let content: String
            switch m["content"] {
            case .string(let s)?:
                content = s
            case .array(let parts)?:
                content = try parts.enumerated().map { j, part -> String in
                    guard part["type"] == .string("text"), case .string(let t)? = part["text"] else {
                        throw OpenAIError.invalid("messages[\(i)].content[\(j)]", "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported")
                    }
                    return t
                }.joined()
            case nil:
                guard role == "assistant" else {
                    throw OpenAIError.invalid("messages[\(i)].content", "'messages[\(i)].content' is required: a string or a list of text parts")
                }
                content = ""
            default:
                throw OpenAIError.invalid("messages[\(i)].content", "'messages[\(i)].content' must be a string or a list of text parts")
            }
            var message = APIMessage(role: role == "developer" ? "system" : role, content: content, toolCalls: calls)
            if role == "tool" {
                guard case .string(let id)? = m["tool_call_id"] else {
                    throw OpenAIError.invalid("messages[\(i)].tool_call_id", "a 'tool' message needs 'tool_call_id': the id of the call it answers")
                }
                message.toolCallID = id
            }
            if role == "assistant" {
                // A turn's reasoning sent back (either name); Qwen3's template renders it.
                message.reasoning = try m.string("reasoning_content") ?? m.string("reasoning")
            }
            message.name = try m.string("name")
            return message
        }
    }

    /// An assistant message's `tool_calls` history.
    static func toolCalls(_ raw: JSONValue, param: String) throws -> [APIToolCall] {
        guard case .array(let list) = raw else { throw OpenAIError.invalid(param, "'\(param)' must be a list of tool calls") }
        return try list.enumerated().map { k, call in
            guard case .string(let name)? = call["function"]?["name"] else {
                throw OpenAIError.invalid("\(param)[\(k)]", "'\(param)[\(k)]' must be {\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}}")
            }
            let arguments: String
            switch call["function"]?["arguments"] {
            case .string(let s)?: arguments = s
            case nil, .null?: arguments = "{}"
            case let other?: arguments = other.text
            }
            return APIToolCall(id: call["id"]?.stringValue ?? "call_\(k)", name: name, arguments: arguments)
        }
    }

    /// Completion prompts (and embedding inputs): a string, a list of strings, a list of token ids,
    /// or a list of token-id lists.
    static func prompts(_ raw: JSONValue, param: String) throws -> [APIPrompt] {
        let bad = OpenAIError.invalid(param, "'\(param)' must be a string, a list of strings, a list of token ids, or a list of token-id lists")
        if case .string(let s) = raw { return [.text(s)] }
        guard case .array(let list) = raw, !list.isEmpty else { throw bad }
        if case .string = list[0] {
            return try list.map { guard case .string(let s) = $0 else { throw bad }; return .text(s) }
        }
        func ids(_ v: JSONValue) throws -> [Int32] {
            guard case .array(let l) = v, !l.isEmpty else { throw bad }
            return try l.map {
                guard let i = JSONFields.integer($0), let id = Int32(exactly: i), id >= 0 else { throw bad }
                return id
            }
        }
        if case .array = list[0] { return try list.map { .tokens(try ids($0)) } }
        return [.tokens(try ids(raw))]
    }
}
