import Foundation
import Kernels
import Model
import Engine
import ChatTemplate

/// One point of the step-cost curve: the median wall time of a forward step of `rows` new rows
/// spread over `sequences` sequences, each with `context` cached positions, logits for every row
/// (as in draft verification).
struct CostPoint: Codable {
    var rows: Int
    var sequences: Int
    var context: Int
    var ms: Double
}

/// A llama-bench style figure: mean and standard deviation over repetitions.
struct Throughput: Codable {
    var test: String
    var tokensPerSecond: Double
    var stddev: Double

    enum CodingKeys: String, CodingKey {
        case test
        case tokensPerSecond = "tok_s"
        case stddev
    }
}

/// Per-category single-stream figures over the bench prompts.
struct CategoryFigures: Codable {
    var category: String
    var prompts: Int
    var promptTokens: Int
    var completionTokens: Int
    var prefillTokS: Double
    var decodeTokS: Double
    var e2eTokS: Double

    enum CodingKeys: String, CodingKey {
        case category, prompts
        case promptTokens = "prompt_tokens"
        case completionTokens = "completion_tokens"
        case prefillTokS = "prefill_tok_s"
        case decodeTokS = "decode_tok_s"
        case e2eTokS = "e2e_tok_s"
    }
}

/// Everything `cast-bench run` measures.
struct SingleStreamReport: Codable {
    var machine: MachineInfo
    var model: String
    var modelBytes: Int
    var weightBytesPerStep: Int
    var threads: Int
    var prefillTokS: Double
    var decodeTokS: Double
    var e2eTokS: Double
    var decodeBandwidthGBs: Double
    /// A STREAM-like read of a buffer far larger than the caches, with the same threads.
    var readBandwidthGBs: Double
    /// The kernel set the model ran on, and how keys and values were stored.
    var kernels: String
    var kvCacheType: String
    var kvBytesPerPosition: Int
    var categories: [CategoryFigures]
    var synthetic: [Throughput]
    var costCurve: [CostPoint]
    var neighbour: NeighbourFigures?
    var head: HeadShare

    enum CodingKeys: String, CodingKey {
        case machine, model, threads, synthetic, categories, kernels, neighbour, head
        case readBandwidthGBs = "read_bandwidth_gb_s"
        case kvCacheType = "kv_cache_type"
        case kvBytesPerPosition = "kv_bytes_per_position"
        case modelBytes = "model_bytes"
        case weightBytesPerStep = "weight_bytes_per_step"
        case prefillTokS = "prefill_tok_s"
        case decodeTokS = "decode_tok_s"
        case e2eTokS = "e2e_tok_s"
        case decodeBandwidthGBs = "decode_bandwidth_gb_s"
        case costCurve = "cost_curve"
    }
}

/// Decode with and without a busy-loop neighbour thread competing for the cores.
struct NeighbourFigures: Codable {
    var aloneTokS: Double
    var withNeighbourTokS: Double

    enum CodingKeys: String, CodingKey {
        case aloneTokS = "alone_tok_s"
        case withNeighbourTokS = "with_neighbour_tok_s"
    }
}

/// What the output head costs in one decode step: a single row at `context` cached positions,
/// forwarded with and without its logits (interleaved, medians).
struct HeadShare: Codable {
    var context: Int
    var withLogitsMs: Double
    var withoutLogitsMs: Double
    /// (with - without) / with, at least 0.
    var share: Double

    init(context: Int, withLogitsMs: Double, withoutLogitsMs: Double) {
        self.context = context
        self.withLogitsMs = withLogitsMs
        self.withoutLogitsMs = withoutLogitsMs
        share = max(0, withLogitsMs - withoutLogitsMs) / withLogitsMs
    }

    enum CodingKeys: String, CodingKey {
        case context, share
        case withLogitsMs = "with_logits_ms"
        case withoutLogitsMs = "without_logits_ms"
    }
}

/// Measures single-stream generation and the step-cost curve of a loaded model.
struct SingleStreamBench {
    let model: Transformer
    let prompts: [BenchPrompt]
    let formatter: PromptFormatter
    let cacheType: KVCacheType
    let log: (String) -> Void

    /// Greedy single-stream generation of every bench prompt through an engine of one slot (each
    /// up to its max_tokens; an end-of-turn token ends it early, as in the server).
    func runPrompts() throws -> (total: CategoryFigures, categories: [CategoryFigures]) {
        var config = EngineConfiguration(slots: 1, contextLength: 4096, maxWaiting: 0, prefillChunk: model.maxStepRows)
        config.kvCacheType = cacheType
        let engine = Engine(model: model, configuration: config)
        defer {
            engine.shutdown()
            engine.waitUntilStopped(timeout: .seconds(60))
        }
        var byCategory: [String: [GenerationStats]] = [:]
        var order: [String] = []
        for (i, prompt) in prompts.enumerated() {
            let tokens = try formatter.tokens(for: prompt)
            let stats = try engine.generate(GenerationRequest(promptTokens: tokens, maxTokens: prompt.maxTokens, sampling: .greedy,
                                                              stopTokens: formatter.stopTokens)) { _ in }
            if byCategory[prompt.category] == nil { order.append(prompt.category) }
            byCategory[prompt.category, default: []].append(stats)
            log(String(format: "[%2d/%d] %-14@ prompt %4d tok  completion %4d tok  prefill %7.1f tok/s  decode %6.1f tok/s",
                       i + 1, prompts.count, prompt.id as NSString, stats.promptTokens, stats.completionTokens,
                       Double(stats.promptTokens) / stats.prefillSeconds,
                       Double(max(stats.completionTokens - 1, 0)) / max(stats.decodeSeconds, 1e-9)))
        }
        let categories = order.map { figures($0, byCategory[$0]!) }
        return (figures("total", byCategory.values.flatMap { $0 }), categories)
    }

    private func figures(_ name: String, _ runs: [GenerationStats]) -> CategoryFigures {
        let promptTokens = runs.reduce(0) { $0 + $1.promptTokens }
        let completion = runs.reduce(0) { $0 + $1.completionTokens }
        // The first completion token comes from the prefill's logits; decode steps make the rest.
        let decodeSteps = runs.reduce(0) { $0 + max($1.completionTokens - 1, 0) }
        let prefill = runs.reduce(0) { $0 + $1.prefillSeconds }
        let decode = runs.reduce(0) { $0 + $1.decodeSeconds }
        return CategoryFigures(category: name, prompts: runs.count, promptTokens: promptTokens, completionTokens: completion,
                               prefillTokS: Double(promptTokens) / prefill, decodeTokS: Double(decodeSteps) / decode,
                               e2eTokS: Double(completion) / (prefill + decode))
    }

    /// llama-bench's pp512 (one 512-token prefill) and tg128 (128 decode steps from an empty
    /// context), `repetitions` times each after a warm-up.
    func runSynthetic(repetitions: Int) throws -> [Throughput] {
        let cache = model.makeCache(slots: 1, capacity: 513, type: cacheType)
        let clock = ContinuousClock()
        func pp() throws -> Double {
            cache.reset(slot: 0)
            let t = clock.now
            try fill(cache, slot: 0, count: 512)
            return 512 / (clock.now - t).seconds
        }
        _ = try pp()
        return [try measure("pp512", repetitions, pp), try runDecode(depth: 0, repetitions: repetitions, name: "tg128")]
    }

    /// tg128 after `depth` cached positions (llama-bench's `-n 128 -d depth`): 128 greedy decode
    /// steps of one row timed, `repetitions` times after a warm-up; the prefill of the depth is not
    /// timed. (The forward pass alone, as llama-bench times it: the engine's step adds its
    /// scheduling, which `runPrompts` includes.)
    func runDecode(depth: Int, repetitions: Int, name: String? = nil) throws -> Throughput {
        let cache = model.makeCache(slots: 1, capacity: depth + 130, type: cacheType)
        try fill(cache, slot: 0, count: depth)
        let clock = ContinuousClock()
        func tg() throws -> Double {
            cache.truncate(slot: 0, to: depth)
            var row = [BatchRow(slot: 0, token: 1, position: depth)]
            let t = clock.now
            for _ in 0..<128 {
                try model.forward(row, cache: cache)
                try cache.commit(slot: 0, rows: CollectionOfOne(0))
                row[0] = BatchRow(slot: 0, token: Ops.argmax(model.logits, count: model.config.vocabularySize), position: cache.lengths[0])
            }
            return 128 / (clock.now - t).seconds
        }
        _ = try tg()
        return try measure(name ?? "tg128@d\(depth)", repetitions, tg)
    }

    /// The output head's share of a decode step (`HeadShare`): 41 interleaved pairs of one-row
    /// steps at `context` cached positions, one asking for logits and one not.
    func runHeadShare(context: Int) throws -> HeadShare {
        let cache = model.makeCache(slots: 1, capacity: context + 2, type: cacheType)
        try fill(cache, slot: 0, count: context)
        let clock = ContinuousClock()
        var with: [Double] = [], without: [Double] = []
        for i in 0..<42 {
            for wants in [true, false] {
                let t = clock.now
                try model.forward([BatchRow(slot: 0, token: 7, position: context, wantsLogits: wants)], cache: cache)
                // The first pair warms up.
                if i > 0 { (wants ? { with.append($0) } : { without.append($0) })((clock.now - t).seconds * 1000) }
            }
        }
        with.sort()
        without.sort()
        let share = HeadShare(context: context, withLogitsMs: with[with.count / 2], withoutLogitsMs: without[without.count / 2])
        log(String(format: "decode step at context %d: %.2f ms with logits, %.2f ms without: the head is %.0f%% of it", context,
                   share.withLogitsMs, share.withoutLogitsMs, 100 * share.share))
        return share
    }

    /// Fills an empty `slot` of `cache` with `count` synthetic positions (token
    /// 100 + ((i + 31 slot) 7919) mod 40000 at position i), at most `maxStepRows` a step.
    private func fill(_ cache: KVCache, slot: Int, count: Int) throws {
        var start = 0
        while start < count {
            let end = min(start + model.maxStepRows, count)
            let tokens = (start..<end).map { Int32(100 + (($0 + slot * 31) * 7919) % 40000) }
            try model.forward(BatchRow.chain(slot: slot, tokens: tokens, startPosition: start), cache: cache)
            try cache.commit(slot: slot, rows: 0..<tokens.count)
            start = end
        }
    }

    private func measure(_ name: String, _ n: Int, _ body: () throws -> Double) throws -> Throughput {
        let xs = try (0..<n).map { _ in try body() }
        let mean = xs.reduce(0, +) / Double(n)
        let sd = n > 1 ? (xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(n - 1)).squareRoot() : 0
        log(String(format: "%@: %.1f ± %.1f tok/s", name, mean, sd))
        return Throughput(test: name, tokensPerSecond: mean, stddev: sd)
    }

    /// The step-cost curve T(R, C): R in 1, 2, 4, ..., maxRows, rows as one sequence's chain and
    /// spread over up to `maxSequences` sequences, at each context size.
    func runCostCurve(maxRows: Int, contexts: [Int], maxSequences: Int) throws -> [CostPoint] {
        var points: [CostPoint] = []
        let cache = model.makeCache(slots: maxSequences, capacity: (contexts.max() ?? 0) + maxRows + 1, type: cacheType)
        let clock = ContinuousClock()
        for context in contexts {
            // Fill every slot with `context` positions once; steps below never commit.
            for slot in 0..<maxSequences {
                cache.reset(slot: slot)
                try fill(cache, slot: slot, count: context)
            }
            var r = 1
            while r <= maxRows {
                for sequences in Set([1, min(r, maxSequences)]).sorted() {
                    var rows: [BatchRow] = []
                    let perSequence = r / sequences
                    for s in 0..<sequences {
                        let count = perSequence + (s < r % sequences ? 1 : 0)
                        let tokens = (0..<count).map { Int32(200 + ($0 * 131 + s * 17) % 30000) }
                        rows += BatchRow.chain(slot: s, tokens: tokens, startPosition: context, firstRow: rows.count, allLogits: true)
                    }
                    let reps = r <= 16 ? 15 : 7
                    try model.forward(rows, cache: cache)
                    var times: [Double] = []
                    for _ in 0..<reps {
                        let t = clock.now
                        try model.forward(rows, cache: cache)
                        times.append((clock.now - t).seconds * 1000)
                    }
                    times.sort()
                    let point = CostPoint(rows: r, sequences: sequences, context: context, ms: times[times.count / 2])
                    log(String(format: "T(rows %3d, sequences %2d, context %4d) = %.2f ms", r, sequences, context, point.ms))
                    points.append(point)
                }
                r *= 2
            }
        }
        return points
    }
}
