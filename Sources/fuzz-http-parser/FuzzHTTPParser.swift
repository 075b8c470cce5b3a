import Foundation
import FuzzSupport
import HTTP

// libFuzzer target for `HTTPRequestParser`.
//
// Each input is a raw byte stream as a client might send it on one connection. It is parsed under
// two sets of limits (roomy, and tiny so the 413/414/431 paths are hit), each time twice: appended
// in one piece, and appended in pieces whose boundaries come from a generator seeded with the
// input. The oracle: the parser documents that however the input is split it yields the same
// requests, so both runs must return the same requests and end in the same error (or the same
// leftover state); every request must respect the limits; a failed parser throws its first error
// again. Any difference aborts, which libFuzzer records as a crash.
//
// Built without `-DFUZZING` the executable replays corpus files: `fuzz-http-parser fuzz/corpus/http-parser`.

private struct Limits {
    var header: Int
    var body: Int
    var target: Int

    func parser() -> HTTPRequestParser {
        HTTPRequestParser(maxHeaderBytes: header, maxBodyBytes: body, maxRequestTargetBytes: target)
    }
}

private let limitSets = [
    Limits(header: 4096, body: 8192, target: 1024),
    Limits(header: 160, body: 24, target: 12),
]

/// What a parser produced from one input: the requests in order, then the error or the idle state.
private struct Outcome: Equatable {
    var requests: [HTTPRequest] = []
    var error: HTTPParseError?
    var bufferedBytes = 0
    var phase: HTTPRequestParser.Phase = .idle
}

/// Takes every complete request out of `parser`; records the error when it fails.
/// Returns false once the parser has failed.
private func drain(_ parser: inout HTTPRequestParser, into outcome: inout Outcome, limits: Limits) -> Bool {
    while true {
        do {
            guard let request = try parser.nextRequest() else { return true }
            check(request, limits: limits)
            outcome.requests.append(request)
        } catch {
            outcome.error = error
            do {
                _ = try parser.nextRequest()
                fuzzFailure("a failed parser returned instead of throwing \(error) again")
            } catch let again {
                if again != error { fuzzFailure("a failed parser threw \(again) after \(error)") }
            }
            return false
        }
    }
}

private func check(_ request: HTTPRequest, limits: Limits) {
    if request.body.count > limits.body { fuzzFailure("body of \(request.body.count) bytes passed the \(limits.body)-byte limit") }
    if request.target.utf8.count > limits.target {
        fuzzFailure("target of \(request.target.utf8.count) bytes passed the \(limits.target)-byte limit")
    }
    if request.method.isEmpty || request.target.isEmpty { fuzzFailure("empty method or target in \(request)") }
    if request.version == .http1_1, request.headers.values(for: "Host").count != 1 {
        fuzzFailure("HTTP/1.1 request without exactly one Host header was accepted")
    }
    if request.headers.contains("Content-Length"), request.headers.contains("Transfer-Encoding") {
        fuzzFailure("request with both Content-Length and Transfer-Encoding was accepted")
    }
}

private func finish(_ parser: HTTPRequestParser, _ outcome: inout Outcome) {
    if outcome.error == nil {
        outcome.bufferedBytes = parser.bufferedByteCount
        outcome.phase = parser.phase
    }
}

private func parseWhole(_ input: UnsafeRawBufferPointer, limits: Limits) -> Outcome {
    var parser = limits.parser()
    var outcome = Outcome()
    parser.append(input)
    _ = drain(&parser, into: &outcome, limits: limits)
    finish(parser, &outcome)
    return outcome
}

private func parseInPieces(_ input: UnsafeRawBufferPointer, limits: Limits, random: inout SplitMix64) -> Outcome {
    var parser = limits.parser()
    var outcome = Outcome()
    var offset = 0
    while offset < input.count {
        // Mostly tiny pieces (every boundary inside a line or a CRLF), sometimes large ones.
        let size = random.next(in: 0...7) == 0 ? random.next(in: 1...512) : random.next(in: 1...4)
        let end = min(input.count, offset + size)
        parser.append(UnsafeRawBufferPointer(rebasing: input[offset..<end]))
        offset = end
        guard drain(&parser, into: &outcome, limits: limits) else { break }
    }
    finish(parser, &outcome)
    return outcome
}

private func describe(_ outcome: Outcome) -> String {
    let requests = outcome.requests.map { "\($0.method) \($0.target) body \($0.body.count) B" }
    return "requests \(requests), error \(outcome.error.map { "\($0)" } ?? "none"), buffered \(outcome.bufferedBytes), phase \(outcome.phase)"
}

/// One fuzz iteration; aborts on a broken invariant.
func fuzzHTTPParser(_ input: UnsafeRawBufferPointer) {
    var random = SplitMix64(hashing: input)
    for limits in limitSets {
        let whole = parseWhole(input, limits: limits)
        let pieces = parseInPieces(input, limits: limits, random: &random)
        if whole != pieces {
            fuzzFailure("split-dependent result under limits \(limits):\n  whole:  \(describe(whole))\n  pieces: \(describe(pieces))")
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzHTTPParser(UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size))
    return 0
}

#if !FUZZING
/// Entry point of the ordinary build: replays the corpus files or directories given as arguments.
@main
enum ReplayMain {
    static func main() {
        exit(FuzzReplay.run(target: "fuzz-http-parser", arguments: Array(CommandLine.arguments.dropFirst()), fuzzHTTPParser))
    }
}
#endif
