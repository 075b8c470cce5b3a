import Foundation
import Model
import Speculation

/// The speculative part of a step and what follows the forward call: proposals and planned trees
/// (through the `Speculator`), verification, commits, and the tokens each sequence emits.
/// Engine thread only.
extension Engine {
    // MARK: - Drafts

    /// Whether `s` may draft: no penalties (they depend on the path), no log-probabilities, not
    /// seeded sampling, not opted out.
    func canSpeculate(_ s: Sequence) -> Bool {
        let p = s.request.sampling
        // A seeded sampled request wants a reproducible output: its random draws would depend
        // on the drafts (which depend on what the drafter has learned), so it does not draft.
        return configuration.speculation && s.request.speculation && p.presencePenalty == 0
            && (p.temperature <= 0 || p.seed == nil)
            && p.frequencyPenalty == 0 && !s.request.logprobs && s.request.topLogprobs == 0
    }

    /// Tokens `s` may still draft this step (depth room).
    func draftRoom(_ s: Sequence) -> Int {
        min(configuration.maxDraftDepth, s.request.maxTokens - s.generated - 1, cache.capacity - s.tokens.count - 1)
    }

    /// Proposals -> planned trees: drafts a tree for every decoding sequence that may speculate
    /// (and takes the runs grammars force), lets the speculator plan them against the step's cost,
    /// and appends the planned nodes as rows below each root.
    func addDraftTrees(_ step: inout Step) {
        guard let speculator else { return }
        let forced = forcedRuns(step.owners)
        let forcedOwners = Set(forced.map(\.owner))
        let drafting = speculator.shouldDraft(decodeRoots: step.decodeRoots)
        if !drafting && forced.isEmpty { return }
        var inputs: [DraftInput] = []
        var inputOwners: [Int] = []
        for (i, o) in step.owners.enumerated() where drafting && o.isDecodeRoot && canSpeculate(o.sequence) && !forcedOwners.contains(i) {
            let s = o.sequence
            guard s.tokens.count - cache.lengths[s.slot] == 1 else { continue }
            let room = draftRoom(s)
            guard room > 0 else { continue }
            let caps = speculator.caps(room: room, maxNodes: configuration.maxDraftNodes)
            inputs.append(DraftInput(slot: s.slot, history: s.tokens, maxNodes: caps.nodes, maxDepth: caps.depth))
            inputOwners.append(i)
        }
        let logitRows = step.rows.reduce(0) { $0 + ($1.wantsLogits ? 1 : 0) }
        let maxRows = min(model.maxStepRows, step.rows.count + model.maxLogitRows - logitRows)
        var proposals: [Proposal] = []
        for (k, raw) in speculator.draft(inputs, base: step.shape, baseTokens: step.decodeRoots, maxRows: maxRows).enumerated() {
            let owner = inputOwners[k]
            let tree = grammarFiltered(speculator.calibrated(raw, maxNodes: inputs[k].maxNodes), sequence: step.owners[owner].sequence)
            guard !tree.isEmpty else { continue }
            proposals.append(Proposal(owner: owner, tree: tree, rootPosition: step.rows[step.owners[owner].firstRow].position))
        }
        for (owner, raw) in forced {
            proposals.append(Proposal(owner: owner, tree: speculator.calibrated(raw), rootPosition: step.rows[step.owners[owner].firstRow].position,
                                      forced: true))
        }
        guard !proposals.isEmpty else { return }
        let sizes = speculator.plan(proposals, base: step.shape, baseTokens: max(step.decodeRoots, 1), maxRows: maxRows)
        for (k, p) in proposals.enumerated() where sizes[k] > 0 {
            let tree = p.tree.pruned(to: sizes[k])
            let o = step.owners[p.owner]
            let s = o.sequence
            guard cache.reserve(slot: s.slot, positions: p.rootPosition + 1 + tree.maxDepth) else { continue }
            let planned = PlannedTree(owner: p.owner, tree: tree, rootRow: o.firstRow, firstRow: step.rows.count, forced: p.forced)
            step.owners[p.owner].plan = planned
            for n in 0..<tree.count {
                step.rows.append(BatchRow(slot: s.slot, token: tree.tokens[n], position: p.rootPosition + tree.depths[n],
                                          parent: planned.row(of: tree.parents[n])))
            }
        }
    }

    /// Maps each row to its index among the rows with logits (the forward call's output order).
    func indexLogits(_ step: inout Step) {
        step.logitIndex.removeAll(keepingCapacity: true)
        var logits = 0
        for r in step.rows {
            step.logitIndex.append(r.wantsLogits ? logits : -1)
            if r.wantsLogits { logits += 1 }
        }
    }

    // MARK: - Verify, commit, emit

    /// For each sequence of the step: verifies its planned tree, commits the kept rows (the chunk
    /// or root and the accepted path) to the KV cache, reports prompt rows, and emits its tokens.
    func verifyCommitAndEmit(_ step: inout Step) -> StepOutcome {
        var outcome = StepOutcome()
        let vocab = model.config.vocabularySize
        // The drafter learns from the logits of about `observedRootsPerStep` sequences a step
        // (a top-k with log-sum-exp over the vocabulary each), rotating over the batch: its tables
        // are shared by every sequence, and at large batches the host time would cost more than the
        // freshness is worth. Rows of verified trees are always shown.
        let observeEvery = max(1, (step.decodeRoots + Self.observedRootsPerStep - 1) / Self.observedRootsPerStep)
        observeRotation &+= 1
        for (k, o) in step.owners.enumerated() {
            let s = o.sequence
            guard s.slot >= 0 && running[s.slot] === s else { continue }
            step.keep.removeAll(keepingCapacity: true)
            step.keep.append(contentsOf: o.firstRow..<(o.firstRow + o.count))
            if o.isDecodeRoot {
                decodeRoots += 1
                s.usage.decodeSteps += 1
            }
            var verification: Verification?
            if let plan = o.plan {
                let v = verify(plan, sequence: s, step: step)
                verification = v
                for node in v.acceptedNodes { step.keep.append(plan.row(of: node)) }
                record(plan, v, sequence: s)
                outcome.acceptedPerSequence.append(v.acceptedNodes.count)
            }
            if o.wantsLogits, let drafter = speculator?.drafter, drafter.readsFeatures, canSpeculate(s) {
                // The feature of the row whose logits give the next root: the last accepted one.
                let row = verification?.lastRow ?? o.firstRow + o.count - 1
                drafter.observeFeature(slot: s.slot, position: step.rows[row].position, feature: model.lastLayerFeature(row: row))
            }
            if o.plan == nil && o.wantsLogits && canSpeculate(s), (k + observeRotation) % observeEvery == 0,
               let drafter = speculator?.drafter {
                let row = o.firstRow + o.count - 1
                drafter.observe(previous: previousToken(row, rows: step.rows, sequence: s), token: step.rows[row].token,
                                logits: model.logits + step.logitIndex[row] * vocab, vocabularySize: vocab)
            }
            do {
                step.keepTokens.removeAll(keepingCapacity: true)
                for row in step.keep { step.keepTokens.append(step.rows[row].token) }
                try cache.commit(slot: s.slot, rows: step.keep, tokens: step.keepTokens)
            } catch {
                fail(s, .modelFailure("\(error)"))
                continue
            }
            if !s.started && s.request.needsPromptRows {
                gatherPromptRows(o, sequence: s, rows: step.rows, logitIndex: step.logitIndex)
            }
            if !s.started && cache.lengths[s.slot] >= s.request.promptTokens.count {
                s.started = true
                outcome.promptTokens += s.request.promptTokens.count
                if s.request.promptLogprobs != nil { s.onEvent(.promptLogprobs(s.promptScores)) }
                if s.request.embedding { s.onEvent(.embedding(pooledEmbedding(s))) }
                s.onEvent(.started(promptTokens: s.request.promptTokens.count, cachedTokens: s.cachedPromptTokens ?? 0))
                if s.request.embedding || s.request.maxTokens == 0 {
                    finish(s, s.request.embedding ? .stop : .length)
                    continue
                }
            }
            guard o.wantsLogits else { continue }
            if let v = verification, s.request.sampling.temperature > 0 {
                // Sampled verification drew every token (the accepted ones, then the recovered or bonus one).
                for token in v.sampledTokens {
                    deliver(s, token: token, logprob: nil, top: [])
                    outcome.produced += 1
                    if running[s.slot] !== s || s.slot < 0 { break }
                }
                continue
            }
            // One token per kept row whose logits exist: the accepted tokens, then the bonus. Of
            // a prefill chunk only the last row counts (a scored prompt has logits for all).
            for row in step.keep where step.logitIndex[row] >= 0 && row >= o.firstRow + o.count - 1 {
                emitToken(s, logits: model.logits + step.logitIndex[row] * vocab)
                outcome.produced += 1
                if running[s.slot] !== s || s.slot < 0 { break }
            }
        }
        if !outcome.acceptedPerSequence.isEmpty { speculativeSteps += 1 }
        return outcome
    }

    /// Verifies `plan` against this step's logits. Greedy requests follow the target's argmax
    /// (under their grammar and bias); sampled ones use lossless recursive rejection with the
    /// request's own sampler and generator. Every verified row's logits are shown to the drafter.
    func verify(_ plan: PlannedTree, sequence s: Sequence, step: Step) -> Verification {
        let vocab = model.config.vocabularySize
        var state = s.grammarState
        let constrained = isConstrained(s)
        /// The logits of `row`, after the drafter has seen them; advances the grammar state past
        /// `node`'s token (the row's input) when below the root.
        func logits(_ row: Int, _ node: Int) -> UnsafeMutablePointer<Float> {
            let l = model.logits + step.logitIndex[row] * vocab
            speculator?.drafter.observe(previous: previousToken(row, rows: step.rows, sequence: s), token: step.rows[row].token,
                                        logits: l, vocabularySize: vocab)
            if node >= 0, let g = s.request.grammar, let st = state { state = g.advance(st, token: plan.tree.tokens[node]) }
            return l
        }
        if s.request.sampling.temperature <= 0 {
            return TreeWalk.greedy(plan) { row, node in
                let l = logits(row, node)
                return constrained ? constrainedArgmax(s, logits: l, state: state) : Sampler.argmax(l, count: vocab)
            }
        }
        return TreeWalk.sampled(plan, distribution: { row, node in
            let l = logits(row, node)
            let rowLogits = constrained ? constrainedCopy(s, logits: l, state: state) : l
            let (ids, probabilities) = s.sampler.distribution(logits: rowLogits, count: vocab, history: s.history)
            return (Array(ids), Array(probabilities))
        }, uniform: { s.sampler.nextUnit() })
    }

    /// Counts one verified tree (engine totals, the request's usage) and teaches the speculator.
    private func record(_ plan: PlannedTree, _ v: Verification, sequence s: Sequence) {
        let count = plan.tree.count, kept = v.acceptedNodes.count
        if plan.forced {
            forcedDrafted += count
            forcedAccepted += kept
            s.usage.forcedDraftedTokens += count
            s.usage.forcedAcceptedTokens += kept
        }
        speculator?.record(plan.tree, acceptedNodes: v.acceptedNodes)
        drafted += count
        accepted += kept
        s.usage.draftedTokens += count
        s.usage.acceptedTokens += kept
        s.usage.speculativeSteps += 1
    }

    /// The token before `row`'s in its sequence: its parent row's, or the sequence's token at the
    /// position before (-1 at position 0).
    func previousToken(_ row: Int, rows: [BatchRow], sequence s: Sequence) -> Int32 {
        let r = rows[row]
        if r.parent >= 0 { return rows[r.parent].token }
        return r.position > 0 && r.position - 1 < s.tokens.count ? s.tokens[r.position - 1] : -1
    }

    // MARK: - Tokens

    /// Samples the next token of `s` from its logits, reports it, and ends the sequence when done.
    func emitToken(_ s: Sequence, logits: UnsafeMutablePointer<Float>) {
        let vocab = model.config.vocabularySize
        var logprob: Float?
        var top: [(id: Int32, logprob: Float)] = []
        let wantsLogprobs = s.request.logprobs || s.request.topLogprobs > 0
        if wantsLogprobs {
            // The sampler transforms logits in place; log-probabilities use the model's own.
            rawLogits.update(from: logits, count: vocab)
        }
        let token = isConstrained(s) ? sampleConstrained(s, logits: logits) : s.sampler.sample(logits: logits, count: vocab, history: s.history)
        if wantsLogprobs {
            let (lse, best) = Sampler.logprobs(rawLogits, count: vocab, top: s.request.topLogprobs)
            logprob = rawLogits[Int(token)] - lse
            top = best
        }
        deliver(s, token: token, logprob: logprob, top: top)
    }

    /// Reports the chosen `token` of `s`, and ends the sequence when done.
    func deliver(_ s: Sequence, token: Int32, logprob: Float?, top: [(id: Int32, logprob: Float)]) {
        s.generated += 1
        s.history.add(token)
        s.tokens.append(token)
        if let g = s.request.grammar, let state = s.grammarState { s.grammarState = g.advance(state, token: token) }
        s.onEvent(.token(GeneratedToken(id: token, logprob: s.request.logprobs ? logprob : nil, topLogprobs: top)))
        if s.request.stopTokens.contains(token) {
            finish(s, .stop)
        } else if let g = s.request.grammar, let state = s.grammarState, g.isComplete(state) {
            finish(s, .stop)  // the output matches the grammar and nothing may follow
        } else if s.generated >= s.request.maxTokens || s.tokens.count >= cache.capacity {
            finish(s, .length)
        }
    }
}
