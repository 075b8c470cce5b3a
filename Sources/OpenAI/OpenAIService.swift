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

    public init(modelAliases: [String], apiKeys: [String], defaultMaxTokens: Int) {
        self.modelAliases = modelAliases
        self.apiKeys = apiKeys
        self.defaultMaxTokens = defaultMaxTokens
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
    let logger: Logger
    private let lock = NSLock()
    private var state = State.loading
    private let created = Int(Date().timeIntervalSince1970)

    public init(settings: ServiceSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
    }

    /// The model is loaded: start serving.
    public func setReady(_ backend: Backend) {
        metrics.recordBuild(kernels: backend.engine.model.kernels.description,
                            kvCacheType: backend.engine.configuration.kvCacheType.rawValue)
        lock.lock()
        state = .ready(backend)
        lock.unlock()
    }

    /// Shutting down: new generations get 503, /health reports draining.
    public func setDraining() {
        lock.lock()
        if case .ready(let b) = state { state = .draining(b) } else { state = .draining(nil) }
        lock.unlock()
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
        "/v1/cast/cost": ["GET"],
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
                "drafted_tokens": snapshot.draftedTokens, "accepted_tokens": snapshot.acceptedTokens,
                "speculative_steps": snapshot.speculativeSteps,
                "planned_goodput_tokens_per_second": snapshot.plannedGoodput,
                "plain_goodput_tokens_per_second": snapshot.plainGoodput,
            ]
            if let cost = snapshot.costModel {
                // T(rows, positions) = step_cost[rows] (interpolated) + ms_per_position * positions.
                body["step_cost"] = cost.corrected.map { ["rows": $0.rows, "ms": $0.ms] }
                body["ms_per_position"] = cost.msPerPosition
                body["source"] = snapshot.costMeasured ? "measured" : "cache"
            } else {
                body["step_cost"] = [Any]()
            }
            responder.send(json(body))
        case "/tokenize": try tokenize(request, responder, &log)
        case "/detokenize": try detokenize(request, responder, &log)
        case "/v1/chat/completions": try complete(request, chat: true, responder, &log, start: start)
        case "/v1/completions": try complete(request, chat: false, responder, &log, start: start)
        default: throw OpenAIError.notFound(path)
        }
    }

    private func authorize(_ request: HTTPRequest) throws {
        guard !settings.apiKeys.isEmpty, request.path != "/health", request.path != "/metrics", request.method != "OPTIONS" else { return }
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

    private func ready() throws -> Backend {
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
         "kv_cache_type": b.engine.configuration.kvCacheType.rawValue]
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
        guard let content = d["content"] as? String else { throw OpenAIError.invalid("content", "'content' is required: the text to tokenize") }
        let special = (d["parse_special"] as? Bool) ?? true
        var ids = b.formatter.tokenizer.encode(content, parseSpecial: special)
        if (d["add_special"] as? Bool) == true, b.formatter.tokenizer.addsBOS, let bos = b.formatter.tokenizer.bosID { ids.insert(bos, at: 0) }
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
        responder.send(json(["content": b.formatter.tokenizer.decode(ids)]))
    }

    // MARK: - Completions

    private func complete(_ request: HTTPRequest, chat: Bool, _ responder: HTTPResponder, _ log: inout RequestLog,
                          start: ContinuousClock.Instant) throws {
        let b = try ready()
        let r = try CompletionRequest.parse(request.body, chat: chat)
        guard r.model == b.modelID || settings.modelAliases.contains(r.model) else {
            throw OpenAIError.modelNotFound(r.model, available: [b.modelID] + settings.modelAliases)
        }
        let tokenizer = b.formatter.tokenizer
        // Prompts as tokens; each prompt gets n choices.
        var promptTokens: [[Int32]] = []
        for p in r.prompts {
            switch p {
            case .chat(let messages):
                do {
                    promptTokens.append(try b.formatter.chatTokens(messages.map { ChatMessage(role: $0.role, content: $0.content) }))
                } catch {
                    throw OpenAIError.invalid("messages", "The chat template could not render these messages: \(error)")
                }
            case .text(let t): promptTokens.append(b.formatter.completionTokens(t))
            case .tokens(let ids):
                if let bad = ids.first(where: { Int($0) >= tokenizer.vocabularySize }) {
                    throw OpenAIError.invalid("prompt", "token id \(bad) is outside the vocabulary (0..<\(tokenizer.vocabularySize))")
                }
                promptTokens.append(ids)
            }
        }
        for ids in promptTokens {
            guard !ids.isEmpty else { throw OpenAIError.invalid(chat ? "messages" : "prompt", "The prompt is empty after tokenization") }
            guard ids.count < b.contextLength else {
                throw OpenAIError(status: .badRequest,
                                  message: "This model's context length is \(b.contextLength) tokens, but the prompt has \(ids.count) tokens; shorten the prompt (at least one token must remain for the completion)",
                                  type: "invalid_request_error", param: chat ? "messages" : "prompt", code: "context_length_exceeded")
            }
        }
        let maxTokens = r.maxTokens ?? settings.defaultMaxTokens
        let queue = EventQueue()
        var choices: [ChoiceState] = []
        let stopTokens = b.formatter.stopTokens
        let id = (chat ? "chatcmpl-" : "cmpl-") + responder.requestID
        for (p, ids) in promptTokens.enumerated() {
            for k in 0..<r.n {
                let index = p * r.n + k
                let sampling = SamplingParameters(temperature: r.temperature, topK: r.topK, topP: r.topP, minP: r.minP,
                                                  presencePenalty: r.presencePenalty, frequencyPenalty: r.frequencyPenalty,
                                                  seed: r.seed.map { $0 &+ UInt64(index) })
                let budget = min(maxTokens, b.contextLength - ids.count)
                let g = GenerationRequest(promptTokens: ids, maxTokens: budget, sampling: sampling, stopTokens: stopTokens,
                                          logprobs: r.logprobs, topLogprobs: r.topLogprobs, speculation: r.speculation)
                var state = ChoiceState(tokenizer: tokenizer, stops: r.stop)
                do {
                    state.handle = try b.engine.submit(g) { queue.push(index, $0) }
                } catch let e as EngineError {
                    for c in choices { if let h = c.handle { b.engine.cancel(h) } }
                    throw OpenAIError.from(e)
                }
                choices.append(state)
            }
        }
        let cancelAll = { for c in choices { if let h = c.handle { b.engine.cancel(h) } } }
        responder.onDisconnect { cancelAll() }
        let created = Int(Date().timeIntervalSince1970)
        let clock = ContinuousClock()
        var firstToken = true
        var stream: HTTPStream?
        if r.stream {
            stream = responder.startEventStream()
            if chat {
                for i in choices.indices {
                    try? stream?.sendEvent(jsonText(chunk(id, created, b.modelID, chat: true, index: i, delta: ["role": "assistant", "content": ""], finish: nil)))
                }
            }
        }
        var lastGoneCheck = clock.now
        while choices.contains(where: { !$0.isDone }) {
            let next = queue.pop(timeout: 1)
            // Poll the socket now and then even while tokens flow: a non-streaming response writes
            // nothing until the end, so nothing else would notice a client that went away.
            if next == nil || clock.now - lastGoneCheck > .milliseconds(200) {
                lastGoneCheck = clock.now
                if responder.isClientGone { cancelAll(); log.status = 499; log.error = "client disconnected"; return }
            }
            guard let (index, event) = next else { continue }
            if case .token = event, firstToken {
                firstToken = false
                metrics.timeToFirstToken.record(clock.now - start)
                log.ttft = clock.now - start
            }
            let wasDone = choices[index].finish != nil
            let piece = choices[index].take(event, stopTokens: stopTokens)
            if !wasDone, choices[index].finish == .stop, case .token = event, let h = choices[index].handle {
                b.engine.cancel(h)  // a stop string ended this choice
            }
            guard let stream else { continue }
            var lp: Any?
            if r.logprobs, case .token(let t) = event, !stopTokens.contains(t.id) {
                lp = chat ? ["content": [chatLogprob(t, tokenizer)]] : completionLogprobs([t], tokenizer, offset: 0)
            }
            if !piece.isEmpty || lp != nil {
                let delta: [String: Any] = chat ? ["content": piece] : [:]
                do {
                    try stream.sendEvent(jsonText(chunk(id, created, b.modelID, chat: chat, index: index, delta: delta, text: piece, logprobs: lp, finish: nil)))
                } catch {
                    cancelAll()
                    log.status = 499
                    log.error = "client disconnected"
                    return
                }
            }
            if !wasDone, let reason = choices[index].finish {
                try? stream.sendEvent(jsonText(chunk(id, created, b.modelID, chat: chat, index: index, delta: [:], text: "", finish: reason.apiValue)))
            }
        }
        if let failure = choices.compactMap(\.failed).first {
            if let stream {
                try? stream.sendEvent(String(decoding: OpenAIError.from(failure).body, as: UTF8.self))
                stream.finish()
                log.status = 200
                return
            }
            throw OpenAIError.from(failure)
        }
        let promptTotal = promptTokens.reduce(0) { $0 + $1.count } * r.n
        let completionTotal = choices.reduce(0) { $0 + $1.completionTokens }
        metrics.promptTokens.increment(by: Int64(promptTotal))
        metrics.completionTokens.increment(by: Int64(completionTotal))
        log.promptTokens = promptTotal
        log.completionTokens = completionTotal
        log.status = 200
        var usage: [String: Any] = ["prompt_tokens": promptTotal, "completion_tokens": completionTotal, "total_tokens": promptTotal + completionTotal]
        if b.engine.configuration.speculation {
            // An extension: clients that do not know the field ignore it.
            let drafted = choices.reduce(0) { $0 + $1.speculation.draftedTokens }
            let accepted = choices.reduce(0) { $0 + $1.speculation.acceptedTokens }
            usage["speculation"] = [
                "drafted_tokens": drafted, "accepted_tokens": accepted,
                "decode_steps": choices.reduce(0) { $0 + $1.speculation.decodeSteps },
                "speculative_steps": choices.reduce(0) { $0 + $1.speculation.speculativeSteps },
                "acceptance_rate": drafted > 0 ? Double(accepted) / Double(drafted) : 0,
            ]
        }
        if let stream {
            if r.includeUsage {
                try? stream.sendEvent(jsonText(["id": id, "object": chat ? "chat.completion.chunk" : "text_completion", "created": created,
                                                "model": b.modelID, "choices": [], "usage": usage]))
            }
            try? stream.sendEvent("[DONE]")
            stream.finish()
            return
        }
        let body: [String: Any] = [
            "id": id, "object": chat ? "chat.completion" : "text_completion", "created": created, "model": b.modelID,
            "choices": choices.enumerated().map { i, c -> [String: Any] in
                var choice: [String: Any] = ["index": i, "finish_reason": (c.finish ?? .length).apiValue]
                let generated = c.tokens.filter { !stopTokens.contains($0.id) }
                if chat {
                    choice["message"] = ["role": "assistant", "content": c.text]
                    choice["logprobs"] = r.logprobs ? ["content": generated.map { chatLogprob($0, tokenizer) }] : NSNull()
                } else {
                    let prefix: String = {
                        guard r.echo else { return "" }
                        if case .text(let t) = r.prompts[i / r.n] { return t }
                        return tokenizer.decode(promptTokens[i / r.n])
                    }()
                    choice["text"] = prefix + c.text
                    choice["logprobs"] = r.logprobs ? completionLogprobs(generated, tokenizer, offset: prefix.utf8.count) : NSNull()
                }
                return choice
            },
            "usage": usage,
        ]
        responder.send(json(body))
    }

    // MARK: - JSON shapes

    private func chunk(_ id: String, _ created: Int, _ model: String, chat: Bool, index: Int, delta: [String: Any], text: String = "",
                       logprobs: Any? = nil, finish: String?) -> [String: Any] {
        var choice: [String: Any] = ["index": index, "finish_reason": finish ?? NSNull(), "logprobs": logprobs ?? NSNull()]
        if chat { choice["delta"] = delta } else { choice["text"] = text }
        return ["id": id, "object": chat ? "chat.completion.chunk" : "text_completion", "created": created, "model": model, "choices": [choice]]
    }

    private func chatLogprob(_ t: GeneratedToken, _ tokenizer: Tokenizer) -> [String: Any] {
        func entry(_ id: Int32, _ lp: Float) -> [String: Any] {
            let text = tokenizer.decode([id])
            return ["token": text, "logprob": Double(lp), "bytes": Array(text.utf8).map(Int.init)]
        }
        var e = entry(t.id, t.logprob ?? 0)
        e["top_logprobs"] = t.topLogprobs.map { entry($0.id, $0.logprob) }
        return e
    }

    private func completionLogprobs(_ tokens: [GeneratedToken], _ tokenizer: Tokenizer, offset: Int) -> [String: Any] {
        var offsets: [Int] = []
        var position = offset
        for t in tokens {
            offsets.append(position)
            position += tokenizer.decode([t.id]).utf8.count
        }
        return [
            "tokens": tokens.map { tokenizer.decode([$0.id]) },
            "token_logprobs": tokens.map { Double($0.logprob ?? 0) },
            "top_logprobs": tokens.map { t in Dictionary(t.topLogprobs.map { (tokenizer.decode([$0.id]), Double($0.logprob)) }, uniquingKeysWith: max) },
            "text_offset": offsets,
        ]
    }

    private func jsonText(_ object: [String: Any]) -> String {
        String(decoding: (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data(), as: UTF8.self)
    }

    private func json(_ object: [String: Any], status: HTTPStatus = .ok) -> HTTPResponse {
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
