import Grammar
import Model

/// A decoding sequence that may speculate this step, as the engine hands it to `Speculator.trees`:
/// its decode row is the root of the tree it may get.
public struct TreeRequest: Sendable {
    /// The engine's index for the sequence's part in the step (`Proposal.owner`).
    public var owner: Int
    /// The sequence's KV-cache slot.
    public var slot: Int
    /// Prompt and generated tokens; the last one is the root (see `DraftInput.history`).
    public var history: [Int32]
    /// The position of the decode row (nodes sit at rootPosition + depth).
    public var rootPosition: Int
    /// Tokens the sequence may still draft below the root (depth cap, > 0: the request's token
    /// budget, the context and the engine's deepest draft).
    public var room: Int
    /// The request's output grammar and where the output is in it, the root included (nil: none):
    /// drafted nodes it rejects are pruned.
    public var grammar: TokenGrammar?
    public var grammarState: GrammarState?
    /// Whether the runs the grammar forces are drafted (the output has started).
    public var forcing: Bool

    public init(owner: Int, slot: Int, history: [Int32], rootPosition: Int, room: Int, grammar: TokenGrammar? = nil,
                grammarState: GrammarState? = nil, forcing: Bool = false) {
        self.owner = owner
        self.slot = slot
        self.history = history
        self.rootPosition = rootPosition
        self.room = room
        self.grammar = grammar
        self.grammarState = grammarState
        self.forcing = forcing
    }
}

extension Speculator {
    // MARK: - Building trees

    /// Proposals -> planned trees: the runs grammars force (`GrammarDrafter`, every step) and, when
    /// the guards let the drafter run (`shouldDraft`, asked once per step), the drafter's calibrated
    /// trees for the other requests, without the nodes their grammars reject; then the plan's cut
    /// across the batch. Returns the proposals that keep nodes, each pruned to its planned size,
    /// drafted ones first, forced ones after (both in request order); the engine places them as
    /// rows below their roots.
    /// - Parameters:
    ///   - base: the step without drafts; `decodeRoots`: its decode rows (the tokens it commits anyway).
    ///   - maxRows: the step's row limit (rows and logit rows).
    ///   - maxNodes: the most candidate nodes per sequence (the engine's configuration).
    public func trees(for requests: [TreeRequest], base: StepShape, decodeRoots: Int, maxRows: Int, maxNodes: Int) -> [Proposal] {
        var forced: [(request: Int, tree: DraftTree)] = []
        if requests.contains(where: { $0.forcing && $0.grammar != nil }) {
            let forcing = requests.indices.filter { requests[$0].forcing }
            let runs = forcedDrafter.propose(forcing.map {
                let r = requests[$0]
                return DraftInput(slot: r.slot, history: r.history, maxNodes: r.room, maxDepth: r.room, grammar: r.grammar,
                                  grammarState: r.grammarState)
            })
            for (k, run) in runs.enumerated() where !run.isEmpty { forced.append((forcing[k], run)) }
        }
        let drafting = shouldDraft(decodeRoots: decodeRoots)
        if !drafting && forced.isEmpty { return [] }
        var inputs: [DraftInput] = []
        var inputRequests: [Int] = []
        if drafting {
            inputs.reserveCapacity(requests.count)
            inputRequests.reserveCapacity(requests.count)
            for (i, r) in requests.enumerated() where !forced.contains(where: { $0.request == i }) {
                let caps = caps(room: r.room, maxNodes: maxNodes)
                inputs.append(DraftInput(slot: r.slot, history: r.history, maxNodes: caps.nodes, maxDepth: caps.depth))
                inputRequests.append(i)
            }
        }
        var proposals: [Proposal] = []
        proposals.reserveCapacity(inputs.count + forced.count)
        for (k, raw) in draft(inputs, base: base, baseTokens: decodeRoots, maxRows: maxRows).enumerated() {
            let r = requests[inputRequests[k]]
            let tree = calibrated(raw, maxNodes: inputs[k].maxNodes).allowed(by: r.grammar, from: r.grammarState)
            guard !tree.isEmpty else { continue }
            proposals.append(Proposal(owner: r.owner, tree: tree, rootPosition: r.rootPosition))
        }
        for (i, run) in forced {
            proposals.append(Proposal(owner: requests[i].owner, tree: calibrated(run), rootPosition: requests[i].rootPosition, forced: true))
        }
        guard !proposals.isEmpty else { return [] }
        let sizes = plan(proposals, base: base, baseTokens: max(decodeRoots, 1), maxRows: maxRows)
        var planned: [Proposal] = []
        planned.reserveCapacity(proposals.count)
        for (k, p) in proposals.enumerated() where sizes[k] > 0 {
            var kept = p
            kept.tree = p.tree.pruned(to: sizes[k])
            planned.append(kept)
        }
        return planned
    }
}

extension PlannedTree {
    /// Appends the tree's nodes to `rows` as rows of `slot` below the root at `rootPosition`, node i
    /// at `firstRow + i` (so `firstRow` must be `rows.count`), each with logits.
    public func appendRows(to rows: inout [BatchRow], slot: Int, rootPosition: Int) {
        precondition(rows.count == firstRow, "a planned tree's rows start at its firstRow")
        for n in 0..<tree.count {
            rows.append(BatchRow(slot: slot, token: tree.tokens[n], position: rootPosition + tree.depths[n], parent: row(of: tree.parents[n])))
        }
    }
}
