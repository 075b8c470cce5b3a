import Foundation
import GGUF
import Grammar
import Model
import Testing
import Engine
import ChatTemplate

/// Grammars, logit bias, prompt log-probabilities and embeddings through the engine with the
/// real model: constraints never let speculation change greedy output, forced runs are drafted,
/// prompt scores equal the decode path's, embeddings do not depend on the batch. (In the
/// serialized EngineTests suite: engines share its model, which runs one step at a time.)
extension EngineTests {
    final class Events: @unchecked Sendable {
        private let lock = NSCondition()
        private(set) var tokens: [GeneratedToken] = []
        private(set) var prompt: [GeneratedToken] = []
        private(set) var embedding: [Float] = []
        private(set) var usage = SpeculationUsage()
        private(set) var done = false
        func handle(_ event: TokenEvent) {
            lock.lock()
            switch event {
            case .token(let t): tokens.append(t)
            case .promptLogprobs(let p): prompt = p
            case .embedding(let e): embedding = e
            case .finished(_, _, _, let u): usage = u; done = true
            case .failed: done = true
            case .started: break
            }
            lock.broadcast()
            lock.unlock()
        }
        func wait() -> Bool {
            lock.lock()
            defer { lock.unlock() }
            let deadline = Date().addingTimeInterval(180)
            while !done { if !lock.wait(until: deadline) { return false } }
            return true
        }
    }

    static let promptFormatter: Result<PromptFormatter, Error> = Result { try PromptFormatter(file: GGUFFile(path: EngineTests.modelPath)) }

    func submitCollecting(_ engine: Engine, _ request: GenerationRequest) throws -> Events {
        let e = Events()
        try engine.submit(request) { e.handle($0) }
        return e
    }

    @Test func grammarOutputIsTheSameWithSpeculationAndForcedRunsAreDrafted() throws {
        let model = try EngineTests.model.get()
        let formatter = try Self.promptFormatter.get()
        let vocabulary = TokenVocabulary(count: formatter.tokenizer.vocabularySize, stopTokens: formatter.stopTokens) { id in
            formatter.tokenizer.isSpecial(id) ? nil : formatter.tokenizer.withPieceBytes(id) { Array($0) }
        }
        let schema = try JSONValue.parse(#"""
        {"type": "object", "properties": {"name": {"type": "string", "maxLength": 24}, "age": {"type": "integer"},
         "role": {"enum": ["admin", "user", "guest"]}, "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 2}},
         "required": ["name", "age", "role", "tags"]}
        """#)
        let gbnf = try JSONSchemaGrammar.gbnf(schema: schema)
        let prompts = try ["Describe a person as JSON.", "Give me a user record.", "Who are you?"].map {
            try formatter.chatTokens([ChatMessage(role: "user", content: $0)])
        }
        func outputs(speculation: Bool) throws -> ([[Int32]], SpeculationUsage) {
            // A grammar per engine run: its masks are computed afresh.
            let grammar = TokenGrammar(grammar: try Grammar(gbnf: gbnf), vocabulary: vocabulary)
            // A fixed cost model where rows are free: whether forced runs are drafted is then the
            // planner's decision on a given table, not on this host's speed at start-up.
            var config = EngineConfiguration(slots: 4, contextLength: 512, speculation: speculation)
            config.costModel = EngineTests.givenCostModel(rowsAreFree: true)
            let engine = Engine(model: model, configuration: config)
            defer { engine.shutdown() }
            let events = try prompts.map {
                try submitCollecting(engine, GenerationRequest(promptTokens: $0, maxTokens: 80, sampling: .greedy, stopTokens: formatter.stopTokens,
                                                     grammar: grammar))
            }
            var total = SpeculationUsage()
            var out: [[Int32]] = []
            for e in events {
                #expect(e.wait())
                out.append(e.tokens.map(\.id))
                total.forcedDraftedTokens += e.usage.forcedDraftedTokens
                total.forcedAcceptedTokens += e.usage.forcedAcceptedTokens
                // The output is a complete match of the grammar.
                var state = grammar.initialState
                for t in e.tokens { state = try #require(grammar.advance(state, token: t.id)) }
                #expect(grammar.isComplete(state), "\(formatter.tokenizer.decode(e.tokens.map(\.id)))")
            }
            return (out, total)
        }
        let (plain, _) = try outputs(speculation: false)
        let (speculative, usage) = try outputs(speculation: true)
        #expect(plain == speculative)
        #expect(usage.forcedDraftedTokens > 0 && usage.forcedAcceptedTokens > 0)
        print("forced runs: \(usage.forcedAcceptedTokens)/\(usage.forcedDraftedTokens) forced draft tokens accepted")
    }

    @Test func promptLogprobsEqualTheDecodePathAcrossChunks() throws {
        let model = try EngineTests.model.get()
        let formatter = try Self.promptFormatter.get()
        // Longer than the test model's 64 logit rows per step: scored over several steps.
        let prompt = formatter.tokenizer.encode(String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 10), parseSpecial: false)
        #expect(prompt.count > 64)
        let engine = Engine(model: model, configuration: EngineConfiguration(slots: 4, contextLength: 512))
        defer { engine.shutdown() }
        let scored = try submitCollecting(engine, GenerationRequest(promptTokens: prompt, maxTokens: 0, sampling: .greedy, stopTokens: [],
                                                          promptLogprobs: 2))
        #expect(scored.wait())
        #expect(scored.tokens.isEmpty)
        #expect(scored.prompt.count == prompt.count)
        #expect(scored.prompt.map(\.id) == prompt)
        #expect(scored.prompt[0].logprob == nil)
        for k in [1, 2, 63, 64, 65, prompt.count - 1] {
            // The same token forced by a logit bias in a decode step: logprobs are the model's own.
            let direct = try submitCollecting(engine, GenerationRequest(promptTokens: Array(prompt[..<k]), maxTokens: 1, sampling: .greedy, stopTokens: [],
                                                              logprobs: true, logitBias: [prompt[k]: 100]))
            #expect(direct.wait())
            #expect(direct.tokens.first?.id == prompt[k])
            let a = try #require(scored.prompt[k].logprob), b = try #require(direct.tokens.first?.logprob)
            #expect(abs(a - b) < 1e-3, "position \(k): prefill \(a), decode \(b)")
            #expect(scored.prompt[k].topLogprobs.count == 2)
        }
    }

    @Test func embeddingsAreNormalisedAndBatchInvariant() throws {
        let model = try EngineTests.model.get()
        let formatter = try Self.promptFormatter.get()
        let texts = ["A cat sat on the mat.", "Stock markets fell sharply on Monday.", "The mitochondria is the powerhouse of the cell."]
        let prompts = texts.map { formatter.tokenizer.encode($0, parseSpecial: false) }
        let engine = Engine(model: model, configuration: EngineConfiguration(slots: 4, contextLength: 512))
        defer { engine.shutdown() }
        func embed(_ p: [Int32]) throws -> Events {
            try submitCollecting(engine, GenerationRequest(promptTokens: p, maxTokens: 0, sampling: .greedy, stopTokens: [], speculation: false, embedding: true))
        }
        let together = try prompts.map(embed)
        for e in together { #expect(e.wait()) }
        let alone = try embed(prompts[1])
        #expect(alone.wait())
        let v = together[1].embedding
        #expect(v.count == model.config.embeddingLength)
        #expect(abs(v.reduce(0) { $0 + $1 * $1 } - 1) < 1e-4)
        #expect(zip(v, alone.embedding).allSatisfy { abs($0 - $1) < 1e-6 })
        #expect(together[0].tokens.isEmpty)
        #expect(zip(together[0].embedding, v).contains { abs($0 - $1) > 1e-3 })
    }
}
