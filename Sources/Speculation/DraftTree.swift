/// A sequence's candidate continuations as a tree below its root (the last accepted token, which
/// the target always verifies). Node i has token `tokens[i]`, parent `parents[i]` (-1 = the root,
/// else an earlier node), `confidences[i]`: the drafter's raw estimate in [0, 1] that the target
/// accepts node i given that its parent was accepted, and `scores[i]`: the estimated probability
/// that the whole path from the root to it is accepted (the product of the edge estimates along
/// the path; raw when drafted, calibrated by `rescore`). Scores never increase going down a path,
/// so any set of nodes taken in decreasing score order (ties: shallower first) is closed under
/// ancestors: a valid tree.
public struct DraftTree: Sendable, Equatable {
    public var tokens: [Int32] = []
    public var parents: [Int] = []
    public var depths: [Int] = []
    public var confidences: [Float] = []
    /// Which source proposed each node (`DraftSource`), so each source's confidences are
    /// calibrated separately.
    public var sources: [UInt8] = []
    /// The source of nodes a grammar forces (`GrammarDrafter`, raw confidence 1: their text is
    /// certain, their split into tokens is not, so their acceptance is learned).
    public static let grammarSource: UInt8 = DraftSource.forced
    public var scores: [Float] = []

    public init() {}

    /// Nodes a tree's arrays are reserved for at its first node (the engine's default node cap):
    /// building a tree of up to this many nodes allocates each array once.
    public static let reservedNodes = 16

    /// Reserves room for `n` nodes in every array.
    public mutating func reserveCapacity(_ n: Int) {
        tokens.reserveCapacity(n)
        parents.reserveCapacity(n)
        depths.reserveCapacity(n)
        confidences.reserveCapacity(n)
        sources.reserveCapacity(n)
        scores.reserveCapacity(n)
    }

    public var count: Int { tokens.count }
    public var isEmpty: Bool { tokens.isEmpty }
    public var maxDepth: Int { depths.max() ?? 0 }

    /// Adds a node below `parent` (-1: the root) with raw edge `confidence` (clamped to [0, 1])
    /// and returns its index; its path score is the parent's times the confidence.
    @discardableResult
    public mutating func add(token: Int32, parent: Int, confidence: Float, source: UInt8 = 0) -> Int {
        precondition(parent < count, "a node's parent must come before it")
        if tokens.capacity == 0 { reserveCapacity(Self.reservedNodes) }
        let c = min(max(confidence, 0), 1)
        tokens.append(token)
        parents.append(parent)
        depths.append(parent < 0 ? 1 : depths[parent] + 1)
        confidences.append(c)
        sources.append(source)
        scores.append(parent < 0 ? c : c * scores[parent])
        return count - 1
    }

    /// The child of `parent` (-1: the root) carrying `token`, if any.
    public func child(of parent: Int, token: Int32) -> Int? {
        for i in 0..<count where parents[i] == parent && tokens[i] == token { return i }
        return nil
    }

    /// The children of `parent` (-1: the root), in node order.
    public func children(of parent: Int) -> [Int] {
        (0..<count).filter { parents[$0] == parent }
    }

    /// Recomputes path scores from per-edge probabilities `edge(node)` (e.g. calibrated from the
    /// raw confidences): each score is its parent's times its edge, so scores never increase
    /// down a path.
    public mutating func rescore(_ edge: (Int) -> Float) {
        for i in 0..<count {
            let e = min(max(edge(i), 0), 1)
            scores[i] = parents[i] < 0 ? e : e * scores[parents[i]]
        }
    }

    /// Adds `other`'s nodes below the matching paths of this tree (parents first), up to `maxNodes`
    /// nodes in all: a node already here keeps its source and takes the higher confidence. Scores
    /// are recomputed from the confidences.
    public mutating func merge(_ other: DraftTree, maxNodes: Int) {
        if !other.isEmpty { reserveCapacity(min(maxNodes, count + other.count)) }
        var mapped = [Int](repeating: -2, count: other.count)
        for i in 0..<other.count {
            let p = other.parents[i]
            let parent = p < 0 ? -1 : mapped[p]
            guard parent != -2 else { continue }
            if let existing = child(of: parent, token: other.tokens[i]) {
                if confidences[existing] < other.confidences[i] { confidences[existing] = other.confidences[i] }
                mapped[i] = existing
            } else if count < maxNodes {
                mapped[i] = add(token: other.tokens[i], parent: parent, confidence: other.confidences[i], source: other.sources[i])
            }
        }
        let c = confidences
        rescore { c[$0] }
    }

    /// The single path that follows the highest-scoring child from the root, at most `maxDepth` long.
    public func bestPath(maxDepth: Int) -> DraftTree {
        var out = DraftTree()
        var node = -1
        while out.count < maxDepth {
            guard let best = children(of: node).max(by: { scores[$0] < scores[$1] }) else { break }
            let added = out.add(token: tokens[best], parent: out.count - 1, confidence: confidences[best], source: sources[best])
            out.scores[added] = scores[best]
            node = best
        }
        return out
    }

    /// The first `n` nodes in planning order (decreasing score, shallower first), re-indexed so
    /// parents still come first. Valid because scores never increase down a path.
    public func pruned(to n: Int) -> DraftTree {
        guard n < count else { return self }
        let order = (0..<count).sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : depths[$0] < depths[$1] }
        // newIndex: -2 not kept, -1 kept and not placed (yet), else the node's index in `out`.
        var newIndex = [Int](repeating: -2, count: count)
        for i in order.prefix(n) { newIndex[i] = -1 }
        var out = DraftTree()
        out.reserveCapacity(n)
        for i in 0..<count where newIndex[i] == -1 {
            let p = parents[i]
            guard p < 0 || newIndex[p] >= 0 else { continue }
            newIndex[i] = out.add(token: tokens[i], parent: p < 0 ? -1 : newIndex[p], confidence: confidences[i], source: sources[i])
            out.scores[newIndex[i]] = scores[i]
        }
        return out
    }
}
