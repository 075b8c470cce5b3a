import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One accepted TCP connection, plain or TLS: read and parse requests, call the handler, write
/// responses, enforce timeouts, close. Internal to the HTTP target.
///
/// A connection lives in one of two places. *Parked* (a TLS handshake in progress, or idle between
/// requests) it is watched by the server's event loop and holds no thread, no wake pipe and no read
/// buffer: an idle keep-alive connection costs one descriptor and a few hundred bytes. *Active* (the
/// event loop saw input) it runs `serve()` on a thread of its own, which reads, calls the handler,
/// writes the response, and parks the connection again once the parser has nothing buffered.
///
/// Thread-safety: the parked fields belong to the event loop; everything else belongs to the
/// serving thread (handed over through the server's lock, so each hand-over is ordered). Writes
/// happen only on the serving thread (`HTTPResponder` queues output from other threads). `wake`,
/// `forceClose` and `peerHasClosed` may be called from any thread; they use the descriptor only
/// under `lock` while `closed` is false, so they never touch a closed or reused descriptor.
final class Connection: @unchecked Sendable {
    let fd: Int32
    let configuration: HTTPServerConfiguration
    private let server: HTTPServer
    private let handler: any HTTPHandler
    private var parser: HTTPRequestParser
    /// 64 KiB while active, empty while parked.
    private var readBuffer: [UInt8] = []
    /// The TLS session of an HTTPS connection; nil for plain HTTP.
    let tls: TLSSession?
    /// Requests answered so far (the first request gets the header timeout from the connection's start).
    private var servedCount = 0

    // MARK: Parked state (event loop only)

    /// What the event loop waits for while the connection is parked.
    enum ParkedPhase {
        /// TLS handshake in progress; `wantWrite` when OpenSSL waits for the socket to be writable.
        case handshake(wantWrite: Bool)
        /// Between requests: waiting for the next request's first byte.
        case idle
    }

    /// The parked phase; meaningful only while parked.
    var parkedPhase: ParkedPhase
    /// Monotonic milliseconds when the connection was accepted.
    let acceptedAt: Int64
    /// Monotonic milliseconds when the connection last became idle (handshake done or response written).
    var idleSince: Int64
    /// Whether the first byte was checked to be a TLS handshake record (TLS connections).
    var handshakeStarted = false

    // MARK: Cross-thread state (under `lock`)

    private let lock = NSLock()
    private var closed = false
    private var forcedClosed = false
    private var thread: pthread_t?
    private var wakeRead: Int32 = -1
    private var wakeWrite: Int32 = -1

    init(fd: Int32, server: HTTPServer, configuration: HTTPServerConfiguration, handler: any HTTPHandler, tls: TLSSession?) {
        self.fd = fd
        self.server = server
        self.configuration = configuration
        self.handler = handler
        self.parser = HTTPRequestParser(configuration: configuration)
        self.tls = tls
        let now = Socket.monotonicMilliseconds()
        self.acceptedAt = now
        self.idleSince = now
        self.parkedPhase = tls == nil ? .idle : .handshake(wantWrite: false)
    }

    // MARK: - Parked: deadlines and closing (event loop)

    /// When the event loop gives up on the parked connection (monotonic milliseconds).
    var parkedDeadline: Int64 {
        switch parkedPhase {
        case .handshake:
            return acceptedAt + Socket.milliseconds(configuration.tls?.handshakeTimeout ?? configuration.headerReadTimeout)
        case .idle:
            let limit = servedCount == 0 ? configuration.headerReadTimeout : configuration.idleKeepAliveTimeout
            return idleSince + Socket.milliseconds(limit)
        }
    }

    /// The poll(2) events the event loop watches for.
    var parkedPollEvents: Int16 {
        if case .handshake(wantWrite: true) = parkedPhase { return Int16(POLLOUT) }
        return Int16(POLLIN)
    }

    /// Closes a parked connection (timeout, drain, failed handshake). Event loop only.
    func closeParked() {
        lock.lock()
        closed = true
        lock.unlock()
        if case .idle = parkedPhase { tls?.close() }
        close(fd)
        server.connectionEnded(self)
    }

    /// Ends a parked connection that the server answers itself (plain HTTP on the TLS port):
    /// the caller writes to `fd` and closes it; the connection only stops counting. Event loop only.
    func detachParked() {
        lock.lock()
        closed = true
        lock.unlock()
        server.connectionEnded(self)
    }

    // MARK: - Cross-thread controls

    /// Whether the caller runs on this connection's serving thread.
    var isCurrentThread: Bool {
        lock.lock()
        defer { lock.unlock() }
        guard let thread else { return false }
        return pthread_equal(thread, pthread_self()) != 0
    }

    /// Wakes the serving thread from poll(2) (queued output, drain, forced close); nothing while parked.
    func wake() {
        lock.lock()
        if !closed && wakeWrite >= 0 { Socket.wake(wakeWrite) }
        lock.unlock()
    }

    /// Cuts the connection (drain deadline passed): blocked reads and writes fail at once.
    func forceClose() {
        lock.lock()
        if !closed {
            forcedClosed = true
            _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
            if wakeWrite >= 0 { Socket.wake(wakeWrite) }
        }
        lock.unlock()
    }

    private var isForcedClosed: Bool {
        lock.lock()
        defer { lock.unlock() }
        return forcedClosed
    }

    var serverIsDraining: Bool { server.isDraining }

    /// Non-blocking check whether the peer closed (EOF or error pending on the socket).
    func peerHasClosed() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if closed || forcedClosed { return true }
        var pfd = pollfd(fd: fd, events: Int16(POLLIN) | Socket.pollReadHangup, revents: 0)
        guard poll(&pfd, 1, 0) > 0 else { return false }
        if pfd.revents & (Int16(POLLHUP) | Int16(POLLERR) | Socket.pollReadHangup) != 0 { return true }
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)
    }

    // MARK: - Transport

    /// Writes every byte (serving thread only) through TLS or the socket; false when the client is
    /// gone or made no progress for `writeTimeout`.
    func write(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            var lastProgress = Socket.monotonicMilliseconds()
            let timeout = Socket.milliseconds(configuration.writeTimeout)
            while offset < raw.count {
                let rest = UnsafeRawBufferPointer(rebasing: raw[offset...])
                let step = tls?.write(rest) ?? Socket.sendSome(fd, rest)
                let events: Int16
                switch step {
                case .done(let n):
                    offset += n
                    lastProgress = Socket.monotonicMilliseconds()
                    continue
                case .wantWrite: events = Int16(POLLOUT)
                case .wantRead: events = Int16(POLLIN)
                case .closed, .failed: return false
                }
                let remaining = lastProgress + timeout - Socket.monotonicMilliseconds()
                if remaining <= 0 || isForcedClosed { return false }
                var pfd = pollfd(fd: fd, events: events, revents: 0)
                let rc = poll(&pfd, 1, Int32(min(remaining, Int64(Int32.max))))
                if rc < 0 && errno != EINTR { return false }
            }
            return true
        }
    }

    /// One non-blocking read through TLS or the socket into the read buffer, appended to the parser.
    private func readSome() -> IOStep {
        let step = readBuffer.withUnsafeMutableBytes { tls?.read(into: $0) ?? Socket.receive(fd, into: $0) }
        if case .done(let n) = step {
            readBuffer.withUnsafeBytes { parser.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        return step
    }

    /// Whether TLS holds input the socket no longer shows (poll(2) would not report it).
    private var hasBufferedInput: Bool { tls?.hasBufferedInput ?? false }

    enum WaitResult {
        case woken
        case pipelinedData
        case peerClosed
    }

    /// Serving thread, while a response is pending: blocks until output is queued (woken), the
    /// peer closes, or the next pipelined request starts arriving (reported once; then only hang-ups
    /// are watched so the bytes stay queued for the parser).
    func waitWhileResponding(watchReadable: Bool) -> WaitResult {
        lock.lock()
        let wakeFD = wakeRead
        lock.unlock()
        var fds = [
            pollfd(fd: fd, events: (watchReadable ? Int16(POLLIN) : 0) | Socket.pollReadHangup, revents: 0),
            pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0),
        ]
        let rc = poll(&fds, 2, -1)
        if rc < 0 { return errno == EINTR ? .woken : .peerClosed }
        if fds[1].revents != 0 {
            Socket.drainWake(wakeFD)
            if isForcedClosed { return .peerClosed }
        }
        let events = fds[0].revents
        if events & (Int16(POLLHUP) | Int16(POLLERR) | Socket.pollReadHangup) != 0 { return .peerClosed }
        if events & Int16(POLLIN) != 0 {
            var byte: UInt8 = 0
            let n = recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
            if n == 0 { return .peerClosed }
            if n > 0 { return .pipelinedData }
            if errno != EAGAIN && errno != EINTR { return .peerClosed }
        }
        return .woken
    }

    // MARK: - Request loop

    /// Serves requests on the calling (dedicated) thread from the moment the event loop saw input,
    /// until the connection is idle again (then parks it and returns) or closes.
    func serve() {
        guard let pipe = Socket.makeWakePipe() else {
            finish(lingering: false)
            return
        }
        lock.lock()
        thread = pthread_self()
        wakeRead = pipe.read
        wakeWrite = pipe.write
        lock.unlock()
        if readBuffer.isEmpty { readBuffer = [UInt8](repeating: 0, count: 64 * 1024) }
        var mayHaveInput = true
        var lingering = false
        serving: while true {
            switch readRequest(mayHaveInput: mayHaveInput) {
            case .park:
                park()
                return
            case .close:
                break serving
            case .failed(let error):
                server.eventSink?(.requestRefused(status: error.status, reason: error.description))
                sendError(status: error.status, message: error.description)
                lingering = true
                break serving
            case .timedOut(let message):
                server.eventSink?(.requestRefused(status: .requestTimeout, reason: message))
                sendError(status: .requestTimeout, message: message)
                lingering = true
                break serving
            case .request(var request):
                servedCount += 1
                let startedAt = ContinuousClock.now
                let responder = HTTPResponder(
                    connection: self, request: request, requestID: Connection.requestID(for: request.headers))
                do throws(HTTPParseError) {
                    try request.decodeContentEncoding(maxBodyBytes: configuration.maxBodyBytes)
                    if let preflight = preflightResponse(for: request) {
                        responder.send(preflight)
                    } else {
                        handler.handle(request, responder)
                    }
                } catch {
                    // The body was read whole, so the connection stays usable.
                    responder.send(refusal(status: error.status, message: error.description))
                }
                let completed = responder.pumpUntilComplete()
                if let sink = server.eventSink {
                    sink(.requestFinished(HTTPRequestRecord(
                        method: request.method, target: request.target, requestID: responder.requestID,
                        status: responder.responseStatus, duration: ContinuousClock.now - startedAt,
                        clientWentAway: !completed)))
                }
                if !completed || responder.closesConnection { break serving }
                idleSince = Socket.monotonicMilliseconds()
                mayHaveInput = false
            }
        }
        finish(lingering: lingering)
    }

    /// Hands the idle connection back to the event loop: releases the thread, wake pipe and buffers.
    private func park() {
        lock.lock()
        thread = nil
        let (r, w) = (wakeRead, wakeWrite)
        wakeRead = -1
        wakeWrite = -1
        lock.unlock()
        close(r)
        close(w)
        readBuffer = []
        if parser.bufferedByteCount == 0 { parser = HTTPRequestParser(configuration: configuration) }
        parkedPhase = .idle
        // The event loop may pick the connection up at once: touch nothing after this call.
        server.park(self)
    }

    /// Closes the connection from its serving thread.
    private func finish(lingering: Bool) {
        // Other threads touch the descriptors only under `lock` and only while `closed` is false,
        // so after this point they are ours to close without holding the lock (lingering takes up to 1 s).
        lock.lock()
        closed = true
        let (r, w) = (wakeRead, wakeWrite)
        wakeRead = -1
        wakeWrite = -1
        thread = nil
        lock.unlock()
        tls?.close()
        if lingering {
            Socket.lingeringClose(fd)
        } else {
            close(fd)
        }
        if r >= 0 { close(r) }
        if w >= 0 { close(w) }
        server.connectionEnded(self)
    }

    private enum ReadOutcome {
        case request(HTTPRequest)
        case park
        case close
        case failed(HTTPParseError)
        case timedOut(String)
    }

    /// Reads until the parser yields a request, enforcing the header and body deadlines. With
    /// nothing of a next request buffered and no input pending, returns `.park` (`.close` while the
    /// server drains): idle waiting is the event loop's job.
    private func readRequest(mayHaveInput: Bool) -> ReadOutcome {
        var mayHaveInput = mayHaveInput
        var phase = parser.phase
        var phaseStart = phase == .idle ? idleSince : Socket.monotonicMilliseconds()
        var continueSent = false
        var waitForWritable = false
        var lingered = false
        while true {
            do {
                if let request = try parser.nextRequest() { return .request(request) }
            } catch {
                return .failed(error)
            }
            if parser.expectsContinue && !continueSent {
                continueSent = true
                if !write(Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)) { return .close }
            }
            let now = Socket.monotonicMilliseconds()
            if parser.phase != phase {
                phase = parser.phase
                phaseStart = now
            }
            if isForcedClosed { return .close }
            if phase == .idle && !mayHaveInput && !hasBufferedInput {
                if server.isDraining { return .close }
                if lingered { return .park }
                // A busy keep-alive client sends its next request within microseconds: wait a
                // moment for it on this thread rather than hand the connection to the event loop
                // and start a thread again (which cuts request rates to about a third).
                lingered = true
                if waitForInput(milliseconds: Connection.keepAliveLingerMilliseconds) { mayHaveInput = true }
                continue
            }
            let limit: Duration
            switch phase {
            case .idle: limit = servedCount == 0 ? configuration.headerReadTimeout : configuration.idleKeepAliveTimeout
            case .head: limit = configuration.headerReadTimeout
            case .body: limit = configuration.bodyReadTimeout
            }
            let remaining = phaseStart + Socket.milliseconds(limit) - now
            if remaining <= 0 {
                switch phase {
                case .idle: return .close
                case .head: return .timedOut("request head not received within \(limit); send the whole head promptly")
                case .body: return .timedOut("request body not received within \(limit); send the body promptly")
                }
            }
            if !mayHaveInput && !hasBufferedInput {
                lock.lock()
                let wakeFD = wakeRead
                lock.unlock()
                var fds = [
                    pollfd(fd: fd, events: waitForWritable ? Int16(POLLOUT) : Int16(POLLIN), revents: 0),
                    pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0),
                ]
                let rc = poll(&fds, 2, Int32(min(remaining, Int64(Int32.max))))
                if rc < 0 {
                    if errno == EINTR { continue }
                    return .close
                }
                if rc == 0 { continue }
                if fds[1].revents != 0 { Socket.drainWake(wakeFD) }
                if fds[0].revents == 0 { continue }
            }
            switch readSome() {
            case .done:
                waitForWritable = false
                mayHaveInput = hasBufferedInput
            case .wantRead:
                waitForWritable = false
                mayHaveInput = false
            case .wantWrite:
                waitForWritable = true
                mayHaveInput = false
            case .closed, .failed:
                return .close
            }
        }
    }

    /// How long a serving thread waits for the next request on a kept-alive connection before
    /// parking it (milliseconds).
    static let keepAliveLingerMilliseconds: Int64 = 50

    /// Waits up to `milliseconds` for the socket to become readable (true) or a wake (false).
    private func waitForInput(milliseconds: Int64) -> Bool {
        lock.lock()
        let wakeFD = wakeRead
        lock.unlock()
        var fds = [
            pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
            pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0),
        ]
        let rc = poll(&fds, 2, Int32(milliseconds))
        if rc > 0 && fds[1].revents != 0 { Socket.drainWake(wakeFD) }
        return rc > 0 && fds[0].revents != 0
    }

    // MARK: - Server-made responses

    /// Answers a CORS preflight (OPTIONS with Access-Control-Request-Method) when CORS is configured.
    private func preflightResponse(for request: HTTPRequest) -> HTTPResponse? {
        guard configuration.corsAllowedOrigin != nil, request.method == "OPTIONS",
            request.headers.contains("Access-Control-Request-Method")
        else { return nil }
        return HTTPResponse(
            status: .noContent,
            headers: HTTPHeaders([
                ("Access-Control-Allow-Methods", configuration.corsAllowedMethods.joined(separator: ", ")),
                ("Access-Control-Allow-Headers", configuration.corsAllowedHeaders.joined(separator: ", ")),
                ("Access-Control-Max-Age", String(configuration.corsMaxAgeSeconds)),
            ]))
    }

    /// The handler's form of a server-made error (e.g. a JSON error body), else plain text.
    private func refusal(status: HTTPStatus, message: String) -> HTTPResponse {
        handler.refusalResponse(status: status, message: message)
            ?? HTTPResponse(status: status, contentType: "text/plain; charset=utf-8", body: message + "\n")
    }

    /// Writes an error response that closes the connection (in the handler's error format, if any).
    private func sendError(status: HTTPStatus, message: String) {
        let response = refusal(status: status, message: message)
        var bytes = makeHead(
            status: response.status, headers: response.headers, framing: .length(response.body.count),
            close: true, keepAliveHeader: false, requestID: Connection.requestID(for: HTTPHeaders()))
        bytes.append(contentsOf: response.body)
        _ = write(bytes)
    }

    /// Status line and header section: the handler's fields (minus those the server owns), then
    /// Date, Server, X-Request-Id, CORS, framing and Connection. CR and LF are dropped from values
    /// and fields with invalid names are skipped, so no header can be injected.
    func makeHead(
        status: HTTPStatus, headers: HTTPHeaders, framing: HTTPResponder.Framing, close: Bool, keepAliveHeader: Bool,
        requestID: String
    ) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        func line(_ name: String, _ value: String) {
            out.append(contentsOf: name.utf8)
            out.append(0x3A)
            out.append(0x20)
            for byte in value.utf8 where byte != 0x0D && byte != 0x0A && byte != 0x00 { out.append(byte) }
            out.append(0x0D)
            out.append(0x0A)
        }
        out.append(contentsOf: "HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\n".utf8)
        var hasAllowOrigin = false
        for field in headers {
            guard !field.name.isEmpty, field.name.utf8.allSatisfy(isTokenByte) else { continue }
            if Connection.serverOwned.contains(where: { HTTPHeaders.namesEqual($0, field.name) }) { continue }
            if HTTPHeaders.namesEqual(field.name, "Access-Control-Allow-Origin") { hasAllowOrigin = true }
            line(field.name, field.value)
        }
        line("Date", Connection.httpDate())
        line("Server", configuration.serverName)
        line("X-Request-Id", requestID)
        if let origin = configuration.corsAllowedOrigin, !hasAllowOrigin {
            line("Access-Control-Allow-Origin", origin)
            if origin != "*" { line("Vary", "Origin") }
        }
        switch framing {
        case .none, .closeDelimited: break
        case .length(let count): line("Content-Length", String(count))
        case .chunked: line("Transfer-Encoding", "chunked")
        }
        if close {
            line("Connection", "close")
        } else if keepAliveHeader {
            line("Connection", "keep-alive")
        }
        out.append(0x0D)
        out.append(0x0A)
        return out
    }

    private static let serverOwned = [
        "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Date", "Server", "X-Request-Id",
    ]

    // MARK: - Request IDs and dates

    /// The client's X-Request-Id when sane (1-128 of [A-Za-z0-9._:-]), else 32 random hex digits.
    static func requestID(for headers: HTTPHeaders) -> String {
        if let given = headers["X-Request-Id"], (1...128).contains(given.utf8.count),
            given.utf8.allSatisfy({ b in
                (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D
                    || b == 0x5F || b == 0x2E || b == 0x3A
            })
        {
            return given
        }
        var generator = SystemRandomNumberGenerator()
        let hex = Array("0123456789abcdef".utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        for _ in 0..<2 {
            var word = generator.next()
            for _ in 0..<16 {
                bytes.append(hex[Int(word & 0xF)])
                word >>= 4
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static let dayNames = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let monthNames = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// The current time as an IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 section 5.6.7).
    static func httpDate() -> String {
        var now = time(nil)
        var t = tm()
        gmtime_r(&now, &t)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(dayNames[Int(t.tm_wday)]), \(two(t.tm_mday)) \(monthNames[Int(t.tm_mon)]) \(t.tm_year + 1900) "
            + "\(two(t.tm_hour)):\(two(t.tm_min)):\(two(t.tm_sec)) GMT"
    }
}
