import Engine
import Foundation
import Model
@testable import OpenAI
import Testing
import Tokenizer

// MARK: - Reasoning through the request core

/// A thinking model's reply through `RequestRun`: reasoning updates apart from the text, tool
/// calls read from the content after the think block, stop strings on the whole reply.
@Suite struct ReasoningRunTests {
    static let call = #"{"tool_calls":Ġ[{"name":Ġ"f",Ġ"arguments":Ġ{}}]}"#
    /// Pieces as byte-level BPE spells them (Ġ space, Ċ newline).
    static let tokens = ["<eos>", "<think>", "</think>", "plan", "ĊĊ", call, "Hi", "ST", "OP", "Ġmore"]
    static let eos: Int32 = 0, open: Int32 = 1, close: Int32 = 2, plan: Int32 = 3, blank: Int32 = 4, toolCall: Int32 = 5
    static let hi: Int32 = 6, st: Int32 = 7, op: Int32 = 8, more: Int32 = 9

    /// Emits its script synchronously when started: started, the tokens, finished.
    final class Script: TokenGenerator, @unchecked Sendable {
        let ids: [Int32]
        init(_ ids: [Int32]) { self.ids = ids }

        func start(_ request: GenerationRequest, onEvent: @escaping @Sendable (TokenEvent) -> Void) throws -> @Sendable () -> Void {
            onEvent(.started(promptTokens: request.promptTokens.count, cachedTokens: 0))
            for (k, id) in ids.enumerated() {
                onEvent(.token(GeneratedToken(id: id, logprob: nil, topLogprobs: [])))
                if request.stopTokens.contains(id) {
                    onEvent(.finished(.stop, promptTokens: request.promptTokens.count, completionTokens: k + 1, speculation: SpeculationUsage()))
                    return {}
                }
            }
            onEvent(.finished(.length, promptTokens: request.promptTokens.count, completionTokens: ids.count, speculation: SpeculationUsage()))
            return {}
        }
    }

    struct Stays: ClientConnection {
        var isClientGone: Bool { false }
        func onDisconnect(_ callback: @escaping @Sendable () -> Void) {}
    }

    struct Result {
        var reasoning = "", text = "", toolDeltas = 0
        var run: RequestRun
    }

    static func drive(_ ids: [Int32], starts: [Bool]?, stop: [String] = [], tools: Bool = false) throws -> Result {
        let tokenizer = try Tokenizer(tokens: tokens, tokenTypes: [3] + [Int32](repeating: 1, count: tokens.count - 1), merges: [],
                                      preTokenizer: .gpt2, bosID: nil, eosID: eos)
        let generation = GenerationRequest(promptTokens: [], maxTokens: 32, sampling: SamplingParameters(temperature: 0), stopTokens: [])
        var request = RunRequest(prompts: [[hi]], promptParam: "messages", generation: generation, stop: stop, readsToolCalls: tools)
        request.reasoningStarts = starts
        let run = try RequestRun(request, generator: Script(ids), tokenizer: tokenizer, stopTokens: [eos], contextLength: 64)
        var out = Result(run: run)
        #expect(run.drive(Stays()) { u in
            out.reasoning += u.reasoning
            out.text += u.text
            out.toolDeltas += u.toolCalls?.count ?? 0
        } == .completed)
        return out
    }

    @Test func reasoningComesApartFromTheText() throws {
        let r = try Self.drive([Self.open, Self.plan, Self.more, Self.close, Self.blank, Self.hi, Self.eos], starts: [false])
        #expect(r.reasoning == "plan more")
        #expect(r.text == "Hi")
        #expect(r.run.choices[0].reasoningText == "plan more" && r.run.choices[0].text == "Hi")
        // Without the split the think block is text.
        let plain = try Self.drive([Self.open, Self.plan, Self.close, Self.blank, Self.hi, Self.eos], starts: nil)
        #expect(plain.reasoning.isEmpty && plain.text == "<think>plan</think>\n\nHi")
    }

    @Test func toolCallsAfterReasoningParse() throws {
        let r = try Self.drive([Self.open, Self.plan, Self.close, Self.blank, Self.toolCall, Self.eos], starts: [false], tools: true)
        #expect(r.reasoning == "plan")
        #expect(r.text.isEmpty)
        #expect(r.toolDeltas > 0)
        #expect(r.run.toolCalls(0)?.map(\.name) == ["f"])
        #expect(r.run.endedWithToolCalls(0))
    }

    @Test func replyStartsInsideWhenThePromptOpenedTheBlock() throws {
        let r = try Self.drive([Self.plan, Self.close, Self.hi, Self.eos], starts: [true])
        #expect(r.reasoning == "plan" && r.text == "Hi")
    }

    @Test func stopStringInsideTheReasoningEndsTheReply() throws {
        let r = try Self.drive([Self.open, Self.plan, Self.st, Self.op, Self.hi, Self.eos], starts: [false], stop: ["STOP"])
        #expect(r.reasoning == "plan" && r.text.isEmpty)
        #expect(r.run.choices[0].finish == .stop && r.run.choices[0].stopSequence == "STOP")
    }
}
