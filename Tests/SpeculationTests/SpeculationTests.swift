import Foundation
import Testing
import Speculation

@Suite struct DraftTreeTests {
    @Test func scoresAreProductsDownAPathAndPruningKeepsAncestors() {
        var t = DraftTree()
        let a = t.add(token: 10, parent: -1, confidence: 0.9)
        let b = t.add(token: 11, parent: a, confidence: 0.5)
        let c = t.add(token: 12, parent: -1, confidence: 0.5)
        _ = t.add(token: 13, parent: b, confidence: 1.5)  // clamped to 1
        #expect(abs(t.scores[b] - 0.45) < 1e-6)
        #expect(t.scores[3] == t.scores[b])
        #expect(t.depths == [1, 2, 1, 3])
        let p = t.pruned(to: 2)
        #expect(p.tokens == [10, 12])
        #expect(p.parents == [-1, -1])
        let q = t.pruned(to: 3)
        #expect(Set(q.tokens) == [10, 11, 12])
        #expect(q.parents[q.tokens.firstIndex(of: 11)!] == q.tokens.firstIndex(of: 10)!)
        #expect(t.child(of: a, token: 11) == b)
        #expect(t.child(of: -1, token: 12) == c)
        #expect(t.child(of: -1, token: 99) == nil)
        let path = t.bestPath(maxDepth: 2)
        #expect(path.tokens == [10, 11] && path.parents == [-1, 0])
    }

    @Test func rescoringMultipliesEdgesAndNeverIncreasesDownAPath() {
        var t = DraftTree()
        let a = t.add(token: 1, parent: -1, confidence: 0.2)
        t.add(token: 2, parent: a, confidence: 0.2)
        t.rescore { $0 == 0 ? 0.5 : 0.9 }
        #expect(t.scores == [0.5, 0.45])
    }
}

@Suite struct NGramDrafterTests {
    func propose(_ history: [Int32], nodes: Int = 8, depth: Int = 3) -> DraftTree {
        NGramDrafter().propose([DraftInput(slot: 0, history: history, maxNodes: nodes, maxDepth: depth)])[0]
    }

    @Test func proposesWhatFollowedTheLastOccurrence() {
        // "a b c d e ... a b" -> expect "c d e" drafted.
        let tree = propose([1, 2, 3, 4, 5, 9, 9, 1, 2])
        #expect(Array(tree.tokens.prefix(3)) == [3, 4, 5])
        #expect(tree.parents.prefix(3) == [-1, 0, 1])
        #expect(tree.scores[0] > 0 && tree.scores[2] <= tree.scores[1] && tree.scores[1] <= tree.scores[0])
    }

    @Test func nothingToProposeWithoutARepeat() {
        #expect(propose([1, 2, 3, 4], depth: 4).isEmpty)
    }
}

@Suite struct RecycleDrafterTests {
    /// Logits over a vocabulary of 32 where `ranking` gets descending values.
    func logits(_ ranking: [Int32]) -> [Float] {
        var l = [Float](repeating: -10, count: 32)
        for (i, id) in ranking.enumerated() { l[Int(id)] = 5 - Float(i) }
        return l
    }

    @Test func recordsTheTargetsTopSuccessorsAndExpandsThemBestFirst() {
        let d = RecycleDrafter(vocabularySize: 32, k: 2)
        #expect(d.successors(of: 3).isEmpty)
        logits([7, 8, 9]).withUnsafeBufferPointer { d.observe(previous: -1, token: 3, logits: $0.baseAddress!, vocabularySize: 32) }
        logits([11, 12]).withUnsafeBufferPointer { d.observe(previous: -1, token: 7, logits: $0.baseAddress!, vocabularySize: 32) }
        let s = d.successors(of: 3)
        #expect(s.map(\.id) == [7, 8])
        #expect(s[0].probability > s[1].probability && s[0].probability < 1)
        // Root 3 (no repeats for prompt lookup): 3 -> 7 -> 11 is the most likely path.
        let tree = d.propose([DraftInput(slot: 0, history: [1, 2, 3], maxNodes: 3, maxDepth: 4)])[0]
        #expect(tree.count == 3)
        #expect(tree.tokens[0] == 7 && tree.parents[0] == -1)
        #expect(tree.child(of: 0, token: 11) != nil)
        #expect(tree.sources.allSatisfy { $0 == 0 })
        let shallow = d.propose([DraftInput(slot: 0, history: [1, 2, 3], maxNodes: 8, maxDepth: 1)])[0]
        #expect(Set(shallow.tokens) == [7, 8])
    }

    @Test func prefersSuccessorsOfTheLastTwoTokensWhereKnown() {
        let d = RecycleDrafter(vocabularySize: 32, k: 2)
        logits([7, 8]).withUnsafeBufferPointer { d.observe(previous: -1, token: 3, logits: $0.baseAddress!, vocabularySize: 32) }
        logits([20, 21]).withUnsafeBufferPointer { d.observe(previous: 5, token: 3, logits: $0.baseAddress!, vocabularySize: 32) }
        #expect(d.successors(after: 5, 3).map(\.id) == [20, 21])
        #expect(d.successors(after: 6, 3).isEmpty)
        let after5 = d.propose([DraftInput(slot: 0, history: [1, 5, 3], maxNodes: 2, maxDepth: 1)])[0]
        #expect(Set(after5.tokens) == [20, 21] && after5.sources == [2, 2])
        let after6 = d.propose([DraftInput(slot: 0, history: [1, 6, 3], maxNodes: 2, maxDepth: 1)])[0]
        #expect(Set(after6.tokens) == [20, 21])  // the single-token table was refreshed by the last observation
        #expect(after6.sources == [0, 0])
    }

    @Test func mergesPromptLookupBranchesAsASecondSource() {
        let d = RecycleDrafter(vocabularySize: 32, k: 2)
        let tree = d.propose([DraftInput(slot: 0, history: [1, 2, 3, 4, 9, 1, 2], maxNodes: 8, maxDepth: 2)])[0]
        #expect(tree.tokens.prefix(2) == [3, 4])
        #expect(tree.sources.prefix(2) == [1, 1])
    }
}

@Suite struct ScoreCalibrationTests {
    @Test func followsObservedAcceptancePerBucketAndDepth() {
        var tree = DraftTree()
        tree.add(token: 1, parent: -1, confidence: 0.95)
        tree.add(token: 2, parent: 0, confidence: 0.95)
        var over = ScoreCalibration()
        #expect(abs(over.probability(confidence: 0.95, depth: 1) - 0.5 * 0.95) < 1e-6)  // the prior: half trusted
        for _ in 0..<50 { over.record(tree: tree, acceptedNodes: []) }
        #expect(over.probability(confidence: 0.95, depth: 1) < 0.1)
        // The depth-2 node was never tested (its parent was rejected): still the prior.
        #expect(abs(over.probability(confidence: 0.95, depth: 2) - 0.5 * 0.95) < 1e-6)
        var good = ScoreCalibration()
        for _ in 0..<50 { good.record(tree: tree, acceptedNodes: [0, 1]) }
        #expect(good.probability(confidence: 0.95, depth: 1) > 0.9 && good.probability(confidence: 0.95, depth: 2) > 0.9)
        // Other buckets and sources are untouched.
        #expect(abs(good.probability(confidence: 0.15, depth: 1) - 0.5 * 0.15) < 1e-6)
        #expect(abs(good.probability(confidence: 0.95, depth: 1, source: 1) - 0.5 * 0.95) < 1e-6)
        let c = over.calibrated(tree)
        #expect(c.scores[0] < 0.1 && c.scores[1] <= c.scores[0])
    }

    @Test func acceptancePerExpansionCountsAnExpansionOnceWhicheverChildIsAccepted() {
        // Three learned children below the root; below the first, one learned and one recycle child.
        var tree = DraftTree()
        for t in Int32(1)...3 { tree.add(token: t, parent: -1, confidence: 0.3, source: DraftSource.learned) }
        tree.add(token: 4, parent: 0, confidence: 0.3, source: DraftSource.learned)
        tree.add(token: 5, parent: 0, confidence: 0.3, source: DraftSource.recycle)
        var cal = ScoreCalibration()
        let prior = cal.acceptancePerExpansion(depth: 1, source: DraftSource.learned)
        #expect(abs(prior - 0.25) < 1e-6)
        // Each child wins a third of the time: every expansion at the root brings one.
        for k in 0..<60 { cal.record(tree: tree, acceptedNodes: [k % 3]) }
        #expect(cal.acceptancePerExpansion(depth: 1, source: DraftSource.learned) > 0.9)
        let perNode = cal.acceptanceByDepth(source: DraftSource.learned)[0]
        #expect(perNode.observed == 180 && perNode.accepted == 60)
        // Depth 2 was tested only below node 0 (20 times), and no child there was accepted:
        // (0 + 4 x 0.25) / (20 + 4). The recycle source's expansion there is counted on its own;
        // it never expanded the root (the prior).
        #expect(abs(cal.acceptancePerExpansion(depth: 2, source: DraftSource.learned) - 1.0 / 24) < 1e-6)
        #expect(abs(cal.acceptancePerExpansion(depth: 2, source: DraftSource.recycle) - 1.0 / 24) < 1e-6)
        #expect(abs(cal.acceptancePerExpansion(depth: 1, source: DraftSource.recycle) - 0.25) < 1e-6)
    }
}

/// The speculator as a drafter's layer gate: whether one more layer pays is judged with the
/// source's acceptance per expansion (a layer's several children share one chance) and the
/// drafting time, which a fixed cost model counts as zero.
@Suite struct LayerGateTests {
    /// A drafter that asks the gate once, about expanding its only root, and drafts nothing; a
    /// layer costs `layerMs`, and `spentMs` were spent drafting before it.
    final class Probe: Drafter {
        var name: String { "probe" }
        var usesModel: Bool { true }
        let layerMs: Double, spentMs: Double
        var layerCost: LayerCost? { LayerCost(points: [(1, layerMs), (64, layerMs)]) }
        var answers: [Int] = []
        init(layerMs: Double = 3, spentMs: Double = 0) {
            self.layerMs = layerMs
            self.spentMs = spentMs
        }
        func propose(_ inputs: [DraftInput]) throws -> [DraftTree] { inputs.map { _ in DraftTree() } }
        func propose(_ inputs: [DraftInput], gate: LayerGate?) throws -> [DraftTree] {
            let layer = layerMs
            answers.append(gate!.expansion(of: [FrontierNode(tree: 0, node: -1)], trees: [DraftTree()], inputs: inputs,
                                           source: DraftSource.learned, spentMilliseconds: spentMs, layerMilliseconds: { $0 == 0 ? 0 : layer }))
            return inputs.map { _ in DraftTree() }
        }
    }

    /// A step of 10 ms, 11 ms with one more row (a measured model unless `fixed`). The root's
    /// three children were accepted in turn (a third of the nodes, every expansion), or never.
    func answer(acceptedEvery expansion: Bool, probe: Probe = Probe(), fixed: Bool = false) -> Int {
        let table = CostModel(points: [(1, 10), (2, 11), (4, 13), (8, 17)])
        let speculator = Speculator(drafter: probe, cost: fixed ? table.fixed() : table)
        var tree = DraftTree()
        for t in Int32(1)...3 { tree.add(token: t, parent: -1, confidence: 0.3, source: DraftSource.learned) }
        for k in 0..<60 { speculator.record(tree, acceptedNodes: expansion ? [k % 3] : []) }
        _ = speculator.draft([DraftInput(slot: 0, history: [5, 6, 7], maxNodes: 8, maxDepth: 4)],
                             base: StepShape(rows: 1, logitRows: 1, positions: 3), baseTokens: 1, maxRows: 64)
        return probe.answers.last ?? -1
    }

    @Test func aLayerWhoseChildrenShareOneLikelyAcceptanceIsRun() {
        // A layer of 3 ms: per node a third (1.33 tokens in 14 ms < 1 in 10 ms), per expansion
        // nearly one (1.97 in 14 ms).
        #expect(answer(acceptedEvery: true) == 1)
        #expect(answer(acceptedEvery: false) == 0)
    }

    @Test func aFixedCostModelCountsDraftingAsFree() {
        // A 30-ms layer: 1.97 tokens in 41 ms do not pay on a measured model (1 in 10 ms); on a
        // fixed one the gate decides from the table alone (1.97 tokens in 11 ms), so the same
        // trees grow on any host, however long drafting took (40 ms already spent).
        #expect(answer(acceptedEvery: true, probe: Probe(layerMs: 30)) == 0)
        #expect(answer(acceptedEvery: true, probe: Probe(layerMs: 30), fixed: true) == 1)
        #expect(answer(acceptedEvery: true, probe: Probe(layerMs: 30, spentMs: 40), fixed: true) == 1)
        #expect(answer(acceptedEvery: false, fixed: true) == 0)
    }
}

@Suite struct PlannerTests {
    static let flat = CostModel(points: [(1, 5), (2, 5.2), (4, 5.6), (8, 8), (16, 13), (32, 25), (64, 50)])
    static let linear = CostModel(points: [(1, 5), (2, 10), (4, 20), (8, 40), (16, 80)])

    func candidates(_ scores: [[Float]]) -> [CASTPlanner.Candidate] {
        scores.enumerated().flatMap { s, list in list.enumerated().map { CASTPlanner.Candidate(sequence: s, node: $0, score: $1, depth: $0 + 1) } }
    }

    @Test func flatCostGrowsTreesAndLinearCostKeepsPlainDecoding() {
        let c = candidates([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]])
        let wide = CASTPlanner.plan(candidates: c, sequences: 1, base: StepShape(rows: 1, logitRows: 1, positions: 0), baseTokens: 1, maxRows: 64, cost: Self.flat)
        #expect(wide.perSequence[0] >= 5)
        #expect(wide.goodput > wide.plainGoodput)
        let none = CASTPlanner.plan(candidates: c, sequences: 1, base: StepShape(rows: 1, logitRows: 1, positions: 0), baseTokens: 1, maxRows: 64, cost: Self.linear)
        #expect(none.perSequence[0] == 0)
        #expect(none.goodput == none.plainGoodput)
    }

    @Test func aPlanBarelyBetterThanPlainIsNotTaken() {
        // One node of score 0.05: 1.05 tokens in 5.1 ms against 1 in 5 ms is +2.9%.
        let c = candidates([[0.05]])
        let cost = CostModel(points: [(1, 5), (2, 5.1)])
        #expect(CASTPlanner.plan(candidates: c, sequences: 1, base: StepShape(rows: 1, logitRows: 1, positions: 0), baseTokens: 1, maxRows: 8, cost: cost, minimumGain: 0).perSequence == [1])
        #expect(CASTPlanner.plan(candidates: c, sequences: 1, base: StepShape(rows: 1, logitRows: 1, positions: 0), baseTokens: 1, maxRows: 8, cost: cost).perSequence == [0])
    }

    @Test func confidentSequencesGetMoreOfTheStep() {
        let c = candidates([[0.95, 0.9, 0.85, 0.8], [0.2, 0.1, 0.05, 0.01]])
        let plan = CASTPlanner.plan(candidates: c, sequences: 2, base: StepShape(rows: 2, logitRows: 2, positions: 0), baseTokens: 2, maxRows: 64, cost: Self.flat)
        #expect(plan.perSequence[0] > plan.perSequence[1])
    }

    @Test(arguments: [UInt64(1), 2, 3, 4, 5])
    func neverPredictedBelowPlainDecoding(seed: UInt64) {
        var state = seed
        func next() -> Float { state = state &* 6364136223846793005 &+ 1442695040888963407; return Float(state >> 40) / Float(1 << 24) }
        let c = candidates((0..<4).map { _ in (0..<6).map { _ in next() }.sorted(by: >) })
        for cost in [Self.flat, Self.linear] {
            let plan = CASTPlanner.plan(candidates: c, sequences: 4, base: StepShape(rows: 4, logitRows: 4, positions: 0), baseTokens: 4, maxRows: 64, cost: cost)
            #expect(plan.goodput >= plan.plainGoodput, "seed \(seed)")
        }
    }

    @Test func costModelInterpolatesAndLearnsOnline() {
        var m = CostModel(points: [(1, 4), (4, 10)])
        #expect(m.milliseconds(rows: 2) == 6)
        #expect(m.milliseconds(rows: 8) == 20)  // 10 + 4 rows at the average 2.5 ms (above the last slope, 2)
        for _ in 0..<200 { m.observe(rows: 4, ms: 20) }
        #expect(abs(m.milliseconds(rows: 4) - 20) < 0.5)
        // Beyond the table a row costs at least the table's average row, even where the last
        // segment is flat.
        let flatEnd = CostModel(points: [(1, 4), (64, 32), (128, 32)])
        #expect(flatEnd.milliseconds(rows: 256) >= 32 + 128 * 0.25)
        // Only the entry used learns: one row is still about as measured.
        #expect(abs(m.milliseconds(rows: 1) - 4) < 0.01)
    }

    @Test func fitSeparatesWeightTimeFromAttention() {
        // A synthetic device: W(R) = 4 + R / 2 ms, 0.001 ms per attended position.
        func t(_ r: Int, _ positions: Int) -> Double { 4 + Double(r) / 2 + 0.001 * Double(positions) }
        let short = [1, 2, 4, 8, 16].map { (rows: $0, positions: $0 * 65, ms: t($0, $0 * 65)) }
        let long = [1, 4, 16].map { (rows: $0, positions: $0 * 1025, ms: t($0, $0 * 1025)) }
        let m = CostModel.fit(short: short, long: long)
        #expect(abs(m.msPerPosition - 0.001) < 1e-9)
        #expect(abs(m.milliseconds(rows: 8, positions: 8 * 2000) - t(8, 8 * 2000)) < 1e-6)
        #expect(abs(m.milliseconds(rows: 3, positions: 0) - 5.5) < 1e-6)
        // Round trip through JSON (the on-disk cache's format).
        let decoded = try? JSONDecoder().decode(CostModel.self, from: JSONEncoder().encode(m))
        #expect(decoded == m)
    }

    @Test func longContextsMakeNodesCostlierAndTreesSmaller() {
        let m = CostModel(points: [(1, 5), (2, 5.2), (4, 5.6), (8, 8), (16, 13), (32, 25)], msPerPosition: 0.002)
        func plan(context: Int) -> Int {
            let c = (0..<8).map { CASTPlanner.Candidate(sequence: 0, node: $0, score: 0.5 - Float($0) * 0.05, depth: $0 + 1, positions: context + $0 + 1) }
            return CASTPlanner.plan(candidates: c, sequences: 1, base: StepShape(rows: 1, logitRows: 1, positions: context), baseTokens: 1, maxRows: 64, cost: m).perSequence[0]
        }
        #expect(plan(context: 64) > plan(context: 4000))
    }

    @Test func costModelCacheStoresPerKeyAndMissesOnAnotherKey() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("castserve-cost-\(UInt64.random(in: 0...UInt64.max))").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let modelFile = dir + "-model.bin"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Data((0..<1000).map { UInt8($0 % 251) }).write(to: URL(fileURLWithPath: modelFile))
        defer { try? FileManager.default.removeItem(atPath: modelFile) }
        let cache = CostModelCache(directory: dir + "/nested")
        let key = try CostModelCache.Key(modelPath: modelFile, threads: 2, variant: "slots=8")
        #expect(cache.load(key) == nil)
        let m = CostModel(points: [(1, 4), (8, 6)], msPerPosition: 0.0005)
        try cache.save(m, for: key)
        #expect(cache.load(key) == m)
        #expect(cache.load(try CostModelCache.Key(modelPath: modelFile, threads: 1, variant: "slots=8")) == nil)
        #expect(cache.load(try CostModelCache.Key(modelPath: modelFile, threads: 2, variant: "slots=4")) == nil)
        // A different model file (one byte changed) is another key.
        try Data((0..<1000).map { UInt8(($0 + 1) % 251) }).write(to: URL(fileURLWithPath: modelFile))
        #expect(cache.load(try CostModelCache.Key(modelPath: modelFile, threads: 2, variant: "slots=8")) == nil)
        #expect(throws: (any Error).self) { try CostModelCache.Key(modelPath: dir + "/missing.gguf", threads: 2, variant: "") }
    }
}

/// The suffix drafter: continuations of the longest matched suffix in the corpus of finished
/// requests, frequency-scored, bounded, not crossing documents.
@Suite struct SuffixDrafterTests {
    func draft(_ d: SuffixDrafter, _ history: [Int32], nodes: Int = 16, depth: Int = 4) -> DraftTree {
        d.propose([DraftInput(slot: 0, history: history, maxNodes: nodes, maxDepth: depth)])[0]
    }

    @Test func proposesWhatFollowedInEarlierRequestsScoredByFrequency() {
        let d = SuffixDrafter(capacity: 1024)
        d.finished(history: [1, 2, 3, 10, 11, 12])
        d.finished(history: [5, 2, 3, 20, 21])
        d.finished(history: [7, 2, 3, 20, 22])
        let t = draft(d, [9, 9, 2, 3])
        // After "2 3": 20 twice, 10 once.
        let first = t.children(of: -1)
        #expect(Set(first.map { t.tokens[$0] }) == [20, 10])
        let twenty = first.first { t.tokens[$0] == 20 }!, ten = first.first { t.tokens[$0] == 10 }!
        #expect(t.confidences[twenty] > t.confidences[ten])
        #expect(abs(t.confidences[twenty] / t.confidences[ten] - 2) < 1e-5)
        // Below 20: 21 and 22 once each, half each of 20's occurrences.
        #expect(Set(t.children(of: twenty).map { t.tokens[$0] }) == [21, 22])
        // 12 follows 10 11; documents never run into each other (no 5 after 12).
        let eleven = t.children(of: ten).first!
        #expect(t.tokens[eleven] == 11)
        #expect(t.children(of: t.children(of: eleven).first!).isEmpty)
        #expect(t.sources.allSatisfy { $0 == DraftSource.corpus })
    }

    @Test func longerMatchesWinAndUnknownTextProposesNothing() {
        let d = SuffixDrafter(capacity: 1024)
        d.finished(history: [1, 2, 3, 4, 50])
        d.finished(history: [9, 3, 4, 60])
        // "2 3 4" matches only the first document: 50, not 60.
        #expect(draft(d, [2, 3, 4]).tokens.first == 50)
        #expect(draft(d, [8, 3, 4]).tokens.first == 60)
        #expect(draft(d, [100, 101]).isEmpty)
    }

    @Test func oldTextIsEvictedWhenTheRingWraps() {
        let d = SuffixDrafter(capacity: 16)
        d.finished(history: [1, 2, 3, 4, 5])
        #expect(draft(d, [1, 2]).tokens.first == 3)
        for i in 0..<4 { d.finished(history: (0..<5).map { Int32(100 + i * 5 + $0) }) }
        #expect(draft(d, [1, 2]).isEmpty)
        #expect(d.written == 25)
    }

    @Test func mergedDraftersShareOneTreeAndEveryObservation() {
        let suffix = SuffixDrafter(capacity: 1024)
        let merged = MergedDrafter([NGramDrafter(), suffix])
        merged.finished(history: [4, 5, 6, 7])
        // Prompt lookup proposes 6 after "... 4 5" from the sequence itself; the corpus agrees
        // and adds 7 below it.
        let t = try! merged.propose([DraftInput(slot: 0, history: [4, 5, 6, 1, 4, 5], maxNodes: 8, maxDepth: 3)])[0]
        let six = t.child(of: -1, token: 6)!
        #expect(t.sources[six] == DraftSource.promptLookup)
        #expect(t.child(of: six, token: 7) != nil || t.child(of: six, token: 1) != nil)
        #expect(merged.name == "ngram+suffix")
    }
}

/// The cost model against steps the engine really ran: Tests/Fixtures/cost_steps.json holds the
/// start-up cost model and the cast strategy's steps of one round of `cast-bench matrix
/// --record-steps` (prefill chunks, decode roots and draft trees of 1 to 16 sequences mixed, with
/// their forward and host times), every 4th kept (tools/reference/thin_cost_steps.py; README there).
@Suite struct CostModelReplayTests {
    struct Recorded: Decodable {
        struct Step: Decodable {
            var rows: Int, logit_rows: Int, positions: Int, nodes: Int
            var forward_ms: Double, host_ms: Double
        }
        var cost_model: CostModel
        var steps: [Step]
    }

    /// What the model claims (the goals, met on the recorded steps): median and 90th
    /// percentile of |observed - predicted| / predicted over the replayed steps.
    static let claimedMedianError = 0.10
    static let claimedP90Error = 0.25

    static func percentiles(_ e: [Double]) -> (median: Double, p90: Double) {
        let s = e.sorted()
        return (s[s.count / 2], s[min(s.count - 1, Int(Double(s.count) * 0.9))])
    }

    @Test func predictsRecordedMixedStepsWithinItsClaimedError() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/cost_steps.json")
        let recorded = try JSONDecoder().decode(Recorded.self, from: Data(contentsOf: url))
        #expect(recorded.steps.count >= 200)
        // Replayed in order, with the online refresh the engine applies after every step.
        var model = recorded.cost_model
        var accuracy = CostAccuracy(capacity: recorded.steps.count)
        // The chain model of before: one table of steps with logits for every row (body + head
        // at equal counts), no host time, corrected online from whole steps.
        let chainPoints = recorded.cost_model.body.map { p in
            (p.rows, p.ms + CostModel.interpolate(recorded.cost_model.head, p.rows))
        }
        var chain = CostModel(points: chainPoints, msPerPosition: recorded.cost_model.msPerPosition)
        var chainErrors: [Double] = []
        for s in recorded.steps {
            let shape = StepShape(rows: s.rows, logitRows: s.logit_rows, positions: s.positions, nodes: s.nodes)
            let observed = s.forward_ms + s.host_ms
            accuracy.record(predictedMs: model.milliseconds(shape), observedMs: observed)
            model.observe(shape, forwardMs: s.forward_ms, hostMs: s.host_ms)
            let c = chain.milliseconds(rows: s.rows, positions: s.positions)
            chainErrors.append(abs(observed - c) / c)
            chain.observe(rows: s.rows, positions: s.positions, ms: observed)
        }
        let (median, p90) = try #require(accuracy.summary)
        let before = Self.percentiles(chainErrors)
        print(String(format: "cost model on %d recorded steps: median |error| %.3f, p90 %.3f (chain model of before: %.3f, %.3f)",
                     recorded.steps.count, median, p90, before.median, before.p90))
        #expect(median <= Self.claimedMedianError)
        #expect(p90 <= Self.claimedP90Error)
        // On steps it observes, the chain model's online correction keeps up nearly as well; what
        // the shape model adds is the planner's counterfactuals (rows without logits, host time
        // per node), which no recording can score. It must be no worse here.
        #expect(median <= before.median * 1.02 && p90 <= before.p90 * 1.02,
                "the shape model should be no worse than the chain model it replaced")
    }
}

/// The speculator's measured guard: whatever the cost model says, drafting that loses on the clock
/// at a batch size is only probed there, and drafting that pays keeps a plain step now and then.
@Suite struct MeasuredGuardTests {
    /// A model where draft rows are free: the planner alone would always draft.
    static let freeRows = CostModel(body: [(1, 1.0), (64, 1.0)], head: [], msPerPosition: 0)
    static let base4 = StepShape(rows: 4, logitRows: 4, positions: 400)
    static let tree4 = StepShape(rows: 8, logitRows: 8, positions: 804, nodes: 4)

    func speculator(plainMs: Double, draftingMs: Double, committed: Int) -> Speculator {
        let s = Speculator(drafter: NGramDrafter(), cost: Self.freeRows)
        for _ in 0..<BucketGoodput.minimumSteps {
            s.observe(Self.base4, forwardMs: plainMs * 0.9, hostMs: plainMs * 0.1, base: Self.base4, baseTokens: 4, committed: 4)
            s.observe(Self.tree4, forwardMs: draftingMs * 0.9, hostMs: draftingMs * 0.1, base: Self.base4, baseTokens: 4,
                      committed: committed)
        }
        return s
    }

    @Test func draftingThatLosesOnTheClockIsOnlyProbed() {
        // Plain: 4 tokens in 4 ms. Drafting: 5 tokens in 8 ms (0.625 of plain's goodput).
        let s = speculator(plainMs: 4, draftingMs: 8, committed: 5)
        #expect(s.measured[BucketGoodput.bucket(4)].verdict == .losing)
        let drafted = (0..<64).filter { _ in s.shouldDraft(decodeRoots: 4) }.count
        #expect(drafted == 8, "one probe in 8 steps")
        // Another batch size has no verdict yet: drafting stays the planner's call.
        #expect(s.shouldDraft(decodeRoots: 1))
    }

    @Test func draftingThatPaysKeepsAPlainStepNowAndThen() {
        // Plain: 4 tokens in 4 ms. Drafting: 8 tokens in 5 ms.
        let s = speculator(plainMs: 4, draftingMs: 5, committed: 8)
        #expect(s.measured[BucketGoodput.bucket(4)].verdict == .paying)
        let drafted = (0..<64).filter { _ in s.shouldDraft(decodeRoots: 4) }.count
        #expect(drafted == 60, "one plain step in 16")
    }

    @Test func aBucketWithoutAVerdictInterleavesPlainSteps() {
        // Drafting steps only (the planner always chose nodes): no plain sample, no verdict.
        let s = Speculator(drafter: NGramDrafter(), cost: Self.freeRows)
        for _ in 0..<20 {
            s.observe(Self.tree4, forwardMs: 7, hostMs: 1, base: Self.base4, baseTokens: 4, committed: 5)
        }
        #expect(s.measured[BucketGoodput.bucket(4)].verdict == .unknown)
        var drafted = 0
        for _ in 0..<(4 * BucketGoodput.minimumSteps) {
            if s.shouldDraft(decodeRoots: 4) {
                drafted += 1
                s.observe(Self.tree4, forwardMs: 7, hostMs: 1, base: Self.base4, baseTokens: 4, committed: 5)
            } else {
                s.observe(Self.base4, forwardMs: 3.6, hostMs: 0.4, base: Self.base4, baseTokens: 4, committed: 4)
            }
        }
        // Half the steps were plain until the verdict (drafting: 5 tokens in 8 ms, 0.625 of plain),
        // then one probe in 8.
        #expect(s.measured[BucketGoodput.bucket(4)].verdict == .losing)
        #expect(s.measured[BucketGoodput.bucket(4)].plainSteps >= BucketGoodput.minimumSteps)
        #expect(drafted < 2 * BucketGoodput.minimumSteps, "drafted \(drafted) of \(4 * BucketGoodput.minimumSteps) steps")
        // With as many plain samples as drafting ones and still no verdict, drafting is the planner's call.
        let fresh = Speculator(drafter: NGramDrafter(), cost: Self.freeRows)
        #expect((0..<8).allSatisfy { _ in fresh.shouldDraft(decodeRoots: 4) })
    }

    @Test func stepsWithPrefillRowsAreNoEvidence() {
        let s = Speculator(drafter: NGramDrafter(), cost: Self.freeRows)
        let mixed = StepShape(rows: 36, logitRows: 4, positions: 900)
        for _ in 0..<20 { s.observe(mixed, forwardMs: 20, hostMs: 1, base: mixed, baseTokens: 4, committed: 4) }
        #expect(s.measured.allSatisfy { $0.plainSteps == 0 && $0.draftingSteps == 0 })
    }

    @Test func bucketsDoubleInBatchSize() {
        #expect([1, 2, 3, 4, 7, 8, 15, 16, 1000].map(BucketGoodput.bucket) == [0, 1, 1, 2, 2, 3, 3, 4, 7])
    }
}
