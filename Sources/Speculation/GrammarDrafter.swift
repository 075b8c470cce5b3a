import Grammar

/// The runs of tokens a request's output grammar forces (a JSON schema's property names and
/// punctuation, a tool call's frame), drafted as chains with raw confidence 1 (source
/// `DraftSource.forced`). No drafter guessed their text, but the target may prefer a different split
/// of it into tokens, so their scores are calibrated like any drafter's.
///
/// The speculator drafts them beside the configured drafter and for free: every step, whatever its
/// guards decide, with no drafting time, and a sequence with a forced run gets no other candidates
/// that step (see `Speculator.trees`).
///
/// Thread-safety: engine thread only (it keeps no state).
public final class GrammarDrafter: Drafter {
    public let name = "grammar"

    public init() {}

    /// For each input with a grammar and a grammar state, the chain of tokens the grammar forces
    /// next, at most `maxDepth` of them (`TokenGrammar.forcedTokens`, after the root token); an
    /// empty tree for the others.
    public func propose(_ inputs: [DraftInput]) -> [DraftTree] {
        inputs.map { input in
            var tree = DraftTree()
            guard let grammar = input.grammar, let state = input.grammarState, input.maxDepth > 0 else { return tree }
            for token in grammar.forcedTokens(state, limit: input.maxDepth, previous: input.history.last) {
                tree.add(token: token, parent: tree.count - 1, confidence: 1, source: DraftSource.forced)
            }
            return tree
        }
    }
}

extension DraftTree {
    /// This tree without the nodes `grammar` rejects from `state` (the output's state at the root)
    /// and their subtrees: they cannot be accepted. Without a grammar, the tree itself.
    public func allowed(by grammar: TokenGrammar?, from state: GrammarState?) -> DraftTree {
        guard let grammar, let state, !isEmpty else { return self }
        var out = DraftTree()
        var states = [GrammarState?](repeating: nil, count: count)
        var newIndex = [Int](repeating: -1, count: count)
        for n in 0..<count {
            let p = parents[n]
            let parentState = p < 0 ? state : states[p]
            guard let parentState, p < 0 || newIndex[p] >= 0, let next = grammar.advance(parentState, token: tokens[n]) else { continue }
            states[n] = next
            newIndex[n] = out.add(token: tokens[n], parent: p < 0 ? -1 : newIndex[p], confidence: confidences[n], source: sources[n])
            out.scores[newIndex[n]] = scores[n]
        }
        return out
    }
}
