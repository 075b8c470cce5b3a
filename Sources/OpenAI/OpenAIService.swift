import ChatTemplate
import Engine
import Foundation
import HTTP
import Logging
import Model

/// What the service serves once the model is loaded.
public struct Backend: Sendable {
    public var engine: Engine
    public var formatter: PromptFormatter
    public var modelID: String
    public var contextLength: Int

    public init(engine: Engine, formatter: PromptFormatter, modelID: String, contextLength: Int) {
        self.engine = engine
        self.formatter = formatter
        self.modelID = modelID
        self.contextLength = contextLength
    }
}

/// Service settings from config.json.
public struct ServiceSettings: Sendable {
    public var modelAliases: [String]
    public var apiKeys: [String]
    public var defaultMaxTokens: Int
    /// Sampling parameters for the fields a request leaves out (`sampling_defaults`).
    public var samplingDefaults: SamplingDefaults
    /// How many responses `POST /v1/responses` keeps for `previous_response_id` and `GET`
    /// (`responses_store_size`; 0 keeps none). Ignored when the service is given a shared store.
    public var responsesStoreSize: Int
    /// Whether replies of thinking models get their think block split off (`reasoning_format`).
    public var reasoningFormat: ReasoningFormat

    public init(modelAliases: [String], apiKeys: [String], defaultMaxTokens: Int, samplingDefaults: SamplingDefaults = .openAI,
                responsesStoreSize: Int = 256, reasoningFormat: ReasoningFormat = .auto) {
        self.modelAliases = modelAliases
        self.apiKeys = apiKeys
        self.defaultMaxTokens = defaultMaxTokens
        self.samplingDefaults = samplingDefaults
        self.responsesStoreSize = responsesStoreSize
        self.reasoningFormat = reasoningFormat
    }
}

/// The OpenAI-compatible API: routes, validation, generation, streaming, errors, metrics, logs.
///
/// Thread-safe: handlers run on connection threads; state changes are locked.
public final class OpenAIService: HTTPHandler, @unchecked Sendable {
    enum State {
        case loading
        case ready(Backend)
        case draining(Backend?)
    }

    public let settings: ServiceSettings
    /// This model's metrics (labelled with its id; `ServerMetrics.sibling(model:)`).
    public let metrics: ServerMetrics
    /// The engine's recent steps for the engine view; the executable wires `Engine.onStep` to it.
    public let stepHistory = StepHistory()
    let logger: Logger
    private let lock = NSLock()
    private var state = State.loading
    /// Signalled when draining starts, so long-lived event streams end at once.
    private let drainCondition = NSCondition()
    /// Output grammars of recent requests, bound to the model's vocabulary.
    let grammarCache = GrammarCache()
    /// Responses kept for `previous_response_id` and `GET /v1/responses/{id}`.
    let responseStore: ResponseStore

    /// `responseStore`: one store every model's service shares, so `GET /v1/responses/{id}` (routed
    /// to the default model) finds a response of any model; nil gives this service its own.
    public init(settings: ServiceSettings, metrics: ServerMetrics, logger: Logger, responseStore: ResponseStore? = nil) {
        self.settings = settings
        self.metrics = metrics
        self.logger = logger
        self.responseStore = responseStore ?? ResponseStore(capacity: settings.responsesStoreSize)
    }

    /// The model is loaded: start serving.
    public func setReady(_ backend: Backend) {
        metrics.recordBuild(kernels: backend.engine.model.kernels.description,
                            kvCacheType: backend.engine.configuration.kvCacheType.rawValue)
        metrics.recordModel(id: backend.modelID, kvBlockSize: backend.engine.configuration.blockSize,
                            kvBlocks: backend.engine.snapshot.kvBlocksTotal)
        lock.lock()
        state = .ready(backend)
        lock.unlock()
    }

    /// Shutting down: new generations get 503, /health reports draining.
    public func setDraining() {
        lock.lock()
        if case .ready(let b) = state { state = .draining(b) } else { state = .draining(nil) }
        lock.unlock()
        drainCondition.lock()
        drainCondition.broadcast()
        drainCondition.unlock()
    }

    /// Whether the server is draining (shutting down).
    var isDraining: Bool {
        if case .draining = current { return true }
        return false
    }

    /// Waits up to `milliseconds`, returning early when draining starts.
    func waitForDrain(milliseconds: Int) {
        let deadline = Date(timeIntervalSinceNow: Double(milliseconds) / 1000)
        drainCondition.lock()
        while !isDraining && drainCondition.wait(until: deadline) {}
        drainCondition.unlock()
    }

    private var current: State {
        lock.lock()
        defer { lock.unlock() }
        return state
    }

    // MARK: - Routing

    public func handle(_ request: HTTPRequest, _ responder: HTTPResponder) {
        let clock = ContinuousClock()
        let start = clock.now
        var log = RequestLog(id: responder.requestID, method: request.method, path: request.path)
        let routeLabel = Self.routes[request.path] != nil ? request.path : "other"
        do {
            try authorize(request)
            try route(request, responder, &log, start: start)
        } catch {
            let e = OpenAIError.wrapping(error)
            log.status = e.status.code
            log.error = e.message
            if !responder.hasStarted { responder.send(Self.errorResponse(e, path: request.path)) }
        }
        let elapsed = clock.now - start
        metrics.countRequest(route: routeLabel, status: log.status)
        metrics.requestDuration.record(elapsed)
        log.seconds = elapsed
        logger.info("\(log)")
    }

    /// Requests the HTTP layer refuses itself (malformed, over a limit, bad Content-Encoding) get
    /// the API's JSON error envelope too.
    public func refusalResponse(status: HTTPStatus, message: String) -> HTTPResponse? { Self.refusal(status: status, message: message) }

    static func refusal(status: HTTPStatus, message: String) -> HTTPResponse {
        let code: String
        switch status.code {
        case 408: code = "request_timeout"
        case 413: code = "request_too_large"
        case 414: code = "uri_too_long"
        case 415: code = "unsupported_content_encoding"
        case 431: code = "headers_too_large"
        default: code = "invalid_request"
        }
        return OpenAIError(status: status, message: message, type: "invalid_request_error", param: nil, code: code).response
    }

    /// Allowed methods per path (the model list, /health and /metrics are `ModelRouter`'s).
    static let routes: [String: [String]] = [
        "/v1/chat/completions": ["POST"], "/v1/completions": ["POST"],
        "/tokenize": ["POST"], "/detokenize": ["POST"],
        "/v1/cast/cost": ["GET"], "/v1/cast/events": ["GET"], "/v1/embeddings": ["POST"], "/tokenizer_info": ["GET"],
        "/v1/responses": ["POST"],
        "/": ["GET", "HEAD"], "/index.html": ["GET", "HEAD"], "/app.js": ["GET", "HEAD"], "/app.css": ["GET", "HEAD"],
        "/favicon.svg": ["GET", "HEAD"], "/v1/messages": ["POST"], "/v1/messages/count_tokens": ["POST"],
    ]

    private func route(_ request: HTTPRequest, _ responder: HTTPResponder, _ log: inout RequestLog, start: ContinuousClock.Instant) throws {
        let path = request.path
        guard let allowed = Self.routes[path] else {
            if path.hasPrefix("/v1/responses/"), case let id = path.dropFirst("/v1/responses/".count), !id.isEmpty, !id.contains("/") {
                return try storedResponse(String(id), method: request.method, responder, &log)
            }
            if path.hasPrefix("/v1/responses/"), path.hasSuffix("/input_items"),
               case let id = path.dropFirst("/v1/responses/".count).dropLast("/input_items".count), !id.isEmpty, !id.contains("/") {
                return try inputItems(String(id), request, responder, &log)
            }
            throw OpenAIError.notFound(path)
        }
        guard allowed.contains(request.method) else { throw OpenAIError.methodNotAllowed(request.method, path, allowed: allowed) }
        switch path {
        case _ where Self.isPagePath(path): pageAsset(request, responder, &log)
        case "/v1/cast/events": try events(request, responder, &log)
        case "/v1/cast/cost": responder.send(json(try costBody()))
        case "/tokenize": try tokenize(request, responder, &log)
        case "/detokenize": try detokenize(request, responder, &log)
        case "/v1/chat/completions": try complete(request, chat: true, responder, &log, start: start)
        case "/v1/completions": try complete(request, chat: false, responder, &log, start: start)
        case "/v1/messages": try messages(request, responder, &log, start: start)
        case "/v1/messages/count_tokens": try countTokens(request, responder, &log)
        case "/v1/embeddings": try embeddings(request, responder, &log, start: start)
        case "/v1/responses": try responses(request, responder, &log, start: start)
        case "/tokenizer_info": try tokenizerInfo(responder)
        default: throw OpenAIError.notFound(path)
        }
    }

    private func authorize(_ request: HTTPRequest) throws { try Self.authorize(request, apiKeys: settings.apiKeys) }

    /// Throws `unauthorized` unless the request carries one of `apiKeys` (or needs none: no keys
    /// set, /health, /metrics, the page, CORS preflight).
    static func authorize(_ request: HTTPRequest, apiKeys: [String]) throws {
        guard !apiKeys.isEmpty, request.path != "/health", request.path != "/metrics", request.method != "OPTIONS",
              !Self.isPagePath(request.path) else { return }
        // OpenAI's clients send `Authorization: Bearer KEY`, Anthropic's `x-api-key: KEY`.
        let header = request.headers["Authorization"] ?? ""
        let prefix = "Bearer "
        let key: Substring
        if header.hasPrefix(prefix) {
            key = header.dropFirst(prefix.count)
        } else if let apiKey = request.headers["x-api-key"] {
            key = Substring(apiKey)
        } else {
            throw OpenAIError.unauthorized
        }
        let given = Array(key.utf8)
        var matched = false
        for key in apiKeys where Self.constantTimeEquals(given, Array(key.utf8)) { matched = true }
        guard matched else { throw OpenAIError.unauthorized }
    }

    /// Compares without an early exit, so timing does not reveal how much of a key matched.
    static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var diff = UInt8(a.count == b.count ? 0 : 1)
        for i in 0..<max(a.count, b.count) {
            diff |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
        }
        return diff == 0
    }

    func ready() throws -> Backend {
        switch current {
        case .loading: throw OpenAIError.loading
        case .draining: throw OpenAIError.draining
        case .ready(let b): return b
        }
    }

    // MARK: - Simple routes

    /// GET /v1/cast/cost: the speculation planner's cost model, its accuracy and what it measured.
    private func costBody() throws -> CostBody {
        let engine = try ready().engine
        let snapshot = engine.snapshot
        var body = CostBody(speculation: engine.configuration.speculation, drafter: engine.configuration.drafter.rawValue,
                            drafterState: snapshot.drafterStateLoaded ? "loaded" : "new", draftedTokens: snapshot.draftedTokens,
                            acceptedTokens: snapshot.acceptedTokens, speculativeSteps: snapshot.speculativeSteps,
                            plannedGoodputTokensPerSecond: snapshot.plannedGoodput, plainGoodputTokensPerSecond: snapshot.plainGoodput,
                            draftShare: snapshot.draftSecondsTotal / max(snapshot.stepSecondsTotal + snapshot.draftSecondsTotal, 1e-9),
                            stepCost: [])
        if let learned = engine.configuration.learnedDrafter {
            body.learnedDrafter = CostBody.LearnedDrafterBody(
                file: learned.path, draftTokens: learned.vocabularyCount, matrixFormat: learned.matrixFormat.description,
                layerCost: snapshot.drafterLayerCost.map { $0.corrected.map { CostPointBody(rows: $0.rows, ms: $0.ms) } },
                acceptanceByDepth: snapshot.learnedAcceptanceByDepth.enumerated().map { CostBody.DepthBody(depth: $0 + 1, counts: ($1.observed, $1.accepted)) },
                acceptancePerExpansion: snapshot.learnedExpansionsByDepth.enumerated().map {
                    CostBody.DepthBody(depth: $0 + 1, counts: ($1.expanded, $1.accepted))
                })
        }
        guard let cost = snapshot.costModel else { return body }
        body.stepCost = cost.corrected.map { CostPointBody(rows: $0.rows, ms: $0.ms) }
        body.headCost = cost.head.map { CostPointBody(rows: $0.rows, ms: $0.ms) }
        body.msPerPosition = cost.msPerPosition
        body.hostMs = CostBody.HostBody(fixed: cost.host.coefficients[0], perLogitRow: cost.host.coefficients[1],
                                        perDraftNode: cost.host.coefficients[2])
        body.source = cost.isFixed ? "fixed" : snapshot.costMeasured ? "measured" : "cache"
        var accuracy = CostBody.AccuracyBody(steps: snapshot.costErrorSteps)
        if let m = snapshot.costErrorMedian, let p = snapshot.costErrorP90 {
            accuracy.medianAbsRelativeError = m
            accuracy.p90AbsRelativeError = p
        }
        if let predicted = snapshot.lastPredictedMilliseconds, let observed = snapshot.lastObservedMilliseconds {
            accuracy.lastStep = PredictedObservedBody(predictedMs: predicted, observedMs: observed)
        }
        body.accuracy = accuracy
        body.measuredGoodput = snapshot.measuredGoodput.enumerated().compactMap { b, g in
            guard g.plainSteps + g.draftingSteps > 0 else { return nil }
            return CostBody.MeasuredGoodputBody(decodeRows: b == 0 ? "1" : "\(1 << b)-\((2 << b) - 1)",
                                                plainTokensPerSecond: g.plain * 1000, plainSteps: g.plainSteps,
                                                draftingTokensPerSecond: g.drafting * 1000, draftingSteps: g.draftingSteps,
                                                verdict: "\(g.verdict)")
        }
        return body
    }

    private func tokenize(_ request: HTTPRequest, _ responder: HTTPResponder, _ log: inout RequestLog) throws {
        let b = try ready()
        let d = try JSONFields.body(request.body)
        // llama.cpp's field names, or vLLM's (`prompt`, `add_special_tokens`; lm-eval's remote tokenizer).
        guard case .string(let content)? = d["content"] ?? d["prompt"] else {
            throw OpenAIError.invalid("content", "'content' (or 'prompt') is required: the text to tokenize")
        }
        let special = try d.bool("parse_special") ?? true
        var ids = b.formatter.tokenizer.encode(content, parseSpecial: special)
        if (d["add_special"] ?? d["add_special_tokens"]) == .bool(true), b.formatter.tokenizer.addsBOS, let bos = b.formatter.tokenizer.bosID {
            ids.insert(bos, at: 0)
        }
        if d["with_pieces"] == .bool(true) {
            responder.send(json(TokenizeBody.pieces(ids.map { .init(id: Int($0), piece: b.formatter.tokenizer.decode([$0])) })))
        } else {
            responder.send(json(TokenizeBody.ids(ids.map(Int.init))))
        }
    }

    private func detokenize(_ request: HTTPRequest, _ responder: HTTPResponder, _ log: inout RequestLog) throws {
        let b = try ready()
        let d = try JSONFields.body(request.body)
        let vocab = b.formatter.tokenizer.vocabularySize
        guard case .array(let list)? = d["tokens"] else { throw OpenAIError.invalid("tokens", "'tokens' is required: a list of token ids") }
        let ids = try list.map { v -> Int32 in
            guard let n = JSONFields.integer(v), let i = Int32(exactly: n), i >= 0, Int(i) < vocab else {
                throw OpenAIError.invalid("tokens", "'tokens' must hold token ids between 0 and \(vocab - 1)")
            }
            return i
        }
        let text = b.formatter.tokenizer.decode(ids)
        responder.send(json(DetokenizeBody(content: text, prompt: text)))
    }

    /// A JSON response of a Codable body (the API's one encoder, `encodeJSON`).
    func json<T: Encodable>(_ body: T, status: HTTPStatus = .ok) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "application/json", body: String(decoding: encodeJSON(body), as: UTF8.self))
    }
}

extension FinishReason {
    /// The OpenAI finish_reason string.
    var apiValue: String {
        switch self {
        case .stop: return "stop"
        case .length: return "length"
        case .cancelled: return "stop"
        }
    }
}

/// One structured log line per request.
struct RequestLog: CustomStringConvertible {
    var id: String
    var method: String
    var path: String
    var status = 200
    var promptTokens = 0
    var completionTokens = 0
    var ttft: Duration?
    var seconds: Duration = .zero
    var error: String?

    var description: String {
        var parts = ["request_id=\(id)", "method=\(method)", "route=\(path)", "status=\(status)"]
        if promptTokens > 0 || completionTokens > 0 { parts += ["prompt_tokens=\(promptTokens)", "completion_tokens=\(completionTokens)"] }
        if let ttft { parts.append(String(format: "ttft_ms=%.1f", ttft.seconds * 1000)) }
        parts.append(String(format: "duration_ms=%.1f", seconds.seconds * 1000))
        if let error { parts.append("error=\"\(error.replacingOccurrences(of: "\"", with: "'"))\"") }
        return parts.joined(separator: " ")
    }
}
