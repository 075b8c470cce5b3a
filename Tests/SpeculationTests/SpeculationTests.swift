import Testing
import Speculation

@Suite struct DraftTreeTests {
    @Test func scoresNeverIncreaseDownAPathAndPruningKeepsAncestors() {
        var t = DraftTree()
        let a = t.add(token: 10, parent: -1, score: 0.9)
        let b = t.add(token: 11, parent: a, score: 0.95)  // capped at 0.9
        let c = t.add(token: 12, parent: -1, score: 0.5)
        _ = t.add(token: 13, parent: b, score: 0.3)
        #expect(t.scores[b] == 0.9)
        #expect(t.depths == [1, 2, 1, 3])
        let p = t.pruned(to: 2)
        #expect(p.tokens == [10, 11])
        #expect(p.parents == [-1, 0])
        let q = t.pruned(to: 3)
        #expect(Set(q.tokens) == [10, 11, 12])
        #expect(t.child(of: a, token: 11) == b)
        #expect(t.child(of: -1, token: 12) == c)
        #expect(t.child(of: -1, token: 99) == nil)
    }
}

@Suite struct NGramDrafterTests {
    @Test func proposesWhatFollowedTheLastOccurrence() {
        // "a b c d e ... a b" -> expect "c d e" drafted.
        let history: [Int32] = [1, 2, 3, 4, 5, 9, 9, 1, 2]
        let tree = NGramDrafter().propose(history: history, maxNodes: 8, maxDepth: 3, statistics: AcceptanceStatistics())
        #expect(Array(tree.tokens.prefix(3)) == [3, 4, 5])
        #expect(tree.parents.prefix(3) == [-1, 0, 1])
        #expect(tree.scores[0] > 0 && tree.scores[2] <= tree.scores[1] && tree.scores[1] <= tree.scores[0])
    }

    @Test func nothingToProposeWithoutARepeat() {
        let tree = NGramDrafter().propose(history: [1, 2, 3, 4], maxNodes: 8, maxDepth: 4, statistics: AcceptanceStatistics())
        #expect(tree.isEmpty)
    }

    @Test func calibrationFollowsObservedAcceptance() {
        var stats = AcceptanceStatistics()
        var tree = DraftTree()
        tree.add(token: 1, parent: -1, score: 1)
        tree.add(token: 2, parent: 0, score: 1)
        for _ in 0..<50 { stats.record(tree: tree, acceptedDepth: 0) }
        #expect(stats.acceptance(depth: 1) < 0.05)
        var good = AcceptanceStatistics()
        for _ in 0..<50 { good.record(tree: tree, acceptedDepth: 2) }
        #expect(good.acceptance(depth: 1) > 0.95 && good.acceptance(depth: 2) > 0.95)
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
        let wide = CASTPlanner.plan(candidates: c, sequences: 1, baseRows: 1, baseTokens: 1, maxRows: 64, cost: Self.flat)
        #expect(wide.perSequence[0] >= 5)
        #expect(wide.goodput > wide.plainGoodput)
        let none = CASTPlanner.plan(candidates: c, sequences: 1, baseRows: 1, baseTokens: 1, maxRows: 64, cost: Self.linear)
        #expect(none.perSequence[0] == 0)
        #expect(none.goodput == none.plainGoodput)
    }

    @Test func confidentSequencesGetMoreOfTheStep() {
        let c = candidates([[0.95, 0.9, 0.85, 0.8], [0.2, 0.1, 0.05, 0.01]])
        let plan = CASTPlanner.plan(candidates: c, sequences: 2, baseRows: 2, baseTokens: 2, maxRows: 64, cost: Self.flat)
        #expect(plan.perSequence[0] > plan.perSequence[1])
    }

    @Test(arguments: [UInt64(1), 2, 3, 4, 5])
    func neverPredictedBelowPlainDecoding(seed: UInt64) {
        var state = seed
        func next() -> Float { state = state &* 6364136223846793005 &+ 1442695040888963407; return Float(state >> 40) / Float(1 << 24) }
        let c = candidates((0..<4).map { _ in (0..<6).map { _ in next() }.sorted(by: >) })
        for cost in [Self.flat, Self.linear] {
            let plan = CASTPlanner.plan(candidates: c, sequences: 4, baseRows: 4, baseTokens: 4, maxRows: 64, cost: cost)
            #expect(plan.goodput >= plan.plainGoodput, "seed \(seed)")
        }
    }

    @Test func costModelInterpolatesAndLearnsOnline() {
        var m = CostModel(points: [(1, 4), (4, 10)])
        #expect(m.milliseconds(rows: 2) == 6)
        #expect(m.milliseconds(rows: 8) == 18)
        for _ in 0..<200 { m.observe(rows: 4, ms: 20) }
        #expect(abs(m.milliseconds(rows: 4) - 20) < 0.5)
    }
}
