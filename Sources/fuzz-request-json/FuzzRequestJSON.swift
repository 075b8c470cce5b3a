import Foundation
import FuzzSupport
import OpenAI

// libFuzzer target for the request decoding and validation of /v1/chat/completions and
// /v1/completions (`CompletionRequest.parse`). No model is loaded: parsing needs none.
//
// Each input is a request body. It is parsed under both schemas. The oracle: parse either returns
// a request whose every field is inside its documented range, or throws an `OpenAIError` with
// status 400, a `param` and a JSON body; anything else (another error type, a crash, a hang)
// is a bug.
//
// Built without `-DFUZZING` the executable replays corpus files: `fuzz-request-json fuzz/corpus/request-json`.

private let roles: Set<String> = ["system", "user", "assistant", "tool"]

private func check(_ r: CompletionRequest, chat: Bool) {
    if r.model.isEmpty { fuzzFailure("accepted an empty model") }
    if r.prompts.isEmpty { fuzzFailure("accepted a request without prompts") }
    for prompt in r.prompts {
        switch prompt {
        case .chat(let messages):
            if !chat { fuzzFailure("completions request produced chat messages") }
            if messages.isEmpty { fuzzFailure("accepted an empty message list") }
            for m in messages where !roles.contains(m.role) { fuzzFailure("accepted role \(m.role)") }
        case .text:
            if chat { fuzzFailure("chat request produced a text prompt") }
        case .tokens(let ids):
            if chat { fuzzFailure("chat request produced token ids") }
            if ids.isEmpty || ids.contains(where: { $0 < 0 }) { fuzzFailure("accepted token ids \(ids)") }
        }
    }
    if let m = r.maxTokens, !((chat || !r.echo ? 1 : 0)...1_048_576).contains(m) { fuzzFailure("accepted max_tokens \(m)") }
    if let bad = r.logitBias.first(where: { $0.key < 0 || !(-100...100).contains($0.value) }) { fuzzFailure("accepted logit_bias \(bad)") }
    if r.outputGrammar != nil && r.outputGrammarParam == nil { fuzzFailure("a grammar without the field it came from") }
    if !(0...2).contains(r.temperature) { fuzzFailure("accepted temperature \(r.temperature)") }
    if !(r.topP > 0 && r.topP <= 1) { fuzzFailure("accepted top_p \(r.topP)") }
    if !(0...1_000_000).contains(r.topK) { fuzzFailure("accepted top_k \(r.topK)") }
    if !(0...1).contains(r.minP) { fuzzFailure("accepted min_p \(r.minP)") }
    if !(-2...2).contains(r.presencePenalty) || !(-2...2).contains(r.frequencyPenalty) {
        fuzzFailure("accepted penalties \(r.presencePenalty), \(r.frequencyPenalty)")
    }
    if !(1...16).contains(r.n) { fuzzFailure("accepted n \(r.n)") }
    if r.stop.count > 4 || r.stop.contains("") { fuzzFailure("accepted stop \(r.stop)") }
    if !(0...20).contains(r.topLogprobs) { fuzzFailure("accepted top_logprobs \(r.topLogprobs)") }
    if r.topLogprobs > 0 && !r.logprobs { fuzzFailure("top_logprobs without logprobs") }
    if r.includeUsage && !r.stream { fuzzFailure("include_usage without stream") }
    if chat && r.echo { fuzzFailure("chat request with echo") }
}

private func check(_ error: OpenAIError) {
    if error.status != .badRequest { fuzzFailure("validation error with status \(error.status.code): \(error)") }
    if error.param == nil { fuzzFailure("validation error without param: \(error)") }
    guard let object = try? JSONSerialization.jsonObject(with: error.body) as? [String: Any],
        let inner = object["error"] as? [String: Any], inner["message"] is String
    else { fuzzFailure("error body is not {\"error\": {\"message\": ...}}: \(error)") }
}

/// One fuzz iteration; aborts on a broken invariant.
func fuzzRequestJSON(_ input: UnsafeRawBufferPointer) {
    let body = Data(input)
    for chat in [true, false] {
        do {
            check(try CompletionRequest.parse(body, chat: chat), chat: chat)
        } catch let error as OpenAIError {
            check(error)
        } catch {
            fuzzFailure("parse threw \(type(of: error)) instead of OpenAIError: \(error)")
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzRequestJSON(UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size))
    return 0
}

#if !FUZZING
/// Entry point of the ordinary build: replays the corpus files or directories given as arguments.
@main
enum ReplayMain {
    static func main() {
        exit(FuzzReplay.run(target: "fuzz-request-json", arguments: Array(CommandLine.arguments.dropFirst()), fuzzRequestJSON))
    }
}
#endif
