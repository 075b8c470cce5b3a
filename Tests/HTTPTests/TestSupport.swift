import Foundation
import HTTP
#if canImport(Glibc)
import Glibc
#endif

/// Errors of the test client.
enum TestClientError: Error, CustomStringConvertible {
    case connectFailed(Int32)
    case timedOut(String)
    case closedEarly(String)
    case malformed(String)

    var description: String {
        switch self {
        case .connectFailed(let code): return "connect failed, errno \(code)"
        case .timedOut(let what): return "timed out waiting for \(what)"
        case .closedEarly(let what): return "connection closed while waiting for \(what)"
        case .malformed(let what): return "malformed response: \(what)"
        }
    }
}

/// A response as read by `RawClient`.
struct RawResponse {
    var statusCode: Int
    var headers: [(String, String)]
    var body: [UInt8]

    func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }
    var text: String { String(decoding: body, as: UTF8.self) }
}

/// A blocking TCP client on raw sockets, so tests control every byte and every split.
final class RawClient {
    let fd: Int32
    private var buffer: [UInt8] = []

    init(port: Int, host: String = "127.0.0.1") throws {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let ai = list else {
            throw TestClientError.connectFailed(-1)
        }
        defer { freeaddrinfo(list) }
        fd = socket(ai.pointee.ai_family, ai.pointee.ai_socktype, 0)
        guard connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 else {
            let code = errno
            close(fd)
            throw TestClientError.connectFailed(code)
        }
    }

    deinit { close(fd) }

    /// How long a read waits for the server by default: a bound on the wait, not a speed check (a
    /// slow 2-core host with CPU-bound neighbours can starve the server's thread for seconds).
    static let waitSeconds = 30.0

    func send(_ text: String) { send(Array(text.utf8)) }

    func send(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if n <= 0 { return }
                offset += n
            }
        }
    }

    /// Reads whatever arrives within `timeout` seconds into the buffer; false on EOF/error.
    @discardableResult
    func fill(timeout: Double) throws -> Bool {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let rc = poll(&pfd, 1, Int32(timeout * 1000))
        if rc == 0 { throw TestClientError.timedOut("data") }
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &chunk, chunk.count, 0)
        if n <= 0 { return false }
        buffer += chunk[0..<n]
        return true
    }

    /// True when the server has closed the connection (EOF or reset) within `timeout` seconds,
    /// discarding any data that arrives first.
    func isClosedByServer(timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            do {
                if try !fill(timeout: max(0.01, deadline.timeIntervalSinceNow)) { return true }
            } catch {
                return false
            }
        }
        return false
    }

    /// Reads until `marker` appears in the buffer; returns and consumes everything up to and including it.
    func read(until marker: String, timeout: Double = waitSeconds) throws -> String {
        let needle = Array(marker.utf8)
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let range = findSubsequence(needle, in: buffer) {
                let out = String(decoding: buffer[..<range.upperBound], as: UTF8.self)
                buffer.removeFirst(range.upperBound)
                return out
            }
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { throw TestClientError.timedOut("'\(marker)'") }
            if try !fill(timeout: left) { throw TestClientError.closedEarly("'\(marker)'") }
        }
    }

    /// Reads one response: head, then a Content-Length, chunked or close-delimited body
    /// (no body for HEAD requests and 1xx/204/304).
    func readResponse(forHead: Bool = false, timeout: Double = waitSeconds) throws -> RawResponse {
        let head = try read(until: "\r\n\r\n", timeout: timeout)
        var lines = head.components(separatedBy: "\r\n").filter { !$0.isEmpty }
        guard !lines.isEmpty else { throw TestClientError.malformed(head) }
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let code = Int(statusLine[1]) else { throw TestClientError.malformed(head) }
        let headers = lines.map { line -> (String, String) in
            let colon = line.firstIndex(of: ":")!
            return (String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
        }
        var response = RawResponse(statusCode: code, headers: headers, body: [])
        if forHead || code < 200 || code == 204 || code == 304 { return response }
        if let length = response.header("Content-Length").flatMap(Int.init) {
            response.body = try readExactly(length, timeout: timeout)
        } else if response.header("Transfer-Encoding")?.lowercased() == "chunked" {
            while true {
                let sizeLine = try read(until: "\r\n", timeout: timeout)
                guard let size = Int(sizeLine.trimmingCharacters(in: .whitespacesAndNewlines), radix: 16) else {
                    throw TestClientError.malformed("chunk size \(sizeLine)")
                }
                if size == 0 {
                    _ = try read(until: "\r\n", timeout: timeout)
                    break
                }
                response.body += try readExactly(size, timeout: timeout)
                _ = try readExactly(2, timeout: timeout)
            }
        } else {
            response.body = try readToEnd(timeout: timeout)
        }
        return response
    }

    func readExactly(_ count: Int, timeout: Double = waitSeconds) throws -> [UInt8] {
        let deadline = Date().addingTimeInterval(timeout)
        while buffer.count < count {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { throw TestClientError.timedOut("\(count) bytes") }
            if try !fill(timeout: left) { throw TestClientError.closedEarly("\(count) bytes") }
        }
        let out = Array(buffer[..<count])
        buffer.removeFirst(count)
        return out
    }

    func readToEnd(timeout: Double = 5) throws -> [UInt8] {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { throw TestClientError.timedOut("end of stream") }
            if try !fill(timeout: left) { break }
        }
        let out = buffer
        buffer = []
        return out
    }
}

func findSubsequence(_ needle: [UInt8], in haystack: [UInt8]) -> Range<Int>? {
    guard needle.count <= haystack.count else { return nil }
    var i = 0
    while i + needle.count <= haystack.count {
        if haystack[i] == needle[0] && Array(haystack[i..<(i + needle.count)]) == needle {
            return i..<(i + needle.count)
        }
        i += 1
    }
    return nil
}

/// Starts a server on an ephemeral loopback port with short timeouts suited to tests.
func startTestServer(
    _ adjust: (inout HTTPServerConfiguration) -> Void = { _ in },
    handler: @escaping @Sendable (HTTPRequest, HTTPResponder) -> Void
) throws -> HTTPServer {
    var configuration = HTTPServerConfiguration(
        host: "127.0.0.1", port: 0, maxConnections: 16, headerReadTimeout: .seconds(2), bodyReadTimeout: .seconds(2),
        idleKeepAliveTimeout: .seconds(2), writeTimeout: .seconds(2))
    adjust(&configuration)
    let server = HTTPServer(configuration: configuration, handler: handler)
    try server.start()
    return server
}

/// Echoes method, path and body length; `/sleep?ms` waits first.
let echoHandler: @Sendable (HTTPRequest, HTTPResponder) -> Void = { request, responder in
    if request.path == "/sleep", let ms = request.query.flatMap(Int.init) { usleep(UInt32(ms * 1000)) }
    responder.send(HTTPResponse(contentType: "text/plain", body: "\(request.method) \(request.path) \(request.body.count)"))
}

/// Runs curl with arguments; returns (exit status, stdout).
func runCurl(_ arguments: [String]) throws -> (Int32, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
    process.arguments = ["-sS", "--max-time", "10"] + arguments
    let out = Pipe()
    process.standardOutput = out
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// A thread-safe flag/counter box for callbacks.
final class Box<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    var get: Value {
        lock.lock()
        defer { lock.unlock() }
        return value
    }
    func set(_ newValue: Value) {
        lock.lock()
        value = newValue
        lock.unlock()
    }
    func update(_ body: (inout Value) -> Void) {
        lock.lock()
        body(&value)
        lock.unlock()
    }
}
