import Grammar
import Model

/// The rows of one forward call and what it computed, as verification and the drafters read them:
/// valid until the model's next forward call.
public struct StepOutput {
    public let model: Transformer
    /// The step's rows, in the order the forward call took them.
    public let rows: [BatchRow]
    /// Row -> its index among the rows with logits (-1: none).
    public let logitIndex: [Int]

    public init(model: Transformer, rows: [BatchRow], logitIndex: [Int]) {
        self.model = model
        self.rows = rows
        self.logitIndex = logitIndex
    }

    /// The next-token logits `[vocabularySize]` of `row` (a row with logits).
    public func logits(row: Int) -> UnsafeMutablePointer<Float> {
        model.logits + logitIndex[row] * model.config.vocabularySize
    }

    /// The token before `row`'s in its sequence: its parent row's, or the sequence's token at the
    /// position before (`history`: its prompt and generated tokens; -1 at position 0).
    public func previousToken(_ row: Int, history: [Int32]) -> Int32 {
        let r = rows[row]
        if r.parent >= 0 { return rows[r.parent].token }
        return r.position > 0 && r.position - 1 < history.count ? history[r.position - 1] : -1
    }
}

/// A request's own rules for turning the target's logits into its next token (the engine's sampler
/// under the request's grammar and logit bias), as verification asks for them: the verifier walks
/// the tree with the same rules sampling uses, so speculation never changes the output.
public protocol TokenRules {
    /// Greedy (temperature 0): verification follows `choice`; else lossless rejection sampling over
    /// `distribution` with `uniform` draws.
    var isGreedy: Bool { get }
    /// The request's grammar and where the output is in it, the root included (nil: none); the
    /// verifier advances the state down the tree.
    var grammar: TokenGrammar? { get }
    var grammarState: GrammarState? { get }
    /// The token greedy decoding chooses from `logits` with the output at grammar `state`; `logits`
    /// is left as it is.
    func choice(logits: UnsafeMutablePointer<Float>, state: GrammarState?) -> Int32
    /// The distribution sampling draws from at `logits` with the output at grammar `state` (support
    /// and probabilities summing to 1; valid until the next call); `logits` may be changed.
    func distribution(logits: UnsafeMutablePointer<Float>, state: GrammarState?) -> (ids: ArraySlice<Int32>, probabilities: ArraySlice<Float>)
    /// A uniform draw in [0, 1) from the request's own generator.
    func uniform() -> Double
}

extension Speculator {
    // MARK: - Verifying trees

    /// Starts the verify phase of a step with `decodeRoots` decode rows. The drafter learns from the
    /// logits of about `observedRootsPerStep` unverified roots a step (a top-k with log-sum-exp over
    /// the vocabulary each), rotating over the batch: its tables are shared by every sequence, and
    /// at large batches the host time would cost more than the freshness is worth. Rows of verified
    /// trees are always shown.
    public func beginVerification(decodeRoots: Int) {
        observeEvery = max(1, (decodeRoots + Self.observedRootsPerStep - 1) / Self.observedRootsPerStep)
        observeRotation &+= 1
    }

    /// Unverified roots whose logits the drafter learns from per step.
    public static let observedRootsPerStep = 2

    /// One speculating sequence's part of the verify phase, after `beginVerification`: verifies its
    /// planned tree (nil: none) against `output` under its `rules` (every verified row's logits are
    /// shown to the drafter; acceptance is recorded for calibration), gives a drafter that reads
    /// features the feature of the row whose logits give the next root, and shows the drafter an
    /// unverified root's logits when it is this sequence's turn.
    /// - Parameters:
    ///   - index: the sequence's index in the step (for the rotation).
    ///   - lastRow: the sequence's last row before any tree (its decode row or the last prefill row).
    ///   - history: the sequence's prompt and generated tokens (the root last).
    /// - Returns: the verification of `plan`, nil without one.
    public func verify<Rules: TokenRules>(_ plan: PlannedTree?, index: Int, lastRow: Int, slot: Int, history: [Int32],
                                          output: StepOutput, rules: Rules) -> Verification? {
        var verification: Verification?
        if let plan {
            let v = walk(plan, history: history, output: output, rules: rules)
            record(plan.tree, acceptedNodes: v.acceptedNodes)
            verification = v
        }
        if drafter.readsFeatures {
            // The feature of the row whose logits give the next root: the last accepted one.
            let row = verification?.lastRow ?? lastRow
            drafter.observeFeature(slot: slot, position: output.rows[row].position, feature: output.model.lastLayerFeature(row: row))
        }
        if plan == nil && (index + observeRotation) % observeEvery == 0 {
            drafter.observe(previous: output.previousToken(lastRow, history: history), token: output.rows[lastRow].token,
                            logits: output.logits(row: lastRow), vocabularySize: output.model.config.vocabularySize)
        }
        return verification
    }

    /// Walks `plan` from its root: greedy requests follow the target's choice, sampled ones use
    /// lossless recursive rejection (`TreeWalk`). Every verified row's logits are shown to the
    /// drafter before they are used; the grammar state follows the accepted path.
    private func walk<Rules: TokenRules>(_ plan: PlannedTree, history: [Int32], output: StepOutput, rules: Rules) -> Verification {
        let vocab = output.model.config.vocabularySize
        let grammar = rules.grammar
        var state = rules.grammarState
        /// The logits of `row`, after the drafter has seen them; advances the grammar state past
        /// `node`'s token (the row's input) when below the root.
        func logits(_ row: Int, _ node: Int) -> UnsafeMutablePointer<Float> {
            let l = output.logits(row: row)
            drafter.observe(previous: output.previousToken(row, history: history), token: output.rows[row].token, logits: l,
                            vocabularySize: vocab)
            if node >= 0, let grammar, let current = state { state = grammar.advance(current, token: plan.tree.tokens[node]) }
            return l
        }
        if rules.isGreedy {
            return TreeWalk.greedy(plan) { row, node in
                let l = logits(row, node)
                return rules.choice(logits: l, state: state)
            }
        }
        return TreeWalk.sampled(plan, distribution: { row, node in
            let l = logits(row, node)
            let (ids, probabilities) = rules.distribution(logits: l, state: state)
            return (Array(ids), Array(probabilities))
        }, uniform: { rules.uniform() })
    }
}
