import Foundation

// The bodies of the service's own routes (/health, /v1/models, /tokenize, /detokenize,
// /tokenizer_info, /v1/cast/cost, /v1/cast/events) as Codable types. Optional fields are left out
// when nil; `Nullable` ones are sent as null.

/// GET /health: the server's state and every model's (`ModelRouter`).
struct HealthBody: Encodable {
    var status: String
    var model: String
    var running: Int
    var waiting: Int
    var kernels: String
    var models: [Model]

    /// One model's state; `running` and `waiting` while it is loaded, `error` after a failed load.
    struct Model: Encodable {
        var id: String
        var state: String
        var error: String?
        var running: Int?
        var waiting: Int?
    }
}

/// One model of GET /v1/models and GET /v1/models/{id} (`ModelRouter`): OpenAI's model object
/// with CastServe's fields; what is unknown before a load is null.
struct RouterModelBody: Encodable {
    var id: String
    var object = "model"
    var created: Int
    var ownedBy = "castserve"
    var state: String
    var aliases: [String]
    @Nullable var architecture: String?
    @Nullable var quantization: String?
    @Nullable var contextLength: Int?
    var kernels: String
    var kvCacheType: String
    @Nullable var memoryBytes: Int?
    var activeRequests: Int
    @Nullable var error: String?
    @Nullable var loadSeconds: Double?

    enum CodingKeys: String, CodingKey {
        case id, object, created, ownedBy = "owned_by", state, aliases, architecture, quantization
        case contextLength = "context_length", kernels, kvCacheType = "kv_cache_type", memoryBytes = "memory_bytes"
        case activeRequests = "active_requests", error, loadSeconds = "load_seconds"
    }
}

struct RouterModelListBody: Encodable {
    var object = "list"
    var data: [RouterModelBody]
}

/// POST /tokenize: ids, or ids with their pieces (`with_pieces`).
enum TokenizeBody: Encodable {
    case ids([Int])
    case pieces([Piece])

    struct Piece: Encodable {
        var id: Int
        var piece: String
    }

    enum CodingKeys: String, CodingKey { case tokens }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .ids(let ids): try c.encode(ids, forKey: .tokens)
        case .pieces(let pieces): try c.encode(pieces, forKey: .tokens)
        }
    }
}

/// POST /detokenize: the text under llama.cpp's name and vLLM's.
struct DetokenizeBody: Encodable {
    var content: String
    var prompt: String
}

/// GET /tokenizer_info (vLLM's shape, which lm-evaluation-harness reads).
struct TokenizerInfoBody: Encodable {
    var tokenizerClass = "ByteLevelBPE"
    var modelMaxLength: Int
    @Nullable var eosToken: String?
    @Nullable var bosToken: String?
    @Nullable var padToken: String?
    var addBosToken: Bool
    @Nullable var chatTemplate: String?

    enum CodingKeys: String, CodingKey {
        case tokenizerClass = "tokenizer_class", modelMaxLength = "model_max_length", eosToken = "eos_token"
        case bosToken = "bos_token", padToken = "pad_token", addBosToken = "add_bos_token", chatTemplate = "chat_template"
    }
}

// MARK: - Cost model and engine view

/// A point of a cost curve: milliseconds for a step of `rows` rows.
struct CostPointBody: Encodable {
    var rows: Int
    var ms: Double
}

struct PredictedObservedBody: Encodable {
    var predictedMs: Double
    var observedMs: Double

    enum CodingKeys: String, CodingKey { case predictedMs = "predicted_ms", observedMs = "observed_ms" }
}

/// GET /v1/cast/cost.
struct CostBody: Encodable {
    var object = "cast.cost_model"
    var speculation: Bool
    var drafter: String
    var drafterState: String
    var draftedTokens: Int
    var acceptedTokens: Int
    var speculativeSteps: Int
    var plannedGoodputTokensPerSecond: Double
    var plainGoodputTokensPerSecond: Double
    /// Drafting time over step time plus drafting time, since start.
    var draftShare: Double
    var learnedDrafter: LearnedDrafterBody?
    /// T = step_cost[rows] + head_cost[rows with logits] (interpolated, after online correction)
    /// + ms_per_position * positions + host (fixed + per logit row + per node); empty without a model.
    var stepCost: [CostPointBody]
    var headCost: [CostPointBody]?
    var msPerPosition: Double?
    var hostMs: HostBody?
    /// fixed: given by --cost-model, never refreshed; measured at start-up; or from the cache.
    var source: String?
    var accuracy: AccuracyBody?
    /// The guard's measured A/B test: pure decode steps with and without draft trees.
    var measuredGoodput: [MeasuredGoodputBody]?

    struct LearnedDrafterBody: Encodable {
        var file: String
        var draftTokens: Int
        var matrixFormat: String
        /// One frontier layer's cost by rows (after online correction).
        var layerCost: [CostPointBody]?
        var acceptanceByDepth: [DepthBody]
        /// Per depth: expansions (a tested node or the root with verified learned children) and
        /// those where one child was accepted; what the layer gate values a layer by.
        var acceptancePerExpansion: [DepthBody]

        enum CodingKeys: String, CodingKey {
            case file, draftTokens = "draft_tokens", matrixFormat = "matrix_format", layerCost = "layer_cost"
            case acceptanceByDepth = "acceptance_by_depth", acceptancePerExpansion = "acceptance_per_expansion"
        }
    }

    struct DepthBody: Encodable {
        var depth: Int
        var verified: Int
        var accepted: Int
        var rate: Double

        init(depth: Int, counts: (verified: Int, accepted: Int)) {
            self.depth = depth
            verified = counts.verified
            accepted = counts.accepted
            rate = counts.verified > 0 ? Double(counts.accepted) / Double(counts.verified) : 0
        }
    }

    struct HostBody: Encodable {
        var fixed: Double
        var perLogitRow: Double
        var perDraftNode: Double

        enum CodingKeys: String, CodingKey { case fixed, perLogitRow = "per_logit_row", perDraftNode = "per_draft_node" }
    }

    struct AccuracyBody: Encodable {
        var steps: Int
        var medianAbsRelativeError: Double?
        var p90AbsRelativeError: Double?
        var lastStep: PredictedObservedBody?

        enum CodingKeys: String, CodingKey {
            case steps, medianAbsRelativeError = "median_abs_relative_error", p90AbsRelativeError = "p90_abs_relative_error"
            case lastStep = "last_step"
        }
    }

    struct MeasuredGoodputBody: Encodable {
        var decodeRows: String
        var plainTokensPerSecond: Double
        var plainSteps: Int
        var draftingTokensPerSecond: Double
        var draftingSteps: Int
        var verdict: String

        enum CodingKeys: String, CodingKey {
            case decodeRows = "decode_rows", plainTokensPerSecond = "plain_tokens_per_second", plainSteps = "plain_steps"
            case draftingTokensPerSecond = "drafting_tokens_per_second", draftingSteps = "drafting_steps", verdict
        }
    }

    enum CodingKeys: String, CodingKey {
        case object, speculation, drafter, drafterState = "drafter_state", draftedTokens = "drafted_tokens"
        case acceptedTokens = "accepted_tokens", speculativeSteps = "speculative_steps"
        case plannedGoodputTokensPerSecond = "planned_goodput_tokens_per_second"
        case plainGoodputTokensPerSecond = "plain_goodput_tokens_per_second", draftShare = "draft_share"
        case learnedDrafter = "learned_drafter", stepCost = "step_cost", headCost = "head_cost", msPerPosition = "ms_per_position"
        case hostMs = "host_ms", source, accuracy, measuredGoodput = "measured_goodput"
    }
}

/// One `engine` event of GET /v1/cast/events.
struct EngineViewBody: Encodable {
    var object = "cast.engine"
    var time: Double
    var model: String
    var running: Int
    var waiting: Int
    var slots: Int
    var tokensPerSecond: Double
    var promptTokensTotal: Int
    var completionTokensTotal: Int
    var stepsTotal: Int
    var rowsTotal: Int
    var kvBlocks: KVBlocksBody
    var prefixCache: PrefixCacheBody
    var preemptions: Int
    var speculation: Bool
    var drafter: String
    var draftedTokens: Int
    var acceptedTokens: Int
    var speculativeSteps: Int
    var plannedGoodputTokensPerSecond: Double
    var plainGoodputTokensPerSecond: Double
    var steps: [StepHistory.Entry]
    /// T(rows): a step of `rows` rows, all with logits, attending to no cached positions (the
    /// planner adds ms_per_position per attended position).
    var costCurve: [CostPointBody]?
    var msPerPosition: Double?
    var lastStep: PredictedObservedBody?
    var costErrorMedian: Double?

    struct KVBlocksBody: Encodable {
        var total: Int
        var used: Int
        var cached: Int
    }

    struct PrefixCacheBody: Encodable {
        var lookupTokens: Int
        var hitTokens: Int

        enum CodingKeys: String, CodingKey { case lookupTokens = "lookup_tokens", hitTokens = "hit_tokens" }
    }

    enum CodingKeys: String, CodingKey {
        case object, time, model, running, waiting, slots, tokensPerSecond = "tokens_per_second"
        case promptTokensTotal = "prompt_tokens_total", completionTokensTotal = "completion_tokens_total"
        case stepsTotal = "steps_total", rowsTotal = "rows_total", kvBlocks = "kv_blocks", prefixCache = "prefix_cache"
        case preemptions, speculation, drafter, draftedTokens = "drafted_tokens", acceptedTokens = "accepted_tokens"
        case speculativeSteps = "speculative_steps", plannedGoodputTokensPerSecond = "planned_goodput_tokens_per_second"
        case plainGoodputTokensPerSecond = "plain_goodput_tokens_per_second", steps, costCurve = "cost_curve"
        case msPerPosition = "ms_per_position", lastStep = "last_step", costErrorMedian = "cost_error_median"
    }
}
