import Foundation
import Testing
import GGUF
import Model
import Engine
import Speculation
import ChatTemplate

/// The engine against its own single-stream reference: batching never changes greedy output.
@Suite(.serialized) struct EngineTests {
    static let modelPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf").path

    static let model: Result<Transformer, Error> = Result {
        guard FileManager.default.fileExists(atPath: modelPath) else {
            throw GGUFError.fileNotFound(path: modelPath)
        }
        return try Transformer(file: GGUFFile(path: modelPath), threads: 2, maxStepRows: 256, maxLogitRows: 64, maxContext: 1024)
    }

    /// Collects one request's events; thread-safe.
    final class Collector: @unchecked Sendable {
        private let lock = NSCondition()
        private(set) var tokens: [Int32] = []
        private(set) var finish: FinishReason?
        private(set) var error: EngineError?
        func handle(_ event: TokenEvent) {
            lock.lock()
            switch event {
            case .token(let t): tokens.append(t.id)
            case .finished(let reason, _, _, _): finish = reason
            case .failed(let e): error = e
            case .started, .promptLogprobs, .embedding: break
            }
            lock.broadcast()
            lock.unlock()
        }
        func wait(seconds: Double = 120) -> Bool {
            lock.lock()
            defer { lock.unlock() }
            let deadline = Date().addingTimeInterval(seconds)
            while finish == nil && error == nil { if !lock.wait(until: deadline) { return false } }
            return true
        }
    }

    static let prompts: [[Int32]] = [
        [504, 3575, 282, 4649, 314],
        [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198],
        [23, 24, 25, 26, 27, 28],
        [504, 2988, 314, 42],
    ]

    func run(_ engine: Engine, _ prompt: [Int32], maxTokens: Int = 24) throws -> Collector {
        let c = Collector()
        try engine.submit(GenerationRequest(promptTokens: prompt, maxTokens: maxTokens, sampling: .greedy, stopTokens: [2]),
                          onEvent: { c.handle($0) })
        return c
    }

    @Test func greedyOutputIsTheSameAloneAndBatched() throws {
        let model = try Self.model.get()
        let engine = Engine(model: model, configuration: EngineConfiguration(slots: 4, contextLength: 512, maxWaiting: 16, prefillChunk: 7))
        defer { engine.shutdown() }
        var alone: [[Int32]] = []
        for p in Self.prompts {
            let c = try run(engine, p)
            #expect(c.wait())
            alone.append(c.tokens)
        }
        // All at once, plus staggered arrivals while others decode.
        var together = try Self.prompts.map { try run(engine, $0) }
        Thread.sleep(forTimeInterval: 0.05)
        together += try Self.prompts.reversed().map { try run(engine, $0) }
        for c in together { #expect(c.wait()) }
        for (i, c) in together.enumerated() {
            let expected = i < Self.prompts.count ? alone[i] : alone[Self.prompts.count - 1 - (i - Self.prompts.count)]
            #expect(c.tokens == expected, "request \(i) changed under batching")
            #expect(c.finish != nil)
        }
    }

    @Test func queueBeyondCapacityIsRefusedAndEverythingAdmittedCompletes() throws {
        let model = try Self.model.get()
        let engine = Engine(model: model, configuration: EngineConfiguration(slots: 2, contextLength: 256, maxWaiting: 3, prefillChunk: 64))
        defer { engine.shutdown() }
        var admitted: [Collector] = []
        var refused = 0
        for i in 0..<12 {
            do { admitted.append(try run(engine, Self.prompts[i % Self.prompts.count], maxTokens: 8)) } catch EngineError.queueFull {
                refused += 1
            }
        }
        #expect(refused > 0)
        #expect(admitted.count >= 3)
        for c in admitted { #expect(c.wait()); #expect(c.tokens.count <= 8) }
        #expect(engine.snapshot.running == 0)
    }

    @Test func cancellationFreesTheSlot() throws {
        let model = try Self.model.get()
        let engine = Engine(model: model, configuration: EngineConfiguration(slots: 1, contextLength: 256, maxWaiting: 4, prefillChunk: 64))
        defer { engine.shutdown() }
        let c = Collector()
        let handle = try engine.submit(GenerationRequest(promptTokens: Self.prompts[0], maxTokens: 200, sampling: .greedy, stopTokens: []),
                                       onEvent: { c.handle($0) })
        Thread.sleep(forTimeInterval: 0.05)
        engine.cancel(handle)
        #expect(c.wait())
        #expect(c.finish == .cancelled)
        #expect(c.tokens.count < 200)
        // The single slot is free again.
        let next = try run(engine, Self.prompts[3], maxTokens: 4)
        #expect(next.wait())
        #expect(next.tokens.count == 4)
    }

    @Test func promptTooLongIsATypedError() throws {
        let model = try Self.model.get()
        let engine = Engine(model: model, configuration: EngineConfiguration(slots: 1, contextLength: 64, maxWaiting: 4))
        defer { engine.shutdown() }
        #expect(throws: EngineError.promptTooLong(promptTokens: 64, contextLength: 64)) {
            try engine.submit(GenerationRequest(promptTokens: [Int32](repeating: 5, count: 64), maxTokens: 1, sampling: .greedy, stopTokens: []),
                              onEvent: { _ in })
        }
        #expect(EngineError.promptTooLong(promptTokens: 64, contextLength: 64).description.contains("64"))
    }
}

/// Paged KV cache: prefix reuse and preemption never change greedy output. (An extension of the
/// serialized suite: every engine here shares one Transformer, which runs one step at a time.)
extension EngineTests {
    static let system: [Int32] = Array(EngineTests.prompts[1].prefix(20)) + Array(EngineTests.prompts[1].prefix(20))

    func runGreedy(_ engine: Engine, _ prompt: [Int32], maxTokens: Int = 16) throws -> EngineTests.Collector {
        let c = EngineTests.Collector()
        try engine.submit(GenerationRequest(promptTokens: prompt, maxTokens: maxTokens, sampling: .greedy, stopTokens: []),
                          onEvent: { c.handle($0) })
        return c
    }

    @Test func prefixReuseGivesTheColdOutputAndIsCounted() throws {
        let model = try EngineTests.model.get()
        let prompts = [Self.system + [504, 3575, 282], Self.system + [23, 24, 25, 26], Self.system + [504, 2988, 314, 42, 9000]]
        // Cold: a fresh engine per prompt.
        var cold: [[Int32]] = []
        for p in prompts {
            let engine = Engine(model: model, configuration: EngineConfiguration(slots: 1, contextLength: 256, maxWaiting: 4))
            let c = try runGreedy(engine, p)
            #expect(c.wait())
            cold.append(c.tokens)
            engine.shutdown()
        }
        // Warm: one engine; the shared 40-token prefix (2 full blocks) is reused after the first.
        let engine = Engine(model: model, configuration: EngineConfiguration(slots: 2, contextLength: 256, maxWaiting: 4))
        defer { engine.shutdown() }
        for (i, p) in prompts.enumerated() {
            let c = try runGreedy(engine, p)
            #expect(c.wait())
            #expect(c.tokens == cold[i], "prompt \(i) differs when its prefix comes from the cache")
        }
        let s = engine.snapshot
        #expect(s.prefixHitTokens >= 2 * 32, "hits: \(s.prefixHitTokens) of \(s.prefixLookupTokens)")
        #expect(s.kvBlocksUsed == 0)
        #expect(s.kvBlocksCached > 0)
    }

    @Test func preemptionUnderATightBudgetKeepsOutputsAndFreesEverything() throws {
        let model = try EngineTests.model.get()
        let prompts = EngineTests.prompts.map { $0 + $0 }
        var alone: [[Int32]] = []
        let roomy = Engine(model: model, configuration: EngineConfiguration(slots: 1, contextLength: 256, maxWaiting: 8))
        for p in prompts {
            let c = try runGreedy(roomy, p, maxTokens: 40)
            #expect(c.wait())
            alone.append(c.tokens)
        }
        roomy.shutdown()
        // 4 sequences of up to ~94 positions in 12 blocks of 16: they cannot all grow at once.
        let tight = Engine(model: model, configuration: EngineConfiguration(slots: 4, contextLength: 128, maxWaiting: 8, kvBlocks: 12))
        defer { tight.shutdown() }
        let collectors = try prompts.map { try runGreedy(tight, $0, maxTokens: 40) }
        for (i, c) in collectors.enumerated() {
            #expect(c.wait())
            #expect(c.tokens == alone[i], "request \(i) changed under preemption")
        }
        let s = tight.snapshot
        #expect(s.preemptions > 0)
        #expect(s.kvBlocksUsed == 0)
        #expect(s.running == 0)
    }
}

/// Speculative decoding never changes greedy output: speculation on (alone and 8 at a time)
/// gives token for token what speculation off gives, on the bench prompts. The identity tests force
/// drafting with the fixed chain strategy (every candidate path drafted and verified, whatever a
/// step costs on this host), so they verify drafts on every CPU (trees are rows whose logits equal
/// their paths', TransformerInvarianceTests); whether CAST drafts at all is the planner's business,
/// tested with given cost models below.
extension EngineTests {
    static func benchPrompts(limit: Int) throws -> [[Int32]] {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let path = root.deletingLastPathComponent().appendingPathComponent("shared/bench/prompts.jsonl").path
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let formatter = try PromptFormatter(file: GGUFFile(path: modelPath))
        var byCategory: [String: Int] = [:]
        var out: [[Int32]] = []
        for line in text.split(separator: "\n") {
            guard let row = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let category = row["category"] as? String, byCategory[category, default: 0] < limit else { continue }
            byCategory[category, default: 0] += 1
            if let messages = row["messages"] as? [[String: String]] {
                out.append(try formatter.chatTokens(messages.map { ChatMessage(role: $0["role"]!, content: $0["content"]!) }))
            } else if let prompt = row["prompt"] as? String {
                out.append(formatter.completionTokens(prompt))
            }
        }
        return out
    }

    /// A fixed cost model under which extra rows are free (so a planner that trusts it drafts
    /// wherever a candidate has any chance), or cost a full step each (so drafting never pays).
    /// Fixed: no measured step time refreshes it and the speculator's measured guards are off, so
    /// what the planner decides is the same on any host at any load (tests/README.md, Host
    /// independence).
    static func givenCostModel(rowsAreFree: Bool) -> CostModel {
        (rowsAreFree ? CostModel(points: [(1, 10), (256, 10)])
                     : CostModel(points: [1, 2, 4, 8, 16, 32, 64, 128, 256].map { ($0, 1000.0 * Double($0)) })).fixed()
    }

    /// Every drafter but the learned one (tested with its weights below).
    @Test(arguments: DrafterKind.allCases.filter { $0 != .learned })
    func speculationNeverChangesGreedyOutput(drafter: Speculation.DrafterKind) throws {
        let model = try Self.model.get()
        let prompts = try Self.benchPrompts(limit: 2)
        #expect(prompts.count == 14)
        func outputs(speculation: Bool, together: Bool) throws -> ([[Int32]], EngineSnapshot) {
            var config = EngineConfiguration(slots: 8, contextLength: 512, maxWaiting: 16, speculation: speculation, strategy: .chain4)
            config.costModel = Self.givenCostModel(rowsAreFree: true)
            config.drafter = drafter
            let engine = Engine(model: model, configuration: config)
            defer { engine.shutdown() }
            var results: [[Int32]] = []
            if together {
                let collectors = try prompts.map { try runGreedy(engine, $0, maxTokens: 48) }
                for c in collectors { #expect(c.wait()); results.append(c.tokens) }
            } else {
                for p in prompts {
                    let c = try runGreedy(engine, p, maxTokens: 48)
                    #expect(c.wait())
                    results.append(c.tokens)
                }
            }
            return (results, engine.snapshot)
        }
        let (plain, plainStats) = try outputs(speculation: false, together: false)
        #expect(plainStats.draftedTokens == 0)
        let (alone, aloneStats) = try outputs(speculation: true, together: false)
        let (batched, batchedStats) = try outputs(speculation: true, together: true)
        for i in prompts.indices {
            #expect(alone[i] == plain[i], "prompt \(i): speculation alone changed the output")
            #expect(batched[i] == plain[i], "prompt \(i): speculation 8 at a time changed the output")
        }
        // Not vacuous: drafts were verified and some accepted, alone and batched.
        #expect(aloneStats.draftedTokens > 0 && aloneStats.acceptedTokens > 0)
        #expect(batchedStats.draftedTokens > 0 && batchedStats.acceptedTokens > 0)
        print("speculation (\(drafter)): alone \(aloneStats.acceptedTokens)/\(aloneStats.draftedTokens) drafted tokens accepted over \(aloneStats.speculativeSteps) steps; 8 at a time \(batchedStats.acceptedTokens)/\(batchedStats.draftedTokens)")
    }
}

/// CAST drafts by the cost model it is given: with rows free it drafts and output stays the same;
/// with every row costing a full step it drafts nothing (plain decoding, same output). Requests run
/// one after another, so every step is one sequence's prefill or decode (the online correction of
/// mixed prefill-and-decode steps is the cost model's own test).
extension EngineTests {
    @Test(arguments: [true, false])
    func castDraftsOnlyWhenTheCostModelSaysItPays(rowsAreFree: Bool) throws {
        let model = try Self.model.get()
        let prompts = Array(try Self.benchPrompts(limit: 1).prefix(4))
        func outputs(speculation: Bool) throws -> ([[Int32]], EngineSnapshot) {
            var config = EngineConfiguration(slots: 4, contextLength: 512, maxWaiting: 16, speculation: speculation, strategy: .cast)
            config.costModel = Self.givenCostModel(rowsAreFree: rowsAreFree)
            config.drafter = .recycle
            let engine = Engine(model: model, configuration: config)
            defer { engine.shutdown() }
            var results: [[Int32]] = []
            for p in prompts {
                let c = try runGreedy(engine, p, maxTokens: 32)
                #expect(c.wait())
                results.append(c.tokens)
            }
            return (results, engine.snapshot)
        }
        let (plain, _) = try outputs(speculation: false)
        let (cast, stats) = try outputs(speculation: true)
        #expect(cast == plain, "speculation changed greedy output")
        if rowsAreFree {
            #expect(stats.draftedTokens > 0 && stats.acceptedTokens > 0, "free rows: \(stats.draftedTokens) drafted")
        } else {
            #expect(stats.draftedTokens == 0, "rows costing a full step each: \(stats.draftedTokens) drafted")
        }
    }
}

/// Sampled requests speculate too (lossless recursive rejection, see TreeVerifierTests for the
/// distribution test): they complete with valid tokens and accept drafts on repetitive text.
extension EngineTests {
    @Test func sampledRequestsSpeculateAndReportTheirOwnUsage() throws {
        let model = try Self.model.get()
        // The fixed chain strategy drafts on every step whatever a step costs on this host.
        var config = EngineConfiguration(slots: 2, contextLength: 512, speculation: true, strategy: .chain4)
        config.costModel = Self.givenCostModel(rowsAreFree: true)
        config.drafter = .recycle
        let engine = Engine(model: model, configuration: config)
        defer { engine.shutdown() }
        let formatter = try PromptFormatter(file: GGUFFile(path: Self.modelPath))
        let text = String(repeating: "one two three four five six seven eight nine ten. ", count: 4)
        let prompt = try formatter.chatTokens([ChatMessage(role: "user", content: "Repeat exactly: " + text)])
        final class Usage: @unchecked Sendable { var value: SpeculationUsage?; var tokens: [Int32] = []; let done = DispatchSemaphore(value: 0) }
        let usage = Usage()
        let request = GenerationRequest(promptTokens: prompt, maxTokens: 48,
                                        sampling: SamplingParameters(temperature: 0.3), stopTokens: [2])
        try engine.submit(request) { event in
            switch event {
            case .token(let t): usage.tokens.append(t.id)
            case .finished(_, _, _, let s): usage.value = s; usage.done.signal()
            case .failed: usage.done.signal()
            default: break
            }
        }
        #expect(usage.done.wait(timeout: .now() + 120) == .success)
        let u = try #require(usage.value)
        #expect(!usage.tokens.isEmpty && usage.tokens.allSatisfy { $0 >= 0 && Int($0) < model.config.vocabularySize })
        #expect(u.draftedTokens > 0 && u.acceptedTokens > 0, "\(u) \(usage.tokens)")
        // The prefill yields the first token; each decode step yields one plus its accepted drafts
        // (fewer when the request ends inside an accepted path).
        #expect(usage.tokens.count <= 1 + u.decodeSteps + u.acceptedTokens && usage.tokens.count >= 1 + u.decodeSteps, "\(u) \(usage.tokens.count)")
        print("sampled speculation: \(u), \(usage.tokens.count) tokens")
    }
}

/// The learned drafter in the engine, with untrained seeded weights (its drafts are rarely right,
/// which is what the identity must survive): alone and merged with the copy drafters, under the
/// fixed chain strategy (drafts every step) and under CAST with a given cost model and a given
/// drafting cost under which drafting pays, greedy output is plain decoding's; sampled requests
/// complete; and no slot keeps drafter state once its sequence has ended.
extension EngineTests {
    static func learnedWeights(_ model: Transformer) throws -> LearnedDrafterWeights {
        try LearnedDrafterWeights(parameters: .random(embeddingLength: model.config.embeddingLength, feedForwardLength: 256,
                                                      draftTokens: 4096, seed: 5), target: model)
    }

    @Test(arguments: [DrafterKind.learned, .recycle], [Speculation.DraftStrategy.chain4, .cast])
    func learnedDrafterNeverChangesGreedyOutput(drafter: Speculation.DrafterKind, strategy: Speculation.DraftStrategy) throws {
        let model = try Self.model.get()
        let weights = try Self.learnedWeights(model)
        let prompts = try Self.benchPrompts(limit: 1)
        func outputs(speculation: Bool) throws -> ([[Int32]], EngineSnapshot) {
            var config = EngineConfiguration(slots: 4, contextLength: 512, maxWaiting: 16, speculation: speculation, strategy: strategy)
            config.costModel = Self.givenCostModel(rowsAreFree: true)
            config.drafter = drafter
            config.learnedDrafter = weights
            config.learnedLayerCost = LayerCost(points: [(1, 0.01), (64, 0.02)])
            let engine = Engine(model: model, configuration: config)
            defer { engine.shutdown() }
            let collectors = try prompts.map { try runGreedy(engine, $0, maxTokens: 32) }
            var results: [[Int32]] = []
            for c in collectors { #expect(c.wait()); results.append(c.tokens) }
            engine.shutdown()
            #expect(engine.waitUntilStopped(timeout: .seconds(30)))
            return (results, engine.snapshot)
        }
        let (plain, _) = try outputs(speculation: false)
        let (speculative, stats) = try outputs(speculation: true)
        for i in prompts.indices { #expect(speculative[i] == plain[i], "prompt \(i): the learned drafter (\(drafter), \(strategy)) changed the output") }
        #expect(stats.draftedTokens > 0, "nothing drafted")
        #expect(stats.learnedAcceptanceByDepth.first.map { $0.observed > 0 } == true, "no learned node verified: \(stats.learnedAcceptanceByDepth)")
        if drafter == .recycle { #expect(stats.acceptedTokens > 0) }
        #expect(stats.drafterSlotsHeld == 0, "drafter state outlived its sequences")
        #expect(stats.drafterLayerCost != nil)
        print("learned drafter (\(drafter), \(strategy)): \(stats.acceptedTokens)/\(stats.draftedTokens) accepted; learned by depth \(stats.learnedAcceptanceByDepth.prefix(4))")
    }

    @Test func sampledRequestsDraftWithTheLearnedDrafter() throws {
        let model = try Self.model.get()
        var config = EngineConfiguration(slots: 2, contextLength: 512, speculation: true, strategy: .chain4)
        config.costModel = Self.givenCostModel(rowsAreFree: true)
        config.drafter = .learned
        config.learnedDrafter = try Self.learnedWeights(model)
        config.learnedLayerCost = LayerCost(points: [(1, 0.01)])
        let engine = Engine(model: model, configuration: config)
        defer { engine.shutdown() }
        final class Usage: @unchecked Sendable { var value: SpeculationUsage?; var tokens: [Int32] = []; let done = DispatchSemaphore(value: 0) }
        let usage = Usage()
        try engine.submit(GenerationRequest(promptTokens: Self.prompts[1], maxTokens: 32, sampling: SamplingParameters(temperature: 0.8),
                                            stopTokens: [])) { event in
            switch event {
            case .token(let t): usage.tokens.append(t.id)
            case .finished(_, _, _, let s): usage.value = s; usage.done.signal()
            case .failed: usage.done.signal()
            default: break
            }
        }
        #expect(usage.done.wait(timeout: .now() + 120) == .success)
        let u = try #require(usage.value)
        #expect(usage.tokens.count == 32 && usage.tokens.allSatisfy { $0 >= 0 && Int($0) < model.config.vocabularySize })
        #expect(u.draftedTokens > 0 && u.speculativeSteps > 0, "\(u)")
        #expect(usage.tokens.count <= 1 + u.decodeSteps + u.acceptedTokens && usage.tokens.count >= 1 + u.decodeSteps, "\(u)")
    }
}
