import Grammar
import Model
import Speculation

#if canImport(Glibc)
import Glibc
#endif

/// What a request asks of its logits beyond the model's own: a grammar (constrained decoding)
/// and a logit bias, applied the same way when a token is sampled and when a draft is verified
/// (`RequestRules`), so speculation never changes the output; and what a prompt row gives besides
/// the next token (prompt log-probabilities, embeddings). Engine thread only.
extension Engine {
    // MARK: - Constraints on logits

    /// Whether `s`'s logits are changed before sampling.
    func isConstrained(_ s: Sequence) -> Bool {
        s.request.grammar != nil || !s.request.logitBias.isEmpty
    }

    /// Adds the logit bias to `logits` in place.
    private func applyBias(_ s: Sequence, _ logits: UnsafeMutablePointer<Float>) {
        let vocab = model.config.vocabularySize
        for (id, bias) in s.request.logitBias where Int(id) < vocab { logits[Int(id)] += bias }
    }

    /// Samples `s`'s next token from `logits` (changed in place) under its bias and grammar.
    /// A greedy request whose top token the grammar allows needs no mask (the common case).
    func sampleConstrained(_ s: Sequence, logits: UnsafeMutablePointer<Float>) -> Int32 {
        let vocab = model.config.vocabularySize
        applyBias(s, logits)
        if let g = s.request.grammar, let state = s.grammarState {
            let p = s.request.sampling
            if p.temperature <= 0 && p.presencePenalty == 0 && p.frequencyPenalty == 0 {
                let top = Sampler.argmax(logits, count: vocab)
                if g.allows(state, token: top) { return top }
            }
            g.applyMask(state, to: logits, count: vocab)
        }
        return s.sampler.sample(logits: logits, count: vocab, history: s.history)
    }

    /// The greedy choice at a draft node (grammar `state`) without changing the step's logits.
    func constrainedArgmax(_ s: Sequence, logits: UnsafeMutablePointer<Float>, state: GrammarState?) -> Int32 {
        let vocab = model.config.vocabularySize
        if s.request.logitBias.isEmpty, let g = s.request.grammar, let state {
            let top = Sampler.argmax(logits, count: vocab)
            if g.allows(state, token: top) { return top }
        }
        return Sampler.argmax(constrainedCopy(s, logits: logits, state: state), count: vocab)
    }

    /// A copy of `logits` with the bias and the mask of grammar `state` applied (valid until the
    /// next call).
    func constrainedCopy(_ s: Sequence, logits: UnsafeMutablePointer<Float>, state: GrammarState?) -> UnsafeMutablePointer<Float> {
        let vocab = model.config.vocabularySize
        scratchLogits.update(from: logits, count: vocab)
        applyBias(s, scratchLogits)
        if let g = s.request.grammar, let state { g.applyMask(state, to: scratchLogits, count: vocab) }
        return scratchLogits
    }

    /// A sequence's rules as the speculator's verifier asks for them: its sampler under its grammar
    /// and logit bias (the engine's scratch row for masked copies).
    struct RequestRules: TokenRules {
        let engine: Engine
        let sequence: Sequence

        var isGreedy: Bool { sequence.request.sampling.temperature <= 0 }
        var grammar: TokenGrammar? { sequence.request.grammar }
        var grammarState: GrammarState? { sequence.grammarState }

        func choice(logits: UnsafeMutablePointer<Float>, state: GrammarState?) -> Int32 {
            engine.isConstrained(sequence) ? engine.constrainedArgmax(sequence, logits: logits, state: state)
                : Sampler.argmax(logits, count: engine.model.config.vocabularySize)
        }

        func distribution(logits: UnsafeMutablePointer<Float>, state: GrammarState?) -> (ids: ArraySlice<Int32>, probabilities: ArraySlice<Float>) {
            let row = engine.isConstrained(sequence) ? engine.constrainedCopy(sequence, logits: logits, state: state) : logits
            return sequence.sampler.distribution(logits: row, count: engine.model.config.vocabularySize, history: sequence.history)
        }

        func uniform() -> Double { sequence.sampler.nextUnit() }
    }

    // MARK: - Prompt rows

    /// Takes what a prefill chunk of `s` gives besides the next token: the log-probability of
    /// each prompt token from the row before it, or the rows' normalised hidden states.
    func gatherPromptRows(_ o: Owner, sequence s: Sequence, rows: [BatchRow], logitIndex: [Int]) {
        let vocab = model.config.vocabularySize
        let prompt = s.request.promptTokens
        let first = rows[o.firstRow].position
        if first == 0 {
            // A restart after preemption recomputes from the beginning.
            s.promptScores.removeAll()
            s.pooled = []
        }
        if let top = s.request.promptLogprobs {
            if first == 0 { s.promptScores.append(GeneratedToken(id: prompt[0], logprob: nil, topLogprobs: [])) }
            for r in o.firstRow..<(o.firstRow + o.count) {
                let next = rows[r].position + 1
                guard next < prompt.count, logitIndex[r] >= 0 else { continue }
                let logits = model.logits + logitIndex[r] * vocab
                let (lse, best) = Sampler.logprobs(logits, count: vocab, top: top)
                s.promptScores.append(GeneratedToken(id: prompt[next], logprob: logits[Int(prompt[next])] - lse, topLogprobs: best))
            }
        }
        if s.request.embedding {
            let width = model.config.embeddingLength
            if s.pooled.isEmpty { s.pooled = [Float](repeating: 0, count: width) }
            let state = UnsafeMutablePointer<Float>.allocate(capacity: width)
            defer { state.deallocate() }
            for r in o.firstRow..<(o.firstRow + o.count) where rows[r].position < prompt.count {
                model.finalHiddenState(row: r, into: state)
                for k in 0..<width { s.pooled[k] += state[k] }
            }
        }
    }

    /// The mean of the prompt rows' states, scaled to unit length.
    func pooledEmbedding(_ s: Sequence) -> [Float] {
        guard !s.pooled.isEmpty else { return [] }
        var v = s.pooled.map { $0 / Float(max(s.request.promptTokens.count, 1)) }
        let norm = sqrtf(v.reduce(0) { $0 + $1 * $1 })
        if norm > 0 { v = v.map { $0 / norm } }
        return v
    }
}
