import Foundation
import Speculation
import Testing

/// A fixed cost model (a test's, or `--cost-model`'s) is what makes planner decisions the same on
/// every host: no observed step moves it, and the speculator's measured guards cannot turn drafting
/// off under it. Each test has a control with the measured (unfixed) model, so it can fail.
@Suite struct FixedCostModelTests {
    static let freeRows = CostModel(body: [(1, 1.0), (64, 1.0)], head: [], msPerPosition: 0)
    /// Every row costs a full step: the planner never drafts.
    static let rowsCostAFullStep = CostModel(points: [(1, 10), (2, 20), (4, 40), (8, 80), (16, 160)])
    static let base4 = StepShape(rows: 4, logitRows: 4, positions: 400)
    static let tree4 = StepShape(rows: 8, logitRows: 8, positions: 804, nodes: 4)

    @Test func observationsDoNotMoveAFixedModel() {
        let given = CostModel(body: [(1, 4), (8, 6), (64, 20)], head: [(1, 0.5), (64, 4)], msPerPosition: 0.001,
                              host: HostCost(fixed: 0.2, perLogitRow: 0.01, perNode: 0.02))
        var fixed = given.fixed()
        var measured = given
        #expect(fixed.isFixed && !measured.isFixed)
        let shapes = [StepShape(rows: 1, logitRows: 1, positions: 100), Self.base4, Self.tree4, StepShape(rows: 64, logitRows: 1, positions: 2000)]
        let before = shapes.map { fixed.milliseconds($0) }
        // A host five times slower than the table, and host time far above its fit.
        for _ in 0..<200 {
            for s in shapes {
                fixed.observe(s, forwardMs: 5 * given.forwardMilliseconds(s), hostMs: 3)
                measured.observe(s, forwardMs: 5 * given.forwardMilliseconds(s), hostMs: 3)
            }
            fixed.observe(rows: 4, ms: 100)
        }
        #expect(fixed == given.fixed())
        #expect(shapes.map { fixed.milliseconds($0) } == before)
        // The control: the same observations move the measured model.
        #expect(shapes.map { measured.milliseconds($0) } != before)
        #expect(measured.milliseconds(Self.base4) > 3 * before[1])
        // Fixed is not stored: a cached (measured) table decodes as measured.
        let decoded = try? JSONDecoder().decode(CostModel.self, from: JSONEncoder().encode(fixed))
        #expect(decoded == given)
    }

    /// Feeds the A/B test of batch bucket 4 steps where drafting realizes 0.625 of plain goodput.
    func losingOnTheClock(_ s: Speculator) {
        for _ in 0..<(2 * BucketGoodput.minimumSteps) {
            s.observe(Self.base4, forwardMs: 3.6, hostMs: 0.4, base: Self.base4, baseTokens: 4, committed: 4)
            s.observe(Self.tree4, forwardMs: 7.2, hostMs: 0.8, base: Self.base4, baseTokens: 4, committed: 5)
        }
    }

    @Test func theMeasuredABTestCannotStopDraftingUnderAFixedModel() {
        let fixed = Speculator(drafter: NGramDrafter(), cost: Self.freeRows.fixed())
        let measured = Speculator(drafter: NGramDrafter(), cost: Self.freeRows)
        losingOnTheClock(fixed)
        losingOnTheClock(measured)
        // Both record the same verdict (shown at GET /v1/cast/cost) ...
        #expect(fixed.measured[BucketGoodput.bucket(4)].verdict == .losing)
        #expect(measured.measured[BucketGoodput.bucket(4)].verdict == .losing)
        // ... but only the measured one acts on it.
        #expect((0..<64).filter { _ in fixed.shouldDraft(decodeRoots: 4) }.count == 64)
        #expect((0..<64).filter { _ in measured.shouldDraft(decodeRoots: 4) }.count == 8)
        #expect(fixed.cost == Self.freeRows.fixed(), "observed steps changed the fixed model")
    }

    /// One sequence's proposal: a chain of `depth` nodes, each accepted with probability 0.9.
    static func chain(depth: Int) -> Proposal {
        var tree = DraftTree()
        var parent = -1
        for d in 0..<depth { parent = tree.add(token: Int32(10 + d), parent: parent, confidence: 0.9) }
        return Proposal(owner: 0, tree: tree, rootPosition: 100)
    }

    @Test func thePlainPlanBackOffIsOffUnderAFixedModel() {
        func draftedAfterPlainPlans(_ s: Speculator) -> Int {
            let base = StepShape(rows: 1, logitRows: 1, positions: 101)
            for _ in 0..<12 {
                _ = s.shouldDraft(decodeRoots: 1)
                #expect(s.plan([Self.chain(depth: 4)], base: base, baseTokens: 1, maxRows: 64) == [0])
            }
            return (0..<64).filter { _ in s.shouldDraft(decodeRoots: 1) }.count
        }
        #expect(draftedAfterPlainPlans(Speculator(drafter: NGramDrafter(), cost: Self.rowsCostAFullStep.fixed())) == 64)
        #expect(draftedAfterPlainPlans(Speculator(drafter: NGramDrafter(), cost: Self.rowsCostAFullStep)) < 64)
    }

    @Test func aFixedModelStillPlansByItsTable() {
        let s = Speculator(drafter: NGramDrafter(), cost: Self.freeRows.fixed())
        let base = StepShape(rows: 1, logitRows: 1, positions: 101)
        #expect(s.plan([Self.chain(depth: 4)], base: base, baseTokens: 1, maxRows: 64) == [4])
        let never = Speculator(drafter: NGramDrafter(), cost: Self.rowsCostAFullStep.fixed())
        #expect(never.plan([Self.chain(depth: 4)], base: base, baseTokens: 1, maxRows: 64) == [0])
    }
}

/// The cost-model file `--cost-model` reads: GET /v1/cast/cost's fields, loaded fixed, and typed
/// errors naming the file and the field.
@Suite struct CostModelFileTests {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("tests/fixtures/cost_model_rows_free.json").path

    @Test func theCommittedFixtureIsAFixedModelUnderWhichDraftingPays() throws {
        let m = try CostModelFile.load(path: Self.fixture)
        #expect(m.isFixed)
        #expect(m.body.map(\.rows) == [1, 512] && m.head.isEmpty && m.msPerPosition == 0)
        #expect(m.host.coefficients == [0.1, 0, 0])
        // Plain decoding of 8 sequences against 8 chains of 4 likely nodes: the chains pay.
        let base = StepShape(rows: 8, logitRows: 8, positions: 800)
        let candidates = (0..<8).flatMap { seq in
            (1...4).map { d in CASTPlanner.Candidate(sequence: seq, node: d - 1, score: 0.5, depth: d, positions: 100 + d) }
        }
        let plan = CASTPlanner.plan(candidates: candidates, sequences: 8, base: base, baseTokens: 8, maxRows: 512, cost: m)
        #expect(plan.perSequence == [Int](repeating: 4, count: 8))
    }

    @Test func aCostEndpointAnswerIsAValidFile() throws {
        let answer = #"""
        {"object": "cast.cost_model", "speculation": true, "source": "measured", "drafted_tokens": 12,
         "step_cost": [{"rows": 1, "ms": 3.5}, {"rows": 2, "ms": 3.6}, {"rows": 4, "ms": 4.0}],
         "head_cost": [{"rows": 1, "ms": 0.4}, {"rows": 4, "ms": 1.2}], "ms_per_position": 0.0004,
         "host_ms": {"fixed": 0.2, "per_logit_row": 0.01, "per_draft_node": 0.03}, "accuracy": {"steps": 3}}
        """#
        let m = try CostModelFile.parse(Data(answer.utf8), path: "cost.json")
        #expect(m.isFixed)
        #expect(m.body.map(\.ms) == [3.5, 3.6, 4.0] && m.head.map(\.rows) == [1, 4] && m.msPerPosition == 0.0004)
        #expect(m.host.coefficients == [0.2, 0.01, 0.03])
        #expect(abs(m.milliseconds(StepShape(rows: 4, logitRows: 4, positions: 10)) - (4.0 + 1.2 + 0.004 + 0.2 + 0.04)) < 1e-9)
    }

    @Test(arguments: [
        (#"{"head_cost": []}"#, "step_cost is missing"),
        (#"{"step_cost": []}"#, "step_cost is empty"),
        (#"{"step_cost": [{"rows": 1}]}"#, "step_cost[0].ms is missing"),
        (#"{"step_cost": [{"rows": 0, "ms": 1}]}"#, "step_cost[0].rows is 0"),
        (#"{"step_cost": [{"rows": 1, "ms": -1}]}"#, "step_cost[0].ms is -1.0"),
        (#"{"step_cost": [{"rows": 1, "ms": 1}, {"rows": 1, "ms": 2}]}"#, "row count twice"),
        (#"{"step_cost": [{"rows": 1, "ms": 1}], "head_cost": [{"rows": "1", "ms": 1}]}"#, "head_cost[0].rows has the wrong type"),
        (#"{"step_cost": [{"rows": 1, "ms": 1}], "ms_per_position": -0.5}"#, "ms_per_position is -0.5"),
        (#"{"step_cost": [{"rows": 1, "ms": 1}], "host_ms": {"fixed": -2}}"#, "host_ms.fixed is -2.0"),
        (#"{"step_cost": "#, "not valid JSON"),
    ])
    func malformedFilesAreTypedErrorsNamingTheField(json: String, reason: String) {
        do {
            _ = try CostModelFile.parse(Data(json.utf8), path: "bad.json")
            Issue.record("\(json) was accepted")
        } catch let error as SpeculationError {
            guard case .invalidCostModelFile(let path, let found) = error else { Issue.record("\(error)"); return }
            #expect(path == "bad.json")
            #expect(found.contains(reason), "\(found)")
            #expect(error.description.contains("bad.json") && error.description.contains("docs/CONFIG.md"))
        } catch {
            Issue.record("untyped error \(error)")
        }
    }

    @Test func aMissingFileNamesItselfAndTheFix() {
        #expect(throws: SpeculationError.costModelFileUnreadable(path: "/nonexistent/cost.json")) {
            try CostModelFile.load(path: "/nonexistent/cost.json")
        }
        #expect(SpeculationError.costModelFileUnreadable(path: "/x.json").description.contains("--cost-model"))
    }
}
