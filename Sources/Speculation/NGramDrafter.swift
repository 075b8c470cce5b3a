/// Train-free drafting by prompt lookup: the longest recent suffix of the sequence (up to
/// `maxNGram` tokens) is searched for earlier in the sequence (prompt and generated text), and
/// the tokens that followed its most recent occurrences become candidate branches. Strong on
/// summarise, retrieval and code, where the output repeats the input.
///
/// Scores come from `AcceptanceStatistics`: the calibrated probability that a drafted token at
/// each depth is accepted, times the share of occurrences that support the branch.
public struct NGramDrafter: Sendable {
    public var maxNGram = 4
    public var minNGram = 1
    /// Distinct continuations kept per step (branches of the tree).
    public var maxBranches = 3

    public init(maxNGram: Int = 4, maxBranches: Int = 3) {
        self.maxNGram = maxNGram
        self.maxBranches = maxBranches
    }

    /// A candidate tree of at most `maxNodes` nodes and `maxDepth` depth for `history`.
    public func propose(history: [Int32], maxNodes: Int, maxDepth: Int, statistics: AcceptanceStatistics) -> DraftTree {
        var tree = DraftTree()
        let n = history.count
        guard n >= 2, maxNodes > 0, maxDepth > 0 else { return tree }
        for size in stride(from: min(maxNGram, n - 1), through: minNGram, by: -1) {
            // Occurrences of the last `size` tokens ending before the end, most recent first.
            var starts: [Int] = []
            var end = n - 1
            while end >= size && starts.count < 8 {
                var match = true
                for k in 0..<size where history[end - size + k] != history[n - size + k] { match = false; break }
                if match && end < n { starts.append(end) }
                end -= 1
            }
            guard !starts.isEmpty else { continue }
            // Longer matches are more trustworthy: scale by how much of the suffix matched.
            let confidence = Float(size) / Float(maxNGram)
            var branches = 0
            for start in starts where branches < maxBranches && tree.count < maxNodes {
                var parent = -1
                var depth = 0
                var position = start
                var added = false
                let support = Float(starts.count - branches) / Float(starts.count)
                while position < n && depth < maxDepth && tree.count < maxNodes {
                    let token = history[position]
                    depth += 1
                    if let existing = tree.child(of: parent, token: token) {
                        parent = existing
                    } else {
                        let edge = statistics.acceptance(depth: depth) * (depth == 1 ? confidence * support : 1)
                        parent = tree.add(token: token, parent: parent, score: (parent < 0 ? 1 : tree.scores[parent]) * edge)
                        added = true
                    }
                    position += 1
                }
                if added { branches += 1 }
            }
            if !tree.isEmpty { break }
        }
        return tree
    }
}

/// Observed acceptance of drafted tokens per depth, turned into probabilities (Laplace-smoothed,
/// so a drafter that over-promises quickly gets smaller trees).
public struct AcceptanceStatistics: Sendable {
    public private(set) var drafted: [Int]
    public private(set) var accepted: [Int]

    public init(maxDepth: Int = 16) {
        drafted = Array(repeating: 0, count: maxDepth + 1)
        accepted = Array(repeating: 0, count: maxDepth + 1)
    }

    /// Estimated probability that a node at `depth` is accepted given its parent was.
    public func acceptance(depth: Int) -> Float {
        let d = min(depth, drafted.count - 1)
        return (Float(accepted[d]) + 1) / (Float(drafted[d]) + 2)
    }

    /// Records one verified tree: nodes drafted per depth and the accepted path's length.
    public mutating func record(tree: DraftTree, acceptedDepth: Int) {
        for d in tree.depths where d < drafted.count { drafted[d] += 1 }
        for d in 1...max(1, acceptedDepth) where acceptedDepth > 0 && d < accepted.count { accepted[d] += 1 }
    }
}
