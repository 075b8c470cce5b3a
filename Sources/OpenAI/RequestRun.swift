import Engine
import Foundation
import HTTP
import Model
import Tokenizer

// The request core: every API surface (chat completions, completions, embeddings, responses,
// Anthropic messages) parses its body into its typed request, turns it into one `RunRequest`,
// and maps the `ChoiceUpdate`s of one `RequestRun` to its own wire format. The context check,
// stop strings and stop tokens, the choices (n), cancellation and a client that went away live
// here, once. Sources/OpenAI/README.md shows an adapter.

// MARK: - What the core needs from outside

/// Where generations run: the engine, or a scripted stand-in in tests.
protocol TokenGenerator: AnyObject, Sendable {
    /// Starts one generation; events arrive on `onEvent` (from another thread). Returns the
    /// function that cancels it (idempotent; a cancelled generation still sends `finished`).
    func start(_ request: GenerationRequest, onEvent: @escaping @Sendable (TokenEvent) -> Void) throws -> @Sendable () -> Void
}

extension Engine: TokenGenerator {
    func start(_ request: GenerationRequest, onEvent: @escaping @Sendable (TokenEvent) -> Void) throws -> @Sendable () -> Void {
        let handle = try submit(request, onEvent: onEvent)
        // Weak: an unloaded model's engine may go before a run that outlived it.
        return { [weak self] in self?.cancel(handle) }
    }
}

/// The client side of a run: whether the client is still there, and a callback for when it
/// leaves. `HTTPResponder` is one; tests script one.
protocol ClientConnection {
    /// Whether the client has gone away (may check the socket; called between events).
    var isClientGone: Bool { get }
    /// Runs `callback` once when the client is found gone (at once if it already is).
    func onDisconnect(_ callback: @escaping @Sendable () -> Void)
}

extension HTTPResponder: ClientConnection {}

// MARK: - The internal request

/// What one API request asks the engine for, whatever its wire format: the prompts as token
/// ids, how many choices per prompt, and one generation request that every choice copies.
struct RunRequest: Sendable {
    /// Token ids of each prompt; the run checks each against the context.
    var prompts: [[Int32]]
    /// The request field the prompts came from, named by the context check's error.
    var promptParam: String
    /// Choices per prompt (`n`); choice `p * n + k` is the k-th of prompt p.
    var choicesPerPrompt: Int
    /// What every choice generates: its `promptTokens` and `stopTokens` are set per choice,
    /// `maxTokens` is clamped to the context left, and a seed is offset by the choice's index.
    var generation: GenerationRequest
    /// Stop strings: the text before the first match is the reply (never any part of a match).
    var stop: [String]
    /// Whether replies are read as tool calls (docs/TOOLS.md): updates carry tool-call deltas
    /// instead of text, and a call that repeats an earlier one ends the reply.
    var readsToolCalls: Bool
    /// Per prompt, whether its replies are split into reasoning and content and, if so, whether
    /// they start inside the think block (ReasoningOutput); nil: no split, the think block is text.
    var reasoningStarts: [Bool]?

    init(prompts: [[Int32]], promptParam: String, choicesPerPrompt: Int = 1, generation: GenerationRequest,
                stop: [String] = [], readsToolCalls: Bool = false) {
        self.prompts = prompts
        self.promptParam = promptParam
        self.choicesPerPrompt = choicesPerPrompt
        self.generation = generation
        self.stop = stop
        self.readsToolCalls = readsToolCalls
    }
}

// MARK: - Events

/// One step of one choice, as the adapters see it.
struct ChoiceUpdate {
    enum Kind {
        /// Prefill is done (prompt scores, when asked, have arrived).
        case started
        /// A generated token; `endOfTurn` for a stop token (it has no text).
        case token(GeneratedToken, endOfTurn: Bool)
        /// The engine finished the choice (held-back text is released in `text`).
        case ended
        /// An embedding, prompt scores or a failure (read from the choice's state).
        case other
    }

    var choice: Int
    var kind: Kind
    /// New reply text (empty while the reply reads as tool calls: those come as `toolCalls`).
    var text: String
    /// New tool-call pieces; nil unless the reply reads as tool calls.
    var toolCalls: [ToolCallDelta]?
    /// New reasoning text of a thinking model (`RunRequest.reasoningStarts`); `text` is then the
    /// content alone, and tool calls are read from the content.
    var reasoning = ""
    /// Whether this update ended the choice; `RequestRun.choices[choice]` has how.
    var finished: Bool
}

/// How a run ended.
enum RunOutcome: Equatable {
    /// Every choice finished; read them from `RequestRun.choices`.
    case completed
    /// The client went away (or a write to it failed): every choice was cancelled.
    case clientGone
    /// A choice failed in the engine.
    case failed(EngineError)

    static func == (a: RunOutcome, b: RunOutcome) -> Bool {
        switch (a, b) {
        case (.completed, .completed), (.clientGone, .clientGone): return true
        case (.failed(let x), .failed(let y)): return "\(x)" == "\(y)"
        default: return false
        }
    }
}

/// Token counts of a run, summed over its choices.
struct RunUsage: Equatable {
    /// Prompt tokens of every choice (a prompt counts once per choice).
    var promptTokens: Int
    var completionTokens: Int
    /// Of the prompt tokens, those whose keys and values came from the prefix cache.
    var cachedTokens: Int
    var speculation: SpeculationUsage
}

// MARK: - The run

/// One request's generations: submits every choice, follows their events, cancels them all when
/// the client leaves, and applies the one stop handling. Used from one thread (the
/// connection's); the engine's events cross over through an `EventQueue`.
final class RequestRun {
    /// Each choice's text, tokens, finish and counts so far.
    private(set) var choices: [ChoiceState] = []
    let request: RunRequest
    /// When the first token of any choice arrived.
    private(set) var firstTokenTime: ContinuousClock.Instant?
    private let queue = EventQueue()
    private let stopTokens: Set<Int32>
    private var cancels: [@Sendable () -> Void] = []
    private var toolStreams: [ToolCallStream]

    /// Checks every prompt against the context, then submits every choice. Throws `OpenAIError`:
    /// an empty prompt or one the context cannot hold (naming `request.promptParam`), or the
    /// engine's refusal (queue full, shutting down), after cancelling what was submitted.
    init(_ request: RunRequest, generator: TokenGenerator, tokenizer: Tokenizer, stopTokens: Set<Int32>, contextLength: Int) throws {
        self.request = request
        self.stopTokens = stopTokens
        for ids in request.prompts { try Self.checkContext(ids, contextLength: contextLength, param: request.promptParam) }
        toolStreams = []
        let queue = self.queue
        for (p, ids) in request.prompts.enumerated() {
            for k in 0..<request.choicesPerPrompt {
                let index = p * request.choicesPerPrompt + k
                var g = request.generation
                g.promptTokens = ids
                g.stopTokens = stopTokens
                g.maxTokens = min(g.maxTokens, contextLength - ids.count)
                g.sampling.seed = g.sampling.seed.map { $0 &+ UInt64(index) }
                var state = ChoiceState(tokenizer: tokenizer, stops: request.stop)
                state.readsToolCalls = request.readsToolCalls
                if let starts = request.reasoningStarts { state.splitReasoning(startingInside: starts[p]) }
                do {
                    cancels.append(try generator.start(g) { queue.push(index, $0) })
                } catch {
                    cancelAll()
                    if let e = error as? EngineError { throw OpenAIError.from(e) }
                    throw error
                }
                choices.append(state)
                toolStreams.append(ToolCallStream())
            }
        }
    }

    /// The one context-length check: a prompt must leave at least one position to generate in.
    static func checkContext(_ ids: [Int32], contextLength: Int, param: String) throws {
        guard !ids.isEmpty else { throw OpenAIError.invalid(param, "The prompt is empty after tokenization") }
        guard ids.count < contextLength else {
            throw OpenAIError(status: .badRequest,
                              message: "This model's context length is \(contextLength) tokens, but the prompt has \(ids.count) tokens; shorten the prompt (at least one token must remain for the completion)",
                              type: "invalid_request_error", param: param, code: "context_length_exceeded")
        }
    }

    /// Cancels every choice (idempotent).
    func cancelAll() {
        for cancel in cancels { cancel() }
    }

    /// Follows every choice to its end, handing each update to `body` on this thread. A client
    /// that leaves (seen by `connection`, polled at least every 200 ms and whenever events pause)
    /// or a `body` that throws (a failed write) cancels every choice and ends with `.clientGone`.
    func drive(_ connection: ClientConnection, _ body: (ChoiceUpdate) throws -> Void) -> RunOutcome {
        let cancels = self.cancels
        connection.onDisconnect { for cancel in cancels { cancel() } }
        let clock = ContinuousClock()
        var lastGoneCheck = clock.now
        while choices.contains(where: { !$0.isDone }) {
            let next = queue.pop(timeout: 1)
            // Poll the socket now and then even while tokens flow: a non-streaming response writes
            // nothing until the end, so nothing else would notice a client that went away.
            if next == nil || clock.now - lastGoneCheck > .milliseconds(200) {
                lastGoneCheck = clock.now
                if connection.isClientGone {
                    cancelAll()
                    return .clientGone
                }
            }
            guard let (index, event) = next else { continue }
            if case .token = event, firstTokenTime == nil { firstTokenTime = clock.now }
            let update = take(index, event)
            do {
                try body(update)
            } catch {
                cancelAll()
                return .clientGone
            }
        }
        if let failure = choices.compactMap(\.failed).first { return .failed(failure) }
        return .completed
    }

    /// Applies one engine event to its choice: text through the stop strings, tool calls, the
    /// finish. A stop string or a repeated tool call cancels the choice's generation here.
    private func take(_ index: Int, _ event: TokenEvent) -> ChoiceUpdate {
        let wasDone = choices[index].finish != nil
        let piece = choices[index].take(event, stopTokens: stopTokens)
        let finished = !wasDone && choices[index].finish != nil
        let kind: ChoiceUpdate.Kind
        switch event {
        case .started: kind = .started
        case .token(let t):
            kind = .token(t, endOfTurn: stopTokens.contains(t.id))
            if finished { cancels[index]() }  // a stop string or a repeated call ended this choice
        case .finished: kind = .ended
        default: kind = .other
        }
        var update = ChoiceUpdate(choice: index, kind: kind, text: piece, toolCalls: nil, reasoning: choices[index].reasoningPiece, finished: finished)
        if request.readsToolCalls, case .calls = ToolCallFormat.read(choices[index].raw) {
            update.toolCalls = toolStreams[index].deltas(choices[index].raw)
            update.text = ""
        }
        return update
    }

    // MARK: - Results

    /// Token counts so far, summed over the choices.
    var usage: RunUsage {
        let promptTotal = request.prompts.reduce(0) { $0 + $1.count } * request.choicesPerPrompt
        var speculation = SpeculationUsage()
        for c in choices {
            speculation.draftedTokens += c.speculation.draftedTokens
            speculation.acceptedTokens += c.speculation.acceptedTokens
            speculation.decodeSteps += c.speculation.decodeSteps
            speculation.speculativeSteps += c.speculation.speculativeSteps
            speculation.forcedDraftedTokens += c.speculation.forcedDraftedTokens
            speculation.forcedAcceptedTokens += c.speculation.forcedAcceptedTokens
        }
        return RunUsage(promptTokens: promptTotal, completionTokens: choices.reduce(0) { $0 + $1.completionTokens },
                        cachedTokens: choices.reduce(0) { $0 + $1.cachedTokens }, speculation: speculation)
    }

    /// The finished tool calls of choice `i` (ids as streamed, when they were), or nil when its
    /// reply is not a complete set of calls (plain text, or cut off by the token limit).
    func toolCalls(_ i: Int) -> [APIToolCall]? {
        let c = choices[i]
        guard request.readsToolCalls, c.finish != .length, case .calls(let calls) = ToolCallFormat.read(c.raw), !calls.isEmpty,
              calls.allSatisfy(\.complete) else { return nil }
        let ids = toolStreams[i].ids
        return calls.enumerated().map { k, call in
            APIToolCall(id: k < ids.count ? ids[k] : ToolCallFormat.newID(), name: call.name ?? "", arguments: call.arguments)
        }
    }

    /// Whether choice `i` ended by a stop token, a stop string or a complete grammar (not the
    /// token limit) with a reply of tool calls.
    func endedWithToolCalls(_ i: Int) -> Bool {
        guard request.readsToolCalls, choices[i].finish == .stop, case .calls(let calls) = ToolCallFormat.read(choices[i].raw) else { return false }
        return !calls.isEmpty
    }
}

// MARK: - The service side

extension OpenAIService {
    /// Starts `request` on the served engine (see `RequestRun.init`).
    func startRun(_ request: RunRequest, _ b: Backend) throws -> RequestRun {
        try RequestRun(request, generator: b.engine, tokenizer: b.formatter.tokenizer, stopTokens: b.formatter.stopTokens,
                       contextLength: b.contextLength)
    }

    /// What a run's end means for the request log and the metrics: time to first token; 499 for
    /// a client that went away; the token counters for a completed run.
    func record(_ run: RequestRun, _ outcome: RunOutcome, _ log: inout RequestLog, start: ContinuousClock.Instant) {
        if let first = run.firstTokenTime {
            metrics.timeToFirstToken.record(first - start)
            log.ttft = first - start
        }
        switch outcome {
        case .clientGone:
            log.status = 499
            log.error = "client disconnected"
        case .failed(let e):
            let error = OpenAIError.from(e)
            log.status = error.status.code
            log.error = error.message
        case .completed:
            let usage = run.usage
            metrics.promptTokens.increment(by: Int64(usage.promptTokens))
            metrics.promptCachedTokens.increment(by: Int64(usage.cachedTokens))
            metrics.completionTokens.increment(by: Int64(usage.completionTokens))
            log.promptTokens = usage.promptTokens
            log.completionTokens = usage.completionTokens
            log.status = 200
        }
    }
}
