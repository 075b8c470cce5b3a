import Foundation
import Grammar

/// Validation of the fields that constrain the output: `response_format` (json_object,
/// json_schema), llama.cpp's `grammar` (GBNF) and `json_schema`, `tools` / `tool_choice` /
/// `parallel_tool_calls`, and `logit_bias`. Each becomes a GBNF grammar (or a bias map) here,
/// so a schema or grammar the server cannot honour is a 400 naming the field, never ignored.
extension CompletionRequest {
    static func logitBias(_ json: JSONFields) throws -> [Int32: Float] {
        guard let raw = json["logit_bias"] else { return [:] }
        guard case .object(let map) = raw else {
            throw OpenAIError.invalid("logit_bias", "'logit_bias' must be an object mapping token ids (as strings) to numbers between -100 and 100")
        }
        guard map.count <= 1024 else { throw OpenAIError.invalid("logit_bias", "'logit_bias' holds \(map.count) tokens; at most 1024") }
        var out: [Int32: Float] = [:]
        for (key, value) in map {
            guard let id = Int32(key), id >= 0 else {
                throw OpenAIError.invalid("logit_bias", "'logit_bias' key '\(key)' is not a token id; keys are token ids such as \"1234\" (see POST /tokenize)")
            }
            guard case .number(let text) = value, let d = Double(text), d.isFinite, (-100...100).contains(d) else {
                throw OpenAIError.invalid("logit_bias", "'logit_bias' value for token \(key) must be a number between -100 and 100")
            }
            out[id] = Float(d)
        }
        return out
    }

    /// Reads the output-constraining fields into `r.outputGrammar` and the tool fields.
    static func parseStructuredOutput(_ json: JSONFields, chat: Bool, into r: inout CompletionRequest) throws {
        var sources: [(param: String, gbnf: String)] = []

        if let format = try json.object("response_format", expected: "{\"type\": \"text\" | \"json_object\" | \"json_schema\", ...}") {
            guard let type = try? format.string("type") else {
                throw OpenAIError.invalid("response_format", "'response_format' must be {\"type\": \"text\" | \"json_object\" | \"json_schema\", ...}")
            }
            switch type {
            case "text": break
            case "json_object": sources.append(("response_format", JSONSchemaGrammar.gbnfForAnyObject()))
            case "json_schema":
                guard let spec = try? format.object("json_schema") else {
                    throw OpenAIError.invalid("response_format.json_schema", "'response_format.json_schema' is required: {\"name\", \"schema\", \"strict\"}")
                }
                _ = try spec.bool("strict")
                let param = "response_format.json_schema.schema"
                sources.append((param, try compileSchema(spec["schema"] ?? .bool(true), param: param)))
            default:
                throw OpenAIError.invalid("response_format.type", "'response_format.type' is '\(type)'; use text, json_object or json_schema")
            }
        }
        if let raw = json["grammar"] {
            guard case .string(let text) = raw else { throw OpenAIError.invalid("grammar", "'grammar' must be a string of GBNF rules with a 'root' rule") }
            do {
                _ = try Grammar(gbnf: text)
            } catch let e as GrammarError {
                throw OpenAIError.invalid("grammar", "'grammar' is not a valid GBNF grammar: \(e)", code: "invalid_grammar")
            }
            sources.append(("grammar", text))
        }
        if let raw = json["json_schema"] {
            guard case .object = raw else { throw OpenAIError.invalid("json_schema", "'json_schema' must be a JSON schema object") }
            sources.append(("json_schema", try compileSchema(raw, param: "json_schema")))
        }

        if let raw = json["tools"] {
            guard chat else { throw OpenAIError.invalid("tools", "'tools' is a chat completions field; use POST /v1/chat/completions") }
            r.tools = try tools(raw)
        }
        if let raw = json["tool_choice"] {
            r.toolChoice = try toolChoice(raw, tools: r.tools)
        } else if r.tools.isEmpty {
            r.toolChoice = .none
        }
        r.parallelToolCalls = try json.bool("parallel_tool_calls") ?? true
        if r.usesTools {
            sources.append(("tools", try ToolCallFormat.grammar(tools: r.tools, choice: r.toolChoice, parallel: r.parallelToolCalls)))
        }
        guard sources.count <= 1 else {
            let names = sources.map { $0.param.split(separator: ".").first.map(String.init) ?? $0.param }
            throw OpenAIError.invalid(names[1], "'\(names[0])' and '\(names[1])' both constrain the output; send only one of them")
        }
        if let source = sources.first {
            r.outputGrammar = source.gbnf
            r.outputGrammarParam = source.param
        }
    }

    static func compileSchema(_ schema: JSONValue, param: String) throws -> String {
        do {
            let gbnf = try JSONSchemaGrammar.gbnf(schema: schema)
            _ = try Grammar(gbnf: gbnf)
            return gbnf
        } catch let e as GrammarError {
            throw OpenAIError.invalid(param, "'\(param)': \(e)", code: "unsupported_schema")
        }
    }

    /// A function name as OpenAI and Anthropic allow it: 1-64 ASCII letters, digits, '_' or '-'.
    static func isValidToolName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64
            && name.unicodeScalars.allSatisfy { ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || $0 == "_" || $0 == "-" }
    }

    static func tools(_ raw: JSONValue) throws -> [ToolDefinition] {
        guard case .array(let list) = raw else {
            throw OpenAIError.invalid("tools", "'tools' must be a list of {\"type\": \"function\", \"function\": {\"name\", \"description\", \"parameters\"}}")
        }
        guard list.count <= 128 else { throw OpenAIError.invalid("tools", "'tools' holds \(list.count) functions; at most 128") }
        var out: [ToolDefinition] = []
        for (i, item) in list.enumerated() {
            let param = "tools[\(i)]"
            guard item["type"] == .string("function"), case .object? = item["function"], let function = try? JSONFields(item["function"]!, path: "\(param).function") else {
                throw OpenAIError.invalid(param, "'\(param)' must be {\"type\": \"function\", \"function\": {...}}")
            }
            guard case .string(let name)? = function["name"], isValidToolName(name) else {
                throw OpenAIError.invalid("\(param).function.name", "'\(param).function.name' must be 1-64 letters, digits, '_' or '-'")
            }
            guard !out.contains(where: { $0.name == name }) else {
                throw OpenAIError.invalid("\(param).function.name", "two tools are named '\(name)'; names must be unique")
            }
            let description = try function.string("description")
            var parameters = JSONValue.object([])
            if let p = function["parameters"] {
                guard case .object = p else {
                    throw OpenAIError.invalid("\(param).function.parameters", "'\(param).function.parameters' must be a JSON schema object")
                }
                parameters = p
            }
            out.append(ToolDefinition(name: name, description: description, parameters: parameters))
        }
        return out
    }

    static func toolChoice(_ raw: JSONValue, tools: [ToolDefinition]) throws -> ToolChoice {
        let choice: ToolChoice
        switch raw {
        case .string(let s):
            switch s {
            case "none": choice = .none
            case "auto": choice = .auto
            case "required": choice = .required
            default: throw OpenAIError.invalid("tool_choice", "'tool_choice' is '\(s)'; use none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}")
            }
        case .object:
            guard case .string(let name)? = raw["function"]?["name"] else {
                throw OpenAIError.invalid("tool_choice", "'tool_choice' must name a function: {\"type\": \"function\", \"function\": {\"name\": ...}}")
            }
            guard tools.contains(where: { $0.name == name }) else {
                throw OpenAIError.invalid("tool_choice", "'tool_choice' names '\(name)', which is not among 'tools' (\(tools.map(\.name).joined(separator: ", ")))")
            }
            choice = .function(name)
        default:
            throw OpenAIError.invalid("tool_choice", "'tool_choice' must be a string or {\"type\": \"function\", \"function\": {\"name\": ...}}")
        }
        if tools.isEmpty && choice != .none && choice != .auto {
            throw OpenAIError.invalid("tool_choice", "'tool_choice' asks for a tool call but 'tools' is empty")
        }
        return tools.isEmpty ? .none : choice
    }
}
