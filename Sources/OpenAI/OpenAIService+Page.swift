import Engine
import Foundation
import HTTP
import Model
import WebPage

/// The page for people at GET / (`WebPage`) and the live engine view it reads,
/// `GET /v1/cast/events`: Server-Sent Events (or one JSON object with `?once=1`) with the
/// engine's figures and its recent steps.
extension OpenAIService {
    // MARK: - Page

    /// Page files are public (no API key): the page asks for a key and sends it with its API calls.
    static func isPagePath(_ path: String) -> Bool { WebPage.assets[path] != nil }

    /// Sends a page file: `Cache-Control: no-cache` with a weak ETag, so browsers revalidate and
    /// get 304 while the binary is the same; gzip comes from the HTTP layer (above its threshold).
    func pageAsset(_ request: HTTPRequest, _ responder: HTTPResponder, _ log: inout RequestLog) {
        guard let asset = WebPage.assets[request.path] else { return }
        var headers = HTTPHeaders()
        headers["ETag"] = asset.etag
        headers["Cache-Control"] = "no-cache"
        headers["X-Content-Type-Options"] = "nosniff"
        if request.path == "/" || request.path == "/index.html" {
            // The page runs only its own files and talks only to this server.
            headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
            headers["Referrer-Policy"] = "no-referrer"
        }
        if Self.etagMatches(request.headers["If-None-Match"], asset.etag) {
            log.status = 304
            responder.send(HTTPResponse(status: HTTPStatus(code: 304), headers: headers))
            return
        }
        headers["Content-Type"] = asset.contentType
        responder.send(HTTPResponse(status: .ok, headers: headers, body: asset.body))
    }

    /// If-None-Match by weak comparison (RFC 9110 section 13.1.2): `*` or any listed tag equal
    /// to `etag` once `W/` is set aside.
    static func etagMatches(_ header: String?, _ etag: String) -> Bool {
        guard let header else { return false }
        let opaque = { (tag: Substring) -> Substring in
            let t = tag.trimmingCharacters(in: .whitespaces)
            return Substring(t.hasPrefix("W/") ? String(t.dropFirst(2)) : t)
        }
        let mine = opaque(Substring(etag))
        for tag in header.split(separator: ",") {
            let t = opaque(tag)
            if t == "*" || t == mine { return true }
        }
        return false
    }

    // MARK: - Engine events

    /// GET /v1/cast/events: every `interval_ms` (100-10000, default 500) one `engine` event, until
    /// the client leaves or the server drains (the stream then ends at once, so it never holds up
    /// shutdown). `?once=1` answers one JSON object instead. Runs on the connection thread.
    func events(_ request: HTTPRequest, _ responder: HTTPResponder, _ log: inout RequestLog) throws {
        let backend = try ready()
        let query = Self.queryItems(request.query)
        var interval = 500
        if let text = query["interval_ms"] {
            guard let ms = Int(text), (100...10_000).contains(ms) else {
                throw OpenAIError.invalid("interval_ms", "'interval_ms' must be an integer from 100 to 10000 (milliseconds between events)")
            }
            interval = ms
        }
        let once = ["1", "true"].contains(query["once"] ?? "")
        // A new client gets the last few steps at once, so the charts start with something.
        var lastStep = max(stepHistory.lastNumber - 64, 0)
        if once {
            responder.send(jsonResponse(encodeJSON(enginePayload(backend, after: &lastStep))))
            return
        }
        let stream = responder.startEventStream()
        var sequence = 0
        while !isDraining {
            sequence += 1
            do {
                try stream.sendEvent(String(decoding: encodeJSON(enginePayload(backend, after: &lastStep)), as: UTF8.self), event: "engine", id: String(sequence))
            } catch {
                return  // the client is gone
            }
            waitForDrain(milliseconds: interval)
            if stream.isClientGone { return }
        }
        stream.finish()
    }

    /// The engine view's figures: the snapshot, the cost curve and the steps after `after`
    /// (advanced to the last one sent).
    func enginePayload(_ backend: Backend, after: inout Int) -> EngineViewBody {
        let engine = backend.engine
        let s = engine.snapshot
        let steps = stepHistory.steps(after: after, limit: 256)
        if let last = steps.last { after = last.number }
        var body = EngineViewBody(
            time: Date().timeIntervalSince1970, model: backend.modelID, running: s.running, waiting: s.waiting,
            slots: engine.configuration.slots, tokensPerSecond: s.recentTokensPerSecond, promptTokensTotal: s.promptTokensTotal,
            completionTokensTotal: s.completionTokensTotal, stepsTotal: s.stepsTotal, rowsTotal: s.rowsTotal,
            kvBlocks: .init(total: s.kvBlocksTotal, used: s.kvBlocksUsed, cached: s.kvBlocksCached),
            prefixCache: .init(lookupTokens: s.prefixLookupTokens, hitTokens: s.prefixHitTokens), preemptions: s.preemptions,
            speculation: engine.configuration.speculation, drafter: engine.configuration.drafter.rawValue,
            draftedTokens: s.draftedTokens, acceptedTokens: s.acceptedTokens, speculativeSteps: s.speculativeSteps,
            plannedGoodputTokensPerSecond: s.plannedGoodput, plainGoodputTokensPerSecond: s.plainGoodput, steps: steps)
        if let cost = s.costModel {
            body.costCurve = cost.body.map { CostPointBody(rows: $0.rows, ms: cost.milliseconds(rows: $0.rows)) }
            body.msPerPosition = cost.msPerPosition
        }
        if let predicted = s.lastPredictedMilliseconds, let observed = s.lastObservedMilliseconds {
            body.lastStep = PredictedObservedBody(predictedMs: predicted, observedMs: observed)
        }
        body.costErrorMedian = s.costErrorMedian
        return body
    }

    /// `a=1&b=2` as a dictionary (the last value of a repeated name wins; percent-decoded).
    static func queryItems(_ query: String?) -> [String: String] {
        var items: [String: String] = [:]
        for pair in (query ?? "").split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0]).removingPercentEncoding ?? String(parts[0])
            items[name] = parts.count > 1 ? (String(parts[1]).removingPercentEncoding ?? String(parts[1])) : ""
        }
        return items
    }
}
