/// Maps a drafter's raw edge confidences to acceptance probabilities, learned online from
/// verification: for every drafted node whose parent was accepted (or is the root), whether the
/// target accepted it, counted per bucket of raw confidence and per depth. Each cell starts from
/// a prior at `priorTrust` times the bucket's midpoint, worth `priorWeight` observations: an
/// unproven confidence is trusted only in part (an over-promising cell would put costly rows into
/// a large batch's steps), and observations take over quickly.
///
/// Thread-safety: a value type; the engine thread owns it.
public struct ScoreCalibration: Sendable {
    public static let buckets = 10
    public let maxDepth: Int
    public let priorWeight: Float
    /// Node sources told apart (`DraftTree.sources`, `DraftSource`).
    public static let sources = DraftSource.count
    /// `[source * (maxDepth + 1) + depth][bucket]` nodes observed and accepted (depth index
    /// 1...maxDepth; deeper nodes share the last).
    public private(set) var observed: [[Int]]
    public private(set) var accepted: [[Int]]
    /// `[source * (maxDepth + 1) + depth]`: expansions seen (a tested node, or the root, with at least
    /// one verified child of the source at that depth) and those where one of the children was
    /// accepted. What one more expansion is worth: a layered drafter adds several children per
    /// expanded node, of which at most one can be accepted.
    public private(set) var expansions: [Int]
    public private(set) var expansionsAccepted: [Int]

    /// Share of a raw confidence believed before any observation.
    public let priorTrust: Float

    public init(maxDepth: Int = 8, priorWeight: Float = 4, priorTrust: Float = 0.5) {
        precondition(maxDepth >= 1 && priorWeight > 0 && priorTrust > 0 && priorTrust <= 1)
        self.maxDepth = maxDepth
        self.priorWeight = priorWeight
        self.priorTrust = priorTrust
        observed = Array(repeating: Array(repeating: 0, count: Self.buckets), count: Self.sources * (maxDepth + 1))
        accepted = observed
        expansions = Array(repeating: 0, count: Self.sources * (maxDepth + 1))
        expansionsAccepted = expansions
    }

    func cell(depth: Int, source: UInt8) -> Int {
        min(Int(source), Self.sources - 1) * (maxDepth + 1) + min(max(depth, 1), maxDepth)
    }

    static func bucket(_ confidence: Float) -> Int {
        min(Self.buckets - 1, max(0, Int(confidence * Float(Self.buckets))))
    }

    /// The calibrated probability that a node at `depth` with raw edge `confidence` is accepted,
    /// given that its parent was.
    public func probability(confidence: Float, depth: Int, source: UInt8 = 0) -> Float {
        let d = cell(depth: depth, source: source)
        let b = Self.bucket(confidence)
        let prior = priorTrust * (Float(b) + 0.5) / Float(Self.buckets)
        return (Float(accepted[d][b]) + priorWeight * prior) / (Float(observed[d][b]) + priorWeight)
    }

    /// The chance that expanding a node at depth `depth - 1` (the root: 0) whose path was accepted
    /// brings an accepted child of `source` at `depth`: the share of such expansions seen in which
    /// one of the verified children was accepted, with a prior of `priorTrust` / 2 worth
    /// `priorWeight` expansions (what an expansion not yet seen is expected to bring). Every child
    /// the expansion brings counts, not only the best: the share is at least any one child's.
    public func acceptancePerExpansion(depth: Int, source: UInt8) -> Float {
        let d = cell(depth: depth, source: source)
        return (Float(expansionsAccepted[d]) + priorWeight * priorTrust / 2) / (Float(expansions[d]) + priorWeight)
    }

    /// Acceptance per depth (1...maxDepth) of `source`'s nodes: (observed, accepted) summed over
    /// the confidence buckets.
    public func acceptanceByDepth(source: UInt8) -> [(observed: Int, accepted: Int)] {
        (1...maxDepth).map { depth in
            let d = cell(depth: depth, source: source)
            return (observed[d].reduce(0, +), accepted[d].reduce(0, +))
        }
    }

    /// Expansions per depth (1...maxDepth) of `source`: seen, and those with an accepted child
    /// (`acceptancePerExpansion` without its prior).
    public func expansionsByDepth(source: UInt8) -> [(expanded: Int, accepted: Int)] {
        (1...maxDepth).map { depth in
            let d = cell(depth: depth, source: source)
            return (expansions[d], expansionsAccepted[d])
        }
    }

    /// Calibrated path scores for `tree` (edge probabilities multiplied down each path).
    public func calibrated(_ tree: DraftTree) -> DraftTree {
        var t = tree
        t.rescore { probability(confidence: tree.confidences[$0], depth: tree.depths[$0], source: tree.sources[$0]) }
        return t
    }

    /// Records one verified tree: `acceptedNodes` is the accepted path (node indices, root first
    /// excluded). Nodes below a rejected node were never tested and are not counted.
    public mutating func record(tree: DraftTree, acceptedNodes: [Int]) {
        // The accepted nodes are one path (a few nodes): a lookup in it allocates nothing.
        for i in 0..<tree.count {
            let p = tree.parents[i]
            guard p < 0 || acceptedNodes.contains(p) else { continue }
            let d = cell(depth: tree.depths[i], source: tree.sources[i])
            let b = Self.bucket(tree.confidences[i])
            observed[d][b] += 1
            if acceptedNodes.contains(i) { accepted[d][b] += 1 }
        }
        // Expansions: the tested parents are the root and the accepted nodes; per parent, a bit per
        // source with a child below it, and one per source whose child was accepted.
        for k in -1..<acceptedNodes.count {
            let parent = k < 0 ? -1 : acceptedNodes[k]
            var present: UInt32 = 0, hit: UInt32 = 0, depth = 0
            for i in 0..<tree.count where tree.parents[i] == parent {
                let bit = UInt32(1) << UInt32(min(Int(tree.sources[i]), Self.sources - 1))
                present |= bit
                depth = tree.depths[i]
                if acceptedNodes.contains(i) { hit |= bit }
            }
            guard present != 0 else { continue }
            for source in 0..<Self.sources where present & (UInt32(1) << UInt32(source)) != 0 {
                let d = cell(depth: depth, source: UInt8(source))
                expansions[d] += 1
                if hit & (UInt32(1) << UInt32(source)) != 0 { expansionsAccepted[d] += 1 }
            }
        }
    }

    /// Nodes observed and accepted in total (all cells).
    public var totals: (observed: Int, accepted: Int) {
        (observed.joined().reduce(0, +), accepted.joined().reduce(0, +))
    }
}
