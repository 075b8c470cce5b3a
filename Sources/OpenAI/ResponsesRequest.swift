import Foundation
import Grammar

/// A `POST /v1/responses` body (the OpenAI Responses API) as its Codable wire types, decoded once
/// by `JSONValueDecoder`. `ResponsesRequest.completionRequest` turns it into the one internal
/// request; everything that would change the answer and is not supported is a 400 naming the
/// field, never dropped.
struct ResponsesRequest: Decodable {
    var model: String
    var input: [InputItem]
    var instructions: String?
    var maxOutputTokens: Int?
    var temperature: Float?
    var topP: Float?
    var tools: [FunctionTool]
    var toolChoice: ToolChoiceWire?
    var text: TextConfig?
    var parallelToolCalls: Bool?
    var stream: Bool
    var previousResponseID: String?
    /// Whether to keep the response (nil: when the store is on).
    var store: Bool?
    /// Up to 16 string pairs, returned with the response.
    var metadata: [(String, String)]
    /// CastServe extension: false turns speculative decoding off for this request.
    var speculation: Bool

    enum CodingKeys: String, CodingKey, CaseIterable {
        case model, input, instructions, maxOutputTokens = "max_output_tokens", temperature, topP = "top_p", tools
        case toolChoice = "tool_choice", text, parallelToolCalls = "parallel_tool_calls", stream
        case previousResponseID = "previous_response_id", store, metadata, speculation
        // Accepted: they do not change the answer (or only say what already happens).
        case user, truncation, include, serviceTier = "service_tier", promptCacheKey = "prompt_cache_key"
        case safetyIdentifier = "safety_identifier", streamOptions = "stream_options", background, reasoning
        case topLogprobs = "top_logprobs", maxToolCalls = "max_tool_calls", prompt, conversation
    }

    /// Fields the Responses API has that CastServe cannot honour, and why; each is a 400 when sent
    /// with a value that asks for it.
    static func refuse(_ field: String, _ why: String) -> OpenAIError {
        OpenAIError.invalid(field, "'\(field)' is not supported: \(why)", code: "unsupported_parameter")
    }

    init(from decoder: Decoder) throws {
        try decoder.refuseUnknownKeys(Set(CodingKeys.allCases.map(\.rawValue)), what: "a Responses API request")
        let c = try decoder.container(keyedBy: CodingKeys.self)
        model = try c.decodeIfPresent(String.self, forKey: .model) ?? ""
        guard !model.isEmpty else {
            throw OpenAIError.invalid("model", "'model' is required: the loaded model's id or 'default' (see GET /v1/models)", code: "missing_required_parameter")
        }
        if let text = try? c.decode(String.self, forKey: .input) {
            input = [InputItem.message(role: "user", text: text)]
        } else if c.contains(.input), try !c.decodeNil(forKey: .input) {
            guard (try? c.nestedUnkeyedContainer(forKey: .input)) != nil else {
                throw OpenAIError.invalid("input", "'input' must be a string or a list of items (messages, function_call, function_call_output)")
            }
            input = try c.decode([InputItem].self, forKey: .input)
        } else {
            input = []
        }
        instructions = try c.decodeIfPresent(String.self, forKey: .instructions)
        maxOutputTokens = try c.decodeIfPresent(Int.self, forKey: .maxOutputTokens)
        if let m = maxOutputTokens, !(1...1_048_576).contains(m) {
            throw OpenAIError.invalid("max_output_tokens", "'max_output_tokens' is \(m); it must be between 1 and 1048576")
        }
        temperature = try c.decodeIfPresent(Float.self, forKey: .temperature)
        if let t = temperature, !(0...2).contains(t) { throw OpenAIError.invalid("temperature", "'temperature' is \(t); it must be between 0 and 2") }
        topP = try c.decodeIfPresent(Float.self, forKey: .topP)
        if let p = topP, !(p > 0 && p <= 1) { throw OpenAIError.invalid("top_p", "'top_p' is \(p); it must be greater than 0 and at most 1") }
        tools = try c.decodeIfPresent([FunctionTool].self, forKey: .tools) ?? []
        guard tools.count <= 128 else { throw OpenAIError.invalid("tools", "'tools' holds \(tools.count) functions; at most 128") }
        for (i, t) in tools.enumerated() where tools[..<i].contains(where: { $0.name == t.name }) {
            throw OpenAIError.invalid("tools[\(i)].name", "two tools are named '\(t.name)'; names must be unique")
        }
        toolChoice = try c.decodeIfPresent(ToolChoiceWire.self, forKey: .toolChoice)
        text = try c.decodeIfPresent(TextConfig.self, forKey: .text)
        parallelToolCalls = try c.decodeIfPresent(Bool.self, forKey: .parallelToolCalls)
        stream = try c.decodeIfPresent(Bool.self, forKey: .stream) ?? false
        previousResponseID = try c.decodeIfPresent(String.self, forKey: .previousResponseID)
        store = try c.decodeIfPresent(Bool.self, forKey: .store)
        speculation = try c.decodeIfPresent(Bool.self, forKey: .speculation) ?? true
        metadata = []
        if let raw = try c.decodeIfPresent(OrderedJSON.self, forKey: .metadata) {
            switch raw.value {
            case .null: break
            case .object(let members):
                guard members.count <= 16 else { throw OpenAIError.invalid("metadata", "'metadata' holds \(members.count) pairs; at most 16") }
                metadata = try members.map { key, value in
                    guard case .string(let s) = value else { throw OpenAIError.invalid("metadata.\(key)", "'metadata' values must be strings") }
                    return (key, s)
                }
            default: throw OpenAIError.invalid("metadata", "'metadata' must be an object of string values")
            }
        }
        guard !input.isEmpty || previousResponseID != nil else {
            throw OpenAIError.invalid("input", "'input' is required: a string or a non-empty list of items", code: "missing_required_parameter")
        }

        // Fields accepted for what they are, and refused when they ask for what CastServe lacks.
        _ = try c.decodeIfPresent(String.self, forKey: .user)
        _ = try c.decodeIfPresent(String.self, forKey: .serviceTier)
        _ = try c.decodeIfPresent(String.self, forKey: .promptCacheKey)
        _ = try c.decodeIfPresent(String.self, forKey: .safetyIdentifier)
        _ = try c.decodeIfPresent(OrderedJSON.self, forKey: .streamOptions)
        if let t = try c.decodeIfPresent(String.self, forKey: .truncation), t != "disabled" {
            throw Self.refuse("truncation", "'\(t)' would drop input items to fit the context; CastServe only has 'disabled' (a prompt over the context length is a 400)")
        }
        if let include = try c.decodeIfPresent([String].self, forKey: .include), let first = include.first {
            throw Self.refuse("include", "CastServe has no extra output to include ('\(first)'); send an empty list or leave it out")
        }
        if try c.decodeIfPresent(Bool.self, forKey: .background) == true {
            throw Self.refuse("background", "responses run in the foreground; leave 'background' out or false")
        }
        if let r = try c.decodeIfPresent(OrderedJSON.self, forKey: .reasoning), case .object(let members) = r.value,
           members.contains(where: { ["effort", "summary", "generate_summary"].contains($0.0) && $0.1 != .null }) {
            throw Self.refuse("reasoning", "the model does not take a reasoning effort or summary; leave 'reasoning' out")
        }
        if let n = try c.decodeIfPresent(Int.self, forKey: .topLogprobs), n > 0 {
            throw Self.refuse("top_logprobs", "log-probabilities are served on POST /v1/chat/completions ('logprobs', 'top_logprobs')")
        }
        if try c.decodeIfPresent(Int.self, forKey: .maxToolCalls) != nil {
            throw Self.refuse("max_tool_calls", "limit calls with 'parallel_tool_calls': false (exactly one call) instead")
        }
        if let p = try c.decodeIfPresent(OrderedJSON.self, forKey: .prompt), p.value != .null {
            throw Self.refuse("prompt", "stored prompt templates live on OpenAI's servers; send the text as 'input'")
        }
        if let v = try c.decodeIfPresent(OrderedJSON.self, forKey: .conversation), v.value != .null {
            throw Self.refuse("conversation", "conversations live on OpenAI's servers; continue with 'previous_response_id' instead")
        }
    }
}

// MARK: - Input items

extension ResponsesRequest {
    /// One item of `input`: a message (text content), a function call the model made earlier, or
    /// a function call's output.
    enum InputItem: Decodable, Equatable {
        case message(role: String, text: String)
        case functionCall(callID: String, name: String, arguments: String)
        case functionCallOutput(callID: String, output: String)

        enum Keys: String, CodingKey { case type, role, content, callID = "call_id", name, arguments, output, id, status }

        /// Item types of OpenAI's built-in tools and other server-side state, refused by name.
        static let serverSideTypes: Set<String> = [
            "reasoning", "item_reference", "web_search_call", "file_search_call", "computer_call", "computer_call_output",
            "code_interpreter_call", "image_generation_call", "local_shell_call", "local_shell_call_output", "mcp_call",
            "mcp_list_tools", "mcp_approval_request", "mcp_approval_response", "custom_tool_call", "custom_tool_call_output",
        ]

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: Keys.self)
            let at = JSONValueDecoder.param(decoder.codingPath)
            let type = try c.decodeIfPresent(String.self, forKey: .type) ?? "message"
            switch type {
            case "message":
                try decoder.refuseUnknownKeys(["type", "role", "content", "id", "status"], what: "a message item")
                let role = try c.decode(String.self, forKey: .role)
                guard ["user", "assistant", "system", "developer"].contains(role) else {
                    throw OpenAIError.invalid("\(at).role", "'\(at).role' is '\(role)'; use user, assistant, system or developer")
                }
                let text: String
                if let s = try? c.decode(String.self, forKey: .content) {
                    text = s
                } else {
                    text = try c.decode([ContentPart].self, forKey: .content).map(\.text).joined()
                }
                self = .message(role: role == "developer" ? "system" : role, text: text)
            case "function_call":
                try decoder.refuseUnknownKeys(["type", "call_id", "name", "arguments", "id", "status"], what: "a function_call item")
                self = .functionCall(callID: try c.decode(String.self, forKey: .callID), name: try c.decode(String.self, forKey: .name),
                                     arguments: try c.decode(String.self, forKey: .arguments))
            case "function_call_output":
                try decoder.refuseUnknownKeys(["type", "call_id", "output", "id", "status"], what: "a function_call_output item")
                let output: String
                if let s = try? c.decode(String.self, forKey: .output) {
                    output = s
                } else {
                    output = try c.decode([ContentPart].self, forKey: .output).map(\.text).joined()
                }
                self = .functionCallOutput(callID: try c.decode(String.self, forKey: .callID), output: output)
            case _ where Self.serverSideTypes.contains(type):
                throw OpenAIError.invalid("\(at).type", "'\(at).type' is '\(type)': an item of OpenAI's server-side tools or state, which CastServe does not have; send messages, function_call and function_call_output items", code: "unsupported_parameter")
            default:
                throw OpenAIError.invalid("\(at).type", "'\(at).type' is '\(type)'; use message, function_call or function_call_output")
            }
        }
    }

    /// A text part of a message's content (`input_text`, or `output_text` of an earlier reply).
    struct ContentPart: Decodable {
        var text: String

        enum Keys: String, CodingKey { case type, text, annotations, logprobs }

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: Keys.self)
            let at = JSONValueDecoder.param(decoder.codingPath)
            let type = try c.decode(String.self, forKey: .type)
            switch type {
            case "input_text", "output_text", "text":
                try decoder.refuseUnknownKeys(["type", "text", "annotations", "logprobs"], what: "a text part")
                text = try c.decode(String.self, forKey: .text)
            case "refusal":
                throw OpenAIError.invalid("\(at).type", "'\(at)' is a refusal part; send the refusal text as an output_text part")
            default:
                throw OpenAIError.invalid("\(at).type", "'\(at).type' is '\(type)': the model reads text only; send input_text parts (images, files and audio are not supported)",
                                          code: "unsupported_parameter")
            }
        }
    }

    /// The conversation the chat template renders: `instructions` first as the system message,
    /// then `history` (a stored conversation `previous_response_id` continues), then `input`.
    /// Consecutive function calls join the assistant turn before them, or make one; each
    /// function output becomes a `tool` message answering its call id.
    static func conversation(instructions: String?, history: [APIMessage], input: [InputItem]) -> [APIMessage] {
        var out: [APIMessage] = []
        if let instructions { out.append(APIMessage(role: "system", content: instructions)) }
        out += history
        var lastWasCallTurn = false
        for item in input {
            switch item {
            case .message(let role, let text):
                out.append(APIMessage(role: role, content: text))
                lastWasCallTurn = role == "assistant"
            case .functionCall(let id, let name, let arguments):
                let call = APIToolCall(id: id, name: name, arguments: arguments)
                if lastWasCallTurn, let last = out.indices.last, out[last].role == "assistant" {
                    out[last].toolCalls.append(call)
                } else {
                    out.append(APIMessage(role: "assistant", content: "", toolCalls: [call]))
                }
                lastWasCallTurn = true
            case .functionCallOutput(let id, let output):
                var m = APIMessage(role: "tool", content: output)
                m.toolCallID = id
                out.append(m)
                lastWasCallTurn = false
            }
        }
        return out
    }
}

// MARK: - Tools and output format

extension ResponsesRequest {
    /// A function tool (`{"type": "function", "name", "description", "parameters", "strict"}`).
    struct FunctionTool: Decodable {
        var name: String
        var description: String?
        var parameters: JSONValue
        var strict: Bool?

        enum Keys: String, CodingKey { case type, name, description, parameters, strict }

        /// OpenAI's built-in tools: they run on OpenAI's servers.
        static let builtIn: Set<String> = [
            "web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11", "file_search",
            "computer_use_preview", "computer_use", "code_interpreter", "image_generation", "mcp", "local_shell", "shell",
            "apply_patch", "custom",
        ]

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: Keys.self)
            let at = JSONValueDecoder.param(decoder.codingPath)
            let type = try c.decode(String.self, forKey: .type)
            guard type == "function" else {
                if Self.builtIn.contains(type) {
                    throw OpenAIError.invalid("\(at).type", "'\(at)' is the built-in tool '\(type)', which runs on OpenAI's servers; CastServe cannot run it. Define a function tool and run it yourself",
                                              code: "unsupported_parameter")
                }
                throw OpenAIError.invalid("\(at).type", "'\(at).type' is '\(type)'; only function tools ({\"type\": \"function\", \"name\", \"parameters\"}) are supported")
            }
            try decoder.refuseUnknownKeys(["type", "name", "description", "parameters", "strict"], what: "a function tool")
            name = try c.decode(String.self, forKey: .name)
            guard !name.isEmpty, name.count <= 64,
                  name.unicodeScalars.allSatisfy({ ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || $0 == "_" || $0 == "-" }) else {
                throw OpenAIError.invalid("\(at).name", "'\(at).name' must be 1-64 letters, digits, '_' or '-'")
            }
            description = try c.decodeIfPresent(String.self, forKey: .description)
            let schema = try c.decodeIfPresent(OrderedJSON.self, forKey: .parameters)?.value ?? .null
            switch schema {
            case .null: parameters = .object([])
            case .object: parameters = schema
            default: throw OpenAIError.invalid("\(at).parameters", "'\(at).parameters' must be a JSON schema object")
            }
            strict = try c.decodeIfPresent(Bool.self, forKey: .strict)
        }
    }

    /// `tool_choice`: none, auto, required, or `{"type": "function", "name": ...}`.
    struct ToolChoiceWire: Decodable {
        var choice: ToolChoice

        enum Keys: String, CodingKey { case type, name }

        init(from decoder: Decoder) throws {
            if let s = try? decoder.singleValueContainer().decode(String.self) {
                switch s {
                case "none": choice = .none
                case "auto": choice = .auto
                case "required": choice = .required
                default: throw OpenAIError.invalid("tool_choice", "'tool_choice' is '\(s)'; use none, auto, required or {\"type\": \"function\", \"name\": ...}")
                }
                return
            }
            let c = try decoder.container(keyedBy: Keys.self)
            let type = try c.decode(String.self, forKey: .type)
            guard type == "function" else {
                throw OpenAIError.invalid("tool_choice.type", "'tool_choice.type' is '\(type)'; CastServe forces only function tools: {\"type\": \"function\", \"name\": ...}",
                                          code: "unsupported_parameter")
            }
            try decoder.refuseUnknownKeys(["type", "name"], what: "a tool_choice")
            choice = .function(try c.decode(String.self, forKey: .name))
        }
    }

    /// `text`: the output format (and verbosity, which only the default is accepted for).
    struct TextConfig: Decodable {
        var format: Format

        enum Keys: String, CodingKey { case format, verbosity }

        enum Format: Decodable {
            case text, jsonObject
            case jsonSchema(name: String, schema: JSONValue, strict: Bool?)

            enum Keys: String, CodingKey { case type, name, schema, strict, description }

            init(from decoder: Decoder) throws {
                let c = try decoder.container(keyedBy: Keys.self)
                switch try c.decode(String.self, forKey: .type) {
                case "text":
                    try decoder.refuseUnknownKeys(["type"], what: "a text format")
                    self = .text
                case "json_object":
                    try decoder.refuseUnknownKeys(["type"], what: "a json_object format")
                    self = .jsonObject
                case "json_schema":
                    try decoder.refuseUnknownKeys(["type", "name", "schema", "strict", "description"], what: "a json_schema format")
                    _ = try c.decodeIfPresent(String.self, forKey: .description)
                    self = .jsonSchema(name: try c.decode(String.self, forKey: .name), schema: try c.decode(OrderedJSON.self, forKey: .schema).value,
                                       strict: try c.decodeIfPresent(Bool.self, forKey: .strict))
                case let other:
                    throw OpenAIError.invalid("text.format.type", "'text.format.type' is '\(other)'; use text, json_object or json_schema")
                }
            }
        }

        init(from decoder: Decoder) throws {
            try decoder.refuseUnknownKeys(["format", "verbosity"], what: "'text'")
            let c = try decoder.container(keyedBy: Keys.self)
            format = try c.decodeIfPresent(Format.self, forKey: .format) ?? .text
            if let v = try c.decodeIfPresent(String.self, forKey: .verbosity), v != "medium" {
                throw Self.refuseVerbosity(v)
            }
        }

        static func refuseVerbosity(_ v: String) -> OpenAIError {
            ResponsesRequest.refuse("text.verbosity", "'\(v)' asks for a shorter or longer answer, which the model cannot be told; leave it out or 'medium'")
        }
    }
}

// MARK: - The internal request

extension ResponsesRequest {
    /// The one internal request for `messages` (the whole conversation): sampling, limits, the
    /// output grammar from `text.format` or the tools.
    func completionRequest(messages: [APIMessage], defaults: SamplingDefaults) throws -> CompletionRequest {
        var r = CompletionRequest(model: model, prompts: [.chat(messages)])
        r.maxTokens = maxOutputTokens
        r.temperature = temperature ?? defaults.temperature
        r.topP = topP ?? defaults.topP
        r.topK = defaults.topK
        r.minP = defaults.minP
        r.presencePenalty = defaults.presencePenalty
        r.frequencyPenalty = defaults.frequencyPenalty
        r.stream = stream
        r.speculation = speculation
        r.tools = tools.map { ToolDefinition(name: $0.name, description: $0.description, parameters: $0.parameters) }
        r.toolChoice = toolChoice?.choice ?? (tools.isEmpty ? .none : .auto)
        if case .function(let name) = r.toolChoice, !tools.contains(where: { $0.name == name }) {
            throw OpenAIError.invalid("tool_choice", "'tool_choice' names '\(name)', which is not among 'tools' (\(tools.map(\.name).joined(separator: ", ")))")
        }
        if tools.isEmpty && (r.toolChoice == .required) {
            throw OpenAIError.invalid("tool_choice", "'tool_choice' asks for a tool call but 'tools' is empty")
        }
        r.parallelToolCalls = parallelToolCalls ?? true
        var sources: [(param: String, gbnf: String)] = []
        switch text?.format {
        case .jsonObject?: sources.append(("text.format", JSONSchemaGrammar.gbnfForAnyObject()))
        case .jsonSchema(_, let schema, _)?: sources.append(("text.format.schema", try CompletionRequest.compileSchema(schema, param: "text.format.schema")))
        case .text?, nil: break
        }
        if r.usesTools {
            sources.append(("tools", try ToolCallFormat.grammar(tools: r.tools, choice: r.toolChoice, parallel: r.parallelToolCalls)))
        }
        guard sources.count <= 1 else {
            throw OpenAIError.invalid("text.format", "'text.format' and 'tools' both constrain the output; send a JSON format or tools, not both (or 'tool_choice': 'none')")
        }
        r.outputGrammar = sources.first?.gbnf
        r.outputGrammarParam = sources.first?.param
        return r
    }
}
