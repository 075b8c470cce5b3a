import Engine
import Foundation
import Grammar
import Model
@testable import OpenAI
import Testing
import Tokenizer

// MARK: - Fixtures

/// A six-token vocabulary: an end-of-turn control token, then single pieces.
private func tinyTokenizer() throws -> Tokenizer {
    try Tokenizer(tokens: ["<eos>", "a", "b", "ST", "OP", "x"], tokenTypes: [3, 1, 1, 1, 1, 1], merges: [],
                  preTokenizer: .gpt2, bosID: nil, eosID: 0)
}

private let eos: Int32 = 0, a: Int32 = 1, b: Int32 = 2, st: Int32 = 3, op: Int32 = 4, x: Int32 = 5

/// Plays a script of tokens for each generation on its own thread, as the engine would: started,
/// the tokens, then finished (`length` after the script, `cancelled` once cancelled). With
/// `endless`, it generates `x` until cancelled.
private final class ScriptedGenerator: TokenGenerator, @unchecked Sendable {
    private let lock = NSLock()
    private let scripts: [[Int32]]
    private let endless: Bool
    private(set) var requests: [GenerationRequest] = []
    private var cancelled: [Bool] = []

    init(scripts: [[Int32]], endless: Bool = false) {
        self.scripts = scripts
        self.endless = endless
    }

    var cancelledFlags: [Bool] { lock.withLock { cancelled } }
    var startedCount: Int { lock.withLock { requests.count } }

    func start(_ request: GenerationRequest, onEvent: @escaping @Sendable (TokenEvent) -> Void) throws -> @Sendable () -> Void {
        let index: Int = lock.withLock {
            requests.append(request)
            cancelled.append(false)
            return requests.count - 1
        }
        let script = scripts[min(index, scripts.count - 1)]
        let thread = Thread { [self] in
            onEvent(.started(promptTokens: request.promptTokens.count, cachedTokens: 0))
            var produced = 0
            var k = 0
            while endless || k < script.count {
                if lock.withLock({ cancelled[index] }) {
                    onEvent(.finished(.cancelled, promptTokens: request.promptTokens.count, completionTokens: produced, speculation: SpeculationUsage()))
                    return
                }
                let id = endless ? x : script[k]
                k += 1
                produced += 1
                onEvent(.token(GeneratedToken(id: id, logprob: nil, topLogprobs: [])))
                if request.stopTokens.contains(id) {
                    onEvent(.finished(.stop, promptTokens: request.promptTokens.count, completionTokens: produced, speculation: SpeculationUsage()))
                    return
                }
                if endless { Thread.sleep(forTimeInterval: 0.001) }
            }
            onEvent(.finished(.length, promptTokens: request.promptTokens.count, completionTokens: produced, speculation: SpeculationUsage()))
        }
        thread.start()
        return { [self] in lock.withLock { cancelled[index] = true } }
    }
}

/// A client that stays, or leaves after `goneAfter` checks.
private final class ScriptedConnection: ClientConnection, @unchecked Sendable {
    private let lock = NSLock()
    private var checks = 0
    private let goneAfter: Int?
    private var callbacks: [@Sendable () -> Void] = []

    init(goneAfter: Int? = nil) { self.goneAfter = goneAfter }

    var isClientGone: Bool {
        lock.withLock {
            checks += 1
            return goneAfter.map { checks > $0 } ?? false
        }
    }

    func onDisconnect(_ callback: @escaping @Sendable () -> Void) { lock.withLock { callbacks.append(callback) } }
}

private func run(_ generator: ScriptedGenerator, prompts: [[Int32]] = [[a, b]], n: Int = 1, maxTokens: Int = 16,
                 stop: [String] = [], contextLength: Int = 64, seed: UInt64? = nil) throws -> RequestRun {
    let generation = GenerationRequest(promptTokens: [], maxTokens: maxTokens, sampling: SamplingParameters(temperature: 0, seed: seed),
                                       stopTokens: [])
    return try RequestRun(RunRequest(prompts: prompts, promptParam: "messages", choicesPerPrompt: n, generation: generation, stop: stop),
                          generator: generator, tokenizer: tinyTokenizer(), stopTokens: [eos], contextLength: contextLength)
}

private func parseError(_ body: String, chat: Bool = true) -> OpenAIError? {
    do {
        _ = try CompletionRequest.parse(Data(body.utf8), chat: chat)
        return nil
    } catch {
        return error as? OpenAIError
    }
}

// MARK: - Parsing

@Suite struct RequestParsingTests {
    @Test func chatBodyBecomesTypedRequest() throws {
        let body = """
        {"model": "m", "messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
         "stop": ["\\n", "END"], "n": 2, "max_tokens": 5, "temperature": 0, "seed": 7, "stream": true, "stream_options": {"include_usage": true},
         "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"z": {"type": "string"}, "a": {"type": "integer"}}}}}],
         "tool_choice": "required"}
        """
        let r = try CompletionRequest.parse(Data(body.utf8), chat: true)
        #expect(r.prompts == [.chat([APIMessage(role: "system", content: "be brief"), APIMessage(role: "user", content: "hi")])])
        #expect(r.stop == ["\n", "END"])
        #expect(r.n == 2 && r.maxTokens == 5 && r.temperature == 0 && r.seed == 7 && r.stream && r.includeUsage)
        #expect(r.toolChoice == .required && r.usesTools && r.outputGrammarParam == "tools")
        // The schema keeps its document order (properties generate in it).
        guard case .object(let members)? = r.tools.first?.parameters["properties"] else { Issue.record("no properties"); return }
        #expect(members.map(\.0) == ["z", "a"])
    }

    @Test(arguments: [
        (#"{"model": "m", "messages": [{"role": "user", "content": 5}]}"#, "messages[0].content"),
        (#"{"model": "m", "messages": [{"role": "robot", "content": "x"}]}"#, "messages[0].role"),
        (#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}"#, "temperature"),
        (#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true, "stream_options": {"include_usage": 1}}"#, "stream_options.include_usage"),
        (#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]}"#, "tools[0].function.parameters"),
        (#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}, "strict": "yes"}}}"#, "response_format.json_schema.strict"),
        (#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": ["a", 1]}"#, "stop"),
        (#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"12": 200}}"#, "logit_bias"),
        (#"{"messages": [{"role": "user", "content": "x"}]}"#, "model"),
        (#"{"model": "m", "messages": [{"role": "user", "content": "x"}],}"#, "body"),
        (#"[1, 2]"#, "body"),
    ])
    func errorsNameTheField(body: String, param: String) {
        let e = parseError(body)
        #expect(e?.status == .badRequest)
        #expect(e?.param == param, "\(String(describing: e))")
        #expect(e?.message.contains(param == "body" ? "JSON" : param) == true, "\(String(describing: e))")
    }

    @Test func completionPromptsAndIntegersAsNumbers() throws {
        let r = try CompletionRequest.parse(Data(#"{"model": "m", "prompt": [[1, 2.0], [3]], "max_tokens": 1e1, "logprobs": 2}"#.utf8), chat: false)
        #expect(r.prompts == [.tokens([1, 2]), .tokens([3])])
        #expect(r.maxTokens == 10 && r.logprobs && r.topLogprobs == 2)
        #expect(parseError(#"{"model": "m", "prompt": [1, -2]}"#, chat: false)?.param == "prompt")
        #expect(parseError(#"{"model": "m", "prompt": "x", "max_tokens": 1.5}"#, chat: false)?.param == "max_tokens")
    }
}

// MARK: - The run

@Suite struct RequestRunTests {
    @Test func contextCheckRefusesBeforeSubmitting() throws {
        let generator = ScriptedGenerator(scripts: [[a]])
        #expect(throws: OpenAIError.self) { try run(generator, prompts: [[a, b], [a, b, a, b]], contextLength: 4) }
        do {
            _ = try run(generator, prompts: [[a, b], [a, b, a, b]], contextLength: 4)
        } catch let e as OpenAIError {
            #expect(e.code == "context_length_exceeded" && e.param == "messages")
            #expect(e.message.contains("4 tokens") && e.message.contains("context length is 4"))
        }
        #expect(generator.startedCount == 0)
        #expect((try? run(generator, prompts: [[]])) == nil)
        // A prompt that fits gets the rest of the context at most.
        let fits = ScriptedGenerator(scripts: [[a]])
        let r = try run(fits, prompts: [[a, b, a]], maxTokens: 100, contextLength: 8)
        #expect(r.drive(ScriptedConnection()) { _ in } == .completed)
        #expect(fits.requests.first?.maxTokens == 5)
        #expect(fits.requests.first?.stopTokens == [eos])
    }

    @Test func stopStringAcrossTokensIsNeverEmitted() throws {
        // "a" "b" "ST" | "OP" "x": the stop string spans two tokens.
        let generator = ScriptedGenerator(scripts: [[a, b, st, op, x, x]])
        let r = try run(generator, stop: ["STOP"])
        var text = ""
        var finishedUpdates = 0
        #expect(r.drive(ScriptedConnection()) { u in
            text += u.text
            if u.finished { finishedUpdates += 1 }
        } == .completed)
        #expect(text == "ab")
        #expect(finishedUpdates == 1)
        #expect(r.choices[0].finish == .stop && r.choices[0].stopSequence == "STOP")
        #expect(generator.cancelledFlags == [true])
    }

    @Test func heldBackPrefixIsReleasedWhenNoStopFollows() throws {
        let generator = ScriptedGenerator(scripts: [[a, st, b, st]])
        let r = try run(generator, stop: ["STOP"])
        var pieces: [String] = []
        _ = r.drive(ScriptedConnection()) { u in if !u.text.isEmpty { pieces.append(u.text) } }
        #expect(pieces.joined() == "aSTbST")
        #expect(pieces.last == "ST")  // held back until the end
        #expect(r.choices[0].finish == .length && r.choices[0].stopSequence == nil)
    }

    @Test func stopTokenEndsTheTurnWithoutText() throws {
        let r = try run(ScriptedGenerator(scripts: [[a, eos]]))
        var endOfTurn = false
        _ = r.drive(ScriptedConnection()) { u in
            if case .token(_, let end) = u.kind, end {
                endOfTurn = true
                #expect(u.text.isEmpty)
            }
        }
        #expect(endOfTurn)
        #expect(r.choices[0].text == "a" && r.choices[0].finish == .stop && r.choices[0].stopSequence == nil)
        #expect(r.usage.completionTokens == 2)
    }

    @Test(arguments: [1, 3])
    func everyChoiceRunsWithItsOwnSeed(n: Int) throws {
        let generator = ScriptedGenerator(scripts: [[a], [b], [x]])
        let r = try run(generator, prompts: [[a, b, a]], n: n, seed: 40)
        var texts = [String](repeating: "", count: n)
        #expect(r.drive(ScriptedConnection()) { u in texts[u.choice] += u.text } == .completed)
        #expect(Set(texts) == Set(["a", "b", "x"].prefix(n)))
        #expect(Set(generator.requests.compactMap(\.sampling.seed)) == Set((0..<n).map { 40 + UInt64($0) }))
        #expect(r.usage.promptTokens == 3 * n && r.usage.completionTokens == n)
    }

    @Test func clientThatLeavesCancelsEveryChoice() throws {
        let generator = ScriptedGenerator(scripts: [[]], endless: true)
        let r = try run(generator, n: 2)
        #expect(r.drive(ScriptedConnection(goneAfter: 2)) { _ in } == .clientGone)
        #expect(generator.cancelledFlags == [true, true])
    }

    @Test func failedWriteCancelsEveryChoice() throws {
        struct WriteFailed: Error {}
        let generator = ScriptedGenerator(scripts: [[]], endless: true)
        let r = try run(generator, n: 2)
        var updates = 0
        #expect(r.drive(ScriptedConnection()) { _ in
            updates += 1
            if updates == 5 { throw WriteFailed() }
        } == .clientGone)
        #expect(generator.cancelledFlags == [true, true])
    }
}
