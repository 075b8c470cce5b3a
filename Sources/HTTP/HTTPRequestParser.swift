import Foundation

/// Incremental HTTP/1.1 request parser (RFC 9112): feed it bytes as they arrive, then take
/// complete requests out in order.
///
/// Handles the request line, header fields (case-insensitive lookup, obsolete line folding
/// rejected), Content-Length and chunked bodies (with chunk extensions and trailers),
/// `Expect: 100-continue`, keep-alive semantics of HTTP/1.0 and 1.1, and pipelined requests.
/// Framing that could smuggle a request (Content-Length with Transfer-Encoding, differing
/// Content-Length values, codings other than a final chunked) is an error. After the first error
/// the parser stays failed: the caller answers `error.status` and closes the connection.
///
/// However the input is split across `append` calls, the parser yields the same requests.
/// Value type; not shared between threads (one per connection).
public struct HTTPRequestParser: Sendable {
    /// Where the parser stands in the current request.
    public enum Phase: Sendable, Equatable {
        /// No byte of a next request is buffered.
        case idle
        /// Part of a request head is buffered.
        case head
        /// The head is complete; body bytes are awaited.
        case body
    }

    /// Most bytes of request line plus headers, and separately of a trailer section; beyond -> 431.
    public let maxHeaderBytes: Int
    /// Most body bytes after de-chunking; beyond -> 413.
    public let maxBodyBytes: Int
    /// Most bytes of the request-target; beyond -> 414.
    public let maxRequestTargetBytes: Int

    /// Longest chunk-size line (size plus extensions) accepted.
    static let maxChunkLineBytes = 4096

    private var buffer: [UInt8] = []
    /// Index of the first unconsumed byte in `buffer`.
    private var start = 0
    /// Head scanning progress, relative to `start`: where the current line begins and how far LF was searched.
    private var headLineStart = 0
    private var headScanned = 0
    private var state: State = .head
    private var body: [UInt8] = []
    private var trailers = HTTPHeaders()
    private var trailerBytes = 0
    private var failure: HTTPParseError?

    private enum State {
        case head
        case fixedBody(Head, length: Int)
        case chunkSize(Head)
        case chunkData(Head, remaining: Int)
        case chunkDataEnd(Head)
        case trailers(Head)
    }

    private struct Head {
        var method: String
        var target: String
        var version: HTTPVersion
        var headers: HTTPHeaders
        var keepAlive: Bool
        var expectContinue: Bool
    }

    /// A parser with explicit limits (bytes).
    public init(maxHeaderBytes: Int = 64 * 1024, maxBodyBytes: Int = 8 * 1024 * 1024, maxRequestTargetBytes: Int = 8 * 1024) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxBodyBytes = maxBodyBytes
        self.maxRequestTargetBytes = maxRequestTargetBytes
    }

    /// A parser with the limits of a server configuration.
    public init(configuration: HTTPServerConfiguration) {
        self.init(
            maxHeaderBytes: configuration.maxHeaderBytes, maxBodyBytes: configuration.maxBodyBytes,
            maxRequestTargetBytes: configuration.maxRequestTargetBytes)
    }

    // MARK: - Input

    /// Buffers bytes received from the connection.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        compactIfWorthwhile()
        buffer.append(contentsOf: bytes)
    }

    /// Buffers bytes received from the connection.
    public mutating func append<Bytes: Sequence>(contentsOf bytes: Bytes) where Bytes.Element == UInt8 {
        compactIfWorthwhile()
        buffer.append(contentsOf: bytes)
    }

    /// Where the parser stands: idle (nothing of a next request buffered), in a head, or in a body.
    public var phase: Phase {
        switch state {
        case .head: return buffer.count > start ? .head : .idle
        default: return .body
        }
    }

    /// True while the current request's head said `Expect: 100-continue` (HTTP/1.1) and its body
    /// is still incomplete: the server should answer `100 Continue` once.
    public var expectsContinue: Bool {
        switch state {
        case .head: return false
        case .fixedBody(let head, _), .chunkSize(let head), .chunkData(let head, _), .chunkDataEnd(let head),
            .trailers(let head):
            return head.expectContinue
        }
    }

    /// Bytes buffered and not yet consumed by a returned request.
    public var bufferedByteCount: Int { buffer.count - start }

    // MARK: - Output

    /// The next complete request, or nil when more bytes are needed. Call repeatedly to drain
    /// pipelined requests. Throws the first error again on every later call.
    public mutating func nextRequest() throws(HTTPParseError) -> HTTPRequest? {
        if let failure { throw failure }
        do {
            return try step()
        } catch {
            failure = error
            throw error
        }
    }

    private mutating func step() throws(HTTPParseError) -> HTTPRequest? {
        while true {
            switch state {
            case .head:
                guard let head = try parseHeadIfComplete() else { return nil }
                if let next = try bodyState(for: head) {
                    state = next
                } else {
                    return complete(head)
                }

            case .fixedBody(let head, let length):
                guard buffer.count - start >= length else { return nil }
                body = Array(buffer[start..<(start + length)])
                start += length
                return complete(head)

            case .chunkSize(let head):
                // The line (size, extensions) may hold maxChunkLineBytes bytes before its CRLF.
                let lineRoom = Self.maxChunkLineBytes + 2
                guard let lf = findLF(from: start, within: lineRoom) else {
                    if buffer.count - start >= lineRoom {
                        throw .invalidChunkSize(text(start..<(start + 40)))
                    }
                    return nil
                }
                guard lf > start, buffer[lf - 1] == 0x0D else { throw .invalidChunkFraming }
                let size = try parseChunkSize(start..<(lf - 1))
                start = lf + 1
                if size == 0 {
                    trailerBytes = 0
                    state = .trailers(head)
                } else {
                    guard body.count + size <= maxBodyBytes else {
                        throw .bodyTooLarge(limitBytes: maxBodyBytes, declaredBytes: nil)
                    }
                    state = .chunkData(head, remaining: size)
                }

            case .chunkData(let head, let remaining):
                let take = min(buffer.count - start, remaining)
                guard take > 0 else { return nil }
                body.append(contentsOf: buffer[start..<(start + take)])
                start += take
                if take == remaining {
                    state = .chunkDataEnd(head)
                } else {
                    state = .chunkData(head, remaining: remaining - take)
                    return nil
                }

            case .chunkDataEnd(let head):
                guard buffer.count - start >= 2 else {
                    if buffer.count > start, buffer[start] != 0x0D { throw .invalidChunkFraming }
                    return nil
                }
                guard buffer[start] == 0x0D, buffer[start + 1] == 0x0A else { throw .invalidChunkFraming }
                start += 2
                state = .chunkSize(head)

            case .trailers(let head):
                // The trailer section, line ends included, may hold maxHeaderBytes bytes (like the head).
                let room = maxHeaderBytes - trailerBytes
                guard let lf = findLF(from: start, within: room) else {
                    if buffer.count - start >= room { throw .headersTooLarge(limitBytes: maxHeaderBytes) }
                    return nil
                }
                trailerBytes += lf + 1 - start
                var lineEnd = lf
                if lineEnd > start, buffer[lineEnd - 1] == 0x0D { lineEnd -= 1 }
                let line = start..<lineEnd
                start = lf + 1
                if line.isEmpty { return complete(head) }
                if buffer[line].contains(0x0D) { throw .bareCarriageReturn }
                let field = try parseField(line)
                trailers.add(name: field.name, value: field.value)
            }
        }
    }

    // MARK: - Head

    /// Finds the end of the head (an empty line); parses it when complete. Leading empty lines are skipped
    /// (RFC 9112 section 2.2).
    private mutating func parseHeadIfComplete() throws(HTTPParseError) -> Head? {
        var j = start + headScanned
        var headEnd: Int?
        while j < buffer.count {
            if buffer[j] == 0x0A {
                let lineStart = start + headLineStart
                let length = j - lineStart
                let isEmpty = length == 0 || (length == 1 && buffer[j - 1] == 0x0D)
                if isEmpty {
                    if headLineStart == 0 {
                        start = j + 1
                        headScanned = 0
                        j = start
                        continue
                    }
                    headEnd = j + 1
                    break
                }
                headLineStart = j + 1 - start
            }
            j += 1
        }
        guard let end = headEnd else {
            headScanned = buffer.count - start
            if buffer.count - start > maxHeaderBytes { throw .headersTooLarge(limitBytes: maxHeaderBytes) }
            return nil
        }
        guard end - start <= maxHeaderBytes else { throw .headersTooLarge(limitBytes: maxHeaderBytes) }
        let headRange = start..<end
        start = end
        headLineStart = 0
        headScanned = 0
        return try parseHead(headRange)
    }

    private func parseHead(_ range: Range<Int>) throws(HTTPParseError) -> Head {
        var lines: [Range<Int>] = []
        var lineStart = range.lowerBound
        for i in range where buffer[i] == 0x0A {
            var lineEnd = i
            if lineEnd > lineStart, buffer[lineEnd - 1] == 0x0D { lineEnd -= 1 }
            if lineEnd > lineStart { lines.append(lineStart..<lineEnd) }
            lineStart = i + 1
        }
        for line in lines where buffer[line].contains(0x0D) { throw .bareCarriageReturn }
        guard let requestLine = lines.first else { throw .invalidRequestLine("") }

        // Request line: method SP request-target SP HTTP-version, single spaces (RFC 9112 section 3).
        let parts = buffer[requestLine].split(separator: 0x20, omittingEmptySubsequences: false)
        guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty }) else {
            throw .invalidRequestLine(text(requestLine))
        }
        let methodBytes = parts[0], targetBytes = parts[1], versionBytes = parts[2]
        guard methodBytes.allSatisfy(isTokenByte) else { throw .invalidMethod(String(decoding: methodBytes, as: UTF8.self)) }
        guard targetBytes.count <= maxRequestTargetBytes else {
            throw .requestTargetTooLong(limitBytes: maxRequestTargetBytes)
        }
        guard targetBytes.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) else {
            throw .invalidRequestTarget(String(decoding: targetBytes, as: UTF8.self))
        }
        let version = try parseVersion(versionBytes)

        var headers = HTTPHeaders()
        for line in lines.dropFirst() {
            let field = try parseField(line)
            headers.add(name: field.name, value: field.value)
        }

        if version == .http1_1 {
            let hosts = headers.values(for: "Host")
            if hosts.count != 1 {
                throw .invalidHost(hosts.isEmpty ? "request has no Host header" : "request has \(hosts.count) Host headers")
            }
        }
        var expectContinue = false
        let expectations = headers.values(for: "Expect")
        if !expectations.isEmpty {
            let value = expectations.joined(separator: ", ")
            guard expectations.count == 1, HTTPHeaders.namesEqual(String(value.trimmingHTTPWhitespace()), "100-continue")
            else { throw .unsupportedExpectation(value) }
            expectContinue = version == .http1_1
        }
        let keepAlive = version == .http1_1
            ? !headers.containsToken("close", in: "Connection")
            : headers.containsToken("keep-alive", in: "Connection")
        return Head(
            method: String(decoding: methodBytes, as: UTF8.self), target: String(decoding: targetBytes, as: UTF8.self),
            version: version, headers: headers, keepAlive: keepAlive, expectContinue: expectContinue)
    }

    private func parseVersion(_ bytes: ArraySlice<UInt8>) throws(HTTPParseError) -> HTTPVersion {
        let b = Array(bytes)
        let text = String(decoding: b, as: UTF8.self)
        guard b.count == 8, b[0..<5].elementsEqual("HTTP/".utf8), isDigit(b[5]), b[6] == 0x2E, isDigit(b[7]) else {
            throw .invalidVersion(text)
        }
        let version = HTTPVersion(major: Int(b[5] - 0x30), minor: Int(b[7] - 0x30))
        guard version == .http1_1 || version == .http1_0 else { throw .unsupportedVersion(text) }
        return version
    }

    /// Parses `name: value` (RFC 9112 section 5): token name, no whitespace before the colon, OWS trimmed.
    private func parseField(_ line: Range<Int>) throws(HTTPParseError) -> (name: String, value: String) {
        let first = buffer[line.lowerBound]
        if first == 0x20 || first == 0x09 { throw .obsoleteLineFolding(text(line)) }
        guard let colon = buffer[line].firstIndex(of: 0x3A) else { throw .invalidHeaderLine(text(line)) }
        let nameBytes = buffer[line.lowerBound..<colon]
        guard !nameBytes.isEmpty, nameBytes.allSatisfy(isTokenByte) else { throw .invalidHeaderLine(text(line)) }
        var valueStart = colon + 1
        var valueEnd = line.upperBound
        while valueStart < valueEnd, buffer[valueStart] == 0x20 || buffer[valueStart] == 0x09 { valueStart += 1 }
        while valueEnd > valueStart, buffer[valueEnd - 1] == 0x20 || buffer[valueEnd - 1] == 0x09 { valueEnd -= 1 }
        let name = String(decoding: nameBytes, as: UTF8.self)
        let valueBytes = buffer[valueStart..<valueEnd]
        guard valueBytes.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
            throw .invalidHeaderValue(name: name)
        }
        return (name, String(decoding: valueBytes, as: UTF8.self))
    }

    // MARK: - Body framing

    /// The state that reads the body of `head`, or nil when it has none (RFC 9112 section 6.3).
    private func bodyState(for head: Head) throws(HTTPParseError) -> State? {
        let transferEncodings = head.headers.values(for: "Transfer-Encoding")
        let contentLengths = head.headers.values(for: "Content-Length")
        if !transferEncodings.isEmpty {
            guard contentLengths.isEmpty else { throw .contentLengthWithTransferEncoding }
            let value = transferEncodings.joined(separator: ", ")
            guard head.version == .http1_1 else { throw .invalidTransferEncoding(value) }
            let codings = value.split(separator: ",").map { String($0.trimmingHTTPWhitespace()).lowercased() }
            guard codings.last == "chunked", codings.filter({ $0 == "chunked" }).count == 1 else {
                throw .invalidTransferEncoding(value)
            }
            if let other = codings.first(where: { $0 != "chunked" }) { throw .unsupportedTransferEncoding(other) }
            return .chunkSize(head)
        }
        guard !contentLengths.isEmpty else { return nil }
        var length: Int?
        for element in contentLengths.flatMap({ $0.split(separator: ",", omittingEmptySubsequences: false) }) {
            let digits = element.trimmingHTTPWhitespace()
            guard !digits.isEmpty, digits.count <= 18, digits.utf8.allSatisfy(isDigit), let value = Int(digits) else {
                throw .invalidContentLength(String(element))
            }
            if let length, length != value { throw .conflictingContentLength(contentLengths) }
            length = value
        }
        let declared = length ?? 0
        guard declared <= maxBodyBytes else { throw .bodyTooLarge(limitBytes: maxBodyBytes, declaredBytes: declared) }
        return declared == 0 ? nil : .fixedBody(head, length: declared)
    }

    /// Parses `1*HEXDIG [ BWS ";" chunk-ext ]` (RFC 9112 section 7.1.1).
    private func parseChunkSize(_ line: Range<Int>) throws(HTTPParseError) -> Int {
        var size = 0
        var i = line.lowerBound
        while i < line.upperBound, let digit = hexValue(buffer[i]) {
            guard i - line.lowerBound < 15 else { throw .invalidChunkSize(text(line)) }
            size = size &* 16 &+ digit
            i += 1
        }
        guard i > line.lowerBound else { throw .invalidChunkSize(text(line)) }
        while i < line.upperBound, buffer[i] == 0x20 || buffer[i] == 0x09 { i += 1 }
        if i < line.upperBound {
            guard buffer[i] == 0x3B,
                buffer[i..<line.upperBound].allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) })
            else { throw .invalidChunkSize(text(line)) }
        }
        return size
    }

    // MARK: - Helpers

    private mutating func complete(_ head: Head) -> HTTPRequest {
        let request = HTTPRequest(
            method: head.method, target: head.target, version: head.version, headers: head.headers,
            body: Data(body), trailers: trailers, keepAlive: head.keepAlive)
        state = .head
        body = []
        trailers = HTTPHeaders()
        return request
    }

    /// Drops consumed bytes when that frees much memory or costs nothing.
    private mutating func compactIfWorthwhile() {
        guard start > 0 else { return }
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start >= 16 * 1024, start * 2 >= buffer.count {
            buffer.removeSubrange(0..<start)
            start = 0
        }
    }

    /// Index of the first LF among the `count` bytes from `from` (fewer when fewer are buffered).
    /// Callers treat "no LF and at least `count` bytes buffered" as over the limit, so a line is
    /// judged the same whether it arrived in one read or byte by byte.
    private func findLF(from: Int, within count: Int) -> Int? {
        let end = min(buffer.count, from + max(count, 0))
        var i = from
        while i < end {
            if buffer[i] == 0x0A { return i }
            i += 1
        }
        return nil
    }

    private func text(_ range: Range<Int>) -> String {
        let clamped = range.clamped(to: 0..<buffer.count)
        return String(decoding: buffer[clamped], as: UTF8.self)
    }
}

/// RFC 9110 tchar: ALPHA, DIGIT and !#$%&'*+-.^_`|~
@inline(__always)
func isTokenByte(_ b: UInt8) -> Bool {
    switch b {
    case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
    case 0x21, 0x23, 0x24, 0x25, 0x26, 0x27, 0x2A, 0x2B, 0x2D, 0x2E, 0x5E, 0x5F, 0x60, 0x7C, 0x7E: return true
    default: return false
    }
}

@inline(__always)
private func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

@inline(__always)
private func hexValue(_ b: UInt8) -> Int? {
    switch b {
    case 0x30...0x39: return Int(b - 0x30)
    case 0x41...0x46: return Int(b - 0x41 + 10)
    case 0x61...0x66: return Int(b - 0x61 + 10)
    default: return nil
    }
}
