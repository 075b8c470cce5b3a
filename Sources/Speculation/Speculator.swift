import Foundation

/// How draft trees are sized.
public enum DraftStrategy: String, Sendable, CaseIterable {
    /// Every candidate drafted, as a single chain of at most 4 tokens (no planning).
    case chain4
    /// A fixed tree: up to 24 candidate nodes, all verified (no planning).
    case tree
    /// CAST planning per sequence, as if each were alone in the step (budget from T at B = 1).
    case castB1 = "cast_b1"
    /// CAST planning across the live batch: one goodput objective for the whole step.
    case cast
}

/// CAST's side of the engine's step. Between packing the rows and running them it builds the trees
/// (`trees(for:...)`: the runs grammars force, the drafter's candidate trees, calibrated, cut across
/// the batch by the planner with the step-cost model); after the forward it verifies them
/// (`verify`: the accepted path and the token after it, recovered or bonus) and learns from what the
/// step did (acceptance per source, bucket and depth; the target's logits and features; forward and
/// host time; realized goodput). The engine keeps the sequences, rows and KV cache; this keeps
/// everything speculation decides and learns.
///
/// Guards, because the objective does not see everything (a cost model is a model; drafting and
/// verification take host time of their own):
/// - after 8 steps in a row where the plan was plain decoding, the drafter runs only every 4th
///   step (every 32nd for a drafter that runs the model), to notice when trees pay again;
/// - a measured A/B test per batch size (decode rows 1, 2-3, 4-7, 8-15, ...): the goodput of
///   pure decode steps (tokens per millisecond) with draft trees, drafting time included, against
///   that of steps without. While drafting realizes less than 97% of plain decoding's measured
///   goodput at this batch size, only every 8th step drafts (a probe); while it pays, every 16th
///   step is plain (so the plain figure stays current); before the verdict, every other step is
///   plain while the bucket has fewer plain samples than drafting ones. Runs a grammar forces cost
///   no drafting.
///
/// Both guards act on live measurement (step times, or plans made on a cost model that step times
/// refresh), so both are off when the cost model is fixed (`CostModel.fixed()`): then the drafter
/// runs every step and the planner alone decides, from the given table, and the same requests
/// draft the same trees on any host at any load. For the same reason the layer gate counts
/// drafting as free under a fixed model (the table has no drafting cost; the drafter's layer
/// times are measured live). The A/B figures are still recorded (they are shown at GET
/// /v1/cast/cost) but decide nothing.
///
/// Thread-safety: engine thread only.
public final class Speculator {
    /// The configured drafter.
    public let drafter: any Drafter
    /// The runs grammars force, drafted beside `drafter` for free (`trees(for:...)`).
    public let forcedDrafter = GrammarDrafter()
    public let strategy: DraftStrategy
    public private(set) var calibration = ScoreCalibration()
    public private(set) var cost: CostModel
    public private(set) var accuracy = CostAccuracy()

    /// Steps that reached the planner, and consecutive plans that chose no draft node.
    private var plannedSteps = 0
    private var plainPlansInARow = 0
    /// Moving average over drafting steps of realized goodput over plain decoding's predicted one.
    public private(set) var realizedOverPlain = 1.0
    /// The measured A/B test by batch bucket: goodput (tokens per ms) of pure decode steps with and
    /// without draft trees (moving averages), and how many of each were seen.
    public private(set) var measured = [BucketGoodput](repeating: BucketGoodput(), count: 8)
    /// Decode rows of the step being planned.
    private var plannedRoots = 1
    /// The step being drafted (for `expansion`): its shape without drafts, the tokens it commits
    /// anyway, its row limit; nil outside `draft` or when not given.
    private var drafting: (base: StepShape, tokens: Int, maxRows: Int)?
    /// Drafting time of the step being planned (ms), and in all (s).
    public private(set) var draftMilliseconds = 0.0
    public private(set) var draftSecondsTotal = 0.0
    /// The last plan's predicted goodput and plain decoding's (tokens/s), and the last step's
    /// predicted and observed milliseconds.
    public private(set) var lastPlan: (goodput: Double, plain: Double)?
    public private(set) var lastStep: (predictedMs: Double, observedMs: Double)?
    /// Which unverified roots the drafter learns from this step (`beginVerification`).
    var observeRotation = 0
    var observeEvery = 1

    public init(drafter: any Drafter, cost: CostModel, strategy: DraftStrategy = .cast) {
        self.drafter = drafter
        self.cost = cost
        self.strategy = strategy
    }

    // MARK: - Proposals

    /// Whether the drafter runs this step of `decodeRoots` decoding sequences (counts the step;
    /// see the guards above: always with a fixed cost model).
    public func shouldDraft(decodeRoots: Int = 1) -> Bool {
        plannedSteps += 1
        plannedRoots = decodeRoots
        guard strategy == .cast, !cost.isFixed else { return true }
        let bucket = measured[BucketGoodput.bucket(decodeRoots)]
        switch bucket.verdict {
        case .losing: return plannedSteps % 8 == 0
        case .paying where plannedSteps % 16 == 0: return false
        // No verdict yet: every other step is plain until the plain samples catch up, so the test
        // is decided within about 2 * minimumSteps steps of the bucket instead of waiting for
        // plans that happen to choose nothing (at a busy batch size there may be none).
        case .unknown where bucket.draftingSteps > bucket.plainSteps && plannedSteps % 2 == 0: return false
        default: break
        }
        // A drafter whose layers the planner gates costs little when it drafts nothing.
        let probeEvery = drafter.usesModel && drafter.layerCost == nil ? 32 : 4
        return !(plainPlansInARow >= 8 && plannedSteps % probeEvery != 0)
    }


    /// Node and depth caps for one sequence with `room` tokens left to draft.
    public func caps(room: Int, maxNodes: Int) -> (nodes: Int, depth: Int) {
        let nodes: Int
        switch strategy {
        case .chain4: nodes = 4
        case .tree: nodes = 24
        case .castB1, .cast: nodes = maxNodes
        }
        // A model drafter pays a forward per level: shallow, narrow trees (unless the planner
        // gates its layers, see `expansion`).
        let shallow = drafter.usesModel && drafter.layerCost == nil
        let depth = strategy == .chain4 || shallow ? min(room, 4) : room
        return (shallow ? min(nodes, 8) : nodes, depth)
    }

    /// The drafter's raw trees for `inputs` (timed: drafting is part of the step's cost). A
    /// drafter that runs in layers asks the speculator before each one (`expansion`), against
    /// `base` (the step without drafts), `baseTokens` (what it commits anyway) and `maxRows`.
    public func draft(_ inputs: [DraftInput], base: StepShape? = nil, baseTokens: Int = 1, maxRows: Int = Int.max) -> [DraftTree] {
        guard !inputs.isEmpty else { return [] }
        drafting = base.map { ($0, max(baseTokens, 1), maxRows) }
        defer { drafting = nil }
        let start = ContinuousClock.now
        let trees = (try? drafter.propose(inputs, gate: self)) ?? []
        draftMilliseconds = (ContinuousClock.now - start).seconds * 1000
        draftSecondsTotal += draftMilliseconds / 1000
        return trees
    }

    /// A raw tree with calibrated scores, cut to its `maxNodes` best (a merged tree may carry
    /// every member's candidates), and for the chain strategy its best path.
    public func calibrated(_ tree: DraftTree, maxNodes: Int = Int.max) -> DraftTree {
        let t = calibration.calibrated(tree).pruned(to: maxNodes)
        return strategy == .chain4 ? t.bestPath(maxDepth: 4) : t
    }

    // MARK: - Planning

    /// The nodes each proposal keeps: the cast planner's goodput-optimal cut across the batch, each
    /// sequence planned alone (cast_b1), or every node that fits (chain4, tree).
    /// - Parameters:
    ///   - base: the step without drafts; `baseTokens`: tokens it commits anyway (decode roots).
    ///   - maxRows: the step's row limit (rows and logit rows).
    public func plan(_ proposals: [Proposal], base: StepShape, baseTokens: Int, maxRows: Int) -> [Int] {
        lastPlan = nil
        func candidates(_ ks: Range<Int>, as sequence: (Int) -> Int) -> [CASTPlanner.Candidate] {
            var out: [CASTPlanner.Candidate] = []
            out.reserveCapacity(ks.reduce(0) { $0 + proposals[$1].tree.count })
            for k in ks {
                let tree = proposals[k].tree
                for n in 0..<tree.count {
                    out.append(CASTPlanner.Candidate(sequence: sequence(k), node: n, score: tree.scores[n], depth: tree.depths[n],
                                                     positions: proposals[k].rootPosition + tree.depths[n] + 1))
                }
            }
            return out
        }
        /// Unplanned sizes take the step's free rows first come, first served.
        func fitToRoom(_ sizes: [Int]) -> [Int] {
            var room = maxRows - base.rows
            return sizes.map { size in
                let kept = min(size, max(room, 0))
                room -= kept
                return kept
            }
        }
        switch strategy {
        case .chain4, .tree:
            return fitToRoom(proposals.map { $0.tree.count })
        case .castB1:
            return fitToRoom(proposals.indices.map { k in
                let root = StepShape(rows: 1, logitRows: 1, positions: proposals[k].rootPosition + 1)
                return CASTPlanner.plan(candidates: candidates(k..<(k + 1), as: { _ in 0 }), sequences: 1, base: root, baseTokens: 1,
                                        maxRows: maxRows, cost: cost).perSequence[0]
            })
        case .cast:
            let plan = CASTPlanner.plan(candidates: candidates(proposals.indices, as: { $0 }), sequences: proposals.count,
                                        base: base, baseTokens: baseTokens, maxRows: maxRows, cost: cost)
            lastPlan = (plan.goodput, plan.plainGoodput)
            plainPlansInARow = plan.perSequence.allSatisfy { $0 == 0 } ? plainPlansInARow + 1 : 0
            return plan.perSequence
        }
    }

    // MARK: - Learning from the step

    /// Records one verified tree (acceptance per source, bucket and depth).
    public func record(_ tree: DraftTree, acceptedNodes: [Int]) {
        calibration.record(tree: tree, acceptedNodes: acceptedNodes)
    }

    /// Records one step: its shape, forward and host time, and for a step that verified trees the
    /// plain step it replaced (`base`, `baseTokens`) and the tokens it committed. Returns the
    /// step's relative prediction error (observed - predicted) / predicted.
    @discardableResult
    public func observe(_ shape: StepShape, forwardMs: Double, hostMs: Double, base: StepShape? = nil, baseTokens: Int = 0,
                        committed: Int = 0) -> Double {
        let predicted = cost.milliseconds(shape)
        let observed = forwardMs + hostMs
        let error = accuracy.record(predictedMs: predicted, observedMs: observed)
        lastStep = (predicted, observed)
        if let base, shape.nodes > 0 {
            let plain = Double(max(baseTokens, 1)) / cost.milliseconds(base)
            let realized = Double(committed) / (observed + draftMilliseconds)
            realizedOverPlain = 0.9 * realizedOverPlain + 0.1 * realized / plain
        }
        // The A/B test: pure decode steps only (no prefill rows), a drafting step with its
        // drafting time, a plain one without (a plan that chose nothing did not need it).
        if let base, base.rows == baseTokens, baseTokens > 0 {
            let b = BucketGoodput.bucket(baseTokens)
            if shape.nodes > 0 {
                measured[b].addDrafting(Double(committed) / (observed + draftMilliseconds))
            } else {
                measured[b].addPlain(Double(max(committed, baseTokens)) / observed)
            }
        }
        draftMilliseconds = 0
        cost.observe(shape, forwardMs: forwardMs, hostMs: hostMs)
        return error
    }
}

// MARK: - The layer gate

extension Speculator: LayerGate {
    /// CAST's breadth and depth rule for a drafter that spends time per frontier layer: the
    /// number k of frontier nodes (best first) whose expansion maximises the step's goodput with
    /// drafting time, (expected tokens) / (T + drafting so far + D(k)), k = 0 included (stop).
    /// Expected tokens and T come from the planner's best cut of the calibrated trees so far plus,
    /// for each expanded frontier node, the child it is expected to bring: its path score times the
    /// source's acceptance per expansion at the next depth (`ScoreCalibration.acceptancePerExpansion`:
    /// an expansion brings several children, one of which may be accepted; a node's mean acceptance
    /// would count each child as a separate try and undervalue the layer). k is tried at 0, 1, 2, 4,
    /// ... and all.
    /// Strategies other than `cast` expand everything (their trees are sized without a planner).
    /// Under a fixed cost model drafting time counts as zero (the live clock and the drafter's
    /// measured layer cost would make the trees depend on the host): the gate then expands while
    /// the planner's goodput from the table grows.
    public func expansion(of frontier: [FrontierNode], trees: [DraftTree], inputs: [DraftInput], source: UInt8,
                          spentMilliseconds: Double, layerMilliseconds: (Int) -> Double) -> Int {
        guard strategy == .cast, let step = drafting, !frontier.isEmpty else { return frontier.count }
        let calibrated = trees.map { calibration.calibrated($0) }
        var candidates: [CASTPlanner.Candidate] = []
        for (t, tree) in calibrated.enumerated() {
            let rootPosition = inputs[t].history.count - 1
            for n in 0..<tree.count {
                candidates.append(CASTPlanner.Candidate(sequence: t, node: n, score: tree.scores[n], depth: tree.depths[n],
                                                        positions: rootPosition + tree.depths[n] + 1))
            }
        }
        let expected = frontier.map { f -> CASTPlanner.Candidate in
            let tree = calibrated[f.tree]
            let depth = f.node < 0 ? 1 : tree.depths[f.node] + 1
            let edge = calibration.acceptancePerExpansion(depth: depth, source: source)
            return CASTPlanner.Candidate(sequence: f.tree, node: -1, score: (f.node < 0 ? 1 : tree.scores[f.node]) * edge, depth: depth,
                                         positions: inputs[f.tree].history.count + depth)
        }
        let fixed = cost.isFixed
        func goodput(_ k: Int) -> Double {
            let plan = CASTPlanner.plan(candidates: candidates + expected.prefix(k), sequences: inputs.count, base: step.base,
                                        baseTokens: step.tokens, maxRows: step.maxRows, cost: cost, minimumGain: 0)
            let ms = cost.milliseconds(plan.shape)
            let drafting = fixed ? 0 : spentMilliseconds + layerMilliseconds(k)
            return plan.goodput / 1000 * ms / (ms + drafting)
        }
        var best = 0, bestGoodput = goodput(0)
        var k = 1
        while true {
            let g = goodput(k)
            if g > bestGoodput { best = k; bestGoodput = g }
            if k == frontier.count { break }
            k = min(2 * k, frontier.count)
        }
        return best
    }
}

/// One batch bucket of the speculator's measured A/B test: moving averages of the goodput of pure
/// decode steps with and without draft trees.
public struct BucketGoodput: Sendable, Equatable {
    public enum Verdict: Sendable { case unknown, paying, losing }
    public private(set) var plain = 0.0, drafting = 0.0
    public private(set) var plainSteps = 0, draftingSteps = 0
    /// Samples of each kind before a verdict; weight of a new sample; drafting must realize this
    /// share of plain decoding's goodput to be paying.
    public static let minimumSteps = 8, alpha = 0.1, margin = 0.97

    public init() {}

    /// The bucket of a step with `decodeRoots` decoding sequences: 1, 2-3, 4-7, 8-15, ... (0-7).
    public static func bucket(_ decodeRoots: Int) -> Int {
        min(7, Int.bitWidth - 1 - max(decodeRoots, 1).leadingZeroBitCount)
    }

    mutating func addPlain(_ tokensPerMs: Double) {
        plain = plainSteps == 0 ? tokensPerMs : (1 - Self.alpha) * plain + Self.alpha * tokensPerMs
        plainSteps += 1
    }

    mutating func addDrafting(_ tokensPerMs: Double) {
        drafting = draftingSteps == 0 ? tokensPerMs : (1 - Self.alpha) * drafting + Self.alpha * tokensPerMs
        draftingSteps += 1
    }

    public var verdict: Verdict {
        guard plainSteps >= Self.minimumSteps, draftingSteps >= Self.minimumSteps else { return .unknown }
        return drafting >= Self.margin * plain ? .paying : .losing
    }
}
