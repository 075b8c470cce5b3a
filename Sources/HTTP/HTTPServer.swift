import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A hand-rolled HTTP/1.1 server on POSIX sockets: an accept loop on its own thread and one
/// thread per connection (at most `maxConnections`; more get 503 and are closed).
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
    private var listenFD: Int32 = -1
    private var acceptWake: (read: Int32, write: Int32) = (-1, -1)
    private let acceptLoopDone = DispatchSemaphore(value: 0)
    private var boundPort = 0
    private var rejectsInFlight = 0
    private let rejectQueue = DispatchQueue(label: "CastServe.HTTP.reject")

    private enum State {
        case idle
        case running
        case draining
        case stopped
    }

    /// A server that will answer every request with `handler`. Nothing is bound until `start()`.
    public init(configuration: HTTPServerConfiguration, handler: any HTTPHandler) {
        self.configuration = configuration
        self.handler = handler
    }

    /// A server whose handler is a closure (see `HTTPHandler` for the contract).
    public convenience init(
        configuration: HTTPServerConfiguration, handler: @escaping @Sendable (HTTPRequest, HTTPResponder) -> Void
    ) {
        self.init(configuration: configuration, handler: HTTPClosureHandler(handler))
    }

    /// The bound TCP port (the ephemeral one when configured with port 0); 0 before `start()`.
    public var port: Int {
        condition.lock()
        defer { condition.unlock() }
        return boundPort
    }

    /// Connections currently open (served by a thread).
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

    /// Validates the configuration, binds and listens (SO_REUSEADDR; "::" is dual-stack), and starts
    /// the accept thread. Returns once the port is bound.
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
            let (fd, port) = try bindListener()
            guard let wake = Socket.makeWakePipe() else {
                close(fd)
                throw HTTPServerError.listenerFailed(
                    host: configuration.host, port: configuration.port, call: "pipe", reason: Socket.errorText(errno))
            }
            condition.lock()
            listenFD = fd
            boundPort = port
            acceptWake = wake
            condition.unlock()
        } catch {
            condition.lock()
            state = .idle
            condition.unlock()
            throw error
        }
        let thread = Thread { [self] in acceptLoop() }
        thread.name = "http-accept"
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

    // MARK: - Accept loop

    private func acceptLoop() {
        defer { acceptLoopDone.signal() }
        while true {
            var fds = [
                pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0),
                pollfd(fd: acceptWake.read, events: Int16(POLLIN), revents: 0),
            ]
            let rc = poll(&fds, 2, -1)
            if rc < 0 {
                if errno == EINTR { continue }
                return
            }
            if fds[1].revents != 0 { return }
            guard fds[0].revents != 0 else { continue }
            let fd = accept(listenFD, nil, nil)
            if fd < 0 {
                // EMFILE/ENFILE: back off instead of spinning; the pending connection stays queued.
                if errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM { usleep(10_000) }
                continue
            }
            Socket.setCloseOnExec(fd)
            Socket.setIntOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            Socket.setTimeout(fd, option: SO_SNDTIMEO, milliseconds: Socket.milliseconds(configuration.writeTimeout))

            condition.lock()
            if state != .running {
                condition.unlock()
                close(fd)
                return
            }
            if connections.count >= configuration.maxConnections {
                condition.unlock()
                reject(fd)
                continue
            }
            guard let connection = Connection(fd: fd, server: self, configuration: configuration, handler: handler)
            else {
                condition.unlock()
                close(fd)
                continue
            }
            connections[ObjectIdentifier(connection)] = connection
            condition.unlock()
            let thread = Thread { connection.run() }
            thread.name = "http-connection"
            thread.start()
        }
    }

    /// Answers 503 and closes, off the accept thread; beyond 64 pending rejections, just closes.
    private func reject(_ fd: Int32) {
        condition.lock()
        guard rejectsInFlight < 64 else {
            condition.unlock()
            close(fd)
            return
        }
        rejectsInFlight += 1
        condition.unlock()
        let message = Array(
            "server is at its limit of \(configuration.maxConnections) connections; retry shortly\n".utf8)
        var head = "HTTP/1.1 503 Service Unavailable\r\nDate: \(Connection.httpDate())\r\n"
        head += "Server: \(configuration.serverName)\r\nX-Request-Id: \(Connection.requestID(for: HTTPHeaders()))\r\n"
        if let origin = configuration.corsAllowedOrigin { head += "Access-Control-Allow-Origin: \(origin)\r\n" }
        head += "Retry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\n"
        head += "Content-Length: \(message.count)\r\nConnection: close\r\n\r\n"
        let bytes = Array(head.utf8) + message
        rejectQueue.async { [self] in
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

    /// Graceful drain: stops accepting, closes idle keep-alive connections, lets in-flight requests
    /// finish (their responses say `Connection: close`) until `drainDeadline` from now, then cuts the
    /// rest (their handlers see the client gone) and returns once their threads have ended (waiting at
    /// most one more second for handlers that ignore the disconnect). Idempotent; blocks the caller.
    public func shutdown(drainDeadline: Duration) {
        condition.lock()
        guard state == .running else {
            if state == .idle { state = .stopped }
            condition.unlock()
            return
        }
        state = .draining
        let draining = Array(connections.values)
        condition.unlock()

        Socket.wake(acceptWake.write)
        acceptLoopDone.wait()
        close(listenFD)
        close(acceptWake.read)
        close(acceptWake.write)
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
    }
}
