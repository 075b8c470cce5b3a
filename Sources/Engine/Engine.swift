import Foundation
import Model

/// What a client asks the engine to generate. Already validated and tokenized by the API layer.
public struct GenerationRequest: Sendable {
    public var promptTokens: [Int32]
    public var maxTokens: Int
    public var sampling: SamplingParameters
    /// Tokens that end the generation (end of turn); reported with finish reason `stop`.
    public var stopTokens: Set<Int32>
    /// How many most-likely alternatives to report per token (0 = none); log-probabilities of the
    /// chosen token are reported when `logprobs` is true.
    public var logprobs: Bool
    public var topLogprobs: Int

    public init(promptTokens: [Int32], maxTokens: Int, sampling: SamplingParameters, stopTokens: Set<Int32>,
                logprobs: Bool = false, topLogprobs: Int = 0) {
        self.promptTokens = promptTokens
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.stopTokens = stopTokens
        self.logprobs = logprobs
        self.topLogprobs = topLogprobs
    }
}

/// One generated token with its optional log-probabilities.
public struct GeneratedToken: Sendable {
    public var id: Int32
    /// log p(id) under the model's distribution (before sampling transforms), when asked for.
    public var logprob: Float?
    /// The most likely tokens at this step with their log-probabilities, when asked for.
    public var topLogprobs: [(id: Int32, logprob: Float)]
}

/// Events of one request, delivered in order on the engine thread. Handlers must not block.
public enum TokenEvent: Sendable {
    /// Prefill finished; generation starts.
    case started(promptTokens: Int)
    case token(GeneratedToken)
    case finished(FinishReason, promptTokens: Int, completionTokens: Int)
    case failed(EngineError)
}

/// Requests the engine refuses or cannot finish.
public enum EngineError: Error, CustomStringConvertible, Equatable, Sendable {
    case queueFull(waiting: Int)
    case promptTooLong(promptTokens: Int, contextLength: Int)
    case emptyPrompt
    case shuttingDown
    case modelFailure(String)

    public var description: String {
        switch self {
        case .queueFull(let waiting):
            return "the server is at capacity (\(waiting) requests waiting); retry shortly"
        case .promptTooLong(let prompt, let context):
            return "the prompt has \(prompt) tokens but the context holds \(context) (prompt plus at least one generated token); shorten the prompt"
        case .emptyPrompt:
            return "the prompt is empty; send at least one token"
        case .shuttingDown:
            return "the server is shutting down"
        case .modelFailure(let reason):
            return "the model failed: \(reason)"
        }
    }
}

/// Live counters of the engine, for /metrics and /health.
public struct EngineSnapshot: Sendable {
    public var running = 0
    public var waiting = 0
    public var promptTokensTotal = 0
    public var completionTokensTotal = 0
    public var stepsTotal = 0
    public var rowsTotal = 0
    public var stepSecondsTotal = 0.0
    /// Completion tokens per second over the last few seconds.
    public var recentTokensPerSecond = 0.0
    public var slots = 0
    public var contextLength = 0
}

/// Handle of a submitted request: cancel it when the client goes away.
public final class RequestHandle: @unchecked Sendable {
    public let id: UInt64
    let cancelled = ManagedAtomicFlag()
    init(id: UInt64) { self.id = id }
}

/// A thread-safe boolean flag (a lock is plenty here: it is read once per step).
final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}

/// Engine settings.
public struct EngineConfiguration: Sendable {
    /// Sequences decoded together (KV-cache slots).
    public var slots = 8
    /// Positions per sequence (prompt plus completion).
    public var contextLength = 4096
    /// Requests allowed to wait for a slot; beyond it `submit` throws `queueFull`.
    public var maxWaiting = 64
    /// Most prompt rows one step takes (decode rows go first).
    public var prefillChunk = 256

    public init(slots: Int = 8, contextLength: Int = 4096, maxWaiting: Int = 64, prefillChunk: Int = 256) {
        self.slots = slots
        self.contextLength = contextLength
        self.maxWaiting = maxWaiting
        self.prefillChunk = prefillChunk
    }
}

/// The continuous-batching engine: one thread runs the step loop; every step packs the prefill
/// chunks and decode rows of all running sequences into one forward call.
///
/// `submit` and `cancel` are thread-safe; events are delivered on the engine thread.
public final class Engine: @unchecked Sendable {
    public let model: Transformer
    public let configuration: EngineConfiguration
    let cache: KVCache

    private let lock = NSCondition()
    private var incoming: [Sequence] = []
    private var stopping = false
    /// Sequences submitted and not yet ended (incoming, waiting or running). Kept under `lock` and
    /// released before a sequence's last event, so a client that sends its next request as soon
    /// as it has read a response never sees its own finished request still holding the slot.
    private var admitted = 0
    private var nextID: UInt64 = 1
    private var snapshotValue = EngineSnapshot()

    // Engine-thread state.
    private var waiting: [Sequence] = []
    private var running: [Sequence?]
    private var recent: [(time: Double, tokens: Int)] = []
    private let rawLogits: UnsafeMutablePointer<Float>

    final class Sequence {
        let request: GenerationRequest
        let handle: RequestHandle
        let onEvent: @Sendable (TokenEvent) -> Void
        var slot = -1
        var prefilled = 0
        var generated = 0
        var sampler: Sampler
        var history: TokenCounts
        var lastToken: Int32 = 0
        var decoding = false

        init(request: GenerationRequest, handle: RequestHandle, vocabularySize: Int, onEvent: @escaping @Sendable (TokenEvent) -> Void) {
            self.request = request
            self.handle = handle
            self.onEvent = onEvent
            sampler = Sampler(parameters: request.sampling, vocabularySize: vocabularySize)
            history = TokenCounts(vocabularySize: vocabularySize)
        }
    }

    public init(model: Transformer, configuration: EngineConfiguration) {
        self.model = model
        var config = configuration
        config.contextLength = min(config.contextLength, model.maxContext)
        config.prefillChunk = max(1, min(config.prefillChunk, model.maxStepRows - config.slots))
        self.configuration = config
        cache = model.makeCache(slots: config.slots, capacity: config.contextLength)
        running = Array(repeating: nil, count: config.slots)
        rawLogits = .allocate(capacity: model.config.vocabularySize)
        snapshotValue.slots = config.slots
        snapshotValue.contextLength = config.contextLength
        // The loop thread keeps the engine alive until `shutdown` ends the loop (an unowned capture
        // crashed when an engine was released before its thread had started).
        let t = Thread { self.loop() }
        t.name = "engine"
        t.stackSize = 8 << 20
        t.start()
    }

    /// Queues a request. Throws `queueFull`, `promptTooLong`, `emptyPrompt` or `shuttingDown`.
    @discardableResult
    public func submit(_ request: GenerationRequest, onEvent: @escaping @Sendable (TokenEvent) -> Void) throws -> RequestHandle {
        guard !request.promptTokens.isEmpty else { throw EngineError.emptyPrompt }
        guard request.promptTokens.count < configuration.contextLength else {
            throw EngineError.promptTooLong(promptTokens: request.promptTokens.count, contextLength: configuration.contextLength)
        }
        lock.lock()
        defer { lock.unlock() }
        guard !stopping else { throw EngineError.shuttingDown }
        guard admitted < configuration.slots + configuration.maxWaiting else {
            throw EngineError.queueFull(waiting: max(0, admitted - configuration.slots))
        }
        admitted += 1
        let handle = RequestHandle(id: nextID)
        nextID += 1
        incoming.append(Sequence(request: request, handle: handle, vocabularySize: model.config.vocabularySize, onEvent: onEvent))
        lock.signal()
        return handle
    }

    /// Cancels a request: its sequence is dropped at the next step and its slot freed.
    public func cancel(_ handle: RequestHandle) {
        handle.cancelled.set()
        lock.lock()
        lock.signal()
        lock.unlock()
    }

    /// Bytes reserved for the KV cache.
    public var cacheBytes: Int { cache.byteCount }

    /// Current counters.
    public var snapshot: EngineSnapshot {
        lock.lock()
        defer { lock.unlock() }
        return snapshotValue
    }

    /// Stops the loop after failing queued requests; running ones finish first if `drain`.
    public func shutdown() {
        lock.lock()
        stopping = true
        lock.signal()
        lock.unlock()
    }

    // MARK: - Step loop

    private func loop() {
        let clock = ContinuousClock()
        let start = clock.now
        var rows: [BatchRow] = []
        rows.reserveCapacity(model.maxStepRows)
        var owners: [(sequence: Sequence, firstRow: Int, count: Int, wantsLogits: Bool)] = []
        while true {
            lock.lock()
            while incoming.isEmpty && waiting.isEmpty && running.allSatisfy({ $0 == nil }) && !stopping {
                lock.wait()
            }
            waiting += incoming
            incoming.removeAll()
            let stop = stopping
            lock.unlock()
            if stop && running.allSatisfy({ $0 == nil }) {
                let refused = waiting
                waiting.removeAll()
                for s in refused {
                    release()
                    s.onEvent(.failed(.shuttingDown))
                }
                publish(now: (clock.now - start).seconds, tokens: 0, promptTokens: 0, step: nil)
                return
            }

            // Drop cancelled sequences, admit waiting ones into free slots (first come first served).
            for i in running.indices {
                if let s = running[i], s.handle.cancelled.isSet { finish(s, .cancelled) }
            }
            var kept: [Sequence] = []
            var dropped: [Sequence] = []
            for s in waiting {
                if s.handle.cancelled.isSet { dropped.append(s) } else { kept.append(s) }
            }
            waiting = kept
            for s in dropped {
                release()
                s.onEvent(.finished(.cancelled, promptTokens: s.request.promptTokens.count, completionTokens: 0))
            }
            while !stop, !waiting.isEmpty, let free = running.firstIndex(where: { $0 == nil }) {
                let s = waiting.removeFirst()
                s.slot = free
                cache.reset(slot: free)
                running[free] = s
            }

            // This step's rows: one decode row per decoding sequence, then prefill chunks.
            rows.removeAll(keepingCapacity: true)
            owners.removeAll(keepingCapacity: true)
            for case let s? in running where s.decoding {
                owners.append((s, rows.count, 1, true))
                rows.append(BatchRow(slot: s.slot, token: s.lastToken, position: cache.lengths[s.slot]))
            }
            var budget = configuration.prefillChunk
            for case let s? in running where !s.decoding && budget > 0 {
                let prompt = s.request.promptTokens
                let end = min(prompt.count, s.prefilled + budget)
                let last = end == prompt.count
                owners.append((s, rows.count, end - s.prefilled, last))
                rows += BatchRow.chain(slot: s.slot, tokens: prompt[s.prefilled..<end], startPosition: s.prefilled, firstRow: rows.count)
                if !last { rows[rows.count - 1].wantsLogits = false }
                budget -= end - s.prefilled
            }
            if rows.isEmpty { continue }

            let t0 = clock.now
            do {
                try model.forward(rows, cache: cache)
            } catch {
                for (s, _, _, _) in owners { fail(s, .modelFailure("\(error)")) }
                continue
            }
            var logitRow = 0
            var produced = 0
            var promptTokens = 0
            for (s, first, count, wantsLogits) in owners {
                do {
                    try cache.commit(slot: s.slot, rows: first..<(first + count))
                } catch {
                    fail(s, .modelFailure("\(error)"))
                    if wantsLogits { logitRow += 1 }
                    continue
                }
                if !s.decoding {
                    s.prefilled += count
                    if s.prefilled == s.request.promptTokens.count {
                        s.decoding = true
                        promptTokens += s.prefilled
                        s.onEvent(.started(promptTokens: s.prefilled))
                    }
                }
                guard wantsLogits else { continue }
                let logits = model.logits + logitRow * model.config.vocabularySize
                logitRow += 1
                emitToken(s, logits: logits)
                produced += 1
            }
            let now = (clock.now - start).seconds
            publish(now: now, tokens: produced, promptTokens: promptTokens, step: (rows.count, (clock.now - t0).seconds))
        }
    }

    /// Samples the next token of `s` from its logits, reports it, and ends the sequence when done.
    private func emitToken(_ s: Sequence, logits: UnsafeMutablePointer<Float>) {
        let vocab = model.config.vocabularySize
        var logprob: Float?
        var top: [(id: Int32, logprob: Float)] = []
        let wantsLogprobs = s.request.logprobs || s.request.topLogprobs > 0
        if wantsLogprobs {
            // The sampler transforms logits in place; log-probabilities use the model's own.
            rawLogits.update(from: logits, count: vocab)
        }
        let token = s.sampler.sample(logits: logits, count: vocab, history: s.history)
        if wantsLogprobs {
            let (lse, best) = Self.logprobs(rawLogits, count: vocab, top: s.request.topLogprobs)
            logprob = rawLogits[Int(token)] - lse
            top = best
        }
        s.generated += 1
        s.history.add(token)
        s.lastToken = token
        s.onEvent(.token(GeneratedToken(id: token, logprob: s.request.logprobs ? logprob : nil, topLogprobs: top)))
        if s.request.stopTokens.contains(token) {
            finish(s, .stop)
        } else if s.generated >= s.request.maxTokens || cache.lengths[s.slot] + 1 >= cache.capacity {
            finish(s, .length)
        }
    }

    /// Log-sum-exp of the logits and the `top` most likely tokens with their log-probabilities.
    static func logprobs(_ logits: UnsafePointer<Float>, count: Int, top: Int) -> (Float, [(id: Int32, logprob: Float)]) {
        var maxValue = -Float.infinity
        for i in 0..<count { maxValue = max(maxValue, logits[i]) }
        var sum: Float = 0
        for i in 0..<count { sum += expf(logits[i] - maxValue) }
        let lse = maxValue + logf(sum)
        guard top > 0 else { return (lse, []) }
        var best: [(id: Int32, logprob: Float)] = []
        for i in 0..<count {
            let v = logits[i]
            if best.count < top || v > best[best.count - 1].logprob {
                let entry = (id: Int32(i), logprob: v)
                let at = best.firstIndex { $0.logprob < v } ?? best.count
                best.insert(entry, at: at)
                if best.count > top { best.removeLast() }
            }
        }
        return (lse, best.map { ($0.id, $0.logprob - lse) })
    }

    private func finish(_ s: Sequence, _ reason: FinishReason) {
        if s.slot >= 0 && running[s.slot] === s {
            running[s.slot] = nil
            cache.reset(slot: s.slot)
        }
        release()
        s.onEvent(.finished(reason, promptTokens: s.request.promptTokens.count, completionTokens: s.generated))
    }

    private func fail(_ s: Sequence, _ error: EngineError) {
        if s.slot >= 0 && running[s.slot] === s {
            running[s.slot] = nil
            cache.reset(slot: s.slot)
        }
        release()
        s.onEvent(.failed(error))
    }

    /// One admitted sequence has ended (and left `running` or `waiting`): counts it out and
    /// refreshes the live counts, before its last event, so that a client who has its response
    /// never sees its request still running in /health, /metrics or admission. Engine thread only.
    private func release() {
        let runningCount = running.reduce(0) { $0 + ($1 == nil ? 0 : 1) }
        lock.lock()
        admitted -= 1
        snapshotValue.running = runningCount
        snapshotValue.waiting = waiting.count + incoming.count
        lock.unlock()
    }

    private func publish(now: Double, tokens: Int, promptTokens: Int, step: (rows: Int, seconds: Double)?) {
        if tokens > 0 { recent.append((now, tokens)) }
        recent.removeAll { now - $0.time > 5 }
        let window = max(min(now, 5), 1e-3)
        lock.lock()
        snapshotValue.running = running.reduce(0) { $0 + ($1 == nil ? 0 : 1) }
        snapshotValue.waiting = waiting.count + incoming.count
        snapshotValue.completionTokensTotal += tokens
        snapshotValue.promptTokensTotal += promptTokens
        if let step {
            snapshotValue.stepsTotal += 1
            snapshotValue.rowsTotal += step.rows
            snapshotValue.stepSecondsTotal += step.seconds
        }
        snapshotValue.recentTokensPerSecond = Double(recent.reduce(0) { $0 + $1.tokens }) / window
        lock.unlock()
    }
}
