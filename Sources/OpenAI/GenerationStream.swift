import Engine
import Foundation
import Model
import Tokenizer

/// Carries one request's engine events (from every choice) to the connection thread.
///
/// The engine pushes without blocking; the connection thread pops, waiting as needed.
final class EventQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private var events: [(choice: Int, event: TokenEvent)] = []

    func push(_ choice: Int, _ event: TokenEvent) {
        condition.lock()
        events.append((choice, event))
        condition.signal()
        condition.unlock()
    }

    /// Next event, or nil after `timeout` seconds without one.
    func pop(timeout: Double) -> (choice: Int, event: TokenEvent)? {
        condition.lock()
        defer { condition.unlock() }
        let deadline = Date().addingTimeInterval(timeout)
        while events.isEmpty {
            if !condition.wait(until: deadline) { return nil }
        }
        return events.removeFirst()
    }
}

/// Per-choice text assembly (the request core's, `RequestRun`): incremental detokenization, stop
/// strings, stop tokens, log-probabilities, the finish.
struct ChoiceState {
    var decoder: Tokenizer.StreamingDecoder
    var stop: StopMatcher
    var text = ""
    var tokens: [GeneratedToken] = []
    var completionTokens = 0
    var promptTokens = 0
    /// Prompt tokens whose keys and values came from the prefix cache.
    var cachedTokens = 0
    var finish: FinishReason?
    var failed: EngineError?
    var speculation = SpeculationUsage()
    /// The prompt's tokens with log-probabilities (echo with logprobs), and an embedding.
    var promptScores: [GeneratedToken] = []
    var embedding: [Float] = []
    /// Raw generated text (before stop strings), for reading tool calls.
    var raw = ""
    /// Whether the reply is read as tool calls: a call that repeats an earlier one ends it.
    var readsToolCalls = false

    init(tokenizer: Tokenizer, stops: [String]) {
        decoder = Tokenizer.StreamingDecoder(tokenizer: tokenizer, skipSpecial: true)
        stop = StopMatcher(stops: stops)
    }

    var isDone: Bool { finish != nil || failed != nil }

    /// The stop string that ended the reply, if one did.
    var stopSequence: String? { stop.matched }

    /// Takes one engine event; returns the new text to emit for it.
    mutating func take(_ event: TokenEvent, stopTokens: Set<Int32>) -> String {
        switch event {
        case .started(let n, let cached):
            promptTokens = n
            cachedTokens = cached
            return ""
        case .promptLogprobs(let scores):
            promptScores = scores
            return ""
        case .embedding(let v):
            embedding = v
            return ""
        case .token(let t):
            guard finish == nil else { return "" }
            completionTokens += 1
            tokens.append(t)
            if stopTokens.contains(t.id) { return "" }
            let decoded = decoder.append(t.id)
            raw += decoded
            if readsToolCalls, let cut = ToolCallFormat.cutAtRepeatedCall(raw) {
                raw = cut
                finish = .stop
                return ""
            }
            let (piece, stopped) = stop.append(decoded)
            text += piece
            if stopped { finish = .stop }
            return piece
        case .finished(let reason, let prompt, let completion, let speculation):
            promptTokens = prompt
            self.speculation = speculation
            guard finish == nil else { return "" }  // already ended by a stop string
            finish = reason
            completionTokens = completion
            let flushed = decoder.finish()
            raw += flushed
            let rest = stop.append(flushed)
            var tail = rest.text
            if rest.stopped { finish = .stop } else { tail += stop.finish() }
            text += tail
            return tail
        case .failed(let e):
            failed = e
            return ""
        }
    }
}
