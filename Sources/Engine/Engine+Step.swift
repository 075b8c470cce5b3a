import Foundation
import Model
import Speculation

/// The step's phases around the forward call: plan (the speculator's trees placed as rows), verify
/// (the speculator, under each request's rules), commit (the KV cache, events and the tokens each
/// sequence emits). Engine thread only.
extension Engine {
    // MARK: - Plan

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

    /// Plan: the speculator's trees for the decode roots that may speculate (`Speculator.trees`:
    /// the runs grammars force, the drafter's candidates, the planner's cut), each placed as rows
    /// below its root where the KV cache has room for it.
    func plan(_ step: inout Step) {
        guard let speculator else { return }
        for (i, o) in step.owners.enumerated() where o.isDecodeRoot && canSpeculate(o.sequence) {
            let s = o.sequence
            let room = draftRoom(s)
            guard s.tokens.count - cache.lengths[s.slot] == 1, room > 0 else { continue }
            step.requests.append(TreeRequest(owner: i, slot: s.slot, history: s.tokens, rootPosition: step.rows[o.firstRow].position,
                                             room: room, grammar: s.request.grammar, grammarState: s.grammarState, forcing: s.started))
        }
        let logitRows = step.rows.reduce(0) { $0 + ($1.wantsLogits ? 1 : 0) }
        let maxRows = min(model.maxStepRows, step.rows.count + model.maxLogitRows - logitRows)
        let trees = speculator.trees(for: step.requests, base: step.shape, decodeRoots: step.decodeRoots, maxRows: maxRows,
                                     maxNodes: configuration.maxDraftNodes)
        // The requests hold the sequences' token arrays: let go before tokens are appended to them.
        step.requests.removeAll(keepingCapacity: true)
        for p in trees {
            let o = step.owners[p.owner]
            guard cache.reserve(slot: o.sequence.slot, positions: p.rootPosition + 1 + p.tree.maxDepth) else { continue }
            let planned = PlannedTree(owner: p.owner, tree: p.tree, rootRow: o.firstRow, firstRow: step.rows.count, forced: p.forced)
            planned.appendRows(to: &step.rows, slot: o.sequence.slot, rootPosition: p.rootPosition)
            step.owners[p.owner].plan = planned
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

    // MARK: - Verify

    /// Verify: for every sequence that speculates, the speculator verifies its planned tree under
    /// the request's rules (`RequestRules`) and learns from the step's logits and features.
    func verify(_ step: inout Step) {
        guard let speculator else { return }
        let output = StepOutput(model: model, rows: step.rows, logitIndex: step.logitIndex)
        speculator.beginVerification(decodeRoots: step.decodeRoots)
        for k in step.owners.indices where step.owners[k].wantsLogits && canSpeculate(step.owners[k].sequence) {
            let o = step.owners[k]
            step.owners[k].verification = speculator.verify(o.plan, index: k, lastRow: o.firstRow + o.count - 1, slot: o.sequence.slot,
                                                            history: o.sequence.tokens, output: output,
                                                            rules: RequestRules(engine: self, sequence: o.sequence))
        }
    }

    // MARK: - Commit

    /// Commit: for each sequence of the step, commits the kept rows (the chunk or root and the
    /// accepted path) to the KV cache, reports prompt rows, and emits its tokens (a verified tree's
    /// accepted tokens and the one after them; else the one sampled from its last row).
    func commit(_ step: inout Step) -> StepOutcome {
        var outcome = StepOutcome()
        let vocab = model.config.vocabularySize
        for o in step.owners {
            let s = o.sequence
            guard s.slot >= 0 && running[s.slot] === s else { continue }
            step.keep.removeAll(keepingCapacity: true)
            step.keep.append(contentsOf: o.firstRow..<(o.firstRow + o.count))
            if o.isDecodeRoot {
                decodeRoots += 1
                s.usage.decodeSteps += 1
            }
            if let plan = o.plan, let v = o.verification {
                for node in v.acceptedNodes { step.keep.append(plan.row(of: node)) }
                count(plan, v, sequence: s)
                outcome.acceptedPerSequence.append(v.acceptedNodes.count)
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
            if o.plan != nil, let v = o.verification {
                for token in v.emittedTokens {
                    deliver(s, token: token, logprob: nil, top: [])
                    outcome.produced += 1
                    if running[s.slot] !== s || s.slot < 0 { break }
                }
                continue
            }
            // Of a prefill chunk only the last row gives a token (a scored prompt has logits for all).
            let row = o.firstRow + o.count - 1
            guard step.logitIndex[row] >= 0 else { continue }
            emitToken(s, logits: model.logits + step.logitIndex[row] * vocab)
            outcome.produced += 1
        }
        if !outcome.acceptedPerSequence.isEmpty { speculativeSteps += 1 }
        return outcome
    }

    /// Counts one verified tree (engine totals, the request's usage).
    private func count(_ plan: PlannedTree, _ v: Verification, sequence s: Sequence) {
        let count = plan.tree.count, kept = v.acceptedNodes.count
        if plan.forced {
            forcedDrafted += count
            forcedAccepted += kept
            s.usage.forcedDraftedTokens += count
            s.usage.forcedAcceptedTokens += kept
        }
        drafted += count
        accepted += kept
        s.usage.draftedTokens += count
        s.usage.acceptedTokens += kept
        s.usage.speculativeSteps += 1
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
