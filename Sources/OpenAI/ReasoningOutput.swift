import ChatTemplate
import Grammar

/// Reasoning output of thinking models (Qwen3, QwQ, DeepSeek-R1 and its distills): the request
/// side (`chat_template_kwargs`, `enable_thinking`) and the reply side (each choice's text split
/// by `ReasoningSplitter` into `reasoning_content` / `reasoning` and `content`).
///
/// The split is on when the server's `reasoning_format` is `auto` (the default) and the model's
/// chat template writes think blocks (`ChatTemplate.thinks`); `none` leaves the think block in
/// the content, as llama-server's `--reasoning-format none` does.
public enum ReasoningFormat: String, Sendable, CaseIterable {
    /// Split the think block off when the chat template writes one.
    case auto
    /// Never split: the think block stays in the content.
    case none
}

// MARK: - Request: template variables

extension CompletionRequest {
    /// `chat_template_kwargs` (an object of extra chat-template variables, any JSON values) and
    /// `enable_thinking` (a boolean, shorthand for `chat_template_kwargs.enable_thinking`), as
    /// template variables in request order.
    static func parseTemplateContext(_ json: JSONFields, chat: Bool) throws -> [(String, TemplateValue)] {
        var context: [(String, TemplateValue)] = []
        if let kwargs = try json.object("chat_template_kwargs", expected: "an object of chat-template variables, e.g. {\"enable_thinking\": false}") {
            guard chat else {
                throw OpenAIError.invalid("chat_template_kwargs", "'chat_template_kwargs' is a chat completions field; use POST /v1/chat/completions")
            }
            for (name, value) in kwargs.members {
                let param = kwargs.name(name)
                if ChatTemplate.reservedVariables.contains(name) {
                    throw OpenAIError.invalid(param, "'\(param)' sets a variable the server renders itself (\(ChatTemplate.reservedVariables.sorted().joined(separator: ", "))); send it as its own request field")
                }
                if name == "enable_thinking" { _ = try kwargs.bool(name) }
                context.append((name, ToolCallFormat.templateValue(value)))
            }
        }
        if let thinking = try json.bool("enable_thinking") {
            guard chat else { throw OpenAIError.invalid("enable_thinking", "'enable_thinking' is a chat completions field; use POST /v1/chat/completions") }
            if let i = context.firstIndex(where: { $0.0 == "enable_thinking" }) {
                guard context[i].1 == .bool(thinking) else {
                    throw OpenAIError.invalid("enable_thinking", "'enable_thinking' is \(thinking) but 'chat_template_kwargs.enable_thinking' is \(!thinking); send one of them")
                }
            } else {
                context.append(("enable_thinking", .bool(thinking)))
            }
        }
        return context
    }

    /// Refuses template variables the model's chat template never reads: they would change
    /// nothing, and a client asking for `enable_thinking: false` must not get thinking silently.
    func checkTemplateContext(_ template: ChatTemplate?) throws {
        guard let template else { return }
        for (name, _) in templateContext where !template.reads(name) {
            let param = name == "enable_thinking" ? enableThinkingParam ?? "chat_template_kwargs.enable_thinking" : "chat_template_kwargs.\(name)"
            throw OpenAIError.invalid(param, "the model's chat template does not read '\(name)', so '\(param)' would change nothing; leave it out (the template reads: \(template.variableNames.subtracting(ChatTemplate.reservedVariables).sorted().joined(separator: ", ")))")
        }
    }

    /// Whether a reply to a prompt that opened a think block starts inside it. A grammar
    /// constrains the reply from its first token: one that spells out `</think>` itself (a
    /// `grammar` written for the reasoning too) or tool_choice `auto` (any text may come before a
    /// call) keeps the reasoning first; any other (`response_format`, a JSON schema, tool_choice
    /// `required` or a named function) makes the whole reply the answer.
    func startsInReasoning(promptOpensReasoning: Bool) -> Bool {
        guard promptOpensReasoning else { return false }
        guard let outputGrammar else { return true }
        return (usesTools && toolChoice == .auto) || outputGrammar.contains(ReasoningSplitter.closeTag)
    }
}
