import Model

/// Admission, packing, preemption and the ends of sequences. Engine thread only.
extension Engine {
    // MARK: - Admission

    /// Fails every queued request (the engine is stopping and nothing runs).
    func refuseWaiting() {
        let refused = waiting
        waiting.removeAll()
        for s in refused {
            release()
            s.onEvent(.failed(.shuttingDown))
        }
    }

    /// Ends cancelled sequences, running or queued.
    func dropCancelled() {
        for s in order where s.handle.cancelled.isSet { finish(s, .cancelled) }
        guard waiting.contains(where: { $0.handle.cancelled.isSet }) else { return }
        let dropped = waiting.filter { $0.handle.cancelled.isSet }
        waiting.removeAll { $0.handle.cancelled.isSet }
        for s in dropped {
            release()
            s.onEvent(.finished(.cancelled, promptTokens: s.request.promptTokens.count, completionTokens: 0, speculation: s.usage))
        }
    }

    /// Admits queued sequences into free slots, first come first served: a shared prefix's cached
    /// blocks are reattached, then the rest of the prompt must fit.
    func admitWaiting(stop: Bool) {
        while !stop, let s = waiting.first, let free = running.firstIndex(where: { $0 == nil }) {
            cache.reset(slot: free)
            var attached = 0
            if !(s.request.needsPromptRows && !s.started) { attached = cache.attachPrefix(slot: free, tokens: s.tokens) }
            guard cache.reserve(slot: free, positions: s.tokens.count + 1) else {
                cache.reset(slot: free)
                if order.isEmpty { fail(waiting.removeFirst(), .modelFailure("the KV cache cannot hold this prompt")) }
                break
            }
            waiting.removeFirst()
            if s.cachedPromptTokens == nil { s.cachedPromptTokens = min(attached, s.request.promptTokens.count) }
            speculator?.drafter.release(slot: free)
            // Room for every token the slot can hold: decoding never grows the array.
            s.tokens.reserveCapacity(cache.capacity)
            s.slot = free
            running[free] = s
            order.append(s)
        }
    }

    // MARK: - Packing

    /// This step's rows: one decode row per decoding sequence, then prefill chunks, in admission
    /// order. A sequence that needs a new block and finds none preempts the most recently
    /// admitted one (recomputed later, mostly from its registered prefix).
    func pack(_ step: inout Step) {
        step.rows.removeAll(keepingCapacity: true)
        step.owners.removeAll(keepingCapacity: true)
        var index = 0
        while index < order.count {
            let s = order[index]
            let cached = cache.lengths[s.slot]
            if s.tokens.count - cached == 1 {
                if !cache.reserve(slot: s.slot, positions: cached + 1) {
                    preempt(order[order.count - 1])
                    continue  // retry the same index (or move on if s itself was preempted)
                }
                step.owners.append(Owner(sequence: s, firstRow: step.rows.count, count: 1, wantsLogits: true))
                step.rows.append(BatchRow(slot: s.slot, token: s.tokens[cached], position: cached))
            }
            index += 1
        }
        var budget = configuration.prefillChunk
        // Another model's engine shares the cores: short chunks, so its decodes wait one short step.
        if let gate = model.gate, gate.isShared(by: self) { budget = min(budget, gate.sharedPrefillRows) }
        var logitRows = step.rows.count
        for s in order where budget > 0 {
            let cached = cache.lengths[s.slot]
            let pending = s.tokens.count - cached
            guard pending > 1 else { continue }
            // Prompt scores need logits for every row: a chunk fits the step's logit rows.
            let scoring = s.request.promptLogprobs != nil && !s.started
            let count = min(pending, budget, scoring ? model.maxLogitRows - logitRows : pending)
            guard count > 0, cache.reserve(slot: s.slot, positions: cached + count) else { continue }
            let last = count == pending
            let embedding = s.request.embedding && !s.started
            step.owners.append(Owner(sequence: s, firstRow: step.rows.count, count: count, wantsLogits: last && !embedding))
            step.rows += BatchRow.chain(slot: s.slot, tokens: s.tokens[cached..<(cached + count)], startPosition: cached,
                                        firstRow: step.rows.count, allLogits: scoring)
            if !last && !scoring || embedding { step.rows[step.rows.count - 1].wantsLogits = false }
            logitRows += step.rows[(step.rows.count - count)...].reduce(0) { $0 + ($1.wantsLogits ? 1 : 0) }
            budget -= count
        }
    }

    /// Frees `s`'s slot and puts it back at the head of the queue; its full blocks stay
    /// registered, so re-admission reattaches most of its keys and values instead of recomputing.
    func preempt(_ s: Sequence) {
        cache.registerPrefix(slot: s.slot)
        cache.reset(slot: s.slot)
        speculator?.drafter.release(slot: s.slot)
        running[s.slot] = nil
        order.removeAll { $0 === s }
        s.slot = -1
        waiting.insert(s, at: 0)
        preemptions += 1
    }

    // MARK: - Ends of sequences

    func finish(_ s: Sequence, _ reason: FinishReason) {
        if s.slot >= 0 && running[s.slot] === s {
            running[s.slot] = nil
            cache.registerPrefix(slot: s.slot)
            cache.reset(slot: s.slot)
            speculator?.drafter.release(slot: s.slot)
            order.removeAll { $0 === s }
            // The corpus drafters learn from every finished text.
            if reason != .cancelled { speculator?.drafter.finished(history: s.tokens) }
        }
        release()
        s.onEvent(.finished(reason, promptTokens: s.request.promptTokens.count, completionTokens: s.generated, speculation: s.usage))
    }

    func fail(_ s: Sequence, _ error: EngineError) {
        if s.slot >= 0 && running[s.slot] === s {
            running[s.slot] = nil
            cache.reset(slot: s.slot)
            speculator?.drafter.release(slot: s.slot)
            order.removeAll { $0 === s }
        }
        release()
        s.onEvent(.failed(error))
    }

    /// One admitted sequence has ended (and left `running` or `waiting`): counts it out and
    /// refreshes the live counts, before its last event, so that a client who has its response
    /// never sees its request still running in /health, /metrics or admission.
    func release() {
        let runningCount = running.reduce(0) { $0 + ($1 == nil ? 0 : 1) }
        lock.lock()
        admitted -= 1
        snapshotValue.running = runningCount
        snapshotValue.waiting = waiting.count + incoming.count
        snapshotValue.kvBlocksUsed = cache.usedBlocks
        snapshotValue.kvBlocksCached = cache.cachedIdleBlocks
        lock.unlock()
    }
}
