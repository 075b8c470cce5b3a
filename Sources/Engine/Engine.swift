import Foundation
import Grammar
import Kernels
import Model
import Speculation

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
    /// Per-request opt-out of speculative decoding (the API's `"speculation": false`).
    public var speculation: Bool
    /// Constrained decoding: every generated token keeps the output a prefix of a match of this
    /// grammar, and the generation ends (finish reason `stop`) once the match is complete.
    public var grammar: TokenGrammar?
    /// Added to these tokens' logits before sampling (OpenAI `logit_bias`; -100 bans a token).
    public var logitBias: [Int32: Float]
    /// Log-probabilities of the prompt's own tokens (OpenAI `echo` with `logprobs`): nil for
    /// none, else how many most likely alternatives to report per position. Delivered once, as
    /// `TokenEvent.promptLogprobs`, before `started`; the prompt's keys and values are computed,
    /// not reused from the prefix cache.
    public var promptLogprobs: Int?
    /// An embedding request: the prompt is run, `TokenEvent.embedding` reports the mean of its
    /// rows' final hidden states (after the output norm), L2-normalised, and nothing is generated.
    public var embedding: Bool

    /// `maxTokens` may be 0 (the prompt is scored or embedded, nothing generated).
    public init(promptTokens: [Int32], maxTokens: Int, sampling: SamplingParameters, stopTokens: Set<Int32>,
                logprobs: Bool = false, topLogprobs: Int = 0, speculation: Bool = true, grammar: TokenGrammar? = nil,
                logitBias: [Int32: Float] = [:], promptLogprobs: Int? = nil, embedding: Bool = false) {
        self.promptTokens = promptTokens
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.stopTokens = stopTokens
        self.logprobs = logprobs
        self.topLogprobs = topLogprobs
        self.speculation = speculation
        self.grammar = grammar
        self.logitBias = logitBias
        self.promptLogprobs = promptLogprobs
        self.embedding = embedding
    }

    /// Whether every prompt row must be computed (no prefix reuse): prompt scores or an embedding.
    var needsPromptRows: Bool { promptLogprobs != nil || embedding }
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
    /// The prompt's tokens with their log-probabilities under the model (the first has none),
    /// when the request asked (`promptLogprobs`); sent just before `started`.
    case promptLogprobs([GeneratedToken])
    /// The pooled, normalised hidden state of an embedding request's prompt; `finished` follows.
    case embedding([Float])
    case token(GeneratedToken)
    case finished(FinishReason, promptTokens: Int, completionTokens: Int, speculation: SpeculationUsage)
    case failed(EngineError)
}

/// What speculative decoding did for one request (all zero when it did not draft).
public struct SpeculationUsage: Sendable, Equatable {
    /// Draft tokens the target verified, and those it accepted.
    public var draftedTokens = 0
    public var acceptedTokens = 0
    /// Decode steps of the request, and those that verified a draft tree.
    public var decodeSteps = 0
    public var speculativeSteps = 0
    /// Of the drafted and accepted tokens, those a grammar forced (drafted without a drafter).
    public var forcedDraftedTokens = 0
    public var forcedAcceptedTokens = 0

    public init(draftedTokens: Int = 0, acceptedTokens: Int = 0, decodeSteps: Int = 0, speculativeSteps: Int = 0,
                forcedDraftedTokens: Int = 0, forcedAcceptedTokens: Int = 0) {
        self.draftedTokens = draftedTokens
        self.acceptedTokens = acceptedTokens
        self.decodeSteps = decodeSteps
        self.speculativeSteps = speculativeSteps
        self.forcedDraftedTokens = forcedDraftedTokens
        self.forcedAcceptedTokens = forcedAcceptedTokens
    }
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
    /// The part of `stepSecondsTotal` spent in the model's forward call (the rest: verification,
    /// sampling, drafter bookkeeping, event delivery).
    public var forwardSecondsTotal = 0.0
    /// Time spent drafting (proposing trees), outside the steps.
    public var draftSecondsTotal = 0.0
    /// Completion tokens per second over the last few seconds.
    public var recentTokensPerSecond = 0.0
    public var slots = 0
    public var contextLength = 0
    public var kvBlocksTotal = 0
    public var kvBlocksUsed = 0
    /// Registered prefix blocks no sequence holds (reusable, evicted when space is needed).
    public var kvBlocksCached = 0
    public var prefixLookupTokens = 0
    public var prefixHitTokens = 0
    public var preemptions = 0
    /// Draft tokens verified and accepted by speculative decoding, and the steps that drafted.
    public var draftedTokens = 0
    public var acceptedTokens = 0
    public var speculativeSteps = 0
    /// Draft tokens forced by grammars (drafted for free) and those accepted.
    public var forcedDraftedTokens = 0
    public var forcedAcceptedTokens = 0
    /// Decode steps summed over sequences (each running sequence's root row counts once).
    public var decodeRoots = 0
    /// The step-cost model the planner uses, after online refresh (nil: speculation off).
    public var costModel: CostModel?
    /// Whether the cost model was measured at start-up (false: loaded from the on-disk cache).
    public var costMeasured = false
    /// Predicted goodput (tokens/s) of the last planned step and of plain decoding for it.
    public var plannedGoodput = 0.0
    public var plainGoodput = 0.0
}

/// What one engine step did (see `Engine.onStep`).
public struct StepReport: Sendable {
    /// Wall time of the forward call.
    public var duration: Duration
    /// Rows of the step, and how many of them were draft-tree nodes.
    public var rows: Int
    public var treeRows: Int
    /// Accepted draft tokens of each sequence that verified a tree in this step.
    public var acceptedPerSequence: [Int]
    /// The planner's predicted goodput for the step and for plain decoding of the same step
    /// (committed tokens per second); nil when nothing was planned.
    public var plannedGoodput: Double?
    public var plainGoodput: Double?
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

/// How the engine sizes draft trees.
public enum DraftStrategy: String, Sendable, CaseIterable {
    /// Every candidate drafted, as a single chain of at most 4 tokens (no planning).
    case chain4
    /// A fixed tree: up to 24 candidate nodes, all verified (no planning).
    case tree
    /// CAST planning per sequence, as if each were alone in the step (budget from T at B = 1).
    case castB1 = "cast_b1"
    /// CAST planning across the live batch: one goodput objective for the whole step.
    case cast
}

/// The drafters the engine can use (see Speculation).
public enum DrafterKind: String, Sendable, CaseIterable {
    /// Prompt lookup only.
    case ngram
    /// The target's own recorded top-k successors, merged with prompt lookup.
    case recycle
    /// The target with a few middle layers skipped (self-speculation; runs the model to draft).
    case skip
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
    /// KV-cache budget in blocks of `blockSize` positions; nil = every slot can be full.
    /// A smaller budget shares memory between sequences (prefix reuse, preemption when full).
    public var kvBlocks: Int?
    public var blockSize = 16
    /// How cached keys and values are stored (f16 by default; q8_0 takes about half of that).
    public var kvCacheType = KVCacheType.f16
    /// Speculative decoding with CAST-planned draft trees (greedy requests only for now).
    /// Off by default until the planner is never below plain decoding (see README).
    public var speculation = false
    /// How draft trees are sized (benchmarks compare them; the server uses `.cast`).
    public var strategy = DraftStrategy.cast
    /// Deepest draft path and most candidate nodes per sequence and step.
    public var maxDraftDepth = 8
    public var maxDraftNodes = 16
    /// Where draft trees come from.
    public var drafter = DrafterKind.recycle
    /// A step-cost model to use instead of measuring one at start-up (e.g. from the on-disk cache).
    public var costModel: CostModel?
    /// Called on the engine thread with (done, total) while the cost model is measured.
    public var calibrationProgress: (@Sendable (Int, Int) -> Void)?
    /// Called on the engine thread with a freshly measured cost model (to cache it on disk).
    public var onCalibrated: (@Sendable (CostModel) -> Void)?

    public init(slots: Int = 8, contextLength: Int = 4096, maxWaiting: Int = 64, prefillChunk: Int = 256,
                kvBlocks: Int? = nil, blockSize: Int = 16, speculation: Bool = false, strategy: DraftStrategy = .cast) {
        self.slots = slots
        self.contextLength = contextLength
        self.maxWaiting = maxWaiting
        self.prefillChunk = prefillChunk
        self.kvBlocks = kvBlocks
        self.blockSize = blockSize
        self.speculation = speculation
        self.strategy = strategy
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
    /// Running sequences in admission order (the scheduling order; preemption takes the last).
    private var order: [Sequence] = []
    private var preemptions = 0
    private var cost: CostModel?
    private let drafter: any Drafter
    private var calibration = ScoreCalibration()
    private var drafted = 0
    private var accepted = 0
    private var speculativeSteps = 0
    var forcedDrafted = 0
    var forcedAccepted = 0
    private var decodeRoots = 0
    /// The planner's prediction for the step being run (goodput and plain goodput, tokens/s).
    private var lastPlan: (goodput: Double, plain: Double)?
    /// Steps that reached the planner, and consecutive plans that chose no draft node.
    private var plannedSteps = 0
    private var plainPlansInARow = 0
    /// Drafting time of the step being run (ms), and a moving average over drafting steps of
    /// realized goodput (tokens committed per ms of step and drafting time) over the planner's
    /// plain-decoding prediction for the same step. Below 0.95 the engine drafts only every
    /// fourth step: a drafter whose own time (the skip drafter runs the model) eats its gain.
    private var draftMilliseconds = 0.0
    private var forwardSeconds = 0.0
    private var draftSeconds = 0.0
    private var realizedOverPlain = 1.0
    private var recent: [(time: Double, tokens: Int)] = []
    let rawLogits: UnsafeMutablePointer<Float>
    /// A logits row to constrain without touching the step's own (draft verification).
    let scratchLogits: UnsafeMutablePointer<Float>

    final class Sequence {
        let request: GenerationRequest
        let handle: RequestHandle
        let onEvent: @Sendable (TokenEvent) -> Void
        var slot = -1
        /// The prompt, then every generated token: the KV cache holds a prefix of these, and
        /// the rest are this sequence's next rows (a prefill chunk, or one decode row).
        var tokens: [Int32]
        var generated = 0
        var started = false
        var sampler: Sampler
        var history: TokenCounts
        var usage = SpeculationUsage()
        /// Where the output is in the request's grammar (nil: unconstrained).
        var grammarState: GrammarState?
        /// Prompt log-probabilities gathered so far (`request.promptLogprobs`).
        var promptScores: [GeneratedToken] = []
        /// Sum of the prompt rows' normalised hidden states so far (embedding requests).
        var pooled: [Float] = []

        init(request: GenerationRequest, handle: RequestHandle, vocabularySize: Int, onEvent: @escaping @Sendable (TokenEvent) -> Void) {
            self.request = request
            self.handle = handle
            self.onEvent = onEvent
            tokens = request.promptTokens
            sampler = Sampler(parameters: request.sampling, vocabularySize: vocabularySize)
            history = TokenCounts(vocabularySize: vocabularySize)
            grammarState = request.grammar?.initialState
        }
    }

    public init(model: Transformer, configuration: EngineConfiguration) {
        self.model = model
        var config = configuration
        config.contextLength = min(config.contextLength, model.maxContext)
        config.prefillChunk = max(1, min(config.prefillChunk, model.maxStepRows - config.slots))
        self.configuration = config
        cache = model.makeCache(slots: config.slots, capacity: config.contextLength, blockSize: config.blockSize, blockCount: config.kvBlocks,
                                type: config.kvCacheType)
        running = Array(repeating: nil, count: config.slots)
        rawLogits = .allocate(capacity: model.config.vocabularySize)
        scratchLogits = .allocate(capacity: model.config.vocabularySize)
        switch config.drafter {
        case .ngram: drafter = NGramDrafter()
        case .recycle: drafter = RecycleDrafter(vocabularySize: model.config.vocabularySize)
        case .skip:
            // The measured default layer set and head shortlist are valid for every model.
            drafter = (try? SkipDrafter(model: model, cache: cache)) ?? RecycleDrafter(vocabularySize: model.config.vocabularySize)
        }
        snapshotValue.slots = config.slots
        snapshotValue.contextLength = config.contextLength
        snapshotValue.kvBlocksTotal = cache.blockCount
        // The cost model is known before the first request: measured here (the model and cache
        // are not shared yet) or taken from the configuration.
        if config.speculation {
            if let known = config.costModel {
                cost = known
            } else {
                calibrate()
                if let cost { config.onCalibrated?(cost) }
            }
            snapshotValue.costModel = cost
            snapshotValue.costMeasured = config.costModel == nil
        }
        // The loop thread keeps the engine alive until `shutdown` ends the loop (an unowned capture
        // crashed when an engine was released before its thread had started).
        let t = Thread { self.loop() }
        t.name = "engine"
        t.stackSize = 8 << 20
        t.start()
    }

    deinit {
        rawLogits.deallocate()
        scratchLogits.deallocate()
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

    /// Called on the engine thread after every step (for histograms). Set before submitting
    /// requests; must not block.
    public var onStep: (@Sendable (StepReport) -> Void)?

    /// Bytes reserved for the KV cache.
    public var cacheBytes: Int { cache.byteCount }
    /// Bytes one cached position takes (keys and values of every layer).
    public var cacheBytesPerPosition: Int { cache.bytesPerPosition }

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
        var owners: [Owner] = []
        var logitIndex: [Int] = []
        // The rows a sequence commits this step (reused: steady-state decode allocates nothing here).
        recent.reserveCapacity(4096)
        var keep: [Int] = [], keepTokens: [Int32] = []
        keep.reserveCapacity(model.maxStepRows)
        keepTokens.reserveCapacity(model.maxStepRows)
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
            for s in order where s.handle.cancelled.isSet { finish(s, .cancelled) }
            var kept: [Sequence] = []
            var dropped: [Sequence] = []
            for s in waiting {
                if s.handle.cancelled.isSet { dropped.append(s) } else { kept.append(s) }
            }
            waiting = kept
            for s in dropped {
                release()
                s.onEvent(.finished(.cancelled, promptTokens: s.request.promptTokens.count, completionTokens: 0, speculation: s.usage))
            }
            while !stop, let s = waiting.first, let free = running.firstIndex(where: { $0 == nil }) {
                // Reuse cached blocks of a shared prefix, then make sure the rest of the prompt fits.
                cache.reset(slot: free)
                if !(s.request.needsPromptRows && !s.started) { _ = cache.attachPrefix(slot: free, tokens: s.tokens) }
                guard cache.reserve(slot: free, positions: s.tokens.count + 1) else {
                    cache.reset(slot: free)
                    if order.isEmpty { fail(waiting.removeFirst(), .modelFailure("the KV cache cannot hold this prompt")) }
                    break
                }
                waiting.removeFirst()
                // Room for every token the slot can hold: decoding never grows the array.
                s.tokens.reserveCapacity(cache.capacity)
                s.slot = free
                running[free] = s
                order.append(s)
            }

            // This step's rows: one decode row per decoding sequence, then prefill chunks, in
            // admission order. A sequence that needs a new block and finds none preempts the
            // most recently admitted one (recomputed later, mostly from its registered prefix).
            rows.removeAll(keepingCapacity: true)
            owners.removeAll(keepingCapacity: true)
            var index = 0
            while index < order.count {
                let s = order[index]
                let cached = cache.lengths[s.slot]
                if s.tokens.count - cached == 1 {
                    if !cache.reserve(slot: s.slot, positions: cached + 1) {
                        preempt(order[order.count - 1])
                        continue  // retry the same index (or move on if s itself was preempted)
                    }
                    owners.append(Owner(sequence: s, firstRow: rows.count, count: 1, wantsLogits: true))
                    rows.append(BatchRow(slot: s.slot, token: s.tokens[cached], position: cached))
                }
                index += 1
            }
            var budget = configuration.prefillChunk
            var logitRows = rows.count
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
                owners.append(Owner(sequence: s, firstRow: rows.count, count: count, wantsLogits: last && !embedding))
                rows += BatchRow.chain(slot: s.slot, tokens: s.tokens[cached..<(cached + count)], startPosition: cached, firstRow: rows.count,
                                       allLogits: scoring)
                if !last && !scoring || embedding { rows[rows.count - 1].wantsLogits = false }
                logitRows += rows[(rows.count - count)...].reduce(0) { $0 + ($1.wantsLogits ? 1 : 0) }
                budget -= count
            }
            if rows.isEmpty { continue }
            addDraftTrees(&rows, &owners)
            logitIndex.removeAll(keepingCapacity: true)
            var logits = 0
            for r in rows {
                logitIndex.append(r.wantsLogits ? logits : -1)
                if r.wantsLogits { logits += 1 }
            }

            let t0 = clock.now
            do {
                try model.forward(rows, cache: cache)
            } catch {
                for o in owners { fail(o.sequence, .modelFailure("\(error)")) }
                continue
            }
            forwardSeconds += (clock.now - t0).seconds
            var produced = 0
            var promptTokens = 0
            var acceptedPerStep: [Int] = []
            let vocab = model.config.vocabularySize
            for o in owners {
                let s = o.sequence
                guard s.slot >= 0 && running[s.slot] === s else { continue }
                // Greedy verification: follow the tree while each node's token is the target's
                // argmax at its parent; the committed rows are the root and the accepted nodes.
                keep.removeAll(keepingCapacity: true)
                keep.append(contentsOf: o.firstRow..<(o.firstRow + o.count))
                if o.count == 1 && o.wantsLogits { decodeRoots += 1 }
                // Tokens decided by sampled verification (nil: sample each kept row as usual).
                var decided: [Int32]?
                if o.count == 1 && o.wantsLogits { s.usage.decodeSteps += 1 }
                if let tree = o.tree {
                    let path = verify(tree, owner: o, sequence: s, rows: rows, logitIndex: logitIndex, decided: &decided)
                    for node in path { keep.append(o.treeRow + node) }
                    if o.forced {
                        forcedDrafted += tree.count
                        forcedAccepted += path.count
                        s.usage.forcedDraftedTokens += tree.count
                        s.usage.forcedAcceptedTokens += path.count
                    }
                    calibration.record(tree: tree, acceptedNodes: path)
                    drafted += tree.count
                    accepted += path.count
                    s.usage.draftedTokens += tree.count
                    s.usage.acceptedTokens += path.count
                    s.usage.speculativeSteps += 1
                    acceptedPerStep.append(path.count)
                } else if o.wantsLogits && canSpeculate(s) {
                    let row = o.firstRow + o.count - 1
                    drafter.observe(previous: previousToken(row, rows: rows, sequence: s), token: rows[row].token,
                                    logits: model.logits + logitIndex[row] * vocab, vocabularySize: vocab)
                }
                do {
                    keepTokens.removeAll(keepingCapacity: true)
                    for row in keep { keepTokens.append(rows[row].token) }
                    try cache.commit(slot: s.slot, rows: keep, tokens: keepTokens)
                } catch {
                    fail(s, .modelFailure("\(error)"))
                    continue
                }
                if !s.started && s.request.needsPromptRows {
                    gatherPromptRows(o, sequence: s, rows: rows, logitIndex: logitIndex)
                }
                if !s.started && cache.lengths[s.slot] >= s.request.promptTokens.count {
                    s.started = true
                    promptTokens += s.request.promptTokens.count
                    if s.request.promptLogprobs != nil { s.onEvent(.promptLogprobs(s.promptScores)) }
                    if s.request.embedding { s.onEvent(.embedding(pooledEmbedding(s))) }
                    s.onEvent(.started(promptTokens: s.request.promptTokens.count))
                    if s.request.embedding || s.request.maxTokens == 0 {
                        finish(s, s.request.embedding ? .stop : .length)
                        continue
                    }
                }
                guard o.wantsLogits else { continue }
                if let decided {
                    for token in decided {
                        deliver(s, token: token, logprob: nil, top: [])
                        produced += 1
                        if running[s.slot] !== s || s.slot < 0 { break }
                    }
                    continue
                }
                // One token per kept row whose logits exist: the accepted tokens, then the bonus. Of
                // a prefill chunk only the last row counts (a scored prompt has logits for all).
                for row in keep where logitIndex[row] >= 0 && row >= o.firstRow + o.count - 1 {
                    emitToken(s, logits: model.logits + logitIndex[row] * vocab)
                    produced += 1
                    if running[s.slot] !== s || s.slot < 0 { break }
                }
            }
            let treeRows = owners.reduce(0) { $0 + ($1.tree?.count ?? 0) }
            if cost != nil {
                let ms = (clock.now - t0).seconds * 1000
                if treeRows > 0 {
                    speculativeSteps += 1
                    // Plain decoding of the same step: the rows without the trees.
                    let baseRows = rows.count - treeRows
                    let basePositions = Self.positions(rows[0..<baseRows])
                    let roots = owners.reduce(0) { $0 + ($1.count == 1 && $1.wantsLogits ? 1 : 0) }
                    let plain = Double(max(roots, 1)) / cost!.milliseconds(rows: baseRows, positions: basePositions)
                    let realized = Double(max(roots, 1) + acceptedPerStep.reduce(0, +)) / (ms + draftMilliseconds)
                    realizedOverPlain = 0.9 * realizedOverPlain + 0.1 * realized / plain
                }
                draftMilliseconds = 0
                cost!.observe(rows: rows.count, positions: Self.positions(rows), ms: ms)
            }
            let stepTime = clock.now - t0
            onStep?(StepReport(duration: stepTime, rows: rows.count, treeRows: treeRows, acceptedPerSequence: acceptedPerStep,
                               plannedGoodput: lastPlan?.goodput, plainGoodput: lastPlan?.plain))
            publish(now: (clock.now - start).seconds, tokens: produced, promptTokens: promptTokens, step: (rows.count, stepTime.seconds))
            lastPlan = nil
        }
    }

    /// One sequence's part of a step: `count` rows from `firstRow` (a prefill chunk or a decode
    /// root), and for a root with a draft tree, the tree's nodes at rows `treeRow...`.
    struct Owner {
        var sequence: Sequence
        var firstRow: Int
        var count: Int
        var wantsLogits: Bool
        var tree: DraftTree?
        var treeRow = 0
        /// The tree is a run of tokens a grammar forces (drafted without the drafter).
        var forced = false
    }

    /// Positions a step's rows attend to in all (each row: its position + 1).
    static func positions(_ rows: some Collection<BatchRow>) -> Int {
        rows.reduce(0) { $0 + $1.position + 1 }
    }

    /// Measures the step-cost model on slot 0 (free at start-up): chains of R = 1, 2, 4, ... rows
    /// with logits for every row, as draft verification runs them, after a short context (64
    /// positions) and, for R = 1, 4, 16, after a long one (up to 1024) to fit the attention term.
    /// Reports progress through `configuration.calibrationProgress`.
    private func calibrate() {
        let clock = ContinuousClock()
        let shortContext = min(64, cache.capacity / 4)
        let maxRows = min(128, model.maxStepRows, model.maxLogitRows)
        let longContext = min(1024, cache.capacity - maxRows - 1)
        guard shortContext > 0 else { return }
        var shortRows: [Int] = []
        var r = 1
        while r <= maxRows { shortRows.append(r); r *= 2 }
        let longRows = longContext > 2 * shortContext ? [1, 4, 16].filter { $0 <= maxRows } : []
        let total = shortRows.count + longRows.count
        var done = 0
        func measure(context: Int, rows counts: [Int]) throws -> [(rows: Int, positions: Int, ms: Double)] {
            let prompt = (0..<context).map { Int32(100 + ($0 * 7919) % 30000) }
            cache.reset(slot: 0)
            var filled = 0
            while filled < context {
                let n = min(context - filled, model.maxStepRows)
                try model.forward(BatchRow.chain(slot: 0, tokens: prompt[filled..<(filled + n)], startPosition: filled, allLogits: false), cache: cache)
                try cache.commit(slot: 0, rows: 0..<n)
                filled += n
            }
            var out: [(rows: Int, positions: Int, ms: Double)] = []
            for r in counts {
                // r new rows (a prefix of the prompt's tokens would hold only `context` of them).
                let tokens = (0..<r).map { Int32(200 + ($0 * 104_729) % 30000) }
                let rows = BatchRow.chain(slot: 0, tokens: tokens[...], startPosition: context, allLogits: true)
                try model.forward(rows, cache: cache)
                var times: [Double] = []
                for _ in 0..<7 {
                    let t = clock.now
                    try model.forward(rows, cache: cache)
                    times.append((clock.now - t).seconds * 1000)
                }
                // The second fastest of 7: the machine's own cost, robust to a busy neighbour;
                // the online refresh adds the load that persists.
                out.append((r, Self.positions(rows), times.sorted()[1]))
                done += 1
                configuration.calibrationProgress?(done, total)
            }
            return out
        }
        do {
            let short = try measure(context: shortContext, rows: shortRows)
            let long = longRows.isEmpty ? [] : try measure(context: longContext, rows: longRows)
            if short.count >= 2 { cost = CostModel.fit(short: short, long: long) }
        } catch {
            cost = nil
        }
        cache.reset(slot: 0)
    }

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

    /// Drafts a tree for every decoding sequence that may speculate, lets the CAST planner size
    /// them against the step-cost table, and appends the chosen nodes as rows below each root.
    private func addDraftTrees(_ rows: inout [BatchRow], _ owners: inout [Owner]) {
        guard let cost else { return }
        // When the planner has chosen plain decoding many steps in a row (a large, compute-bound
        // batch), draft only every fourth step to notice when trees pay again: drafting costs
        // host time the planner's objective does not see.
        plannedSteps += 1
        // A drafter that runs the model costs far more per probe: it probes 8 times less often.
        let losing = realizedOverPlain < 0.95
        let probeEvery = drafter.usesModel && losing ? 32 : 4
        // Runs a grammar forces cost no drafting: they are drafted every step.
        let forced = forcedRuns(owners)
        let forcedOwners = Set(forced.map(\.owner))
        let skipDrafter = configuration.strategy == .cast && (plainPlansInARow >= 8 || losing) && plannedSteps % probeEvery != 0
        if skipDrafter && forced.isEmpty { return }
        var trees: [(owner: Int, tree: DraftTree)] = []
        var candidates: [CASTPlanner.Candidate] = []
        var inputs: [DraftInput] = []
        var inputOwners: [Int] = []
        for (i, o) in owners.enumerated() where !skipDrafter && o.count == 1 && o.wantsLogits && canSpeculate(o.sequence)
            && !forcedOwners.contains(i) {
            let s = o.sequence
            let cached = cache.lengths[s.slot]
            guard s.tokens.count - cached == 1 else { continue }
            let room = min(configuration.maxDraftDepth, s.request.maxTokens - s.generated - 1, cache.capacity - s.tokens.count - 1)
            guard room > 0 else { continue }
            let nodes: Int
            switch configuration.strategy {
            case .chain4: nodes = 4
            case .tree: nodes = 24
            case .castB1, .cast: nodes = configuration.maxDraftNodes
            }
            // A model drafter pays a forward per level: shallow, narrow trees.
            let depthCap = configuration.strategy == .chain4 || drafter.usesModel ? 4 : room
            inputs.append(DraftInput(slot: s.slot, history: s.tokens, maxNodes: drafter.usesModel ? min(nodes, 8) : nodes,
                                     maxDepth: min(room, depthCap)))
            inputOwners.append(i)
        }
        guard !inputs.isEmpty || !forced.isEmpty else { return }
        var proposals: [DraftTree] = []
        if !inputs.isEmpty {
            let draftStart = ContinuousClock.now
            proposals = (try? drafter.propose(inputs)) ?? []
            draftMilliseconds = (ContinuousClock.now - draftStart).seconds * 1000
            draftSeconds += draftMilliseconds / 1000
        }
        for (k, proposal) in proposals.enumerated() {
            var tree = grammarFiltered(calibration.calibrated(proposal), sequence: owners[inputOwners[k]].sequence)
            if configuration.strategy == .chain4 { tree = tree.bestPath(maxDepth: 4) }
            guard !tree.isEmpty else { continue }
            let cached = cache.lengths[owners[inputOwners[k]].sequence.slot]
            for n in 0..<tree.count {
                candidates.append(CASTPlanner.Candidate(sequence: trees.count, node: n, score: tree.scores[n], depth: tree.depths[n],
                                                        positions: cached + tree.depths[n] + 1))
            }
            trees.append((inputOwners[k], tree))
        }
        for (owner, raw) in forced {
            let tree = calibration.calibrated(raw)
            let cached = cache.lengths[owners[owner].sequence.slot]
            for n in 0..<tree.count {
                candidates.append(CASTPlanner.Candidate(sequence: trees.count, node: n, score: tree.scores[n], depth: tree.depths[n],
                                                        positions: cached + tree.depths[n] + 1))
            }
            trees.append((owner, tree))
        }
        guard !trees.isEmpty else { return }
        let decodeRows = owners.reduce(0) { $0 + ($1.count == 1 && $1.wantsLogits ? 1 : 0) }
        let logitRows = rows.reduce(0) { $0 + ($1.wantsLogits ? 1 : 0) }
        let maxRows = min(model.maxStepRows, rows.count + model.maxLogitRows - logitRows)
        /// Unplanned sizes take the step's free rows first come, first served.
        func fitToRoom(_ sizes: [Int]) -> [Int] {
            var room = maxRows - rows.count
            return sizes.map { size in
                let kept = min(size, max(room, 0))
                room -= kept
                return kept
            }
        }
        var perSequence: [Int]
        switch configuration.strategy {
        case .chain4, .tree:
            perSequence = fitToRoom(trees.map { $0.tree.count })
        case .castB1:
            // Each sequence planned alone: one root row, one committed token.
            perSequence = fitToRoom(trees.indices.map { k in
                let own = candidates.filter { $0.sequence == k }.map {
                    CASTPlanner.Candidate(sequence: 0, node: $0.node, score: $0.score, depth: $0.depth, positions: $0.positions)
                }
                let root = rows[owners[trees[k].owner].firstRow]
                return CASTPlanner.plan(candidates: own, sequences: 1, baseRows: 1, baseTokens: 1, basePositions: root.position + 1,
                                        maxRows: maxRows, cost: cost).perSequence[0]
            })
        case .cast:
            let plan = CASTPlanner.plan(candidates: candidates, sequences: trees.count, baseRows: rows.count,
                                        baseTokens: max(decodeRows, 1), basePositions: Self.positions(rows), maxRows: maxRows, cost: cost)
            perSequence = plan.perSequence
            lastPlan = (plan.goodput, plan.plainGoodput)
            plainPlansInARow = plan.perSequence.allSatisfy { $0 == 0 } ? plainPlansInARow + 1 : 0
        }
        for (k, entry) in trees.enumerated() where perSequence[k] > 0 {
            let tree = entry.tree.pruned(to: perSequence[k])
            let root = owners[entry.owner].firstRow
            let s = owners[entry.owner].sequence
            let cached = cache.lengths[s.slot]
            guard cache.reserve(slot: s.slot, positions: cached + 1 + (tree.depths.max() ?? 0)) else { continue }
            owners[entry.owner].tree = tree
            owners[entry.owner].treeRow = rows.count
            owners[entry.owner].forced = forcedOwners.contains(entry.owner)
            for n in 0..<tree.count {
                let parent = tree.parents[n] < 0 ? root : owners[entry.owner].treeRow + tree.parents[n]
                rows.append(BatchRow(slot: s.slot, token: tree.tokens[n], position: cached + tree.depths[n], parent: parent))
            }
        }
    }

    /// Frees `s`'s slot and puts it back at the head of the queue; its full blocks stay
    /// registered, so re-admission reattaches most of its keys and values instead of recomputing.
    private func preempt(_ s: Sequence) {
        cache.registerPrefix(slot: s.slot)
        cache.reset(slot: s.slot)
        running[s.slot] = nil
        order.removeAll { $0 === s }
        s.slot = -1
        waiting.insert(s, at: 0)
        preemptions += 1
    }

    /// Verifies `tree` (drafted below `o`'s root) against this step's logits and returns the
    /// accepted path (node indices, root first excluded). Greedy requests follow the target's
    /// argmax; sampled ones use lossless recursive rejection (`TreeVerifier`) with the request's
    /// own sampler and generator, and get every emitted token in `decided` (the accepted ones and
    /// the final draw). Every verified row's logits are shown to the drafter.
    private func verify(_ tree: DraftTree, owner o: Owner, sequence s: Sequence, rows: [BatchRow], logitIndex: [Int],
                        decided: inout [Int32]?) -> [Int] {
        let vocab = model.config.vocabularySize
        let greedy = s.request.sampling.temperature <= 0
        var node = -1
        var row = o.firstRow
        var path: [Int] = []
        var tokens: [Int32] = []
        var state = s.grammarState
        while true {
            let logitsRow = model.logits + logitIndex[row] * vocab
            drafter.observe(previous: previousToken(row, rows: rows, sequence: s), token: rows[row].token, logits: logitsRow, vocabularySize: vocab)
            let children = tree.children(of: node)
            if greedy {
                let next = isConstrained(s) ? constrainedArgmax(s, logits: logitsRow, state: state) : argmax(logitsRow, count: vocab)
                guard let child = children.first(where: { tree.tokens[$0] == next }) else { break }
                node = child
            } else {
                let ordered = children.sorted { tree.scores[$0] > tree.scores[$1] }
                let rowLogits = isConstrained(s) ? constrainedCopy(s, logits: logitsRow, state: state) : logitsRow
                let (ids, probabilities) = s.sampler.distribution(logits: rowLogits, count: vocab, history: s.history)
                var residual = Array(probabilities)
                let outcome = TreeVerifier.verify(ids: Array(ids), probabilities: &residual, children: ordered.map { tree.tokens[$0] },
                                                  uniform: { s.sampler.nextUnit() })
                guard case .accepted(let c) = outcome else {
                    if case .rejected(let token) = outcome { tokens.append(token) }
                    break
                }
                node = ordered[c]
                tokens.append(tree.tokens[node])
            }
            path.append(node)
            row = o.treeRow + node
            if let g = s.request.grammar, let st = state { state = g.advance(st, token: tree.tokens[node]) }
        }
        if !greedy { decided = tokens }
        return path
    }

    /// The token before `row`'s in its sequence: its parent row's, or the sequence's token at the
    /// position before (-1 at position 0).
    private func previousToken(_ row: Int, rows: [BatchRow], sequence s: Sequence) -> Int32 {
        let r = rows[row]
        if r.parent >= 0 { return rows[r.parent].token }
        return r.position > 0 && r.position - 1 < s.tokens.count ? s.tokens[r.position - 1] : -1
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
        let token = isConstrained(s) ? sampleConstrained(s, logits: logits) : s.sampler.sample(logits: logits, count: vocab, history: s.history)
        if wantsLogprobs {
            let (lse, best) = Self.logprobs(rawLogits, count: vocab, top: s.request.topLogprobs)
            logprob = rawLogits[Int(token)] - lse
            top = best
        }
        deliver(s, token: token, logprob: logprob, top: top)
    }

    /// Reports the chosen `token` of `s`, and ends the sequence when done.
    private func deliver(_ s: Sequence, token: Int32, logprob: Float?, top: [(id: Int32, logprob: Float)]) {
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
            cache.registerPrefix(slot: s.slot)
            cache.reset(slot: s.slot)
            order.removeAll { $0 === s }
        }
        release()
        s.onEvent(.finished(reason, promptTokens: s.request.promptTokens.count, completionTokens: s.generated, speculation: s.usage))
    }

    private func fail(_ s: Sequence, _ error: EngineError) {
        if s.slot >= 0 && running[s.slot] === s {
            running[s.slot] = nil
            cache.reset(slot: s.slot)
            order.removeAll { $0 === s }
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
        snapshotValue.kvBlocksUsed = cache.usedBlocks
        snapshotValue.kvBlocksCached = cache.cachedIdleBlocks
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
        snapshotValue.kvBlocksTotal = cache.blockCount
        snapshotValue.kvBlocksUsed = cache.usedBlocks
        snapshotValue.kvBlocksCached = cache.cachedIdleBlocks
        snapshotValue.prefixLookupTokens = cache.prefixLookupTokens
        snapshotValue.prefixHitTokens = cache.prefixHitTokens
        snapshotValue.preemptions = preemptions
        snapshotValue.draftedTokens = drafted
        snapshotValue.acceptedTokens = accepted
        snapshotValue.speculativeSteps = speculativeSteps
        snapshotValue.forcedDraftedTokens = forcedDrafted
        snapshotValue.forcedAcceptedTokens = forcedAccepted
        snapshotValue.decodeRoots = decodeRoots
        if let cost { snapshotValue.costModel = cost }
        if let plan = lastPlan {
            snapshotValue.plannedGoodput = plan.goodput
            snapshotValue.plainGoodput = plan.plain
        }
        if let step {
            snapshotValue.stepsTotal += 1
            snapshotValue.rowsTotal += step.rows
            snapshotValue.stepSecondsTotal += step.seconds
            snapshotValue.forwardSecondsTotal = forwardSeconds
            snapshotValue.draftSecondsTotal = draftSeconds
        }
        snapshotValue.recentTokensPerSecond = Double(recent.reduce(0) { $0 + $1.tokens }) / window
        lock.unlock()
    }
}
