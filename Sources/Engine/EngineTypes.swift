import Foundation
import Grammar
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

/// Why a generation ended.
public enum FinishReason: String, Sendable {
    /// A stop token (end of turn) was produced, or the output completed its grammar.
    case stop
    /// The token budget or the context ran out.
    case length
    /// The request was cancelled (`Engine.cancel`).
    case cancelled
}

/// One generated token with its optional log-probabilities.
public struct GeneratedToken: Sendable {
    public var id: Int32
    /// log p(id) under the model's distribution (before sampling transforms), when asked for.
    public var logprob: Float?
    /// The most likely tokens at this step with their log-probabilities, when asked for.
    public var topLogprobs: [(id: Int32, logprob: Float)]

    public init(id: Int32, logprob: Float? = nil, topLogprobs: [(id: Int32, logprob: Float)] = []) {
        self.id = id
        self.logprob = logprob
        self.topLogprobs = topLogprobs
    }
}

/// Events of one request, delivered in order on the engine thread. Handlers must not block.
public enum TokenEvent: Sendable {
    /// Prefill finished; generation starts. `cachedTokens` of the prompt's tokens were not
    /// computed: their keys and values came from the prefix cache (a multiple of the block size).
    case started(promptTokens: Int, cachedTokens: Int)
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
    /// Whether the cost model was measured at start-up (false: given in the configuration, from
    /// the on-disk cache or fixed; `costModel?.isFixed` tells which).
    public var costMeasured = false
    /// Whether the drafter started from state saved by an earlier run (`drafterStatePath`).
    public var drafterStateLoaded = false
    /// Predicted goodput (tokens/s) of the last planned step and of plain decoding for it.
    public var plannedGoodput = 0.0
    public var plainGoodput = 0.0
    /// The cost model's accuracy over recent steps: median and 90th percentile of
    /// |observed - predicted| / predicted, the steps it covers, and the last step's figures (ms).
    public var costErrorMedian: Double?
    public var costErrorP90: Double?
    public var costErrorSteps = 0
    /// The speculator's measured A/B test per batch bucket (decode rows 1, 2-3, 4-7, ...).
    public var measuredGoodput: [BucketGoodput] = []
    /// A layered drafter's cost D per frontier layer by rows (after online correction; nil: none).
    public var drafterLayerCost: LayerCost?
    /// The learned drafter's nodes by depth (1, 2, ...): verified with their parent accepted, and
    /// accepted (a node a copy drafter proposed too counts as the copy drafter's: they merge first).
    public var learnedAcceptanceByDepth: [(observed: Int, accepted: Int)] = []
    /// The learned drafter's expansions by the depth of their children (1, 2, ...): a tested node
    /// (or the root) with verified learned children, and those where one child was accepted.
    public var learnedExpansionsByDepth: [(expanded: Int, accepted: Int)] = []
    /// Slots whose drafter state (the learned drafter's root feature) is held.
    public var drafterSlotsHeld = 0
    public var lastPredictedMilliseconds: Double?
    public var lastObservedMilliseconds: Double?
}

/// What one engine step did (see `Engine.onStep`).
public struct StepReport: Sendable {
    /// Wall time of the step (drafting, forward call and host work).
    public var duration: Duration
    /// With speculation on: the cost model's prediction for the step and what it took (ms: forward
    /// and host, drafting excluded), the step's shape, and the two parts of the observed time.
    public var predictedMilliseconds: Double?
    public var observedMilliseconds: Double?
    public var shape: StepShape?
    public var forwardMilliseconds: Double?
    public var hostMilliseconds: Double?
    /// Rows of the step, and how many of them were draft-tree nodes.
    public var rows: Int
    public var treeRows: Int
    /// Accepted draft tokens of each sequence that verified a tree in this step.
    public var acceptedPerSequence: [Int]
    /// The planner's predicted goodput for the step and for plain decoding of the same step
    /// (committed tokens per second); nil when nothing was planned.
    public var plannedGoodput: Double?
    public var plainGoodput: Double?
    /// Draft-tree nodes of each sequence that verified a tree in this step (same order as
    /// `acceptedPerSequence`).
    public var treeRowsPerSequence: [Int] = []
    /// Of `duration`, the drafters' time (0 when nothing drafted).
    public var draftMilliseconds: Double = 0
    /// Attended positions of the step (nil without a planned shape).
    public var positions: Int? { shape?.positions }
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

/// How the engine sizes draft trees (defined in Speculation).
public typealias DraftStrategy = Speculation.DraftStrategy

/// The drafters the engine can use (defined in Speculation).
public typealias DrafterKind = Speculation.DrafterKind

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
    /// Where the recycle drafter's table is loaded from at start and saved to at shutdown (so a
    /// restart keeps what it learned); nil: not kept.
    public var drafterStatePath: String?
    /// A learned drafter for this model (loaded and checked by the caller): drafts alone with
    /// `drafter = .learned`, merged with the copy drafters of `recycle`, `suffix` and `ngram`.
    public var learnedDrafter: LearnedDrafterWeights?
    /// The learned drafter's layer cost D to use instead of measuring it at start-up.
    public var learnedLayerCost: LayerCost?
    /// Children the learned drafter adds below each node it expands (1: chains, what
    /// `cast-bench drafter-check` compares with the drafter's offline acceptance).
    public var learnedDraftWidth = 3
    /// A step-cost model to use instead of measuring one at start-up (e.g. from the on-disk cache).
    /// A fixed one (`CostModel.fixed()`, `CostModelFile`) is never refreshed and turns the
    /// speculator's measured guards off: planning then does not depend on the host's speed.
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

