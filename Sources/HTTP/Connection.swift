import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One accepted TCP connection, served by its own thread: read and parse requests, call the
/// handler, write responses, enforce timeouts, close. Internal to the HTTP target.
///
/// Thread-safety: `run()` owns the socket's reads; writes happen only on that thread
/// (`HTTPResponder` queues output from other threads). `wake`, `forceClose` and `peerHasClosed`
/// may be called from any thread; the descriptor is closed under `lock` so they never touch a
/// reused descriptor.
final class Connection: @unchecked Sendable {
    let fd: Int32
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let server: HTTPServer
    private let configuration: HTTPServerConfiguration
    private let handler: any HTTPHandler
    private var parser: HTTPRequestParser
    private var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)

    private let lock = NSLock()
    private var closed = false
    private var forcedClosed = false
    private var thread: pthread_t?

    init?(fd: Int32, server: HTTPServer, configuration: HTTPServerConfiguration, handler: any HTTPHandler) {
        guard let pipe = Socket.makeWakePipe() else { return nil }
        self.fd = fd
        self.wakeRead = pipe.read
        self.wakeWrite = pipe.write
        self.server = server
        self.configuration = configuration
        self.handler = handler
        self.parser = HTTPRequestParser(configuration: configuration)
    }

    // MARK: - Cross-thread controls

    /// Whether the caller runs on this connection's thread.
    var isCurrentThread: Bool {
        guard let thread else { return false }
        return pthread_equal(thread, pthread_self()) != 0
    }

    /// Wakes the connection thread from poll(2) (queued output, drain, forced close).
    func wake() {
        lock.lock()
        if !closed { Socket.wake(wakeWrite) }
        lock.unlock()
    }

    /// Cuts the connection (drain deadline passed): blocked reads and writes fail at once.
    func forceClose() {
        lock.lock()
        if !closed {
            forcedClosed = true
            _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
            Socket.wake(wakeWrite)
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

    /// Writes bytes to the socket (connection thread only); false when the client is gone.
    func write(_ bytes: [UInt8]) -> Bool {
        Socket.sendAll(fd, bytes)
    }

    enum WaitResult {
        case woken
        case pipelinedData
        case peerClosed
    }

    /// Connection thread, while a response is pending: blocks until output is queued (woken), the
    /// peer closes, or the next pipelined request starts arriving (reported once; then only hang-ups
    /// are watched so the bytes stay queued for the parser).
    func waitWhileResponding(watchReadable: Bool) -> WaitResult {
        var fds = [
            pollfd(fd: fd, events: (watchReadable ? Int16(POLLIN) : 0) | Socket.pollReadHangup, revents: 0),
            pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0),
        ]
        let rc = poll(&fds, 2, -1)
        if rc < 0 { return errno == EINTR ? .woken : .peerClosed }
        if fds[1].revents != 0 {
            Socket.drainWake(wakeRead)
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

    /// Serves requests until the connection closes. Runs on the connection's own thread.
    func run() {
        lock.lock()
        thread = pthread_self()
        lock.unlock()
        var lingering = false
        var first = true
        serving: while true {
            switch readRequest(first: first) {
            case .close:
                break serving
            case .failed(let error):
                sendError(status: error.status, message: error.description)
                lingering = true
                break serving
            case .timedOut(let message):
                sendError(status: .requestTimeout, message: message)
                lingering = true
                break serving
            case .request(let request):
                first = false
                let responder = HTTPResponder(
                    connection: self, request: request, requestID: Connection.requestID(for: request.headers))
                if let preflight = preflightResponse(for: request) {
                    responder.send(preflight)
                } else {
                    handler.handle(request, responder)
                }
                let completed = responder.pumpUntilComplete()
                if !completed || responder.closesConnection { break serving }
            }
        }
        lock.lock()
        closed = true
        if lingering {
            Socket.lingeringClose(fd)
        } else {
            close(fd)
        }
        close(wakeRead)
        close(wakeWrite)
        lock.unlock()
        server.connectionEnded(self)
    }

    private enum ReadOutcome {
        case request(HTTPRequest)
        case close
        case failed(HTTPParseError)
        case timedOut(String)
    }

    /// Reads until the parser yields a request, enforcing the idle, header and body deadlines.
    private func readRequest(first: Bool) -> ReadOutcome {
        var phase = parser.phase
        var phaseStart = Socket.monotonicMilliseconds()
        var continueSent = false
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
            if phase == .idle && server.isDraining { return .close }
            let limit: Duration
            switch phase {
            case .idle: limit = first ? configuration.headerReadTimeout : configuration.idleKeepAliveTimeout
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
            var fds = [
                pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0),
            ]
            let rc = poll(&fds, 2, Int32(min(remaining, Int64(Int32.max))))
            if rc < 0 {
                if errno == EINTR { continue }
                return .close
            }
            if rc == 0 { continue }
            if fds[1].revents != 0 { Socket.drainWake(wakeRead) }
            if fds[0].revents != 0 {
                let n = readBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n > 0 {
                    readBuffer.withUnsafeBytes { parser.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                } else if n == 0 {
                    return .close
                } else if errno != EINTR && errno != EAGAIN {
                    return .close
                }
            }
        }
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

    /// Writes a plain-text error response that closes the connection.
    private func sendError(status: HTTPStatus, message: String) {
        let body = Array((message + "\n").utf8)
        var bytes = makeHead(
            status: status, headers: HTTPHeaders([("Content-Type", "text/plain; charset=utf-8")]), framing: .length(body.count),
            close: true, keepAliveHeader: false, requestID: Connection.requestID(for: HTTPHeaders()))
        bytes.append(contentsOf: body)
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
