import Foundation
import Grammar
import Model
import Speculation

/// The continuous-batching engine: one thread runs the step loop; every step packs the prefill
/// chunks and decode rows of all running sequences, and the draft trees CAST plans for them, into
/// one forward call.
///
/// `submit` and `cancel` are thread-safe; events are delivered on the engine thread.
///
/// Files: this one (state, the public surface, the step loop), `Engine+Scheduler` (admission,
/// packing, preemption, ends of sequences), `Engine+Step` (plan, verify, commit, tokens),
/// `Engine+Constraints` (a request's rules on logits: grammar, logit bias; prompt rows), `Engine+Metrics` (counters),
/// `Engine+Generate` (one request run to its end, for one-shot callers).
public final class Engine: @unchecked Sendable {
    public let model: Transformer
    public let configuration: EngineConfiguration
    let cache: KVCache

    let lock = NSCondition()
    var incoming: [Sequence] = []
    var stopping = false
    /// Sequences submitted and not yet ended (incoming, waiting or running). Kept under `lock` and
    /// released before a sequence's last event, so a client that sends its next request as soon
    /// as it has read a response never sees its own finished request still holding the slot.
    var admitted = 0
    private var nextID: UInt64 = 1
    var snapshotValue = EngineSnapshot()

    // Engine-thread state.
    var waiting: [Sequence] = []
    var running: [Sequence?]
    /// Running sequences in admission order (the scheduling order; preemption takes the last).
    var order: [Sequence] = []
    var preemptions = 0
    /// CAST: drafter, calibration, cost model, planner (nil: speculation off).
    let speculator: Speculator?
    var drafted = 0
    var accepted = 0
    var speculativeSteps = 0
    var forcedDrafted = 0
    var forcedAccepted = 0
    var decodeRoots = 0
    var forwardSeconds = 0.0
    var recent: [(time: Double, tokens: Int)] = []
    /// Signalled once when the loop ends.
    private let stopped = DispatchSemaphore(value: 0)
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
        /// Prompt tokens whose keys and values came from the prefix cache at the first admission
        /// (nil before it; a re-admission after preemption reattaches blocks this sequence
        /// computed itself, which are not cached tokens).
        var cachedPromptTokens: Int?
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

    /// One sequence's part of a step: `count` rows from `firstRow` (a prefill chunk or a decode
    /// root) and, for a root with a planned draft tree, the tree's rows and their verification.
    struct Owner {
        var sequence: Sequence
        var firstRow: Int
        var count: Int
        var wantsLogits: Bool
        var plan: PlannedTree?
        var verification: Verification?

        /// A decode root (one row whose logits give the next token).
        var isDecodeRoot: Bool { count == 1 && wantsLogits }
    }

    /// One step's rows and what the loop keeps between steps (reused: steady-state decode
    /// allocates nothing here).
    struct Step {
        var rows: [BatchRow] = []
        var owners: [Owner] = []
        /// Row -> its index among the rows with logits (-1: none).
        var logitIndex: [Int] = []
        /// The rows one sequence commits, and their tokens.
        var keep: [Int] = []
        var keepTokens: [Int32] = []
        /// The decode roots that may get a tree (emptied after planning).
        var requests: [TreeRequest] = []

        init(capacity: Int) {
            rows.reserveCapacity(capacity)
            requests.reserveCapacity(capacity)
            logitIndex.reserveCapacity(capacity)
            keep.reserveCapacity(capacity)
            keepTokens.reserveCapacity(capacity)
        }

        /// The step's shape for the cost model.
        var shape: StepShape {
            var logits = 0, positions = 0
            for r in rows {
                if r.wantsLogits { logits += 1 }
                positions += r.position + 1
            }
            return StepShape(rows: rows.count, logitRows: logits, positions: positions,
                             nodes: owners.reduce(0) { $0 + ($1.plan?.tree.count ?? 0) })
        }

        /// Decode roots: the tokens a plain step would commit.
        var decodeRoots: Int { owners.reduce(0) { $0 + ($1.isDecodeRoot ? 1 : 0) } }
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
        snapshotValue.slots = config.slots
        snapshotValue.contextLength = config.contextLength
        snapshotValue.kvBlocksTotal = cache.blockCount
        // The cost model is known before the first request: measured here (the model and cache
        // are not shared yet) or taken from the configuration.
        var speculator: Speculator?
        if config.speculation {
            var cost = config.costModel
            if cost == nil {
                cost = try? CostCalibration.measure(model: model, cache: cache, progress: config.calibrationProgress)
                if let cost { config.onCalibrated?(cost) }
            }
            if let cost {
                let (drafter, loaded) = DrafterFactory.make(config.drafter, model: model, cache: cache, learned: config.learnedDrafter,
                                                            learnedCost: config.learnedLayerCost, learnedWidth: config.learnedDraftWidth,
                                                            statePath: config.drafterStatePath)
                speculator = Speculator(drafter: drafter, cost: cost, strategy: config.strategy)
                snapshotValue.drafterStateLoaded = loaded
            }
            snapshotValue.costModel = cost
            snapshotValue.costMeasured = config.costModel == nil
        }
        self.speculator = speculator
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

    /// Stops the loop after failing queued requests; running ones finish first.
    public func shutdown() {
        lock.lock()
        stopping = true
        lock.signal()
        lock.unlock()
    }

    /// Waits until the loop has ended after `shutdown` (what the drafter learned is saved by then);
    /// false when `timeout` passed first.
    @discardableResult
    public func waitUntilStopped(timeout: Duration) -> Bool {
        stopped.wait(timeout: .now() + .milliseconds(Int(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000))) == .success
    }

    // MARK: - Step loop

    /// Admit, pack, plan, forward, verify, commit, learn: one step per turn.
    private func loop() {
        let clock = ContinuousClock()
        let start = clock.now
        var step = Step(capacity: model.maxStepRows)
        recent.reserveCapacity(4096)
        while true {
            let stop = waitForWork()
            if stop && running.allSatisfy({ $0 == nil }) {
                refuseWaiting()
                saveDrafterState()
                model.gate?.remove(self)
                publish(now: (clock.now - start).seconds, tokens: 0, promptTokens: 0, step: nil)
                stopped.signal()
                return
            }
            // With other models on the same cores, a step is one turn of the shared gate; the wait
            // is part of what the step costs this model's tokens (see `learn`).
            let waitedMs = (model.gate?.enter(self) ?? 0) * 1000
            let t0 = clock.now
            dropCancelled()
            admitWaiting(stop: stop)
            pack(&step)
            if step.rows.isEmpty {
                model.gate?.leave()
                continue
            }
            let base = step.shape
            let baseTokens = step.decodeRoots
            plan(&step)
            indexLogits(&step)

            let tForward = clock.now
            do {
                try model.forward(step.rows, cache: cache)
            } catch {
                model.gate?.leave()
                for o in step.owners { fail(o.sequence, .modelFailure("\(error)")) }
                continue
            }
            let forwardMs = (clock.now - tForward).seconds * 1000
            forwardSeconds += forwardMs / 1000

            verify(&step)
            let outcome = commit(&step)
            let stepTime = clock.now - t0
            model.gate?.leave()
            let draftMs = speculator?.draftMilliseconds ?? 0   // `learn` starts the next step's count
            let timing = learn(from: step, base: base, baseTokens: baseTokens, outcome: outcome, forwardMs: forwardMs,
                               stepMs: stepTime.seconds * 1000, sharedWaitMs: waitedMs)
            report(step, outcome: outcome, duration: stepTime, timing: timing, draftMs: draftMs)
            publish(now: (clock.now - start).seconds, tokens: outcome.produced, promptTokens: outcome.promptTokens,
                    step: (step.rows.count, stepTime.seconds))
        }
    }

    /// Waits until there is something to do; moves incoming requests to the queue. Returns
    /// whether the engine is stopping.
    private func waitForWork() -> Bool {
        lock.lock()
        while incoming.isEmpty && waiting.isEmpty && running.allSatisfy({ $0 == nil }) && !stopping {
            lock.wait()
        }
        waiting += incoming
        incoming.removeAll()
        let stop = stopping
        lock.unlock()
        return stop
    }

    /// What verification, commits and emission did in one step.
    struct StepOutcome {
        var produced = 0
        var promptTokens = 0
        /// Accepted draft tokens of each sequence that verified a tree.
        var acceptedPerSequence: [Int] = []
    }

    /// A step's timing as the cost model saw it.
    struct StepTiming {
        var shape: StepShape
        var predictedMs: Double
        var forwardMs: Double
        var hostMs: Double
    }

    /// Feeds the step to CAST's cost model and guards (forward and host time apart; drafting
    /// time is the speculator's own). Returns what the model predicted and what the step took.
    /// `sharedWaitMs`, the wait for the turn of cores shared with other models, counts as host
    /// time: a step of this model really costs its tokens that wait too, whatever its shape, so
    /// the planner sees it as the fixed per-step cost it is (and drafts deeper when waits are long).
    private func learn(from step: Step, base: StepShape, baseTokens: Int, outcome: StepOutcome, forwardMs: Double,
                       stepMs: Double, sharedWaitMs: Double) -> StepTiming? {
        guard let speculator else { return nil }
        let shape = step.shape
        let hostMs = max(0, stepMs + sharedWaitMs - forwardMs - speculator.draftMilliseconds)
        let committed = baseTokens + outcome.acceptedPerSequence.reduce(0, +)
        speculator.observe(shape, forwardMs: forwardMs, hostMs: hostMs, base: base, baseTokens: baseTokens,
                           committed: committed)
        return StepTiming(shape: shape, predictedMs: speculator.lastStep?.predictedMs ?? 0, forwardMs: forwardMs, hostMs: hostMs)
    }
}
