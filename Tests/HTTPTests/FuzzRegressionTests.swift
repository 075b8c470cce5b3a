import Foundation
import HTTP
import Testing

/// Regressions found by fuzz/run.sh http-parser: inputs whose outcome depended on how the bytes
/// were split across `append` calls. Each case is checked whole, byte by byte, and at every split point.
@Suite struct FuzzRegressionTests {
    /// Every request and the error of `pieces` appended one after another (ParserTests' `parse`).
    private func outcome(_ pieces: [[UInt8]], _ parser: HTTPRequestParser) -> (requests: [HTTPRequest], error: HTTPParseError?) {
        parse(pieces, parser: parser)
    }

    /// The outcome of `raw` whole, after checking it is the same for every way of feeding it.
    private func splitInvariantOutcome(_ raw: [UInt8], _ parser: HTTPRequestParser) -> (requests: [HTTPRequest], error: HTTPParseError?) {
        let whole = outcome([raw], parser)
        let byteWise = outcome(raw.map { [$0] }, parser)
        #expect(byteWise.requests == whole.requests)
        #expect(byteWise.error == whole.error)
        for cut in stride(from: 0, through: raw.count, by: max(1, raw.count / 97)) {
            let split = outcome([Array(raw[..<cut]), Array(raw[cut...])], parser)
            #expect(split.requests == whole.requests, "split at \(cut)")
            #expect(split.error == whole.error, "split at \(cut)")
        }
        return whole
    }

    private let chunkedHead = Array("POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)

    /// A chunk-size line of exactly 4096 bytes before its CRLF used to be accepted in one read and
    /// refused (400) when its CR arrived without the LF.
    @Test func chunkSizeLineAtItsLimitIsAcceptedHoweverSplit() throws {
        let ext = ";" + String(repeating: "e", count: 4096 - 2)
        let raw = chunkedHead + Array("5\(ext)\r\nhello\r\n0\r\n\r\n".utf8)
        let result = splitInvariantOutcome(raw, HTTPRequestParser())
        #expect(result.error == nil)
        #expect(result.requests.count == 1)
        #expect(String(decoding: try #require(result.requests.first).body, as: UTF8.self) == "hello")
    }

    @Test func chunkSizeLineOneOverItsLimitIsRefusedHoweverSplit() {
        let ext = ";" + String(repeating: "e", count: 4096 - 1)
        let raw = chunkedHead + Array("5\(ext)\r\nhello\r\n0\r\n\r\n".utf8)
        let result = splitInvariantOutcome(raw, HTTPRequestParser())
        #expect(result.requests.isEmpty)
        #expect(result.error?.status == .badRequest)
    }

    /// A trailer section of maxHeaderBytes + 1 or + 2 bytes used to pass when it arrived in one read.
    @Test(arguments: [(0, true), (1, false), (2, false)])
    func trailerSectionIsLimitedHoweverSplit(over: Int, accepted: Bool) {
        let limit = 256
        let fixed = "X-T: \r\n\r\n".utf8.count
        let trailers = "X-T: " + String(repeating: "t", count: limit - fixed + over) + "\r\n\r\n"
        #expect(trailers.utf8.count == limit + over)
        let raw = chunkedHead + Array("0\r\n\(trailers)".utf8)
        let result = splitInvariantOutcome(raw, HTTPRequestParser(maxHeaderBytes: limit))
        if accepted {
            #expect(result.error == nil)
            #expect(result.requests.first?.trailers["x-t"]?.count == limit - fixed)
        } else {
            #expect(result.requests.isEmpty)
            #expect(result.error == .headersTooLarge(limitBytes: limit))
        }
    }
}
