import Foundation
import HTTP
import Logging

/// One model the server knows, as the model list and /health show it.
public struct ModelStatus: Sendable {
    public enum State: String, Sendable {
        case loaded, loading, unloaded
    }

    public var id: String
    public var aliases: [String]
    public var state: State
    /// From the file's metadata (nil when the file cannot be read: `lastError` says why).
    public var architecture: String?
    public var quantization: String?
    /// Positions per sequence this server gives the model (its own limit and the configured one).
    public var contextLength: Int?
    public var kernels: String
    public var kvCacheType: String
    /// Weights plus KV cache: measured while loaded, estimated from the file before.
    public var memoryBytes: Int?
    /// Requests of this model in flight (a busy model is never evicted).
    public var activeRequests: Int
    /// Why the last load failed, until a load succeeds.
    public var lastError: String?
    /// Seconds the last successful load took.
    public var loadSeconds: Double?

    public init(id: String, aliases: [String], state: State, architecture: String?, quantization: String?, contextLength: Int?,
                kernels: String, kvCacheType: String, memoryBytes: Int?, activeRequests: Int, lastError: String?, loadSeconds: Double?) {
        self.id = id
        self.aliases = aliases
        self.state = state
        self.architecture = architecture
        self.quantization = quantization
        self.contextLength = contextLength
        self.kernels = kernels
        self.kvCacheType = kvCacheType
        self.memoryBytes = memoryBytes
        self.activeRequests = activeRequests
        self.lastError = lastError
        self.loadSeconds = loadSeconds
    }
}

/// The model registry behind `ModelRouter` (the executable's: it loads, evicts and unloads).
/// Errors it throws are `OpenAIError`s a client can read (unknown model, a load that failed and
/// why, a memory budget too small, a busy model).
///
/// Thread-safety: every method may be called from any connection thread at once.
public protocol ModelCatalog: AnyObject, Sendable {
    /// The model a request that names none gets (the first of the list; loaded at start).
    var defaultModelID: String { get }
    /// Every known model, in list order.
    func statuses() -> [ModelStatus]
    /// The id of the model `name` (an id or an alias) names, nil when none does.
    func resolve(_ name: String) -> String?
    /// The service of model `id`, loading it first when it is not loaded (the caller waits, with
    /// a bound); the model counts one more request in flight until `release(id)`.
    func acquire(_ id: String) throws -> OpenAIService
    /// Ends a request `acquire` counted; the model's idle clock starts when none is left.
    func release(_ id: String)
    /// The service of model `id` when it is loaded, else nil (nothing loads, nothing is counted).
    func loadedService(_ id: String) -> OpenAIService?
    /// Loads model `id` (evicting idle models when a limit needs it); returns once it serves.
    func load(_ id: String) throws
    /// Unloads model `id`; throws when requests of it are in flight.
    func unload(_ id: String) throws
}

extension OpenAIError {
    /// A model with requests in flight cannot be unloaded.
    public static func modelBusy(_ id: String, activeRequests: Int) -> OpenAIError {
        OpenAIError(status: HTTPStatus(code: 409),
                    message: "The model '\(id)' has \(activeRequests) request(s) in flight and stays loaded; unload it when they have finished",
                    type: "invalid_request_error", param: nil, code: "model_busy")
    }

    /// A request waited `seconds` for its model's load, which goes on.
    public static func modelLoadTimeout(_ id: String, seconds: Int) -> OpenAIError {
        OpenAIError(status: .serviceUnavailable,
                    message: "The model '\(id)' is still loading after \(seconds) s (model_load_timeout_seconds); retry shortly",
                    type: "server_error", param: "model", code: "model_loading")
    }

    /// No room for model `id`: `why`, and only busy models could make room.
    public static func modelsBusy(_ id: String, why: String) -> OpenAIError {
        OpenAIError(status: .serviceUnavailable,
                    message: "The model '\(id)' cannot be loaded now: \(why) and every one has requests in flight; retry when they finish",
                    type: "server_error", param: "model", code: "models_busy")
    }

    /// Model `id` could not be loaded (`code` model_load_failed: a bad file or setting, 500;
    /// model_too_large: over the memory budget, 503).
    public static func modelLoadFailed(_ id: String, reason: String, tooLarge: Bool = false) -> OpenAIError {
        OpenAIError(status: tooLarge ? .serviceUnavailable : .internalServerError, message: "The model '\(id)' could not be loaded: \(reason)",
                    type: "server_error", param: "model", code: tooLarge ? "model_too_large" : "model_load_failed")
    }
}

/// The HTTP face of the model registry, in front of one `OpenAIService` per loaded model: answers
/// the model list (`GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/models/{id}/load` and
/// `/unload`), /health (every model's state) and /metrics (every model's series, labelled), and
/// hands every other request to the service of the model it names: the body's `model` field,
/// else the `model` query parameter, else the default model. A model that is not loaded is loaded
/// first; a name no model has is a 404 `model_not_found` listing the known ids.
///
/// Thread-safe: handlers run on connection threads.
public final class ModelRouter: HTTPHandler, @unchecked Sendable {
    let catalog: ModelCatalog
    /// Metrics of the requests the router answers itself (model ""); the models' metrics share
    /// its registry (`ServerMetrics.sibling(model:)`).
    public let metrics: ServerMetrics
    let apiKeys: [String]
    let logger: Logger
    private let lock = NSLock()
    private var starting = true
    private var draining = false
    private let created = Int(Date().timeIntervalSince1970)

    public init(catalog: ModelCatalog, metrics: ServerMetrics, apiKeys: [String], logger: Logger) {
        self.catalog = catalog
        self.metrics = metrics
        self.apiKeys = apiKeys
        self.logger = logger
    }

    /// The default model has loaded: /health answers 200.
    public func setStarted() {
        lock.lock()
        starting = false
        lock.unlock()
    }

    /// Shutting down: /health answers 503 and new requests are refused.
    public func setDraining() {
        lock.lock()
        draining = true
        lock.unlock()
    }

    private var phase: (starting: Bool, draining: Bool) {
        lock.lock()
        defer { lock.unlock() }
        return (starting, draining)
    }

    /// The routes the router answers itself, and their methods.
    static let routes: [String: [String]] = ["/health": ["GET", "HEAD"], "/metrics": ["GET", "HEAD"], "/v1/models": ["GET"]]

    /// Routes that show a loaded model's engine and never load one (a stream of them would keep
    /// a model busy forever).
    static let observationRoutes: Set<String> = ["/v1/cast/events", "/v1/cast/cost"]

    // MARK: - Routing

    public func handle(_ request: HTTPRequest, _ responder: HTTPResponder) {
        let path = request.path
        if Self.routes[path] != nil || path.hasPrefix("/v1/models/") {
            answer(request, responder)
            return
        }
        do {
            try OpenAIService.authorize(request, apiKeys: apiKeys)
            if phase.draining { throw OpenAIError.draining }
            let id = try modelID(for: request)
            if Self.observationRoutes.contains(path) {
                guard let service = catalog.loadedService(id) else { throw Self.notLoaded(id) }
                service.handle(request, responder)
                return
            }
            // The page is the same for every model: any loaded service serves it.
            if OpenAIService.isPagePath(path), let service = catalog.statuses().lazy.filter({ $0.state == .loaded })
                .compactMap({ self.catalog.loadedService($0.id) }).first {
                service.handle(request, responder)
                return
            }
            let service = try catalog.acquire(id)
            defer { catalog.release(id) }
            service.handle(request, responder)
        } catch {
            let e = OpenAIError.wrapping(error)
            if !responder.hasStarted { responder.send(OpenAIService.errorResponse(e, path: path)) }
            // Under the route's own label, as the services count what they answer.
            metrics.countRequest(route: OpenAIService.routes[path] != nil ? path : "other", status: e.status.code)
            logger.info("request_id=\(responder.requestID) method=\(request.method) route=\(path) status=\(e.status.code) error=\"\(e.message.replacingOccurrences(of: "\"", with: "'"))\"")
        }
    }

    /// The model a forwarded request names: the JSON body's `model`, else the `model` query
    /// parameter, else the default model.
    func modelID(for request: HTTPRequest) throws -> String {
        var name: String?
        if !request.body.isEmpty, let fields = try? JSONFields.body(request.body), case .string(let model)? = fields["model"] {
            name = model
        }
        if name == nil || name!.isEmpty { name = OpenAIService.queryItems(request.query)["model"] }
        guard let name, !name.isEmpty else { return catalog.defaultModelID }
        guard let id = catalog.resolve(name) else { throw notFound(name) }
        return id
    }

    func notFound(_ name: String) -> OpenAIError {
        OpenAIError.modelNotFound(name, available: catalog.statuses().map(\.id))
    }

    static func notLoaded(_ id: String) -> OpenAIError {
        OpenAIError(status: HTTPStatus(code: 409),
                    message: "The model '\(id)' is not loaded; send it a request or POST /v1/models/\(id)/load, then retry",
                    type: "invalid_request_error", param: "model", code: "model_not_loaded")
    }

    /// The router's own routes, with a request log line and a count like the services'.
    private func answer(_ request: HTTPRequest, _ responder: HTTPResponder) {
        let clock = ContinuousClock()
        let start = clock.now
        let path = request.path
        var status = 200
        var message: String?
        do {
            try OpenAIService.authorize(request, apiKeys: apiKeys)
            status = try route(request, responder)
        } catch {
            let e = OpenAIError.wrapping(error)
            status = e.status.code
            message = e.message
            if !responder.hasStarted { responder.send(e.response) }
        }
        let elapsed = clock.now - start
        let label = Self.routes[path] != nil ? path : path.hasSuffix("/load") ? "/v1/models/{id}/load"
            : path.hasSuffix("/unload") ? "/v1/models/{id}/unload" : "/v1/models/{id}"
        metrics.countRequest(route: label, status: status)
        metrics.requestDuration.record(elapsed)
        var line = "request_id=\(responder.requestID) method=\(request.method) route=\(path) status=\(status)"
        line += String(format: " duration_ms=%.1f", elapsed.seconds * 1000)
        if let message { line += " error=\"\(message.replacingOccurrences(of: "\"", with: "'"))\"" }
        logger.info("\(line)")
    }

    /// Answers one of the router's routes; returns the status sent.
    private func route(_ request: HTTPRequest, _ responder: HTTPResponder) throws -> Int {
        let path = request.path
        if let allowed = Self.routes[path] {
            guard allowed.contains(request.method) else { throw OpenAIError.methodNotAllowed(request.method, path, allowed: allowed) }
            switch path {
            case "/health": return health(responder)
            case "/metrics":
                for status in catalog.statuses() where status.state == .loaded {
                    if let service = catalog.loadedService(status.id), let backend = try? service.ready() {
                        service.metrics.update(engine: backend.engine.snapshot)
                    }
                }
                responder.send(HTTPResponse(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics.render()))
            default:
                responder.send(Self.json(RouterModelListBody(data: catalog.statuses().map(modelObject))))
            }
            return 200
        }
        // /v1/models/{id}, /v1/models/{id}/load, /v1/models/{id}/unload
        let rest = path.dropFirst("/v1/models/".count).split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        let name = rest[0].removingPercentEncoding ?? rest[0]
        let action = rest.count == 2 ? rest[1] : nil
        guard rest.count <= 2, action == nil || action == "load" || action == "unload", !name.isEmpty else {
            throw OpenAIError.notFound(path)
        }
        let allowed = action == nil ? ["GET"] : ["POST"]
        guard allowed.contains(request.method) else { throw OpenAIError.methodNotAllowed(request.method, path, allowed: allowed) }
        guard let id = catalog.resolve(name) else { throw notFound(name) }
        switch action {
        case "load":
            if phase.draining { throw OpenAIError.draining }
            try catalog.load(id)
        case "unload":
            try catalog.unload(id)
        default:
            break
        }
        guard let status = catalog.statuses().first(where: { $0.id == id }) else { throw notFound(name) }
        responder.send(Self.json(modelObject(status)))
        return 200
    }

    // MARK: - Model list and health

    /// An OpenAI model object with CastServe's fields: state, architecture, quantization,
    /// context length, kernels, KV cache type, memory, and the last load error.
    func modelObject(_ s: ModelStatus) -> RouterModelBody {
        RouterModelBody(id: s.id, created: created, state: s.state.rawValue, aliases: s.aliases, architecture: s.architecture,
                        quantization: s.quantization, contextLength: s.contextLength, kernels: s.kernels, kvCacheType: s.kvCacheType,
                        memoryBytes: s.memoryBytes, activeRequests: s.activeRequests, error: s.lastError, loadSeconds: s.loadSeconds)
    }

    /// 200 once the default model has loaded (later loads and unloads do not change it), 503
    /// while it loads at start and while draining; every model's state and load.
    private func health(_ responder: HTTPResponder) -> Int {
        let (starting, draining) = phase
        let statuses = catalog.statuses()
        var running = 0, waiting = 0
        var models: [HealthBody.Model] = []
        for s in statuses {
            var entry = HealthBody.Model(id: s.id, state: s.state.rawValue, error: s.lastError)
            if s.state == .loaded, let service = catalog.loadedService(s.id), let backend = try? service.ready() {
                let snapshot = backend.engine.snapshot
                running += snapshot.running
                waiting += snapshot.waiting
                entry.running = snapshot.running
                entry.waiting = snapshot.waiting
            }
            models.append(entry)
        }
        let state = draining ? "draining" : starting ? "loading" : "ok"
        let first = statuses.first { $0.id == catalog.defaultModelID } ?? statuses.first
        let body = HealthBody(status: state, model: catalog.defaultModelID, running: running, waiting: waiting,
                              kernels: first?.kernels ?? "", models: models)
        let code: HTTPStatus = state == "ok" ? .ok : .serviceUnavailable
        responder.send(Self.json(body, status: code))
        return code.code
    }

    static func json<T: Encodable>(_ body: T, status: HTTPStatus = .ok) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "application/json", body: String(decoding: encodeJSON(body), as: UTF8.self))
    }

    /// Requests the HTTP layer refuses itself get the API's JSON error envelope (as the services').
    public func refusalResponse(status: HTTPStatus, message: String) -> HTTPResponse? {
        OpenAIService.refusal(status: status, message: message)
    }
}
