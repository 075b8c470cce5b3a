// MARK: - Reasoning splitter

/// One step's worth of split text: what belongs to the reasoning (the think block) and what to
/// the reply's content.
public struct ReasoningPiece: Sendable, Equatable {
    public var reasoning: String
    public var content: String

    public init(reasoning: String = "", content: String = "") {
        self.reasoning = reasoning
        self.content = content
    }

    public var isEmpty: Bool { reasoning.isEmpty && content.isEmpty }
}

/// Splits the text a thinking model generates (Qwen3, QwQ, DeepSeek-R1 and its distills) into
/// its reasoning, the `<think>…</think>` block that opens the reply, and its content, one piece
/// of text at a time, so a streamed reply and a whole one split the same way: the pieces
/// `append` and `finish` return concatenate to the split of the whole text, wherever the text
/// was cut (tags may arrive split across tokens).
///
/// The rules, as llama-server and vLLM's Qwen3/DeepSeek-R1 parsers apply them:
/// - a think block counts only at the start of the reply (after whitespace); `<think>` later in
///   the content is content;
/// - a prompt that already opened the block (`opensReasoning(prompt:)`: a template that forces
///   thinking ends its generation prompt with `<think>\n`) starts the reply inside it;
/// - whitespace around the reasoning and right after `</think>` (Qwen3 writes
///   `<think>\n…\n</think>\n\n`) belongs to neither side;
/// - a reply that ends inside the block (token budget or stop) is all reasoning.
///
/// Not thread-safe (one per choice); a value type.
public struct ReasoningSplitter: Sendable {
    public static let openTag = "<think>"
    public static let closeTag = "</think>"

    enum Phase: Sendable {
        /// Only whitespace so far: a think block may still open.
        case beginning
        /// Inside the think block; `atStart` while only whitespace came after `<think>`.
        case reasoning(atStart: Bool)
        /// After the block (or without one); `atStart` while only whitespace came after `</think>`.
        case content(atStart: Bool)
    }

    private(set) var phase: Phase
    /// Text not yet given out: leading whitespace, a possible partial tag, or whitespace that
    /// may turn out to precede `</think>`.
    private var held = ""

    /// - Parameter startsInReasoning: the prompt opened the think block (`opensReasoning(prompt:)`).
    public init(startsInReasoning: Bool) {
        phase = startsInReasoning ? .reasoning(atStart: true) : .beginning
    }

    /// Whether a rendered prompt ends inside an open think block (its last non-whitespace text is
    /// `<think>`), so the reply starts with reasoning.
    public static func opensReasoning(prompt: String) -> Bool {
        var end = prompt.endIndex
        while end > prompt.startIndex, prompt[prompt.index(before: end)].isWhitespace { end = prompt.index(before: end) }
        return prompt[..<end].hasSuffix(openTag)
    }

    /// Whether the reply is still inside the think block.
    public var inReasoning: Bool {
        if case .reasoning = phase { return true }
        return false
    }

    // MARK: - Splitting

    /// Takes the next generated text; returns the reasoning and content it completes.
    public mutating func append(_ text: String) -> ReasoningPiece {
        var out = ReasoningPiece()
        var buffer = held + text
        held = ""
        while !buffer.isEmpty {
            switch phase {
            case .beginning:
                let body = buffer.drop(while: \.isWhitespace)
                if body.hasPrefix(Self.openTag) {
                    phase = .reasoning(atStart: true)
                    buffer = String(body.dropFirst(Self.openTag.count))
                } else if Self.openTag.hasPrefix(body) {
                    held = buffer  // whitespace, maybe a partial `<think>`: wait for more
                    return out
                } else {
                    phase = .content(atStart: false)
                    out.content += buffer
                    return out
                }
            case .reasoning(let atStart):
                if atStart {
                    buffer = String(buffer.drop(while: \.isWhitespace))
                    if buffer.isEmpty { return out }
                    phase = .reasoning(atStart: false)
                }
                if let close = buffer.firstRange(of: Self.closeTag) {
                    out.reasoning += Self.trimmingTrailingWhitespace(buffer[..<close.lowerBound])
                    phase = .content(atStart: true)
                    buffer = String(buffer[close.upperBound...])
                } else {
                    // Hold a suffix that may start `</think>`, and the whitespace before it.
                    let keep = Self.heldSuffixStart(buffer)
                    out.reasoning += buffer[..<keep]
                    held = String(buffer[keep...])
                    return out
                }
            case .content(let atStart):
                if atStart {
                    buffer = String(buffer.drop(while: \.isWhitespace))
                    if buffer.isEmpty { return out }
                    phase = .content(atStart: false)
                }
                out.content += buffer
                return out
            }
        }
        return out
    }

    /// Ends the reply: gives out the held text (a partial tag that never completed is text).
    public mutating func finish() -> ReasoningPiece {
        defer { held = "" }
        switch phase {
        case .beginning: return ReasoningPiece(content: held)
        case .reasoning: return ReasoningPiece(reasoning: Self.trimmingTrailingWhitespace(held[...]))
        case .content: return ReasoningPiece()
        }
    }

    /// Splits a whole reply at once (the same result as appending it piece by piece).
    public static func split(_ text: String, startsInReasoning: Bool) -> ReasoningPiece {
        var splitter = ReasoningSplitter(startsInReasoning: startsInReasoning)
        var out = splitter.append(text)
        let rest = splitter.finish()
        out.reasoning += rest.reasoning
        out.content += rest.content
        return out
    }

    // MARK: - Helpers

    /// Where the held tail of reasoning text starts: the longest suffix that is a proper prefix
    /// of `</think>`, together with the whitespace right before it.
    static func heldSuffixStart(_ s: String) -> String.Index {
        var start = s.endIndex
        let tag = Array(closeTag)
        let chars = Array(s.suffix(tag.count - 1))
        for length in stride(from: min(chars.count, tag.count - 1), through: 1, by: -1)
        where Array(chars[(chars.count - length)...]) == Array(tag[..<length]) {
            start = s.index(s.endIndex, offsetBy: -length)
            break
        }
        while start > s.startIndex, s[s.index(before: start)].isWhitespace { start = s.index(before: start) }
        return start
    }

    static func trimmingTrailingWhitespace(_ s: Substring) -> String {
        var end = s.endIndex
        while end > s.startIndex, s[s.index(before: end)].isWhitespace { end = s.index(before: end) }
        return String(s[..<end])
    }
}
