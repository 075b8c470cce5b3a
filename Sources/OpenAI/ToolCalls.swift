import Foundation
import Grammar
import Model
import ChatTemplate

/// Tool calling in one generic format for every model: the tool definitions and an instruction
/// go into the system prompt, and the model answers a call as one JSON object,
///
///     {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
///
/// generated under a grammar built from the functions' parameter schemas, so the names exist
/// and the arguments validate. With `tool_choice: "auto"` the reply is either that object or
/// plain text that does not start with `{`; `required` allows only calls, a named function
/// exactly one call of it; `parallel_tool_calls: false` allows exactly one. Templates that render `tools` themselves
/// (`ChatTemplate.supportsTools`) get the definitions as the `tools` variable too. In the
/// history, an assistant turn's `tool_calls` are written back in the same format and `tool`
/// messages keep their role (as `user` messages for templates that refuse it). docs/TOOLS.md
/// shows the prompt.
enum ToolCallFormat {
    static let prefix = "{\"tool_calls\": ["

    // MARK: - Grammar

    /// GBNF for the replies `choice` allows; a schema it cannot compile is a 400 naming
    /// `schemaParam(i)` (the field of tool i's schema in the request's API).
    static func grammar(tools: [ToolDefinition], choice: ToolChoice, parallel: Bool,
                        schemaParam: (Int) -> String = { "tools[\($0)].function.parameters" }) throws -> String {
        var g = JSONSchemaGrammar()
        var calls: [String] = []
        for (i, tool) in tools.enumerated() {
            if case .function(let name) = choice, name != tool.name { continue }
            let arguments: String
            do {
                if case .object(let members) = tool.parameters, members.isEmpty {
                    arguments = JSONSchemaGrammar.gbnfLiteral("{}")
                } else {
                    arguments = try g.rule(for: tool.parameters, hint: "args-\(i)")
                }
            } catch let e as GrammarError {
                throw OpenAIError.invalid(schemaParam(i), "\(schemaParam(i)): \(e)")
            }
            let head = JSONSchemaGrammar.gbnfLiteral("{\"name\": \(JSONValue.quoted(tool.name)), \"arguments\": ")
            calls.append(g.add("call-\(i)", body: "\(head) \(arguments) \"}\""))
        }
        let call = g.add("call", body: calls.joined(separator: " | "))
        // A named function is called once; otherwise `parallel_tool_calls` allows more calls.
        var single = !parallel
        if case .function = choice { single = true }
        let more = single ? "" : " ( \", \" \(call) )*"
        let toolCalls = g.add("tool-calls", body: "\(JSONSchemaGrammar.gbnfLiteral(prefix)) \(call)\(more) \"]}\"")
        if choice == .auto {
            let text = g.add("text", body: "[^{] .*")
            _ = g.add("root", body: "\(toolCalls) | \(text)")
        } else {
            _ = g.add("root", body: toolCalls)
        }
        return g.rendered()
    }

    // MARK: - Prompt

    /// The system-prompt text that lists the functions and says how to call them.
    static func instructions(tools: [ToolDefinition], choice: ToolChoice, parallel: Bool, listDefinitions: Bool) -> String {
        var lines = ["# Tools", ""]
        if listDefinitions {
            lines.append("You can call these functions (JSON schemas of their arguments):")
            for t in tools {
                var members: [(String, JSONValue)] = [("name", .string(t.name))]
                if let d = t.description { members.append(("description", .string(d))) }
                members.append(("parameters", t.parameters))
                lines.append(JSONValue.object(members).text)
            }
            lines.append("")
        }
        lines.append("To call functions, reply with only this JSON object, nothing before or after it:")
        lines.append("{\"tool_calls\": [{\"name\": \"<function name>\", \"arguments\": {<arguments>}}]}")
        switch choice {
        case .auto: lines.append("If no function is needed, reply to the user in plain text instead.")
        case .required: lines.append("You must call at least one function now.")
        case .function(let name): lines.append("You must call the function \(name) now.")
        case .none: break
        }
        if !parallel { lines.append("Call exactly one function.") }
        return lines.joined(separator: "\n")
    }

    /// An assistant turn's calls, written as the model would have written them.
    static func historyText(_ calls: [APIToolCall]) -> String {
        let items = calls.map { c -> String in
            let arguments = (try? JSONValue.parse(c.arguments))?.text ?? JSONValue.quoted(c.arguments)
            return "{\"name\": \(JSONValue.quoted(c.name)), \"arguments\": \(arguments)}"
        }
        return prefix + items.joined(separator: ", ") + "]}"
    }

    /// The conversation as template messages, with the tool instructions in the system prompt
    /// when tools are used, and the definitions as template values for templates that take them.
    static func templateMessages(_ r: CompletionRequest, messages: [APIMessage], template: ChatTemplate?,
                                 toolRoleAsUser: Bool) -> (messages: [ChatMessage], tools: [TemplateValue]?) {
        var out: [ChatMessage] = messages.map { m in
            var content = m.content
            var extra: [(String, TemplateValue)] = []
            if !m.toolCalls.isEmpty {
                let text = historyText(m.toolCalls)
                content = content.isEmpty ? text : content + "\n" + text
                extra.append(("tool_calls", .list(m.toolCalls.map { c in
                    .object([("id", .string(c.id)), ("type", .string("function")),
                             ("function", .object([("name", .string(c.name)),
                                                   ("arguments", (try? JSONValue.parse(c.arguments)).map(templateValue) ?? .string(c.arguments))]))])
                })))
            }
            if let reasoning = m.reasoning { extra.append(("reasoning_content", .string(reasoning))) }
            if let id = m.toolCallID { extra.append(("tool_call_id", .string(id))) }
            if let name = m.name { extra.append(("name", .string(name))) }
            if m.role == "tool" && toolRoleAsUser {
                return ChatMessage(role: "user", content: "Result of tool call \(m.toolCallID ?? ""): \(content)")
            }
            return ChatMessage(role: m.role, content: content, extra: extra)
        }
        guard r.usesTools else { return (out, nil) }
        let native = template?.supportsTools ?? false
        let text = instructions(tools: r.tools, choice: r.toolChoice, parallel: r.parallelToolCalls, listDefinitions: !native)
        if let first = out.first, first.role == "system" {
            out[0].content = first.content + "\n\n" + text
        } else {
            out.insert(ChatMessage(role: "system", content: text), at: 0)
        }
        guard native else { return (out, nil) }
        let tools: [TemplateValue] = r.tools.map { t in
            var function: [(String, TemplateValue)] = [("name", .string(t.name))]
            if let d = t.description { function.append(("description", .string(d))) }
            function.append(("parameters", templateValue(t.parameters)))
            return .object([("type", .string("function")), ("function", .object(function))])
        }
        return (out, tools)
    }

    static func templateValue(_ v: JSONValue) -> TemplateValue {
        switch v {
        case .null: return .null
        case .bool(let b): return .bool(b)
        case .number(let n): return Int(n).map { .integer($0) } ?? .double(Double(n) ?? 0)
        case .string(let s): return .string(s)
        case .array(let items): return .list(items.map(templateValue))
        case .object(let members): return .object(members.map { ($0.0, templateValue($0.1)) })
        }
    }

    // MARK: - Reading replies

    /// What a (possibly partial) reply holds: undecided (empty), plain text, or tool calls, each
    /// with its name once complete and the argument text so far.
    enum Reply: Equatable {
        case undecided
        case text
        case calls([PartialCall])
    }

    struct PartialCall: Equatable {
        var name: String?
        var arguments: String
        var complete: Bool
        /// Where the call's `{` is in the reply, in Unicode scalars.
        var start: Int

        /// Whether this call, as far as it goes, could still become `other` (same name so far,
        /// arguments a prefix of `other`'s).
        func couldRepeat(_ other: PartialCall) -> Bool {
            name == other.name && other.arguments.unicodeScalars.starts(with: arguments.unicodeScalars)
        }
    }

    /// Reads a reply generated under `grammar(...)`'s format; a partial reply gives what is
    /// known so far.
    static func read(_ text: String) -> Reply {
        let s = Array(text.unicodeScalars)
        guard let first = s.first else { return .undecided }
        guard first == "{" else { return .text }
        var i = 0
        /// Matches `literal` at i; nil when the text ends inside it, false on a mismatch.
        func expect(_ literal: String) -> Bool? {
            for u in literal.unicodeScalars {
                guard i < s.count else { return nil }
                guard s[i] == u else { return false }
                i += 1
            }
            return true
        }
        guard expect(prefix) == true else { return .calls([]) }
        var calls: [PartialCall] = []
        while true {
            let callStart = i
            guard expect("{\"name\": \"") == true else { return .calls(calls) }
            var name = ""
            while i < s.count && s[i] != "\"" { name.unicodeScalars.append(s[i]); i += 1 }
            guard i < s.count else { calls.append(PartialCall(name: nil, arguments: "", complete: false, start: callStart)); return .calls(calls) }
            i += 1
            guard expect(", \"arguments\": ") == true else {
                calls.append(PartialCall(name: name, arguments: "", complete: false, start: callStart))
                return .calls(calls)
            }
            // The arguments object: up to its matching closing brace.
            let start = i
            var depth = 0, inString = false, escaped = false, done = false
            while i < s.count {
                let c = s[i]
                i += 1
                if inString {
                    if escaped { escaped = false } else if c == "\\" { escaped = true } else if c == "\"" { inString = false }
                } else if c == "\"" {
                    inString = true
                } else if c == "{" || c == "[" {
                    depth += 1
                } else if c == "}" || c == "]" {
                    depth -= 1
                    if depth == 0 { done = true; break }
                }
            }
            var arguments = ""
            arguments.unicodeScalars.append(contentsOf: s[start..<i])
            calls.append(PartialCall(name: name, arguments: arguments, complete: done, start: callStart))
            guard done, expect("}") == true else { return .calls(calls) }
            guard expect(", ") == true else { return .calls(calls) }
        }
    }

    /// The reply cut before its first call that repeats an earlier one exactly (same name, same
    /// arguments) and closed there, or nil when no call repeats. A small model that has made a
    /// call tends to make it again and again until `max_tokens` (measured: SmolLM2-135M with
    /// `tool_choice: "required"` and a one-argument function ran out of 64 tokens in 7 of 12
    /// sampled replies, each one call repeated); the same call twice in one reply asks for the
    /// same result twice, so the repeat ends the reply instead.
    static func cutAtRepeatedCall(_ text: String) -> String? {
        guard case .calls(let calls) = read(text), let last = calls.last, last.complete, calls.count > 1,
              calls.dropLast().contains(where: { $0.complete && $0.name == last.name && $0.arguments == last.arguments }) else { return nil }
        // The previous call ends two scalars (", ") before this one starts.
        var out = ""
        out.unicodeScalars.append(contentsOf: text.unicodeScalars.prefix(last.start - 2))
        return out + "]}"
    }

    /// A new call id in OpenAI's style.
    static func newID() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        return "call_" + String((0..<24).map { _ in alphabet.randomElement()! })
    }
}

/// Turns a streamed tool-calling reply into OpenAI's deltas: the first for a call carries its
/// index, id, type and name, the next ones argument text.
struct ToolCallStream {
    private(set) var ids: [String] = []
    private var sentArguments: [Int] = []

    /// Deltas for the reply so far (`text` is the whole reply, not the new piece).
    mutating func deltas(_ text: String) -> [ToolCallDelta] {
        guard case .calls(let calls) = ToolCallFormat.read(text) else { return [] }
        var out: [ToolCallDelta] = []
        for (k, call) in calls.enumerated() {
            guard let name = call.name else { break }
            // A call that may still turn out to repeat an earlier one is held back: a repeat
            // ends the reply (`ToolCallFormat.cutAtRepeatedCall`) and is never sent.
            if k >= ids.count, calls[..<k].contains(where: { $0.complete && call.couldRepeat($0) }) { break }
            if k >= ids.count {
                ids.append(ToolCallFormat.newID())
                sentArguments.append(0)
                out.append(ToolCallDelta(index: k, id: ids[k], type: "function", function: FunctionDelta(name: name, arguments: "")))
            }
            let args = Array(call.arguments.unicodeScalars)
            if args.count > sentArguments[k] {
                var piece = ""
                piece.unicodeScalars.append(contentsOf: args[sentArguments[k]...])
                sentArguments[k] = args.count
                out.append(ToolCallDelta(index: k, id: nil, type: nil, function: FunctionDelta(name: nil, arguments: piece)))
            }
        }
        return out
    }
}
