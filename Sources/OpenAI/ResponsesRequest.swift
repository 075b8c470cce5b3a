import Foundation
import Grammar

/// A `POST /v1/responses` body (the OpenAI Responses API) as typed values, read once through
/// `JSONFields` (errors name the field's path). `completionRequest` turns it into the
/// `CompletionRequest` it equals; everything that would change the answer and is not supported
/// is a 400 naming the field, never dropped.
struct ResponsesRequest {
    var model: String
    var input: [InputItem]
    var instructions: String?
    var maxOutputTokens: Int?
    var temperature: Float?
    var topP: Float?
    var tools: [FunctionTool]
    var toolChoice: ToolChoice?
    var text: TextFormat?
    var parallelToolCalls: Bool?
    var stream: Bool
    var previousResponseID: String?
    /// Whether to keep the response (nil: when the store is on).
    var store: Bool?
    /// Up to 16 string pairs, returned with the response.
    var metadata: [(String, String)]
    /// CastServe extension: false turns speculative decoding off for this request.
    var speculation: Bool

    /// Every field the route reads. Besides those that shape the answer: accepted as they are
    /// (`user`, `service_tier`, `prompt_cache_key`, `safety_identifier`, `stream_options`), and
    /// accepted only with a value that asks for nothing CastServe lacks (the rest).
    static let fields = ["model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "tools", "tool_choice", "text",
                         "parallel_tool_calls", "stream", "previous_response_id", "store", "metadata", "speculation",
                         "user", "service_tier", "prompt_cache_key", "safety_identifier", "stream_options",
                         "truncation", "include", "background", "reasoning", "top_logprobs", "max_tool_calls", "prompt", "conversation"]

    /// A 400 for a field CastServe cannot honour, and why.
    static func refuse(_ field: String, _ why: String) -> OpenAIError {
        OpenAIError.invalid(field, "'\(field)' is not supported: \(why)", code: "unsupported_parameter")
    }

    /// Parses and validates a request body.
    static func parse(_ body: Data) throws -> ResponsesRequest {
        let json = try JSONFields.body(body)
        try json.refuseUnknown(fields, route: "POST /v1/responses")
        let model = try json.string("model") ?? ""
        guard !model.isEmpty else {
            throw OpenAIError.invalid("model", "'model' is required: the loaded model's id or 'default' (see GET /v1/models)", code: "missing_required_parameter")
        }
        var input: [InputItem] = []
        switch json["input"] {
        case .string(let text)?: input = [.message(role: "user", text: text)]
        case .array(let items)?: input = try items.enumerated().map { try InputItem.parse($1, path: "input[\($0)]") }
        case nil: break
        default: throw json.invalid("input", "'input' must be a string or a list of items (messages, function_call, function_call_output)")
        }
        let tools = try (json.array("tools") ?? []).enumerated().map { try FunctionTool.parse($1, path: "tools[\($0)]") }
        guard tools.count <= 128 else { throw json.invalid("tools", "'tools' holds \(tools.count) functions; at most 128") }
        for (i, t) in tools.enumerated() where tools[..<i].contains(where: { $0.name == t.name }) {
            throw OpenAIError.invalid("tools[\(i)].name", "two tools are named '\(t.name)'; names must be unique")
        }
        var r = ResponsesRequest(model: model, input: input, instructions: try json.string("instructions"),
                                 maxOutputTokens: try json.int("max_output_tokens", 1...1_048_576),
                                 temperature: try json.number("temperature", 0...2), topP: try json.number("top_p", 0...1), tools: tools,
                                 toolChoice: try json["tool_choice"].map { try toolChoice($0) },
                                 text: try json.object("text").map { try TextFormat.parse($0) },
                                 parallelToolCalls: try json.bool("parallel_tool_calls"), stream: try json.bool("stream") ?? false,
                                 previousResponseID: try json.string("previous_response_id"), store: try json.bool("store"),
                                 metadata: [], speculation: try json.bool("speculation") ?? true)
        if let p = r.topP, p <= 0 { throw json.invalid("top_p", "'top_p' must be greater than 0 and at most 1") }
        if let meta = try json.object("metadata") {
            guard meta.members.count <= 16 else { throw json.invalid("metadata", "'metadata' holds \(meta.members.count) pairs; at most 16") }
            r.metadata = try meta.members.map { key, _ in (key, try meta.string(key) ?? "") }
        }
        guard !r.input.isEmpty || r.previousResponseID != nil else {
            throw OpenAIError.invalid("input", "'input' is required: a string or a non-empty list of items", code: "missing_required_parameter")
        }

        // Accepted as they are: they do not change the answer.
        for key in ["user", "service_tier", "prompt_cache_key", "safety_identifier"] { _ = try json.string(key) }
        _ = try json.object("stream_options")
        // Accepted only when they ask for nothing CastServe lacks.
        if let t = try json.string("truncation"), t != "disabled" {
            throw refuse("truncation", "'\(t)' would drop input items to fit the context; CastServe only has 'disabled' (a prompt over the context length is a 400)")
        }
        if let include = try json.array("include"), let first = include.first {
            throw refuse("include", "CastServe has no extra output to include (\(first.text)); send an empty list or leave it out")
        }
        if try json.bool("background") == true {
            throw refuse("background", "responses run in the foreground; leave 'background' out or false")
        }
        if let reasoning = try json.object("reasoning"), reasoning["effort"] != nil || reasoning["summary"] != nil || reasoning["generate_summary"] != nil {
            throw refuse("reasoning", "the model does not take a reasoning effort or summary; leave 'reasoning' out")
        }
        if let n = try json.int("top_logprobs", 0...20), n > 0 {
            throw refuse("top_logprobs", "log-probabilities are served on POST /v1/chat/completions ('logprobs', 'top_logprobs')")
        }
        if json["max_tool_calls"] != nil {
            throw refuse("max_tool_calls", "limit calls with 'parallel_tool_calls': false (exactly one call) instead")
        }
        if json["prompt"] != nil {
            throw refuse("prompt", "stored prompt templates live on OpenAI's servers; send the text as 'input'")
        }
        if json["conversation"] != nil {
            throw refuse("conversation", "conversations live on OpenAI's servers; continue with 'previous_response_id' instead")
        }
        return r
    }
}

// MARK: - Input items

extension ResponsesRequest {
    /// One item of `input`: a message (text content), a function call the model made earlier, or
    /// a function call's output.
    enum InputItem: Equatable {
        case message(role: String, text: String)
        case functionCall(callID: String, name: String, arguments: String)
        case functionCallOutput(callID: String, output: String)

        /// Item types of OpenAI's built-in tools and other server-side state, refused by name.
        static let serverSideTypes: Set<String> = [
            "reasoning", "item_reference", "web_search_call", "file_search_call", "computer_call", "computer_call_output",
            "code_interpreter_call", "image_generation_call", "local_shell_call", "local_shell_call_output", "mcp_call",
            "mcp_list_tools", "mcp_approval_request", "mcp_approval_response", "custom_tool_call", "custom_tool_call_output",
        ]

        static func parse(_ value: JSONValue, path: String) throws -> InputItem {
            let item = try JSONFields(value, path: path, expected: "an item (a message, function_call or function_call_output)")
            func required(_ key: String) throws -> String {
                guard let s = try item.string(key) else {
                    throw item.invalid(key, "'\(item.name(key))' is required", code: "missing_required_parameter")
                }
                return s
            }
            let type = try item.string("type") ?? "message"
            switch type {
            case "message":
                try item.refuseUnknown(["type", "role", "content", "id", "status"], route: "a message item")
                let role = try required("role")
                guard ["user", "assistant", "system", "developer"].contains(role) else {
                    throw item.invalid("role", "'\(item.name("role"))' is '\(role)'; use user, assistant, system or developer")
                }
                return .message(role: role == "developer" ? "system" : role, text: try text(item, "content"))
            case "function_call":
                try item.refuseUnknown(["type", "call_id", "name", "arguments", "id", "status"], route: "a function_call item")
                return .functionCall(callID: try required("call_id"), name: try required("name"), arguments: try required("arguments"))
            case "function_call_output":
                try item.refuseUnknown(["type", "call_id", "output", "id", "status"], route: "a function_call_output item")
                return .functionCallOutput(callID: try required("call_id"), output: try text(item, "output"))
            case _ where serverSideTypes.contains(type):
                throw item.invalid("type", "'\(item.name("type"))' is '\(type)': an item of OpenAI's server-side tools or state, which CastServe does not have; send messages, function_call and function_call_output items",
                                   code: "unsupported_parameter")
            default:
                throw item.invalid("type", "'\(item.name("type"))' is '\(type)'; use message, function_call or function_call_output")
            }
        }

        /// The text at `key`: a string, or a list of text parts (`input_text`, or `output_text`
        /// of an earlier reply) joined.
        static func text(_ item: JSONFields, _ key: String) throws -> String {
            switch item[key] {
            case .string(let s)?: return s
            case .array(let parts)?:
                return try parts.enumerated().map { j, value -> String in
                    let part = try JSONFields(value, path: "\(item.name(key))[\(j)]", expected: "a text part")
                    let type = try part.string("type") ?? ""
                    switch type {
                    case "input_text", "output_text", "text":
                        try part.refuseUnknown(["type", "text", "annotations", "logprobs"], route: "a text part")
                        guard let text = try part.string("text") else {
                            throw part.invalid("text", "'\(part.name("text"))' is required", code: "missing_required_parameter")
                        }
                        return text
                    default:
                        throw part.invalid("type", "'\(part.name("type"))' is '\(type)': the model reads text only; send input_text parts (images, files and audio are not supported)",
                                           code: "unsupported_parameter")
                    }
                }.joined()
            default:
                throw item.invalid(key, "'\(item.name(key))' must be a string or a list of text parts", code: item[key] == nil ? "missing_required_parameter" : "invalid_value")
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
    struct FunctionTool {
        var name: String
        var description: String?
        var parameters: JSONValue
        var strict: Bool?

        /// OpenAI's built-in tools: they run on OpenAI's servers.
        static let builtIn: Set<String> = [
            "web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11", "file_search",
            "computer_use_preview", "computer_use", "code_interpreter", "image_generation", "mcp", "local_shell", "shell",
            "apply_patch", "custom",
        ]

        static func parse(_ value: JSONValue, path: String) throws -> FunctionTool {
            let tool = try JSONFields(value, path: path, expected: "a tool")
            let type = try tool.string("type") ?? ""
            guard type == "function" else {
                if builtIn.contains(type) {
                    throw tool.invalid("type", "'\(path)' is the built-in tool '\(type)', which runs on OpenAI's servers; CastServe cannot run it. Define a function tool and run it yourself",
                                       code: "unsupported_parameter")
                }
                throw tool.invalid("type", "'\(tool.name("type"))' is '\(type)'; only function tools ({\"type\": \"function\", \"name\", \"parameters\"}) are supported")
            }
            try tool.refuseUnknown(["type", "name", "description", "parameters", "strict"], route: "a function tool")
            let name = try tool.string("name") ?? ""
            guard !name.isEmpty, name.count <= 64,
                  name.unicodeScalars.allSatisfy({ ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || $0 == "_" || $0 == "-" }) else {
                throw tool.invalid("name", "'\(tool.name("name"))' must be 1-64 letters, digits, '_' or '-'")
            }
            let parameters = try tool.object("parameters", expected: "a JSON schema object").map { JSONValue.object($0.members) } ?? .object([])
            return FunctionTool(name: name, description: try tool.string("description"), parameters: parameters, strict: try tool.bool("strict"))
        }
    }

    /// `tool_choice`: none, auto, required, or `{"type": "function", "name": ...}`.
    static func toolChoice(_ value: JSONValue) throws -> ToolChoice {
        if case .string(let s) = value {
            switch s {
            case "none": return .none
            case "auto": return .auto
            case "required": return .required
            default: throw OpenAIError.invalid("tool_choice", "'tool_choice' is '\(s)'; use none, auto, required or {\"type\": \"function\", \"name\": ...}")
            }
        }
        let choice = try JSONFields(value, path: "tool_choice", expected: "none, auto, required or {\"type\": \"function\", \"name\": ...}")
        let type = try choice.string("type") ?? ""
        guard type == "function" else {
            throw choice.invalid("type", "'tool_choice.type' is '\(type)'; CastServe forces only function tools: {\"type\": \"function\", \"name\": ...}",
                                 code: "unsupported_parameter")
        }
        try choice.refuseUnknown(["type", "name"], route: "a tool_choice")
        guard let name = try choice.string("name") else {
            throw choice.invalid("name", "'tool_choice.name' is required: the function to call", code: "missing_required_parameter")
        }
        return .function(name)
    }

    /// `text.format`: text, json_object, or json_schema (its schema in document order).
    enum TextFormat {
        case text, jsonObject
        case jsonSchema(name: String, schema: JSONValue, strict: Bool?)

        /// Reads `text` (`format`, and `verbosity`, accepted only as the default).
        static func parse(_ text: JSONFields) throws -> TextFormat {
            try text.refuseUnknown(["format", "verbosity"], route: "'text'")
            if let v = try text.string("verbosity"), v != "medium" {
                throw ResponsesRequest.refuse("text.verbosity", "'\(v)' asks for a shorter or longer answer, which the model cannot be told; leave it out or 'medium'")
            }
            guard let format = try text.object("format") else { return .text }
            switch try format.string("type") {
            case "text"?:
                try format.refuseUnknown(["type"], route: "a text format")
                return .text
            case "json_object"?:
                try format.refuseUnknown(["type"], route: "a json_object format")
                return .jsonObject
            case "json_schema"?:
                try format.refuseUnknown(["type", "name", "schema", "strict", "description"], route: "a json_schema format")
                _ = try format.string("description")
                guard let name = try format.string("name") else {
                    throw format.invalid("name", "'text.format.name' is required", code: "missing_required_parameter")
                }
                guard let schema = try format.object("schema", expected: "a JSON schema object") else {
                    throw format.invalid("schema", "'text.format.schema' is required: a JSON schema object", code: "missing_required_parameter")
                }
                return .jsonSchema(name: name, schema: .object(schema.members), strict: try format.bool("strict"))
            case let other:
                throw format.invalid("type", "'text.format.type' is '\(other ?? "")'; use text, json_object or json_schema")
            }
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
        r.toolChoice = toolChoice ?? (tools.isEmpty ? .none : .auto)
        if case .function(let name) = r.toolChoice, !tools.contains(where: { $0.name == name }) {
            throw OpenAIError.invalid("tool_choice", "'tool_choice' names '\(name)', which is not among 'tools' (\(tools.map(\.name).joined(separator: ", ")))")
        }
        if tools.isEmpty && (r.toolChoice == .required) {
            throw OpenAIError.invalid("tool_choice", "'tool_choice' asks for a tool call but 'tools' is empty")
        }
        r.parallelToolCalls = parallelToolCalls ?? true
        var sources: [(param: String, gbnf: String)] = []
        switch text {
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
