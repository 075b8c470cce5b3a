import Foundation
import HTTP
import Testing

/// Parses `raw` fed in the given pieces; returns every request and the error, if any.
func parse(
    _ pieces: [[UInt8]], parser: HTTPRequestParser = HTTPRequestParser()
) -> (requests: [HTTPRequest], error: HTTPParseError?) {
    var parser = parser
    var requests: [HTTPRequest] = []
    for piece in pieces {
        parser.append(contentsOf: piece)
        do {
            while let request = try parser.nextRequest() { requests.append(request) }
        } catch {
            return (requests, error)
        }
    }
    return (requests, nil)
}

private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// Requests that exercise every framing path; each is parsed whole, split at every byte boundary, and byte by byte.
private let canonicalRequests: [String] = [
    "GET /v1/models?x=1 HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n",
    "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"model\":\"m\"}",
    "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n7 ; ext\r\n, world\r\n0\r\nX-Checksum: abc\r\n\r\n",
    "GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "\r\nGET /after-crlf HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Spaces:   padded value \t\r\n\r\n",
    "POST /lf-only HTTP/1.1\nHost: a\nContent-Length: 3\n\nabc",
    "PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody",
]

@Suite struct ParserTests {
    @Test func parsesSimpleGet() throws {
        let result = parse([bytes(canonicalRequests[0])])
        #expect(result.error == nil)
        let request = try #require(result.requests.first)
        #expect(request.method == "GET")
        #expect(request.target == "/v1/models?x=1")
        #expect(request.path == "/v1/models")
        #expect(request.query == "x=1")
        #expect(request.version == .http1_1)
        #expect(request.headers["host"] == "localhost")
        #expect(request.headers["ACCEPT"] == "*/*")
        #expect(request.body.isEmpty)
        #expect(request.keepAlive)
    }

    @Test func parsesContentLengthBody() throws {
        let request = try #require(parse([bytes(canonicalRequests[1])]).requests.first)
        #expect(String(decoding: request.body, as: UTF8.self) == "{\"model\":\"m\"}")
        #expect(request.headers["content-type"] == "application/json")
    }

    @Test func parsesChunkedBodyWithExtensionsAndTrailers() throws {
        let request = try #require(parse([bytes(canonicalRequests[2])]).requests.first)
        #expect(String(decoding: request.body, as: UTF8.self) == "hello, world")
        #expect(request.trailers["x-checksum"] == "abc")
    }

    @Test func trimsValuesAndSkipsLeadingEmptyLine() throws {
        let request = try #require(parse([bytes(canonicalRequests[4])]).requests.first)
        #expect(request.target == "/after-crlf")
        #expect(request.headers["X-Empty"] == "")
        #expect(request.headers["x-spaces"] == "padded value")
    }

    @Test(arguments: canonicalRequests.indices)
    func sameRequestAtEverySplitPoint(index: Int) throws {
        let raw = bytes(canonicalRequests[index])
        let whole = parse([raw])
        #expect(whole.error == nil)
        #expect(whole.requests.count == 1)
        for cut in 0...raw.count {
            let split = parse([Array(raw[..<cut]), Array(raw[cut...])])
            #expect(split.error == nil, "split at \(cut)")
            #expect(split.requests == whole.requests, "split at \(cut)")
        }
        let byteByByte = parse(raw.map { [$0] })
        #expect(byteByByte.requests == whole.requests)
    }

    @Test func pipelinedRequestsComeOutInOrderHoweverSplit() throws {
        let raw = bytes(canonicalRequests[0] + canonicalRequests[1] + canonicalRequests[2] + canonicalRequests[6])
        let whole = parse([raw])
        #expect(whole.error == nil)
        #expect(whole.requests.map(\.target) == ["/v1/models?x=1", "/v1/chat/completions", "/up", "/x"])
        #expect(parse(raw.map { [$0] }).requests == whole.requests)
        for cut in stride(from: 0, through: raw.count, by: 7) {
            #expect(parse([Array(raw[..<cut]), Array(raw[cut...])]).requests == whole.requests, "split at \(cut)")
        }
    }

    @Test func largeBodyInManyPieces() throws {
        let payload = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var chunked = bytes("POST /big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        var offset = 0
        while offset < payload.count {
            let size = min(4099, payload.count - offset)
            chunked += bytes(String(size, radix: 16) + "\r\n") + payload[offset..<(offset + size)] + bytes("\r\n")
            offset += size
        }
        chunked += bytes("0\r\n\r\n")
        let pieces = stride(from: 0, to: chunked.count, by: 1000).map { Array(chunked[$0..<min($0 + 1000, chunked.count)]) }
        let request = try #require(parse(pieces).requests.first)
        #expect(Array(request.body) == payload)
    }

    @Test(arguments: [
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        ("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false),
        ("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, CLOSE\r\n\r\n", false),
        ("GET / HTTP/1.0\r\n\r\n", false),
        ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
    ])
    func keepAliveSemantics(raw: String, expected: Bool) throws {
        let request = try #require(parse([bytes(raw)]).requests.first)
        #expect(request.keepAlive == expected)
    }

    @Test func phaseAndExpectContinue() throws {
        var parser = HTTPRequestParser()
        #expect(parser.phase == .idle)
        parser.append(contentsOf: bytes("PUT /x HTTP/1.1\r\nHost: a\r\n"))
        #expect(try parser.nextRequest() == nil)
        #expect(parser.phase == .head)
        #expect(!parser.expectsContinue)
        parser.append(contentsOf: bytes("Expect: 100-continue\r\nContent-Length: 4\r\n\r\n"))
        #expect(try parser.nextRequest() == nil)
        #expect(parser.phase == .body)
        #expect(parser.expectsContinue)
        parser.append(contentsOf: bytes("bodyGET"))
        let request = try #require(try parser.nextRequest())
        #expect(String(decoding: request.body, as: UTF8.self) == "body")
        #expect(!parser.expectsContinue)
        #expect(parser.phase == .head)
        #expect(parser.bufferedByteCount == 3)
    }

    @Test func expectContinueIsIgnoredForHTTP10() throws {
        var parser = HTTPRequestParser()
        parser.append(contentsOf: bytes("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"))
        #expect(try parser.nextRequest() == nil)
        #expect(!parser.expectsContinue)
    }

    @Test func errorIsSticky() {
        var parser = HTTPRequestParser()
        parser.append(contentsOf: bytes("GET / HTTP/9.9\r\n\r\n"))
        #expect(throws: HTTPParseError.unsupportedVersion("HTTP/9.9")) { try parser.nextRequest() }
        parser.append(contentsOf: bytes("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(throws: HTTPParseError.unsupportedVersion("HTTP/9.9")) { try parser.nextRequest() }
    }
}

// MARK: - Malformed corpus

/// (name, raw request, expected status). Small limits: 512-byte heads, 1000-byte bodies, 64-byte targets.
private let malformedCorpus: [(String, String, Int)] = [
    ("request line with two parts", "GET /\r\nHost: a\r\n\r\n", 400),
    ("request line with double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("request line with four parts", "GET / x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("method with bad character", "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("target with control byte", "GET /a\u{01}b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("target too long", "GET /" + String(repeating: "a", count: 100) + " HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    ("malformed version", "GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400),
    ("version without minor", "GET / HTTP/2\r\nHost: a\r\n\r\n", 400),
    ("unsupported version", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ("HTTP/0.9 style version", "GET / HTTP/0.9\r\n\r\n", 505),
    ("header without colon", "GET / HTTP/1.1\r\nHost: a\r\nNoColonHere\r\n\r\n", 400),
    ("space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    ("empty header name", "GET / HTTP/1.1\r\nHost: a\r\n: value\r\n\r\n", 400),
    ("obsolete line folding", "GET / HTTP/1.1\r\nHost: a\r\nX-Long: part one\r\n  part two\r\n\r\n", 400),
    ("folding with tab", "GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n\ttwo\r\n\r\n", 400),
    ("NUL in header value", "GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\u{00}b\r\n\r\n", 400),
    ("bare CR in header", "GET / HTTP/1.1\r\nHost: a\rX-Injected: 1\r\n\r\n", 400),
    ("missing Host on HTTP/1.1", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
    ("two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("Content-Length with Transfer-Encoding", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("duplicate differing Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("differing Content-Length list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!", 400),
    ("negative Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    ("signed Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400),
    ("non-numeric Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ten\r\n\r\n", 400),
    ("hex Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400),
    ("empty Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400),
    ("huge Content-Length (overflows)", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
    ("Content-Length over body limit", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n", 413),
    ("Transfer-Encoding gzip only", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    ("Transfer-Encoding identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 400),
    ("chunked not last", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ("chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("gzip before chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    ("chunked in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("non-hex chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ("empty chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", 400),
    ("negative chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400),
    ("overflowing chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", 400),
    ("chunk size line with bare LF", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
    ("chunk data without CRLF", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400),
    ("chunk over body limit", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n", 413),
    ("chunks summing over body limit", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1f4\r\n" + String(repeating: "x", count: 500) + "\r\n1f5\r\n", 413),
    ("header section over limit", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + String(repeating: "b", count: 600) + "\r\n\r\n", 431),
    ("unterminated head over limit", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + String(repeating: "b", count: 600), 431),
    ("trailers over limit", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: " + String(repeating: "t", count: 600) + "\r\n\r\n", 431),
    ("unknown expectation", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx", 417),
]

@Suite struct MalformedRequestTests {
    @Test(arguments: malformedCorpus)
    func malformedRequestGetsItsStatus(name: String, raw: String, status: Int) {
        let parser = HTTPRequestParser(maxHeaderBytes: 512, maxBodyBytes: 1000, maxRequestTargetBytes: 64)
        let result = parse([bytes(raw)], parser: parser)
        #expect(result.requests.isEmpty, "\(name)")
        let error = result.error
        #expect(error?.status.code == status, "\(name): got \(String(describing: error))")
        // The same bytes fed one at a time fail the same way.
        let byteWise = parse(bytes(raw).map { [$0] }, parser: parser)
        #expect(byteWise.error?.status.code == status, "\(name) byte by byte")
        #expect(!(error?.description.isEmpty ?? true))
    }

    @Test func messagesNameTheProblem() {
        #expect(HTTPParseError.conflictingContentLength(["5", "6"]).description.contains("5, 6"))
        #expect(HTTPParseError.headersTooLarge(limitBytes: 512).description.contains("512"))
        #expect(HTTPParseError.bodyTooLarge(limitBytes: 1000, declaredBytes: 1001).description.contains("1001"))
        #expect(HTTPParseError.invalidHeaderLine("NoColonHere").description.contains("NoColonHere"))
        #expect(HTTPParseError.contentLengthWithTransferEncoding.status == .badRequest)
        #expect(HTTPParseError.unsupportedTransferEncoding("gzip").status == .notImplemented)
    }

    @Test func identicalDuplicateContentLengthIsAccepted() throws {
        let raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"
        let request = try #require(parse([bytes(raw)]).requests.first)
        #expect(String(decoding: request.body, as: UTF8.self) == "ok")
    }

    @Test func bodyExactlyAtLimitIsAccepted() throws {
        let parser = HTTPRequestParser(maxHeaderBytes: 512, maxBodyBytes: 1000)
        let raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + String(repeating: "x", count: 1000)
        #expect(parse([bytes(raw)], parser: parser).requests.first?.body.count == 1000)
    }
}

@Suite struct HeadersTests {
    @Test func caseInsensitiveLookupKeepsOrderAndDuplicates() {
        var headers = HTTPHeaders([("Set-Cookie", "a"), ("content-type", "text/plain"), ("SET-COOKIE", "b")])
        #expect(headers["Content-Type"] == "text/plain")
        #expect(headers.values(for: "set-cookie") == ["a", "b"])
        headers["set-cookie"] = "c"
        #expect(headers.values(for: "Set-Cookie") == ["c"])
        #expect(headers.count == 2)
        headers["Content-Type"] = nil
        #expect(!headers.contains("content-type"))
        #expect(HTTPHeaders([("Connection", "keep-alive, Upgrade")]).containsToken("upgrade", in: "connection"))
    }
}
