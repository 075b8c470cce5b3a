import Foundation
import HTTP
import Testing

/// The gzip coding: round trips, the decoded-size limit (zip bombs), corrupt input, Accept-Encoding
/// negotiation, request decoding, and compressed responses from a live server.
@Suite struct GzipTests {
    /// Deterministic bytes: compressible text or incompressible noise (xorshift, seeded).
    static func sample(count: Int, compressible: Bool, seed: UInt64 = 42) -> Data {
        if compressible {
            let line = Array("data: {\"choices\":[{\"delta\":{\"content\":\"token\"}}]}\n".utf8)
            return Data((0..<count).map { line[$0 % line.count] })
        }
        var state = seed
        return Data((0..<count).map { _ in
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return UInt8(truncatingIfNeeded: state)
        })
    }

    @Test(arguments: [0, 1, 31, 1024, 65_537, 300_001])
    func roundTripsAnySize(count: Int) throws {
        for compressible in [true, false] {
            let original = Self.sample(count: count, compressible: compressible)
            let packed = Gzip.compress(original)
            #expect(packed.prefix(2) == Data([0x1F, 0x8B]), "gzip magic")
            #expect(try Gzip.decompress(packed, maxBytes: count) == original, "count \(count), compressible \(compressible)")
            if compressible && count >= 1024 { #expect(packed.count < count / 10) }
        }
    }

    @Test func concatenatedMembersAndTrailingZerosDecodeWhole() throws {
        let a = Self.sample(count: 5000, compressible: true), b = Self.sample(count: 7000, compressible: false)
        var joined = Gzip.compress(a) + Gzip.compress(b)
        #expect(try Gzip.decompress(joined, maxBytes: 12_000) == a + b)
        joined.append(contentsOf: [0, 0, 0, 0])
        #expect(try Gzip.decompress(joined, maxBytes: 12_000) == a + b)
    }

    @Test func decodingStopsAtTheLimit() throws {
        let body = Self.sample(count: 10_000, compressible: true)
        let packed = Gzip.compress(body)
        #expect(try Gzip.decompress(packed, maxBytes: 10_000).count == 10_000)
        #expect(throws: HTTPParseError.decodedBodyTooLarge(limitBytes: 9_999)) {
            try Gzip.decompress(packed, maxBytes: 9_999)
        }
        #expect(throws: HTTPParseError.decodedBodyTooLarge(limitBytes: 0)) { try Gzip.decompress(packed, maxBytes: 0) }
    }

    @Test func bombOfHundredsOfMegabytesIsRefusedQuickly() throws {
        // 200 MiB of zeros in ~200 KB; decoding must stop at the 1 MiB limit instead.
        let chunk = Gzip.compress(Data(count: 20 << 20), level: 9)
        let bomb = Data((0..<10).flatMap { _ in chunk })
        #expect(bomb.count < 300_000)
        let clock = ContinuousClock()
        let started = clock.now
        #expect(throws: HTTPParseError.decodedBodyTooLarge(limitBytes: 1 << 20)) {
            try Gzip.decompress(bomb, maxBytes: 1 << 20)
        }
        #expect(clock.now - started < .seconds(1))
        #expect(HTTPParseError.decodedBodyTooLarge(limitBytes: 1 << 20).status.code == 413)
    }

    @Test func corruptAndTruncatedInputIsAnInvalidBody() throws {
        let packed = Gzip.compress(Self.sample(count: 4096, compressible: false))
        let failures: [Data] = [
            packed.prefix(packed.count / 2),  // truncated
            Data("not gzip at all".utf8),
            Data([0x1F, 0x8B, 8, 0] + [UInt8](repeating: 0xFF, count: 40)),
            packed + Data("junk".utf8),
        ]
        for (i, input) in failures.enumerated() {
            do {
                _ = try Gzip.decompress(input, maxBytes: 1 << 20)
                Issue.record("case \(i) decoded")
            } catch {
                guard case .invalidGzipBody = error else { Issue.record("case \(i): \(error)"); continue }
                #expect(error.status.code == 400)
                #expect(error.description.contains("not valid gzip"))
            }
        }
        #expect(try Gzip.decompress(Data(), maxBytes: 0).isEmpty)
    }

    @Test(arguments: [
        ([], false), (["gzip"], true), (["GZip"], true), (["x-gzip"], true), (["deflate, br"], false),
        (["gzip;q=0"], false), (["gzip; q=0.000"], false), (["gzip;q=0.5"], true), (["*"], true), (["*;q=0"], false),
        (["*, gzip;q=0"], false), (["gzip;q=0, *"], false), (["identity"], false), (["br", "gzip"], true),
        (["deflate, gzip;q=1.0, *;q=0.5"], true),
    ] as [([String], Bool)])
    func acceptEncodingNegotiation(values: [String], accepted: Bool) {
        #expect(Gzip.accepts(values) == accepted, "\(values)")
    }

    @Test func requestDecodingUndoesGzipAndRefusesOtherCodings() throws {
        let body = Self.sample(count: 3000, compressible: true)
        var request = HTTPRequest(
            method: "POST", target: "/", headers: HTTPHeaders([("Content-Encoding", "gzip"), ("Content-Length", "99")]),
            body: Gzip.compress(body))
        try request.decodeContentEncoding(maxBodyBytes: 3000)
        #expect(request.body == body)
        #expect(request.headers["Content-Encoding"] == nil)
        #expect(request.headers["Content-Length"] == "3000")

        var identity = HTTPRequest(method: "POST", target: "/", headers: ["Content-Encoding": "identity"], body: body)
        try identity.decodeContentEncoding(maxBodyBytes: 3000)
        #expect(identity.body == body)

        var twice = HTTPRequest(method: "POST", target: "/", headers: ["Content-Encoding": "gzip, gzip"],
                                body: Gzip.compress(Gzip.compress(body)))
        try twice.decodeContentEncoding(maxBodyBytes: 3000)
        #expect(twice.body == body)

        var big = HTTPRequest(method: "POST", target: "/", headers: ["Content-Encoding": "gzip"], body: Gzip.compress(body))
        #expect(throws: HTTPParseError.decodedBodyTooLarge(limitBytes: 2999)) { try big.decodeContentEncoding(maxBodyBytes: 2999) }

        var brotli = HTTPRequest(method: "POST", target: "/", headers: ["Content-Encoding": "br"], body: body)
        #expect(throws: HTTPParseError.unsupportedContentEncoding("br")) { try brotli.decodeContentEncoding(maxBodyBytes: 1 << 20) }
        #expect(HTTPParseError.unsupportedContentEncoding("br").status.code == 415)
    }

    // MARK: - Live server

    @Test func serverCompressesLargeResponsesForClientsThatAcceptGzip() throws {
        let large = Self.sample(count: 5000, compressible: true)
        let server = try startTestServer { request, responder in
            switch request.path {
            case "/large": responder.send(HTTPResponse(headers: ["Content-Type": "text/plain"], body: large))
            case "/small": responder.send(HTTPResponse(contentType: "text/plain", body: "tiny"))
            case "/stream":
                let stream = responder.startStream()
                try? stream.write(large)
                stream.finish()
            default: echoHandler(request, responder)
            }
        }
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let client = try RawClient(port: server.port)
        client.send("GET /large HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip, deflate\r\n\r\n")
        let gzipped = try client.readResponse()
        #expect(gzipped.header("Content-Encoding") == "gzip")
        #expect(gzipped.header("Vary") == "Accept-Encoding")
        #expect(gzipped.body.count < 1000)
        #expect(try Gzip.decompress(Data(gzipped.body), maxBytes: 1 << 20) == large)

        client.send("GET /large HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip;q=0\r\n\r\n")
        let refused = try client.readResponse()
        #expect(refused.header("Content-Encoding") == nil)
        #expect(refused.header("Vary") == "Accept-Encoding")
        #expect(Data(refused.body) == large)

        client.send("GET /small HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
        let small = try client.readResponse()
        #expect(small.header("Content-Encoding") == nil)
        #expect(small.text == "tiny")

        client.send("GET /stream HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
        let streamed = try client.readResponse()
        #expect(streamed.header("Content-Encoding") == nil)
        #expect(Data(streamed.body) == large)

        client.send("HEAD /large HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n")
        let head = try client.readResponse(forHead: true)
        #expect(head.header("Content-Encoding") == nil)
        #expect(head.header("Content-Length") == "5000")
    }

    @Test func serverInflatesGzipBodiesAndKeepsTheConnectionAfterRefusals() throws {
        // The bodies are compressed before connecting: compressing 50 MB takes seconds on a busy
        // host, longer than the test server keeps an idle connection (2 s).
        let fits = Gzip.compress(Self.sample(count: 90_000, compressible: true))
        // ~50 KB on the wire (under the body limit), 50 MB inflated.
        let inflatesTooFar = Gzip.compress(Data(count: 50_000_000), level: 9)
        let server = try startTestServer({ $0.maxBodyBytes = 100_000 }, handler: echoHandler)
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let client = try RawClient(port: server.port)
        func post(_ body: Data, encoding: String) throws -> RawResponse {
            client.send("POST /up HTTP/1.1\r\nHost: t\r\nContent-Encoding: \(encoding)\r\nContent-Length: \(body.count)\r\n\r\n")
            client.send([UInt8](body))
            return try client.readResponse()
        }
        let ok = try post(fits, encoding: "gzip")
        #expect(ok.statusCode == 200)
        #expect(ok.text == "POST /up 90000")
        let bomb = try post(inflatesTooFar, encoding: "gzip")
        #expect(bomb.statusCode == 413)
        #expect(bomb.text.contains("inflates to more than the limit of 100000 bytes"))
        let unsupported = try post(Data("x".utf8), encoding: "compress")
        #expect(unsupported.statusCode == 415)
        let corrupt = try post(Data("not gzip".utf8), encoding: "gzip")
        #expect(corrupt.statusCode == 400)
        // The connection survived every refusal (the bodies were read whole).
        client.send("GET /still HTTP/1.1\r\nHost: t\r\n\r\n")
        #expect(try client.readResponse().text == "GET /still 0")
    }
}
