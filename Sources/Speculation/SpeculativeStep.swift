/// The roles of one speculative step, as small values passed in order:
/// proposals (a calibrated candidate tree per sequence) -> planned trees (the planner's cut across
/// the batch, placed as rows of the step) -> one forward over the packed rows -> a verification per
/// planned tree naming its accepted tokens and the token after them (recovered or bonus).

/// A sequence's candidate tree for this step, before planning.
public struct Proposal: Sendable {
    /// The sequence's part in the step (the engine's index for it).
    public var owner: Int
    /// Calibrated candidate tree below the sequence's decode row.
    public var tree: DraftTree
    /// The position of the sequence's decode row (nodes sit at position + depth).
    public var rootPosition: Int
    /// A run of tokens the request's grammar forces (`GrammarDrafter`, drafted for free).
    public var forced: Bool

    public init(owner: Int, tree: DraftTree, rootPosition: Int, forced: Bool = false) {
        self.owner = owner
        self.tree = tree
        self.rootPosition = rootPosition
        self.forced = forced
    }
}

/// The nodes of a proposal the step verifies, placed as rows: node i is step row `firstRow + i`,
/// its parent the decode row `rootRow` or an earlier node's row.
public struct PlannedTree: Sendable {
    public var owner: Int
    public var tree: DraftTree
    public var rootRow: Int
    public var firstRow: Int
    public var forced: Bool

    public init(owner: Int, tree: DraftTree, rootRow: Int, firstRow: Int, forced: Bool = false) {
        self.owner = owner
        self.tree = tree
        self.rootRow = rootRow
        self.firstRow = firstRow
        self.forced = forced
    }

    /// The step row of node `n` (-1: the root).
    public func row(of n: Int) -> Int { n < 0 ? rootRow : firstRow + n }
}

/// What the target decided about one planned tree.
public struct Verification: Sendable, Equatable {
    /// The accepted path: node indices (root excluded), root first.
    public var acceptedNodes: [Int] = []
    /// Every token the sequence emits for this tree, in order: the accepted nodes' tokens, then the
    /// recovered or bonus one.
    public private(set) var emittedTokens: [Int32] = []
    /// The token after the accepted path; exactly one of them. Sampling: drawn from the residual
    /// after a rejected child (`recovered`) or from the target's distribution at a leaf (`bonus`).
    /// Greedy: the target's choice at `lastRow` (`bonus`, whether or not children were drafted there).
    public var recovered: Int32?
    public var bonus: Int32?
    /// The step row whose logits follow the accepted path (the last accepted node's, else the root's).
    public var lastRow: Int

    /// The accepted nodes' tokens.
    public var acceptedTokens: ArraySlice<Int32> { emittedTokens.prefix(acceptedNodes.count) }

    /// The start of a walk of `planned` (room reserved for its deepest path and the token after it).
    init(walking planned: PlannedTree) {
        lastRow = planned.rootRow
        let room = planned.tree.maxDepth + 1
        acceptedNodes.reserveCapacity(room)
        emittedTokens.reserveCapacity(room)
    }

    /// Node `node` of `planned` is accepted.
    mutating func accept(_ node: Int, of planned: PlannedTree) {
        acceptedNodes.append(node)
        emittedTokens.append(planned.tree.tokens[node])
        lastRow = planned.row(of: node)
    }

    /// The walk ended with `token` after the accepted path: `bonus` at a leaf (or greedy), else
    /// `recovered`.
    mutating func end(with token: Int32, recovered isRecovered: Bool) {
        if isRecovered { recovered = token } else { bonus = token }
        emittedTokens.append(token)
    }
}

/// Verification walks: from the root down the drafted tree, one verified row at a time.
public enum TreeWalk {
    /// Greedy: at each row the target's choice `choose(row, node)` (node: the accepted node whose
    /// row it is, -1 for the root) is compared with the children; the path continues into the child
    /// carrying it and ends where none does, with the choice there as the bonus token. The output
    /// equals plain greedy decoding's.
    public static func greedy(_ planned: PlannedTree, choose: (_ row: Int, _ node: Int) -> Int32) -> Verification {
        var v = Verification(walking: planned)
        var node = -1
        while true {
            let next = choose(planned.row(of: node), node)
            guard let child = planned.tree.child(of: node, token: next) else {
                v.end(with: next, recovered: false)
                return v
            }
            node = child
            v.accept(node, of: planned)
        }
    }

    /// Sampling: lossless recursive rejection (`TreeVerifier`) at each row over its children (most
    /// likely first) with the target's distribution `distribution(row, node)` and the request's
    /// uniform draws: every emitted token is distributed exactly as the target's.
    public static func sampled(_ planned: PlannedTree, distribution: (_ row: Int, _ node: Int) -> (ids: [Int32], probabilities: [Float]),
                               uniform: () -> Double) -> Verification {
        let tree = planned.tree
        var v = Verification(walking: planned)
        var node = -1
        while true {
            let children = tree.children(of: node).sorted { tree.scores[$0] > tree.scores[$1] }
            var (ids, residual) = distribution(planned.row(of: node), node)
            let outcome = TreeVerifier.verify(ids: ids, probabilities: &residual, children: children.map { tree.tokens[$0] },
                                              uniform: uniform)
            switch outcome {
            case .accepted(let c):
                node = children[c]
                v.accept(node, of: planned)
            case .rejected(let token):
                v.end(with: token, recovered: !children.isEmpty)
                return v
            }
        }
    }
}
