import Foundation

/// Completes the response to one request: either `send` a whole response once, or start a
/// stream (chunked, close-delimited for HTTP/1.0 clients, or SSE) and `finish` it.
///
/// Thread-safety: every method may be called from any thread. Output is queued under a lock and
/// written to the socket only by the connection's thread, in call order; a call made on the
/// connection thread itself writes at once (so a synchronous handler's events flush per event),
/// a call from another thread wakes the connection thread, which writes once the handler has
/// returned. A client that disconnects is detected by a failed write, by end-of-file seen while
/// the connection thread waits, or by a live check in `isClientGone`; the `onDisconnect`
/// callbacks then run once, on the detecting thread.
public final class HTTPResponder: @unchecked Sendable {
    /// The request ID sent in this response's X-Request-Id header: the client's own when it sent a
    /// sane one (1-128 characters of letters, digits, '-', '_', '.', ':'), else a fresh random one.
    public let requestID: String

    let connection: Connection
    let isHead: Bool
    let clientVersion: HTTPVersion
    let clientKeepAlive: Bool
    let clientAcceptsGzip: Bool

    private let lock = NSLock()
    private var started = false
    private var complete = false
    private var gone = false
    private var pending: [UInt8] = []
    private var disconnectCallbacks: [@Sendable () -> Void] = []
    private var closeAfterResponse = false
    private var status: HTTPStatus?

    init(connection: Connection, request: HTTPRequest, requestID: String) {
        self.connection = connection
        self.requestID = requestID
        self.isHead = request.method == "HEAD"
        self.clientVersion = request.version
        self.clientKeepAlive = request.keepAlive
        self.clientAcceptsGzip = Gzip.accepts(request.headers.values(for: "Accept-Encoding"))
    }

    // MARK: - Public surface

    /// Sends a complete response with Content-Length (headers only for HEAD). Call at most once per
    /// request and not after starting a stream (programmer error). Does nothing if the client is gone.
    ///
    /// A body of at least `compressionThresholdBytes` without its own Content-Encoding is sent
    /// gzip-compressed (`Content-Encoding: gzip`) when the request's Accept-Encoding allows it, and
    /// carries `Vary: Accept-Encoding` either way. HEAD responses are never compressed.
    public func send(_ response: HTTPResponse) {
        let bodyAllowed = !response.status.forbidsBody
        var response = response
        if bodyAllowed && !isHead, let threshold = connection.configuration.compressionThresholdBytes,
            response.body.count >= threshold, !response.headers.contains("Content-Encoding")
        {
            response.headers.add(name: "Vary", value: "Accept-Encoding")
            if clientAcceptsGzip {
                response.body = Gzip.compress(response.body)
                response.headers["Content-Encoding"] = "gzip"
            }
        }
        lock.lock()
        precondition(!started, "HTTPResponder: a response was already started for request \(requestID)")
        started = true
        var bytes = makeHead(
            status: response.status, headers: response.headers,
            framing: bodyAllowed ? .length(response.body.count) : .none)
        if bodyAllowed && !isHead { bytes.append(contentsOf: response.body) }
        lock.unlock()
        try? enqueue(bytes, completes: true)
    }

    /// Starts a streamed response: chunked for HTTP/1.1 clients, close-delimited for HTTP/1.0
    /// clients, headers only for HEAD. The head is written at once. Call at most once, and not
    /// after `send` (programmer error).
    public func startStream(status: HTTPStatus = .ok, headers: HTTPHeaders = HTTPHeaders()) -> HTTPStream {
        lock.lock()
        precondition(!started, "HTTPResponder: a response was already started for request \(requestID)")
        started = true
        let mode: HTTPStream.Mode
        let framing: Framing
        if isHead || status.forbidsBody {
            mode = .discard
            framing = .none
        } else if clientVersion == .http1_1 {
            mode = .chunked
            framing = .chunked
        } else {
            mode = .closeDelimited
            framing = .closeDelimited
        }
        let bytes = makeHead(status: status, headers: headers, framing: framing)
        lock.unlock()
        let stream = HTTPStream(responder: self, mode: mode)
        try? enqueue(bytes, completes: false)
        return stream
    }

    /// Starts a Server-Sent Events stream (`Content-Type: text/event-stream`, `Cache-Control: no-cache`);
    /// send events with `HTTPStream.sendEvent`.
    public func startEventStream(status: HTTPStatus = .ok, headers: HTTPHeaders = HTTPHeaders()) -> HTTPStream {
        var headers = headers
        headers["Content-Type"] = "text/event-stream"
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
        return startStream(status: status, headers: headers)
    }

    /// Whether the client has gone away. Checks the socket without blocking when not yet known,
    /// so a long computation can poll it between steps.
    public var isClientGone: Bool {
        lock.lock()
        let known = gone
        let done = complete && pending.isEmpty
        lock.unlock()
        if known { return true }
        if done { return false }
        if connection.peerHasClosed() {
            markGone()
            return true
        }
        return false
    }

    /// Registers a callback run once when the client is found gone before the response completed
    /// (e.g. to cancel a generation). Runs at once, on this thread, if the client is already gone.
    /// Runs on whichever thread detects the disconnect; keep it short and non-blocking.
    public func onDisconnect(_ callback: @escaping @Sendable () -> Void) {
        lock.lock()
        if gone {
            lock.unlock()
            callback()
            return
        }
        disconnectCallbacks.append(callback)
        lock.unlock()
    }

    /// Bytes queued for the socket and not yet written (a producer can pause while this grows).
    public var bufferedByteCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return pending.count
    }

    /// Whether `send` or a stream start has happened.
    public var hasStarted: Bool {
        lock.lock()
        defer { lock.unlock() }
        return started
    }

    // MARK: - Output queue

    /// Queues bytes for the socket; writes them now on the connection thread, else wakes it.
    func enqueue(_ bytes: [UInt8], completes: Bool) throws(HTTPServerError) {
        lock.lock()
        if gone {
            lock.unlock()
            throw .clientDisconnected
        }
        if complete {
            lock.unlock()
            throw .streamFinished
        }
        pending.append(contentsOf: bytes)
        if completes { complete = true }
        lock.unlock()
        if connection.isCurrentThread {
            try flush()
        } else {
            connection.wake()
        }
    }

    /// Writes queued bytes. Connection thread only.
    func flush() throws(HTTPServerError) {
        lock.lock()
        if gone {
            lock.unlock()
            throw .clientDisconnected
        }
        guard !pending.isEmpty else {
            lock.unlock()
            return
        }
        var out: [UInt8] = []
        swap(&out, &pending)
        lock.unlock()
        if !connection.write(out) {
            markGone()
            throw .clientDisconnected
        }
    }

    /// Marks the client gone and runs the disconnect callbacks once.
    func markGone() {
        lock.lock()
        if gone {
            lock.unlock()
            return
        }
        gone = true
        pending = []
        let callbacks = disconnectCallbacks
        disconnectCallbacks = []
        lock.unlock()
        for callback in callbacks { callback() }
    }

    /// Connection thread, after the handler returned: writes queued output until the response is
    /// complete (true) or the client is gone (false).
    func pumpUntilComplete() -> Bool {
        var watchReadable = true
        while true {
            do { try flush() } catch { return false }
            lock.lock()
            let done = complete && pending.isEmpty
            let isGone = gone
            lock.unlock()
            if isGone { return false }
            if done { return true }
            switch connection.waitWhileResponding(watchReadable: watchReadable) {
            case .woken: continue
            case .pipelinedData: watchReadable = false
            case .peerClosed:
                markGone()
                return false
            }
        }
    }

    /// The status of the started response, nil before `send` or a stream start.
    var responseStatus: HTTPStatus? {
        lock.lock()
        defer { lock.unlock() }
        return status
    }

    /// Whether the connection must close after this response (decided when the head was written).
    var closesConnection: Bool {
        lock.lock()
        defer { lock.unlock() }
        return closeAfterResponse
    }

    // MARK: - Head

    enum Framing {
        case none
        case length(Int)
        case chunked
        case closeDelimited
    }

    /// Serialises the status line and headers. Caller holds `lock`.
    private func makeHead(status: HTTPStatus, headers: HTTPHeaders, framing: Framing) -> [UInt8] {
        self.status = status
        var close = !clientKeepAlive || connection.serverIsDraining
        if case .closeDelimited = framing { close = true }
        closeAfterResponse = close
        return connection.makeHead(
            status: status, headers: headers, framing: framing, close: close,
            keepAliveHeader: !close && clientVersion == .http1_0, requestID: requestID)
    }
}
