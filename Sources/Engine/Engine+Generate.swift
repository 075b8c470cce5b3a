import Foundation
import Model

/// Timings and counts of one request run with `Engine.generate`.
public struct GenerationStats: Sendable {
    public var promptTokens = 0
    public var completionTokens = 0
    /// From submission to the end of the prefill (the `started` event).
    public var prefillSeconds = 0.0
    /// From the end of the prefill to the last event (every generated token, the first included).
    public var decodeSeconds = 0.0
    public var finishReason = FinishReason.length
    public var totalSeconds: Double { prefillSeconds + decodeSeconds }
    public init() {}
}

extension Engine {
    /// Runs one request to its end and waits for it: submits `request`, hands each generated
    /// token to `onToken` (on the engine thread, in order; it must not block) and returns when
    /// the request has finished. For one-shot callers (`cast-serve generate`, cast-bench's
    /// single-stream figures); a server submits and streams instead.
    ///
    /// Throws what `submit` throws, or the `EngineError` that ended the request.
    public func generate(_ request: GenerationRequest, onToken: @escaping @Sendable (Int32) -> Void) throws -> GenerationStats {
        let run = BlockingRun()
        try submit(request) { event in
            switch event {
            case .token(let t): onToken(t.id)
            default: break
            }
            run.record(event)
        }
        return try run.wait()
    }
}

/// The events of one `Engine.generate` call, timed as they arrive; thread-safe.
private final class BlockingRun: @unchecked Sendable {
    private let lock = NSCondition()
    private let clock = ContinuousClock()
    private let submitted: ContinuousClock.Instant
    private var started: ContinuousClock.Instant?
    private var stats = GenerationStats()
    private var error: EngineError?
    private var done = false

    init() { submitted = clock.now }

    func record(_ event: TokenEvent) {
        lock.lock()
        defer { lock.unlock() }
        switch event {
        case .started(let promptTokens, _):
            let now = clock.now
            started = now
            stats.promptTokens = promptTokens
            stats.prefillSeconds = (now - submitted).seconds
        case .finished(let reason, let promptTokens, let completionTokens, _):
            stats.finishReason = reason
            stats.promptTokens = promptTokens
            stats.completionTokens = completionTokens
            stats.decodeSeconds = (clock.now - (started ?? submitted)).seconds
            done = true
            lock.broadcast()
        case .failed(let e):
            error = e
            done = true
            lock.broadcast()
        case .token, .promptLogprobs, .embedding:
            break
        }
    }

    func wait() throws -> GenerationStats {
        lock.lock()
        defer { lock.unlock() }
        while !done { lock.wait() }
        if let error { throw error }
        return stats
    }
}
