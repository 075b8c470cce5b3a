import Foundation
import Kernels

/// Why a generation ended.
public enum FinishReason: String, Sendable {
    /// An end-of-turn token (or, later, a stop string) was produced.
    case stop
    /// The token budget ran out.
    case length
    /// The caller's token callback asked to stop.
    case cancelled
}

/// Timings and counts of one generation.
public struct GenerationStats: Sendable {
    public var promptTokens = 0
    public var completionTokens = 0
    public var prefillSeconds = 0.0
    public var decodeSeconds = 0.0
    public var finishReason = FinishReason.length
    public var totalSeconds: Double { prefillSeconds + decodeSeconds }
    public init() {}
}

/// Runs one sequence at a time through a `Transformer`: chunked prefill, then one row per step.
///
/// The single-stream path used by `cast-serve generate` and cast-bench's single-stream figures;
/// the continuous-batching engine drives the same `Transformer.forward` with many slots.
/// Not thread-safe.
public final class Generator {
    public let model: Transformer
    public let cache: KVCache

    public init(model: Transformer, contextLength: Int, cacheType: KVCacheType = .f16) {
        self.model = model
        cache = model.makeCache(slots: 1, capacity: contextLength, type: cacheType)
    }

    /// Context positions available to one sequence.
    public var contextLength: Int { cache.capacity }

    /// Prefills `prompt` in chunks of at most the model's step size; the logits of the last
    /// prompt token are left in `model.logits[0..<vocab]`.
    public func prefill(_ prompt: [Int32]) throws {
        precondition(!prompt.isEmpty, "prefill needs at least one token")
        guard prompt.count < cache.capacity else {
            throw ModelError.contextOverflow(slot: 0, needed: prompt.count + 1, capacity: cache.capacity)
        }
        cache.reset(slot: 0)
        var start = 0
        while start < prompt.count {
            let end = min(start + model.maxStepRows, prompt.count)
            try model.forward(BatchRow.chain(slot: 0, tokens: prompt[start..<end], startPosition: start), cache: cache)
            try cache.commit(slot: 0, rows: 0..<(end - start))
            start = end
        }
    }

    /// Generates up to `maxTokens` tokens after `prompt`. `next` picks a token from the logits
    /// (`[vocabularySize]`, mutable scratch); `onToken` receives each token and returns false to
    /// stop. Generation also stops after a token in `stopTokens` (which is reported, not hidden).
    public func generate(prompt: [Int32], maxTokens: Int, stopTokens: Set<Int32>,
                         next: (UnsafeMutablePointer<Float>, Int) -> Int32,
                         onToken: (Int32) -> Bool) throws -> GenerationStats {
        var stats = GenerationStats()
        stats.promptTokens = prompt.count
        let clock = ContinuousClock()
        let t0 = clock.now
        try prefill(prompt)
        stats.prefillSeconds = (clock.now - t0).seconds
        let t1 = clock.now
        let vocab = model.config.vocabularySize
        var row = [BatchRow(slot: 0, token: 0, position: 0)]
        stats.finishReason = .length
        while stats.completionTokens < maxTokens {
            let token = next(model.logits, vocab)
            stats.completionTokens += 1
            if !onToken(token) { stats.finishReason = .cancelled; break }
            if stopTokens.contains(token) { stats.finishReason = .stop; break }
            if stats.completionTokens == maxTokens || cache.lengths[0] + 1 >= cache.capacity { break }
            row[0] = BatchRow(slot: 0, token: token, position: cache.lengths[0])
            try model.forward(row, cache: cache)
            try cache.commit(slot: 0, rows: CollectionOfOne(0))
        }
        stats.decodeSeconds = (clock.now - t1).seconds
        return stats
    }
}

extension Duration {
    /// The duration in seconds as a Double.
    public var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) * 1e-18
    }
}
