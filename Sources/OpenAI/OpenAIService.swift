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
    /// Whether replies of thinking models get their think block split off (`reasoning_format`).
    public var reasoningFormat: ReasoningFormat

    public init(modelAliases: [String], apiKeys: [String], defaultMaxTokens: Int, samplingDefaults: SamplingDefaults = .openAI,
                reasoningFormat: ReasoningFormat = .auto) {
        self.modelAliases = modelAliases
        self.apiKeys = apiKeys
        self.defaultMaxTokens = defaultMaxTokens
        self.samplingDefaults = samplingDefaults
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
    public let metrics = ServerMetrics()
    /// The engine's recent steps for the engine view; the executable wires `Engine.onStep` to it.
    public let stepHistory = StepHistory()
    let logger: Logger
    private let lock = NSLock()
    private var state = State.loading
    /// Signalled when draining starts, so long-lived event streams end at once.
    private let drainCondition = NSCondition()
    private let created = Int(Date().timeIntervalSince1970)
    /// Output grammars of recent requests, bound to the model's vocabulary.
    let grammarCache = GrammarCache()

    public init(settings: ServiceSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
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
        } catch let error as OpenAIError {
            log.status = error.status.code
            log.error = error.message
            if !responder.hasStarted { responder.send(error.response) }
        } catch {
            let e = OpenAIError(status: .internalServerError, message: "internal error: \(error)", type: "server_error", param: nil, code: "internal_error")
            log.status = 500
            log.error = e.message
            if !responder.hasStarted { responder.send(e.response) }
        }
        let elapsed = clock.now - start
        metrics.countRequest(route: routeLabel, status: log.status)
        metrics.requestDuration.record(elapsed)
        log.seconds = elapsed
        logger.info("\(log)")
    }

    /// Requests the HTTP layer refuses itself (malformed, over a limit, bad Content-Encoding) get
    /// the API's JSON error envelope too.
    public func refusalResponse(status: HTTPStatus, message: String) -> HTTPResponse? {
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

    /// Allowed methods per path.
    static let routes: [String: [String]] = [
        "/v1/chat/completions": ["POST"], "/v1/completions": ["POST"], "/v1/models": ["GET"],
        "/tokenize": ["POST"], "/detokenize": ["POST"], "/health": ["GET", "HEAD"], "/metrics": ["GET", "HEAD"],
        "/v1/cast/cost": ["GET"], "/v1/cast/events": ["GET"], "/v1/embeddings": ["POST"], "/tokenizer_info": ["GET"],
        "/": ["GET", "HEAD"], "/index.html": ["GET", "HEAD"], "/app.js": ["GET", "HEAD"], "/app.css": ["GET", "HEAD"],
        "/favicon.svg": ["GET", "HEAD"],
    ]

    private func route(_ request: HTTPRequest, _ responder: HTTPResponder, _ log: inout RequestLog, start: ContinuousClock.Instant) throws {
        let path = request.path
        guard let allowed = Self.routes[path] else {
            if path.hasPrefix("/v1/models/") && request.method == "GET" { return try model(String(path.dropFirst("/v1/models/".count)), responder, &log) }
            throw OpenAIError.notFound(path)
        }
        guard allowed.contains(request.method) else { throw OpenAIError.methodNotAllowed(request.method, path, allowed: allowed) }
        switch path {
        case "/health": health(responder, &log)
        case _ where Self.isPagePath(path): pageAsset(request, responder, &log)
        case "/v1/cast/events": try events(request, responder, &log)
        case "/metrics":
            let backend: Backend? = { if case .ready(let b) = current { return b } else { return nil } }()
            responder.send(HTTPResponse(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8",
                                        body: metrics.render(engine: backend?.engine.snapshot)))
        case "/v1/models": try models(responder, &log)
        case "/v1/cast/cost":
            let engine = try ready().engine
            let snapshot = engine.snapshot
            var body: [String: Any] = [
                "object": "cast.cost_model",
                "speculation": engine.configuration.speculation,
                "drafter": engine.configuration.drafter.rawValue,
                "drafter_state": snapshot.drafterStateLoaded ? "loaded" : "new",
                "drafted_tokens": snapshot.draftedTokens, "accepted_tokens": snapshot.acceptedTokens,
                "speculative_steps": snapshot.speculativeSteps,
                "planned_goodput_tokens_per_second": snapshot.plannedGoodput,
                "plain_goodput_tokens_per_second": snapshot.plainGoodput,
                // Drafting time over step time plus drafting time, since start.
                "draft_share": snapshot.draftSecondsTotal / max(snapshot.stepSecondsTotal + snapshot.draftSecondsTotal, 1e-9),
            ]
            if let learned = engine.configuration.learnedDrafter {
                var drafter: [String: Any] = ["file": learned.path, "draft_tokens": learned.vocabularyCount,
                                              "matrix_format": learned.matrixFormat.description]
                // D: one frontier layer's cost by rows (after online correction).
                if let cost = snapshot.drafterLayerCost { drafter["layer_cost"] = cost.corrected.map { ["rows": $0.rows, "ms": $0.ms] } }
                drafter["acceptance_by_depth"] = snapshot.learnedAcceptanceByDepth.enumerated().map { d, a -> [String: Any] in
                    ["depth": d + 1, "verified": a.observed, "accepted": a.accepted,
                     "rate": a.observed > 0 ? Double(a.accepted) / Double(a.observed) : 0]
                }
                body["learned_drafter"] = drafter
            }
            if let cost = snapshot.costModel {
                // T = step_cost[rows] + head_cost[rows with logits] (interpolated, after online
                // correction) + ms_per_position * positions + host (fixed + per logit row + per node).
                body["step_cost"] = cost.corrected.map { ["rows": $0.rows, "ms": $0.ms] }
                body["head_cost"] = cost.head.map { ["rows": $0.rows, "ms": $0.ms] }
                body["ms_per_position"] = cost.msPerPosition
                body["host_ms"] = ["fixed": cost.host.coefficients[0], "per_logit_row": cost.host.coefficients[1],
                                   "per_draft_node": cost.host.coefficients[2]]
                // fixed: given by --cost-model, never refreshed; measured at start-up; or from the cache.
                body["source"] = cost.isFixed ? "fixed" : snapshot.costMeasured ? "measured" : "cache"
                var accuracy: [String: Any] = ["steps": snapshot.costErrorSteps]
                if let m = snapshot.costErrorMedian, let p = snapshot.costErrorP90 {
                    accuracy["median_abs_relative_error"] = m
                    accuracy["p90_abs_relative_error"] = p
                }
                if let predicted = snapshot.lastPredictedMilliseconds, let observed = snapshot.lastObservedMilliseconds {
                    accuracy["last_step"] = ["predicted_ms": predicted, "observed_ms": observed]
                }
                body["accuracy"] = accuracy
                // The guard's measured A/B test: pure decode steps with and without draft trees.
                body["measured_goodput"] = snapshot.measuredGoodput.enumerated().compactMap { b, g -> [String: Any]? in
                    guard g.plainSteps + g.draftingSteps > 0 else { return nil }
                    return ["decode_rows": b == 0 ? "1" : "\(1 << b)-\((2 << b) - 1)",
                            "plain_tokens_per_second": g.plain * 1000, "plain_steps": g.plainSteps,
                            "drafting_tokens_per_second": g.drafting * 1000, "drafting_steps": g.draftingSteps,
                            "verdict": "\(g.verdict)"]
                }
            } else {
                body["step_cost"] = [Any]()
            }
            responder.send(json(body))
        case "/tokenize": try tokenize(request, responder, &log)
        case "/detokenize": try detokenize(request, responder, &log)
        case "/v1/chat/completions": try complete(request, chat: true, responder, &log, start: start)
        case "/v1/completions": try complete(request, chat: false, responder, &log, start: start)
        case "/v1/embeddings": try embeddings(request, responder, &log)
        case "/tokenizer_info": try tokenizerInfo(responder)
        default: throw OpenAIError.notFound(path)
        }
    }

    private func authorize(_ request: HTTPRequest) throws {
        guard !settings.apiKeys.isEmpty, request.path != "/health", request.path != "/metrics", request.method != "OPTIONS",
              !Self.isPagePath(request.path) else { return }
        let header = request.headers["Authorization"] ?? ""
        let prefix = "Bearer "
        guard header.hasPrefix(prefix) else { throw OpenAIError.unauthorized }
        let given = Array(header.dropFirst(prefix.count).utf8)
        var matched = false
        for key in settings.apiKeys where Self.constantTimeEquals(given, Array(key.utf8)) { matched = true }
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

    private func health(_ responder: HTTPResponder, _ log: inout RequestLog) {
        switch current {
        case .loading:
            log.status = 503
            responder.send(json(["status": "loading"], status: .serviceUnavailable))
        case .draining:
            log.status = 503
            responder.send(json(["status": "draining"], status: .serviceUnavailable))
        case .ready(let b):
            let s = b.engine.snapshot
            responder.send(json(["status": "ok", "model": b.modelID, "running": s.running, "waiting": s.waiting,
                                 "kernels": b.engine.model.kernels.description]))
        }
    }

    private func modelObject(_ b: Backend) -> [String: Any] {
        ["id": b.modelID, "object": "model", "created": created, "owned_by": "castserve", "context_length": b.contextLength,
         "aliases": settings.modelAliases, "kernels": b.engine.model.kernels.description,
         "kv_cache_type": b.engine.configuration.kvCacheType.rawValue,
         "architecture": b.engine.model.config.architecture, "quantization": b.engine.model.config.quantization]
    }

    private func models(_ responder: HTTPResponder, _ log: inout RequestLog) throws {
        let b = try ready()
        responder.send(json(["object": "list", "data": [modelObject(b)]]))
    }

    private func model(_ name: String, _ responder: HTTPResponder, _ log: inout RequestLog) throws {
        let b = try ready()
        guard name == b.modelID || settings.modelAliases.contains(name) else {
            throw OpenAIError.modelNotFound(name, available: [b.modelID] + settings.modelAliases)
        }
        responder.send(json(modelObject(b)))
    }

    private func body(_ request: HTTPRequest) throws -> [String: Any] {
        guard let o = try? JSONSerialization.jsonObject(with: request.body), let d = o as? [String: Any] else {
            throw OpenAIError.invalid("body", "The request body must be a JSON object", code: "invalid_json")
        }
        return d
    }

    private func tokenize(_ request: HTTPRequest, _ responder: HTTPResponder, _ log: inout RequestLog) throws {
        let b = try ready()
        let d = try body(request)
        // llama.cpp's field names, or vLLM's (`prompt`, `add_special_tokens`; lm-eval's remote tokenizer).
        guard let content = (d["content"] ?? d["prompt"]) as? String else {
            throw OpenAIError.invalid("content", "'content' (or 'prompt') is required: the text to tokenize")
        }
        let special = (d["parse_special"] as? Bool) ?? true
        var ids = b.formatter.tokenizer.encode(content, parseSpecial: special)
        if ((d["add_special"] ?? d["add_special_tokens"]) as? Bool) == true, b.formatter.tokenizer.addsBOS, let bos = b.formatter.tokenizer.bosID {
            ids.insert(bos, at: 0)
        }
        if (d["with_pieces"] as? Bool) == true {
            responder.send(json(["tokens": ids.map { ["id": Int($0), "piece": b.formatter.tokenizer.decode([$0])] }]))
        } else {
            responder.send(json(["tokens": ids.map(Int.init)]))
        }
    }

    private func detokenize(_ request: HTTPRequest, _ responder: HTTPResponder, _ log: inout RequestLog) throws {
        let b = try ready()
        let d = try body(request)
        let vocab = b.formatter.tokenizer.vocabularySize
        guard let list = d["tokens"] as? [Any] else { throw OpenAIError.invalid("tokens", "'tokens' is required: a list of token ids") }
        let ids = try list.map { v -> Int32 in
            guard let n = v as? NSNumber, !isJSONBool(v), let i = Int32(exactly: n.doubleValue), i >= 0, Int(i) < vocab else {
                throw OpenAIError.invalid("tokens", "'tokens' must hold token ids between 0 and \(vocab - 1)")
            }
            return i
        }
        let text = b.formatter.tokenizer.decode(ids)
        responder.send(json(["content": text, "prompt": text]))
    }

    func jsonText(_ object: [String: Any]) -> String {
        String(decoding: (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data(), as: UTF8.self)
    }

    func json(_ object: [String: Any], status: HTTPStatus = .ok) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "application/json", body: jsonText(object))
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
