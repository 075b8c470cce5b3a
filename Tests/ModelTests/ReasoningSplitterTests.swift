import ChatTemplate
import Testing

// MARK: - Reasoning splitter

/// `ReasoningSplitter` on whole replies, and on the same replies cut at every point (one and two
/// cuts, and one character at a time): a streamed reply must split exactly as the whole one.
@Suite struct ReasoningSplitterTests {
    struct Case: CustomStringConvertible, Sendable {
        var text: String
        var startsInReasoning = false
        var reasoning: String
        var content: String
        var description: String { "\(String(reflecting: text)) inside=\(startsInReasoning)" }
    }

    static let cases: [Case] = [
        // Qwen3's own shape: the block, a blank line, the answer.
        Case(text: "<think>\nLet me add.\n2+2=4\n</think>\n\nIt is 4.", reasoning: "Let me add.\n2+2=4", content: "It is 4."),
        // An empty block (Qwen3 with thinking off, when the model writes it itself).
        Case(text: "<think>\n\n</think>\n\nHi", reasoning: "", content: "Hi"),
        // No block: everything is content, leading whitespace included.
        Case(text: "\n\nHello there", reasoning: "", content: "\n\nHello there"),
        Case(text: "Hello", reasoning: "", content: "Hello"),
        // A block only counts at the start.
        Case(text: "Hi <think>x</think> there", reasoning: "", content: "Hi <think>x</think> there"),
        Case(text: "  <think>a</think>b", reasoning: "a", content: "b"),
        // Look-alikes of the tags are text.
        Case(text: "<thinking>deep</thinking>", reasoning: "", content: "<thinking>deep</thinking>"),
        Case(text: "<think>a </thin b</think>c", reasoning: "a </thin b", content: "c"),
        Case(text: "<think>a<b</think>c", reasoning: "a<b", content: "c"),
        Case(text: "<think>a<</think>c", reasoning: "a<", content: "c"),
        // Only the first close ends the block.
        Case(text: "<think>a</think>b</think>c", reasoning: "a", content: "b</think>c"),
        // A reply cut inside the block (token budget) is all reasoning; a partial tag is text.
        Case(text: "<think>\nstill going", reasoning: "still going", content: ""),
        Case(text: "<think>abc </thi", reasoning: "abc </thi", content: ""),
        Case(text: "<thi", reasoning: "", content: "<thi"),
        Case(text: "   ", reasoning: "", content: "   "),
        // Non-ASCII text on both sides.
        Case(text: "<think>é ü 😀 日本</think>\n\nß ✓", reasoning: "é ü 😀 日本", content: "ß ✓"),
        // The prompt opened the block (Qwen3 forced thinking, DeepSeek-R1's template).
        Case(text: "Let me think.\n</think>\n\nAnswer", startsInReasoning: true, reasoning: "Let me think.", content: "Answer"),
        Case(text: "\nplan\n\n", startsInReasoning: true, reasoning: "plan", content: ""),
        Case(text: "<think>x</think>y", startsInReasoning: true, reasoning: "<think>x", content: "y"),
        Case(text: "</think>Direct", startsInReasoning: true, reasoning: "", content: "Direct"),
    ]

    static func run(_ pieces: [String], startsInReasoning: Bool) -> (ReasoningPiece, pieces: [ReasoningPiece]) {
        var splitter = ReasoningSplitter(startsInReasoning: startsInReasoning)
        var total = ReasoningPiece()
        var out: [ReasoningPiece] = []
        for p in pieces {
            let s = splitter.append(p)
            out.append(s)
            total.reasoning += s.reasoning
            total.content += s.content
        }
        let rest = splitter.finish()
        out.append(rest)
        total.reasoning += rest.reasoning
        total.content += rest.content
        return (total, out)
    }

    @Test(arguments: cases)
    func splitsWholeReplies(_ c: Case) {
        let split = ReasoningSplitter.split(c.text, startsInReasoning: c.startsInReasoning)
        #expect(split == ReasoningPiece(reasoning: c.reasoning, content: c.content), "\(c)")
    }

    @Test(arguments: cases)
    func splitsTheSameWhereverTheTextIsCut(_ c: Case) {
        let chars = Array(c.text)
        let expected = ReasoningPiece(reasoning: c.reasoning, content: c.content)
        for i in 0...chars.count {
            for j in i...chars.count {
                let pieces = [String(chars[..<i]), String(chars[i..<j]), String(chars[j...])]
                let (got, _) = Self.run(pieces, startsInReasoning: c.startsInReasoning)
                #expect(got == expected, "\(c) cut at \(i), \(j)")
            }
        }
        let (oneByOne, _) = Self.run(chars.map { String($0) }, startsInReasoning: c.startsInReasoning)
        #expect(oneByOne == expected, "\(c) one character at a time")
    }

    /// Text is given out as soon as it cannot be part of a tag: a stream does not stall.
    @Test func givesTextOutPromptly() {
        var s = ReasoningSplitter(startsInReasoning: false)
        #expect(s.append("<thi") == ReasoningPiece())
        #expect(s.append("nk>Plan") == ReasoningPiece(reasoning: "Plan"))
        #expect(s.inReasoning)
        #expect(s.append(" more </") == ReasoningPiece(reasoning: " more"))
        #expect(s.append("think>") == ReasoningPiece())
        #expect(!s.inReasoning)
        #expect(s.append("\n\n") == ReasoningPiece())
        #expect(s.append("Done") == ReasoningPiece(content: "Done"))
        #expect(s.finish() == ReasoningPiece())
        var plain = ReasoningSplitter(startsInReasoning: false)
        #expect(plain.append("Hi") == ReasoningPiece(content: "Hi"))
        #expect(plain.append(" <think>") == ReasoningPiece(content: " <think>"))
    }

    @Test func detectsAPromptThatOpenedTheBlock() {
        #expect(ReasoningSplitter.opensReasoning(prompt: "<|im_start|>assistant\n<think>\n"))
        #expect(ReasoningSplitter.opensReasoning(prompt: "<｜Assistant｜><think>"))
        #expect(!ReasoningSplitter.opensReasoning(prompt: "<|im_start|>assistant\n<think>\n\n</think>\n\n"))
        #expect(!ReasoningSplitter.opensReasoning(prompt: "<|im_start|>assistant\n"))
        #expect(!ReasoningSplitter.opensReasoning(prompt: ""))
    }
}
