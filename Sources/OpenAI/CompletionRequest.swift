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
    /// and whether `enable_thinking` came as its own field (for errors).
    public var templateContext: [(String, TemplateValue)] = []
    public var enableThinkingField = false
    /// Whether tool definitions go to the prompt and the output may be tool calls.
    public var usesTools: Bool { !tools.isEmpty && toolChoice != .none }

    static let chatKeys: Set<String> = ["model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
                                        "min_p", "seed", "stop", "n", "presence_penalty", "frequency_penalty", "logprobs",
                                        "top_logprobs", "stream", "stream_options", "user", "speculation", "response_format",
                                        "tools", "tool_choice", "parallel_tool_calls", "logit_bias", "store", "metadata",
                                        "grammar", "json_schema", "chat_template_kwargs", "enable_thinking"]

    /// Parses and validates a request body. `chat` selects the chat or the completions schema;
    /// `defaults` fill the sampling fields it leaves out.
    public static func parse(_ body: Data, chat: Bool, defaults: SamplingDefaults = .openAI) throws -> CompletionRequest {
        guard !body.isEmpty else { throw OpenAIError.invalid("body", "The request body is empty; send a JSON object", code: "invalid_json") }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: body)
        } catch {
            throw OpenAIError.invalid("body", "The request body is not valid JSON: \((error as NSError).localizedDescription)", code: "invalid_json")
        }
        guard let json = object as? [String: Any] else {
            throw OpenAIError.invalid("body", "The request body must be a JSON object", code: "invalid_json")
        }
        var r = CompletionRequest(model: "", prompts: [])
        r.model = try string(json, "model") ?? ""
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
            r.prompts = try prompts(raw)
        }

        // max_tokens 0 scores an echoed prompt without generating (completions only).
        let least = chat ? 1 : 0
        let maxTokens = try int(json, "max_completion_tokens", least...1_048_576) ?? int(json, "max_tokens", least...1_048_576)
        r.maxTokens = maxTokens
        r.temperature = try number(json, "temperature", 0...2) ?? defaults.temperature
        r.topP = try number(json, "top_p", 0...1) ?? defaults.topP
        guard r.topP > 0 else { throw OpenAIError.invalid("top_p", "'top_p' must be greater than 0 and at most 1") }
        r.topK = try int(json, "top_k", 0...1_000_000) ?? defaults.topK
        r.minP = try number(json, "min_p", 0...1) ?? defaults.minP
        r.presencePenalty = try number(json, "presence_penalty", -2...2) ?? defaults.presencePenalty
        r.frequencyPenalty = try number(json, "frequency_penalty", -2...2) ?? defaults.frequencyPenalty
        r.n = try int(json, "n", 1...16) ?? 1
        if let seed = json["seed"], !(seed is NSNull) {
            guard let n = seed as? NSNumber, !isJSONBool(seed), let v = Int64(exactly: n.doubleValue) else {
                throw OpenAIError.invalid("seed", "'seed' must be an integer")
            }
            r.seed = UInt64(bitPattern: v)
        }
        if let stop = json["stop"], !(stop is NSNull) {
            if let s = stop as? String {
                r.stop = [s]
            } else if let list = stop as? [Any], let strings = list as? [String] {
                r.stop = strings
            } else {
                throw OpenAIError.invalid("stop", "'stop' must be a string or a list of up to 4 strings")
            }
            guard r.stop.count <= 4 else { throw OpenAIError.invalid("stop", "'stop' takes at most 4 strings, got \(r.stop.count)") }
            guard !r.stop.contains("") else { throw OpenAIError.invalid("stop", "'stop' strings must not be empty") }
        }
        if chat {
            r.logprobs = try bool(json, "logprobs") ?? false
            r.topLogprobs = try int(json, "top_logprobs", 0...20) ?? 0
            if r.topLogprobs > 0 && !r.logprobs {
                throw OpenAIError.invalid("top_logprobs", "'top_logprobs' needs 'logprobs': true")
            }
        } else {
            if let lp = try int(json, "logprobs", 0...20) {
                r.logprobs = true
                r.topLogprobs = lp
            }
            r.echo = try bool(json, "echo") ?? false
            if maxTokens == 0 && !r.echo {
                throw OpenAIError.invalid("max_tokens", "'max_tokens' is 0: nothing would be generated; send 'echo': true with 'logprobs' to score the prompt, or a positive 'max_tokens'")
            }
        }
        r.logitBias = try logitBias(json)
        r.templateContext = try parseTemplateContext(json, body: body, chat: chat)
        r.enableThinkingField = json["enable_thinking"].map { !($0 is NSNull) } ?? false
        try parseStructuredOutput(json, body: body, chat: chat, into: &r)
        r.stream = try bool(json, "stream") ?? false
        r.speculation = try bool(json, "speculation") ?? true
        if let options = json["stream_options"], !(options is NSNull) {
            guard let o = options as? [String: Any] else {
                throw OpenAIError.invalid("stream_options", "'stream_options' must be an object like {\"include_usage\": true}")
            }
            guard r.stream else { throw OpenAIError.invalid("stream_options", "'stream_options' is only allowed when 'stream' is true") }
            r.includeUsage = try bool(o, "include_usage", param: "stream_options.include_usage") ?? false
        }
        if let user = json["user"], !(user is NSNull), !(user is String) {
            throw OpenAIError.invalid("user", "'user' must be a string")
        }
        return r
    }

    // MARK: - Field readers

    static func string(_ json: [String: Any], _ key: String) throws -> String? {
        guard let v = json[key], !(v is NSNull) else { return nil }
        guard let s = v as? String else { throw OpenAIError.invalid(key, "'\(key)' must be a string") }
        return s
    }

    static func bool(_ json: [String: Any], _ key: String, param: String? = nil) throws -> Bool? {
        guard let v = json[key], !(v is NSNull) else { return nil }
        guard isJSONBool(v), let n = v as? NSNumber else {
            throw OpenAIError.invalid(param ?? key, "'\(param ?? key)' must be true or false")
        }
        return n.boolValue
    }

    static func int(_ json: [String: Any], _ key: String, _ range: ClosedRange<Int>) throws -> Int? {
        guard let v = json[key], !(v is NSNull) else { return nil }
        guard let n = v as? NSNumber, !isJSONBool(v), let i = Int(exactly: n.doubleValue) else {
            throw OpenAIError.invalid(key, "'\(key)' must be an integer between \(range.lowerBound) and \(range.upperBound)")
        }
        guard range.contains(i) else {
            throw OpenAIError.invalid(key, "'\(key)' is \(i); it must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return i
    }

    static func number(_ json: [String: Any], _ key: String, _ range: ClosedRange<Float>) throws -> Float? {
        guard let v = json[key], !(v is NSNull) else { return nil }
        guard let n = v as? NSNumber, !isJSONBool(v), n.doubleValue.isFinite else {
            throw OpenAIError.invalid(key, "'\(key)' must be a number between \(range.lowerBound) and \(range.upperBound)")
        }
        let f = n.floatValue
        guard range.contains(f) else {
            throw OpenAIError.invalid(key, "'\(key)' is \(n); it must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return f
    }

    static func messages(_ raw: Any) throws -> [APIMessage] {
        guard let list = raw as? [Any], !list.isEmpty else {
            throw OpenAIError.invalid("messages", "'messages' must be a non-empty list of {\"role\", \"content\"}")
        }
        return try list.enumerated().map { i, item in
            guard let m = item as? [String: Any] else { throw OpenAIError.invalid("messages[\(i)]", "'messages[\(i)]' must be an object") }
            guard let role = m["role"] as? String, ["system", "user", "assistant", "developer", "tool"].contains(role) else {
                throw OpenAIError.invalid("messages[\(i)].role", "'messages[\(i)].role' must be one of system, user, assistant, developer, tool")
            }
            var calls: [APIToolCall] = []
            if role == "assistant", let raw = m["tool_calls"], !(raw is NSNull) {
                calls = try toolCalls(raw, param: "messages[\(i)].tool_calls")
            }
            let content: String
            switch m["content"] {
            case let s as String:
                content = s
            case let parts as [Any]:
                content = try parts.enumerated().map { j, part -> String in
                    guard let p = part as? [String: Any], p["type"] as? String == "text", let t = p["text"] as? String else {
                        throw OpenAIError.invalid("messages[\(i)].content[\(j)]", "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported")
                    }
                    return t
                }.joined()
            case nil, is NSNull:
                guard role == "assistant" else {
                    throw OpenAIError.invalid("messages[\(i)].content", "'messages[\(i)].content' is required: a string or a list of text parts")
                }
                content = ""
            default:
                throw OpenAIError.invalid("messages[\(i)].content", "'messages[\(i)].content' must be a string or a list of text parts")
            }
            var message = APIMessage(role: role == "developer" ? "system" : role, content: content, toolCalls: calls)
            if role == "tool" {
                guard let id = m["tool_call_id"] as? String else {
                    throw OpenAIError.invalid("messages[\(i)].tool_call_id", "a 'tool' message needs 'tool_call_id': the id of the call it answers")
                }
                message.toolCallID = id
            }
            if role == "assistant" {
                for key in ["reasoning_content", "reasoning"] {
                    guard let value = m[key], !(value is NSNull) else { continue }
                    guard let text = value as? String else {
                        throw OpenAIError.invalid("messages[\(i)].\(key)", "'messages[\(i)].\(key)' must be a string: the reasoning of that turn")
                    }
                    message.reasoning = text
                }
            }
            if let name = m["name"], !(name is NSNull) {
                guard let n = name as? String else { throw OpenAIError.invalid("messages[\(i)].name", "'messages[\(i)].name' must be a string") }
                message.name = n
            }
            return message
        }
    }

    /// An assistant message's `tool_calls` history.
    static func toolCalls(_ raw: Any, param: String) throws -> [APIToolCall] {
        guard let list = raw as? [Any] else { throw OpenAIError.invalid(param, "'\(param)' must be a list of tool calls") }
        return try list.enumerated().map { k, item in
            guard let call = item as? [String: Any], let function = call["function"] as? [String: Any],
                  let name = function["name"] as? String else {
                throw OpenAIError.invalid("\(param)[\(k)]", "'\(param)[\(k)]' must be {\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}}")
            }
            let arguments: String
            switch function["arguments"] {
            case let s as String: arguments = s
            case nil, is NSNull: arguments = "{}"
            case let other?:
                arguments = String(decoding: (try? JSONSerialization.data(withJSONObject: other, options: [.sortedKeys])) ?? Data("{}".utf8), as: UTF8.self)
            }
            return APIToolCall(id: call["id"] as? String ?? "call_\(k)", name: name, arguments: arguments)
        }
    }

    static func prompts(_ raw: Any) throws -> [APIPrompt] {
        let bad = OpenAIError.invalid("prompt", "'prompt' must be a string, a list of strings, a list of token ids, or a list of token-id lists")
        if let s = raw as? String { return [.text(s)] }
        guard let list = raw as? [Any], !list.isEmpty else { throw bad }
        if let strings = list as? [String] { return strings.map { .text($0) } }
        func ids(_ any: Any) throws -> [Int32] {
            guard let l = any as? [Any], !l.isEmpty else { throw bad }
            return try l.map {
                guard let n = $0 as? NSNumber, !isJSONBool($0), let v = Int32(exactly: n.doubleValue), v >= 0 else { throw bad }
                return v
            }
        }
        if list.first is [Any] { return try list.map { .tokens(try ids($0)) } }
        return [.tokens(try ids(list))]
    }
}

/// Whether a JSONSerialization value is a JSON boolean. (On Linux, `0 is Bool` and `1 is Bool` are
/// true for numbers too, so the check looks at the boxed type.)
public func isJSONBool(_ value: Any) -> Bool {
    if type(of: value) == Bool.self { return true }
    guard let n = value as? NSNumber else { return false }
    return String(cString: n.objCType) == "c"
}
