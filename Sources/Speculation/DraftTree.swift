/// A sequence's candidate continuations as a tree below its root (the last accepted token, which
/// the target always verifies). Node i has token `tokens[i]`, parent `parents[i]` (-1 = the root,
/// else an earlier node) and `scores[i]`: the estimated probability that the whole path from the
/// root to it is accepted. Scores never increase going down a path, so any set of nodes taken in
/// decreasing score order (ties: shallower first) is closed under ancestors: a valid tree.
public struct DraftTree: Sendable, Equatable {
    public var tokens: [Int32] = []
    public var parents: [Int] = []
    public var depths: [Int] = []
    public var scores: [Float] = []

    public init() {}

    public var count: Int { tokens.count }
    public var isEmpty: Bool { tokens.isEmpty }

    /// Adds a node below `parent` (-1: the root) and returns its index; the score is capped at
    /// the parent's so paths never gain probability.
    @discardableResult
    public mutating func add(token: Int32, parent: Int, score: Float) -> Int {
        precondition(parent < count, "a node's parent must come before it")
        tokens.append(token)
        parents.append(parent)
        depths.append(parent < 0 ? 1 : depths[parent] + 1)
        scores.append(parent < 0 ? score : min(score, scores[parent]))
        return count - 1
    }

    /// The child of `parent` (-1: the root) carrying `token`, if any.
    public func child(of parent: Int, token: Int32) -> Int? {
        for i in 0..<count where parents[i] == parent && tokens[i] == token { return i }
        return nil
    }

    /// The first `n` nodes in planning order (decreasing score, shallower first), re-indexed so
    /// parents still come first. Valid because scores never increase down a path.
    public func pruned(to n: Int) -> DraftTree {
        guard n < count else { return self }
        let order = (0..<count).sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : depths[$0] < depths[$1] }
        let keep = Set(order.prefix(n))
        var out = DraftTree()
        var newIndex = [Int](repeating: -1, count: count)
        for i in 0..<count where keep.contains(i) {
            let p = parents[i]
            guard p < 0 || newIndex[p] >= 0 else { continue }
            newIndex[i] = out.add(token: tokens[i], parent: p < 0 ? -1 : newIndex[p], score: scores[i])
        }
        return out
    }
}
