import GGUF
import Tokenizer

/// Turns chat messages or completion text into prompt tokens the way the model expects: the
/// model's own chat template (or an override), its special tokens, and its BOS policy.
///
/// Immutable after init; safe to share between threads.
public final class PromptFormatter: @unchecked Sendable {
    public let tokenizer: Tokenizer
    public let template: ChatTemplate?
    /// Tokens that end a generation (end of sequence and end of turn).
    public let stopTokens: Set<Int32>
    private let bosText: String
    private let eosText: String

    /// - Parameter templateOverride: Jinja source replacing the GGUF's `tokenizer.chat_template`.
    public init(file: GGUFFile, templateOverride: String? = nil) throws {
        let tokenizer = try Tokenizer(gguf: file)
        self.tokenizer = tokenizer
        if let source = templateOverride ?? BuiltInTemplates.source(of: file) {
            template = try ChatTemplate(source: source)
        } else {
            template = nil
        }
        stopTokens = Set(tokenizer.eotIDs + (tokenizer.eosID.map { [$0] } ?? []))
        bosText = tokenizer.bosID.flatMap { tokenizer.tokenText($0) } ?? ""
        eosText = tokenizer.eosID.flatMap { tokenizer.tokenText($0) } ?? ""
    }

    /// The rendered prompt text of a conversation, ending with the assistant's turn opener.
    /// `tools`: tool definitions for templates that render them (`ChatTemplate.supportsTools`);
    /// `context`: more template variables (`chat_template_kwargs`, see `ChatTemplate.render`).
    public func chatText(_ messages: [ChatMessage], tools: [TemplateValue]? = nil, context: [(String, TemplateValue)] = []) throws -> String {
        guard let template else { throw PromptError.noChatTemplate }
        return try template.render(messages: messages, addGenerationPrompt: true, bosToken: bosText, eosToken: eosText, tools: tools,
                                   context: context)
    }

    /// Prompt tokens of a conversation (special tokens in the rendered template are parsed).
    public func chatTokens(_ messages: [ChatMessage], tools: [TemplateValue]? = nil, context: [(String, TemplateValue)] = []) throws -> [Int32] {
        try chatPrompt(messages, tools: tools, context: context).tokens
    }

    /// The rendered prompt text of a conversation and its tokens: the text tells whether the
    /// template opened a think block (`ReasoningSplitter.opensReasoning(prompt:)`).
    public func chatPrompt(_ messages: [ChatMessage], tools: [TemplateValue]? = nil,
                           context: [(String, TemplateValue)] = []) throws -> (text: String, tokens: [Int32]) {
        let rendered = try chatText(messages, tools: tools, context: context)
        var text = rendered
        var ids: [Int32] = []
        // Templates that print the BOS text themselves must not get a second BOS.
        if tokenizer.addsBOS, let bos = tokenizer.bosID {
            if text.hasPrefix(bosText) && !bosText.isEmpty { text.removeFirst(bosText.count) }
            ids.append(bos)
        }
        return (rendered, ids + tokenizer.encode(text, parseSpecial: true))
    }

    /// Prompt tokens of plain completion text (special-token text is treated as plain text).
    public func completionTokens(_ text: String) -> [Int32] {
        var ids: [Int32] = []
        if tokenizer.addsBOS, let bos = tokenizer.bosID { ids.append(bos) }
        return ids + tokenizer.encode(text, parseSpecial: false)
    }
}

/// A prompt that cannot be formatted.
public enum PromptError: Error, CustomStringConvertible, Equatable {
    case noChatTemplate

    public var description: String {
        switch self {
        case .noChatTemplate:
            return "the model has no chat template (tokenizer.chat_template); set \"chat_template\" in config.json or use completions"
        }
    }
}
