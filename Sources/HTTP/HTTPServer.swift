import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A hand-rolled HTTP/1.1 server on POSIX sockets, plain or TLS (OpenSSL): one event-loop thread
/// accepts connections, drives TLS handshakes without blocking, and watches idle keep-alive
/// connections; a connection gets a thread of its own only while it has a request to serve.
/// At most `maxConnections` are open at once (more get 503 and are closed).
///
/// Lifecycle: `init`, `start()` (binds and returns; read `port`), serve, `shutdown(drainDeadline:)`.
/// Thread-safety: all methods may be called from any thread.
public final class HTTPServer: @unchecked Sendable {
    /// The configuration the server was made with.
    public let configuration: HTTPServerConfiguration

    private let handler: any HTTPHandler
    private let condition = NSCondition()
    private var state: State = .idle
    private var connections: [ObjectIdentifier: Connection] = [:]
    /// Connections their serving threads handed back, for the event loop to watch.
    private var returning: [Connection] = []
    private var listenFD: Int32 = -1
    private var loopWake: (read: Int32, write: Int32) = (-1, -1)
    private let listenerClosed = DispatchSemaphore(value: 0)
    private let eventLoopDone = DispatchSemaphore(value: 0)
    private var boundPort = 0
    private var rejectsInFlight = 0
    private let rejectQueue = DispatchQueue(label: "CastServe.HTTP.reject")
    private var tlsContext: TLSContext?
    /// Parked connections (handshaking or idle). Event loop only.
    private var parked: [Connection] = []

    private enum State {
        case idle
        case running
        case draining
        case stopped
    }

    /// Receives access-log and refusal events; nil drops them.
    let eventSink: (@Sendable (HTTPServerEvent) -> Void)?

    /// A server that will answer every request with `handler` and report to `eventSink` (if any).
    /// Nothing is bound until `start()`.
    public init(
        configuration: HTTPServerConfiguration, handler: any HTTPHandler,
        eventSink: (@Sendable (HTTPServerEvent) -> Void)? = nil
    ) {
        self.configuration = configuration
        self.handler = handler
        self.eventSink = eventSink
    }

    /// A server whose handler is a closure (see `HTTPHandler` for the contract).
    public convenience init(
        configuration: HTTPServerConfiguration, eventSink: (@Sendable (HTTPServerEvent) -> Void)? = nil,
        handler: @escaping @Sendable (HTTPRequest, HTTPResponder) -> Void
    ) {
        self.init(configuration: configuration, handler: HTTPClosureHandler(handler), eventSink: eventSink)
    }

    /// The bound TCP port (the ephemeral one when configured with port 0); 0 before `start()`.
    public var port: Int {
        condition.lock()
        defer { condition.unlock() }
        return boundPort
    }

    /// Connections currently open: idle, shaking hands, or serving a request.
    public var openConnectionCount: Int {
        condition.lock()
        defer { condition.unlock() }
        return connections.count
    }

    /// True once `shutdown` has begun.
    public var isDraining: Bool {
        condition.lock()
        defer { condition.unlock() }
        return state == .draining || state == .stopped
    }

    // MARK: - Start

    /// Validates the configuration, loads the TLS certificate and key (when configured), binds and
    /// listens (SO_REUSEADDR; "::" is dual-stack), and starts the event loop. Returns once the port
    /// is bound. With TLS, SIGPIPE is ignored process-wide (OpenSSL writes with write(2)).
    public func start() throws(HTTPServerError) {
        try configuration.validate()
        condition.lock()
        guard state == .idle else {
            condition.unlock()
            throw .alreadyStarted
        }
        state = .running
        condition.unlock()
        do throws(HTTPServerError) {
            let context = try configuration.tls.map { tls throws(HTTPServerError) in try TLSContext(configuration: tls) }
            if context != nil { signal(SIGPIPE, SIG_IGN) }
            let (fd, port) = try bindListener()
            guard let wake = Socket.makeWakePipe() else {
                close(fd)
                throw HTTPServerError.listenerFailed(
                    host: configuration.host, port: configuration.port, call: "pipe", reason: Socket.errorText(errno))
            }
            Socket.setNonBlocking(fd)
            condition.lock()
            tlsContext = context
            listenFD = fd
            boundPort = port
            loopWake = wake
            condition.unlock()
        } catch {
            condition.lock()
            state = .idle
            condition.unlock()
            throw error
        }
        let thread = Thread { [self] in eventLoop() }
        thread.name = "http-events"
        thread.start()
    }

    private func bindListener() throws(HTTPServerError) -> (Int32, Int) {
        let host = configuration.host, port = configuration.port
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV | (host == "localhost" ? 0 : AI_NUMERICHOST)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else {
            throw .invalidAddress(host: host, port: port, reason: String(cString: gai_strerror(rc)))
        }
        defer { freeaddrinfo(list) }
        var lastError = HTTPServerError.invalidAddress(host: host, port: port, reason: "no usable address")
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let ai = entry {
            entry = ai.pointee.ai_next
            let fd = socket(ai.pointee.ai_family, ai.pointee.ai_socktype, ai.pointee.ai_protocol)
            guard fd >= 0 else {
                lastError = .listenerFailed(host: host, port: port, call: "socket", reason: Socket.errorText(errno))
                continue
            }
            Socket.setCloseOnExec(fd)
            Socket.setIntOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
            if ai.pointee.ai_family == AF_INET6 {
                Socket.setIntOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, host == "::" ? 0 : 1)
            }
            guard bind(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 else {
                lastError = .listenerFailed(host: host, port: port, call: "bind", reason: Socket.errorText(errno))
                close(fd)
                continue
            }
            guard listen(fd, Int32(clamping: configuration.backlog)) == 0 else {
                lastError = .listenerFailed(host: host, port: port, call: "listen", reason: Socket.errorText(errno))
                close(fd)
                continue
            }
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let named = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
            }
            guard named == 0 else {
                lastError = .listenerFailed(host: host, port: port, call: "getsockname", reason: Socket.errorText(errno))
                close(fd)
                continue
            }
            let family = Int32(storage.ss_family)
            let boundPort: UInt16 = withUnsafePointer(to: &storage) { pointer in
                if family == AF_INET6 {
                    return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
                }
                return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
            }
            return (fd, Int(boundPort))
        }
        throw lastError
    }


    // MARK: - Event loop

    /// Accepts, shakes hands, watches parked connections and their deadlines, and hands a
    /// connection with input to a serving thread. Runs until `shutdown` ends.
    private func eventLoop() {
        defer { eventLoopDone.signal() }
        var listening = true
        while true {
            condition.lock()
            let current = state
            parked.append(contentsOf: returning)
            returning.removeAll()
            condition.unlock()
            if current != .running {
                if listening {
                    close(listenFD)
                    listening = false
                    listenerClosed.signal()
                }
                sweepForDrain()
                if current == .stopped { return }
            }

            let watched = parked
            var fds = [pollfd(fd: loopWake.read, events: Int16(POLLIN), revents: 0)]
            if listening { fds.append(pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0)) }
            let base = fds.count
            var earliest = Int64.max
            for connection in watched {
                fds.append(pollfd(fd: connection.fd, events: connection.parkedPollEvents, revents: 0))
                earliest = min(earliest, connection.parkedDeadline)
            }
            let timeout: Int32 =
                earliest == .max ? -1 : Int32(clamping: max(0, earliest - Socket.monotonicMilliseconds()))
            let rc = poll(&fds, nfds_t(fds.count), timeout)
            if rc < 0 && errno != EINTR { usleep(1000) }
            if fds[0].revents != 0 { Socket.drainWake(loopWake.read) }
            var accepted: [Connection] = []
            if listening && fds[1].revents != 0 { accepted = acceptPending() }

            let now = Socket.monotonicMilliseconds()
            var kept: [Connection] = []
            kept.reserveCapacity(watched.count + accepted.count)
            for (i, connection) in watched.enumerated() {
                if rc > 0 && fds[base + i].revents != 0 {
                    if advance(connection) { kept.append(connection) }
                } else if now >= connection.parkedDeadline {
                    expire(connection)
                } else {
                    kept.append(connection)
                }
            }
            parked = kept + accepted
        }
    }

    /// Accepts what is pending (at most 256 per round, so parked connections are not starved).
    private func acceptPending() -> [Connection] {
        var accepted: [Connection] = []
        for _ in 0..<256 {
            let fd = accept(listenFD, nil, nil)
            if fd < 0 {
                // EMFILE/ENFILE: back off instead of spinning; the pending connection stays queued.
                if errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM { usleep(10_000) }
                break
            }
            Socket.setCloseOnExec(fd)
            Socket.setIntOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            condition.lock()
            if connections.count >= configuration.maxConnections {
                condition.unlock()
                eventSink?(.connectionRejected(maxConnections: configuration.maxConnections))
                reject(fd, status: .serviceUnavailable, retryAfter: true,
                       message: "server is at its limit of \(configuration.maxConnections) connections; retry shortly")
                continue
            }
            Socket.setNonBlocking(fd)
            var session: TLSSession?
            if let tlsContext {
                guard let made = tlsContext.makeSession(fd: fd) else {
                    condition.unlock()
                    close(fd)
                    continue
                }
                session = made
            }
            let connection = Connection(
                fd: fd, server: self, configuration: configuration, handler: handler, tls: session)
            connections[ObjectIdentifier(connection)] = connection
            condition.unlock()
            accepted.append(connection)
        }
        return accepted
    }

    /// A parked connection's socket is ready: advance its handshake or start serving it.
    /// Returns whether it stays parked.
    private func advance(_ connection: Connection) -> Bool {
        guard case .handshake = connection.parkedPhase, let tls = connection.tls else {
            dispatch(connection)
            return false
        }
        if !connection.handshakeStarted {
            // A TLS connection opens with a handshake record (type 22); a letter is plain HTTP.
            var byte: UInt8 = 0
            let n = recv(connection.fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
            if n < 0 && (errno == EAGAIN || errno == EINTR) { return true }
            if n <= 0 {
                connection.closeParked()
                return false
            }
            if byte != 0x16 {
                let plainHTTP = (byte >= 0x41 && byte <= 0x5A)
                eventSink?(.tlsHandshakeFailed(
                    reason: plainHTTP ? "plain HTTP request on the TLS port" : "not a TLS handshake (first byte \(byte))"))
                if plainHTTP {
                    connection.detachParked()
                    reject(connection.fd, status: .badRequest, retryAfter: false,
                           message: "this port speaks HTTPS (TLS); send the request to https://, not http://")
                } else {
                    connection.closeParked()
                }
                return false
            }
            connection.handshakeStarted = true
        }
        switch tls.handshake() {
        case .done:
            connection.parkedPhase = .idle
            connection.idleSince = Socket.monotonicMilliseconds()
            if tls.hasBufferedInput {
                dispatch(connection)
                return false
            }
            return true
        case .wantRead:
            connection.parkedPhase = .handshake(wantWrite: false)
            return true
        case .wantWrite:
            connection.parkedPhase = .handshake(wantWrite: true)
            return true
        case .closed:
            eventSink?(.tlsHandshakeFailed(reason: "the client closed the connection during the handshake"))
            connection.closeParked()
            return false
        case .failed(let reason):
            eventSink?(.tlsHandshakeFailed(reason: reason))
            connection.closeParked()
            return false
        }
    }

    /// A parked connection's deadline passed: an idle one closes quietly, a stalled handshake is reported.
    private func expire(_ connection: Connection) {
        if case .handshake = connection.parkedPhase, let timeout = configuration.tls?.handshakeTimeout {
            eventSink?(.tlsHandshakeFailed(reason: "no TLS handshake within \(timeout)"))
        }
        connection.closeParked()
    }

    /// Serves the connection on a thread of its own until it is idle again.
    private func dispatch(_ connection: Connection) {
        let thread = Thread { connection.serve() }
        thread.name = "http-connection"
        thread.start()
    }

    /// Called by a serving thread: the connection is idle; watch it again.
    func park(_ connection: Connection) {
        condition.lock()
        returning.append(connection)
        let wake = loopWake.write
        condition.unlock()
        Socket.wake(wake)
    }

    /// Draining: an idle connection whose next request has already arrived is served (its response
    /// closes it); every other parked connection closes now.
    private func sweepForDrain() {
        guard !parked.isEmpty else { return }
        var fds = parked.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        _ = poll(&fds, nfds_t(fds.count), 0)
        for (i, connection) in parked.enumerated() {
            var byte: UInt8 = 0
            if case .idle = connection.parkedPhase, fds[i].revents & Int16(POLLIN) != 0,
                recv(connection.fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) > 0
            {
                dispatch(connection)
            } else {
                connection.closeParked()
            }
        }
        parked = []
    }

    /// Answers a plain-text error and closes, off the event loop; beyond 64 pending, just closes.
    private func reject(_ fd: Int32, status: HTTPStatus, retryAfter: Bool, message: String) {
        condition.lock()
        guard rejectsInFlight < 64 else {
            condition.unlock()
            close(fd)
            return
        }
        rejectsInFlight += 1
        condition.unlock()
        let body = Array((message + "\n").utf8)
        var head = "HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\nDate: \(Connection.httpDate())\r\n"
        head += "Server: \(configuration.serverName)\r\nX-Request-Id: \(Connection.requestID(for: HTTPHeaders()))\r\n"
        if let origin = configuration.corsAllowedOrigin { head += "Access-Control-Allow-Origin: \(origin)\r\n" }
        if retryAfter { head += "Retry-After: 1\r\n" }
        head += "Content-Type: text/plain; charset=utf-8\r\n"
        head += "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        let bytes = Array(head.utf8) + body
        rejectQueue.async { [self] in
            Socket.setBlocking(fd)
            Socket.setTimeout(fd, option: SO_SNDTIMEO, milliseconds: 1000)
            _ = Socket.sendAll(fd, bytes)
            Socket.lingeringClose(fd, milliseconds: 200, maxBytes: 64 * 1024)
            condition.lock()
            rejectsInFlight -= 1
            condition.unlock()
        }
    }

    func connectionEnded(_ connection: Connection) {
        condition.lock()
        connections[ObjectIdentifier(connection)] = nil
        condition.broadcast()
        condition.unlock()
    }

    // MARK: - Shutdown

    /// Graceful drain: stops accepting (new connections are refused once this has begun), closes
    /// idle keep-alive connections (serving first any whose next request already arrived), lets
    /// in-flight requests finish (their responses say `Connection: close`) until `drainDeadline`
    /// from now, then cuts the rest (their handlers see the client gone) and returns once their
    /// threads have ended (waiting at most one more second for handlers that ignore the
    /// disconnect). Idempotent; blocks the caller.
    public func shutdown(drainDeadline: Duration) {
        condition.lock()
        guard state == .running else {
            if state == .idle { state = .stopped }
            condition.unlock()
            return
        }
        state = .draining
        let wake = loopWake.write
        condition.unlock()

        Socket.wake(wake)
        listenerClosed.wait()
        condition.lock()
        let draining = Array(connections.values)
        condition.unlock()
        for connection in draining { connection.wake() }

        let deadline = Date(timeIntervalSinceNow: Double(Socket.milliseconds(drainDeadline)) / 1000)
        condition.lock()
        while !connections.isEmpty && condition.wait(until: deadline) {}
        let stragglers = Array(connections.values)
        condition.unlock()

        for connection in stragglers { connection.forceClose() }
        let grace = Date(timeIntervalSinceNow: 1)
        condition.lock()
        while !connections.isEmpty && condition.wait(until: grace) {}
        state = .stopped
        condition.unlock()
        Socket.wake(wake)
        eventLoopDone.wait()
        close(loopWake.read)
        close(loopWake.write)
    }
}
