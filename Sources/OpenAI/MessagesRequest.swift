import Foundation
import Grammar

/// A validated POST /v1/messages (Anthropic Messages API) or /v1/messages/count_tokens request,
/// as the chat completions request it equals: the same conversation through either API renders
/// the same prompt and, greedy, generates the same reply.
///
/// Mapping: `system` (a string or text blocks) becomes the system message; a user turn's
/// `tool_result` blocks become `tool` messages (before the turn's text); an assistant turn's
/// `tool_use` blocks become its tool calls; `stop_sequences` are stop strings; `tool_choice`
/// auto/any/tool/none is auto/required/named/none of the tool-call grammar
/// (`disable_parallel_tool_use` allows one call); `output_config.format` (a JSON schema) is the
/// output grammar, as `response_format` is; `thinking` enabled/disabled is the template's
/// `enable_thinking` (`parseThinking`). Image and document blocks, server tools,
/// `output_config.effort` and every other field get a 400 naming the field. Fields that
/// change nothing in the answer are accepted: `metadata`, `cache_control` (prefixes are cached
/// anyway), `service_tier`, `speed`, `inference_geo`, `user_profile_id`, `workspace_id`.
struct MessagesRequest {
    /// The equivalent chat request (`prompts` holds one `.chat`).
    var chat: CompletionRequest
    var stream: Bool

    static let fields = ["model", "messages", "max_tokens", "system", "stop_sequences", "temperature", "top_p", "top_k",
                         "tools", "tool_choice", "stream", "output_config", "speculation", "metadata", "cache_control",
                         "service_tier", "speed", "inference_geo", "user_profile_id", "workspace_id", "thinking"]
    static let countFields = ["model", "messages", "system", "tools", "tool_choice", "output_config", "cache_control", "thinking"]

    /// Parses a body; `countOnly` (count_tokens) makes `max_tokens` optional and refuses `stream`.
    static func parse(_ body: Data, countOnly: Bool = false, defaults: SamplingDefaults = .openAI) throws -> MessagesRequest {
        let json = try JSONFields.body(body)
        let route = countOnly ? "/v1/messages/count_tokens" : "/v1/messages"
        try json.refuseUnknown(countOnly ? countFields : fields, route: route)
        var r = CompletionRequest(model: try json.string("model") ?? "", prompts: [])
        guard !r.model.isEmpty else {
            throw OpenAIError.invalid("model", "'model' is required: the loaded model's id or 'default' (see GET /v1/models)", code: "missing_required_parameter")
        }
        if let m = try json.int("max_tokens", 1...1_048_576) {
            r.maxTokens = m
        } else if !countOnly {
            throw OpenAIError.invalid("max_tokens", "'max_tokens' is required: the most tokens to generate (an integer of at least 1)",
                                      code: "missing_required_parameter")
        }
        var messages: [APIMessage] = []
        if let system = json["system"] {
            messages.append(APIMessage(role: "system", content: try textBlocks(system, param: "system")))
        }
        guard let raw = try json.array("messages", expected: "a non-empty list of {\"role\", \"content\"}"), !raw.isEmpty else {
            throw OpenAIError.invalid("messages", "'messages' is required: a non-empty list of {\"role\": \"user\" | \"assistant\", \"content\"}",
                                      code: "missing_required_parameter")
        }
        for (i, item) in raw.enumerated() { messages += try turn(try JSONFields(item, path: "messages[\(i)]")) }
        r.prompts = [.chat(messages)]

        r.temperature = try json.number("temperature", 0...1) ?? min(defaults.temperature, 1)
        r.topP = try json.number("top_p", 0...1) ?? defaults.topP
        guard r.topP > 0 else { throw OpenAIError.invalid("top_p", "'top_p' must be greater than 0 and at most 1") }
        r.topK = try json.int("top_k", 0...1_000_000) ?? defaults.topK
        r.minP = defaults.minP
        r.presencePenalty = defaults.presencePenalty
        r.frequencyPenalty = defaults.frequencyPenalty
        if let raw = try json.array("stop_sequences", expected: "a list of strings") {
            r.stop = try raw.enumerated().map { k, v in
                guard case .string(let s) = v, !s.isEmpty else {
                    throw OpenAIError.invalid("stop_sequences[\(k)]", "'stop_sequences[\(k)]' must be a non-empty string")
                }
                return s
            }
            guard r.stop.count <= 64 else { throw OpenAIError.invalid("stop_sequences", "'stop_sequences' holds \(r.stop.count) strings; at most 64") }
        }
        r.speculation = try json.bool("speculation") ?? true
        _ = try json.object("metadata")
        _ = try json.object("cache_control")
        for key in ["service_tier", "speed", "inference_geo", "user_profile_id", "workspace_id"] { _ = try json.string(key) }
        try parseTools(json, into: &r)
        try parseThinking(json, into: &r)
        if let config = try json.object("output_config") {
            try config.refuseUnknown(["format"], route: "'output_config' of " + route)
            if let format = try config.object("format") {
                guard try format.string("type") == "json_schema", let schema = format["schema"], case .object = schema else {
                    throw format.invalid("type", "'output_config.format' must be {\"type\": \"json_schema\", \"schema\": {...}}")
                }
                guard !r.usesTools else {
                    throw OpenAIError.invalid("output_config.format", "'tools' and 'output_config.format' both constrain the output; send only one of them")
                }
                r.outputGrammar = try CompletionRequest.compileSchema(schema, param: "output_config.format.schema")
                r.outputGrammarParam = "output_config.format.schema"
            }
        }
        let stream = try json.bool("stream") ?? false
        return MessagesRequest(chat: r, stream: stream)
    }

    // MARK: - Content

    /// A string, or a list of text blocks joined.
    static func textBlocks(_ value: JSONValue, param: String) throws -> String {
        switch value {
        case .string(let s): return s
        case .array(let blocks):
            return try blocks.enumerated().map { k, block in
                let b = try JSONFields(block, path: "\(param)[\(k)]")
                guard case .string(let type)? = b["type"], type == "text", let text = try b.string("text") else {
                    throw OpenAIError.invalid("\(param)[\(k)]", "'\(param)[\(k)]' must be a text block {\"type\": \"text\", \"text\": ...}")
                }
                return text
            }.joined()
        default:
            throw OpenAIError.invalid(param, "'\(param)' must be a string or a list of text blocks")
        }
    }

    /// One turn of `messages`, as chat messages: a user turn's tool results first (as `tool`
    /// messages), then its text; an assistant turn's text with its tool calls.
    static func turn(_ m: JSONFields) throws -> [APIMessage] {
        guard case .string(let role)? = m["role"], role == "user" || role == "assistant" else {
            throw m.invalid("role", "'\(m.name("role"))' must be user or assistant (the system prompt goes in 'system')")
        }
        guard let content = m["content"] else {
            throw m.invalid("content", "'\(m.name("content"))' is required: a string or a list of content blocks", code: "missing_required_parameter")
        }
        if case .string(let s) = content { return [APIMessage(role: role, content: s)] }
        guard case .array(let blocks) = content else {
            throw m.invalid("content", "'\(m.name("content"))' must be a string or a list of content blocks")
        }
        var text = ""
        var calls: [APIToolCall] = []
        var results: [APIMessage] = []
        for (k, item) in blocks.enumerated() {
            let b = try JSONFields(item, path: m.name("content") + "[\(k)]")
            let type = try b.string("type") ?? ""
            switch (type, role) {
            case ("text", _):
                guard let t = try b.string("text") else { throw b.invalid("text", "'\(b.name("text"))' is required: the block's text") }
                text += t
            case ("tool_use", "assistant"):
                guard let id = try b.string("id"), let name = try b.string("name") else {
                    throw OpenAIError.invalid(b.path, "'\(b.path)' must be {\"type\": \"tool_use\", \"id\", \"name\", \"input\"}")
                }
                let input = b["input"] ?? .object([])
                guard case .object = input else { throw b.invalid("input", "'\(b.name("input"))' must be an object (the call's arguments)") }
                calls.append(APIToolCall(id: id, name: name, arguments: input.text))
            case ("tool_result", "user"):
                guard let id = try b.string("tool_use_id") else {
                    throw b.invalid("tool_use_id", "'\(b.name("tool_use_id"))' is required: the id of the tool_use block this answers")
                }
                var result = try b["content"].map { try textBlocks($0, param: b.name("content")) } ?? ""
                if try b.bool("is_error") == true { result = "Error: " + result }
                results.append(APIMessage(role: "tool", content: result, toolCallID: id))
            case ("image", _), ("document", _):
                throw OpenAIError.invalid(b.path, "'\(b.path)' is an \(type) block; this server serves a text-only model: send text blocks only",
                                          code: "unsupported_content")
            default:
                let allowed = role == "user" ? "text or tool_result" : "text or tool_use"
                throw b.invalid("type", "'\(b.name("type"))' is '\(type)'; a \(role) turn takes \(allowed) blocks")
            }
        }
        var out = results
        if role == "assistant" || !text.isEmpty || results.isEmpty { out.append(APIMessage(role: role, content: text, toolCalls: calls)) }
        return out
    }

    // MARK: - Tools

    /// `tools` (client tools with `input_schema`) and `tool_choice`, into the chat request's tool
    /// fields and its tool-call grammar.
    static func parseTools(_ json: JSONFields, into r: inout CompletionRequest) throws {
        if let list = try json.array("tools", expected: "a list of {\"name\", \"description\", \"input_schema\"}") {
            guard list.count <= 128 else { throw OpenAIError.invalid("tools", "'tools' holds \(list.count) tools; at most 128") }
            for (i, item) in list.enumerated() {
                let t = try JSONFields(item, path: "tools[\(i)]")
                if let type = try t.string("type"), type != "custom" {
                    throw t.invalid("type", "'\(t.name("type"))' is '\(type)', a server tool this server cannot run; send client tools ({\"name\", \"description\", \"input_schema\"})")
                }
                guard let name = try t.string("name"), CompletionRequest.isValidToolName(name) else {
                    throw t.invalid("name", "'\(t.name("name"))' must be 1-64 letters, digits, '_' or '-'")
                }
                guard !r.tools.contains(where: { $0.name == name }) else {
                    throw t.invalid("name", "two tools are named '\(name)'; names must be unique")
                }
                guard let schema = t["input_schema"], case .object = schema else {
                    throw t.invalid("input_schema", "'\(t.name("input_schema"))' is required: the JSON schema (an object) of the tool's input")
                }
                r.tools.append(ToolDefinition(name: name, description: try t.string("description"), parameters: schema))
            }
        }
        r.toolChoice = r.tools.isEmpty ? .none : .auto
        if let choice = try json.object("tool_choice", expected: "{\"type\": \"auto\" | \"any\" | \"tool\" | \"none\"}") {
            switch try choice.string("type") {
            case "auto": r.toolChoice = .auto
            case "any": r.toolChoice = .required
            case "none": r.toolChoice = .none
            case "tool":
                guard let name = try choice.string("name") else {
                    throw choice.invalid("name", "'tool_choice.name' is required with type 'tool': the tool to call")
                }
                guard r.tools.contains(where: { $0.name == name }) else {
                    throw choice.invalid("name", "'tool_choice.name' is '\(name)', which is not among 'tools' (\(r.tools.map(\.name).joined(separator: ", ")))")
                }
                r.toolChoice = .function(name)
            default:
                throw choice.invalid("type", "'tool_choice.type' must be auto, any, tool or none")
            }
            if r.tools.isEmpty && r.toolChoice != .none && r.toolChoice != .auto {
                throw OpenAIError.invalid("tool_choice", "'tool_choice' asks for a tool call but 'tools' is empty")
            }
            if r.tools.isEmpty { r.toolChoice = .none }
            r.parallelToolCalls = !(try choice.bool("disable_parallel_tool_use") ?? false)
        }
        if r.usesTools {
            r.outputGrammar = try ToolCallFormat.grammar(tools: r.tools, choice: r.toolChoice, parallel: r.parallelToolCalls,
                                                         schemaParam: { "tools[\($0)].input_schema" })
            r.outputGrammarParam = "tools"
        }
    }

    /// `thinking` (extended thinking) as the chat template's `enable_thinking`, as
    /// `chat_template_kwargs` sets it on chat completions: `{"type": "enabled", "budget_tokens": N}`
    /// is true, `{"type": "disabled"}` false. `budget_tokens` is checked as Anthropic checks it
    /// (an integer of at least 1024, below `max_tokens`) but not enforced: the model thinks until
    /// it closes its think block or `max_tokens` runs out. A model whose template does not read
    /// `enable_thinking` gets a 400 naming `thinking` (`checkTemplateContext`), either way: a
    /// model that always thinks must not be told it was switched off.
    static func parseThinking(_ json: JSONFields, into r: inout CompletionRequest) throws {
        guard let thinking = try json.object("thinking", expected: "{\"type\": \"enabled\", \"budget_tokens\"} or {\"type\": \"disabled\"}") else { return }
        switch try thinking.string("type") {
        case "enabled":
            try thinking.refuseUnknown(["type", "budget_tokens"], route: "'thinking'")
            guard let budget = try thinking.int("budget_tokens", 1024...1_048_576) else {
                throw OpenAIError.invalid("thinking.budget_tokens", "'thinking.budget_tokens' is required with type 'enabled': an integer of at least 1024, below 'max_tokens'",
                                          code: "missing_required_parameter")
            }
            if let maxTokens = r.maxTokens, budget >= maxTokens {
                throw OpenAIError.invalid("thinking.budget_tokens", "'thinking.budget_tokens' (\(budget)) must be less than 'max_tokens' (\(maxTokens))")
            }
            r.templateContext.append(("enable_thinking", .bool(true)))
        case "disabled":
            try thinking.refuseUnknown(["type"], route: "'thinking'")
            r.templateContext.append(("enable_thinking", .bool(false)))
        default:
            throw OpenAIError.invalid("thinking.type", "'thinking.type' must be 'enabled' (with 'budget_tokens') or 'disabled'; this server does not support other thinking modes")
        }
        r.enableThinkingParam = "thinking"
    }
}
