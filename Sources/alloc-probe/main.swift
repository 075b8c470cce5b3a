import AllocationCounter
import Engine
import Foundation
import GGUF
import Kernels
import Model
import Speculation

// alloc-probe: heap allocations per generated token in steady-state decode, as one JSON object on
// stdout (tests/test_allocations.py compares it with tests/allocation_thresholds.json). The process
// links AllocationCounter, which counts every malloc of every thread.
//   forward_per_token: Transformer.forward of one row plus KVCache.commit, step after step (the
//                      work of every decode step).
//   engine_per_token:  a greedy request through the engine: step loop, scheduling, sampling and the
//                      token events its callback receives.
//   speculative_engine_per_token: the same with speculation on (default drafter, a fixed cost model
//                      on which rows are free: every step drafts, plans, verifies): the tree
//                      bookkeeping of drafting and verification.
// Usage: alloc-probe [MODEL] [KERNELS]
let arguments = CommandLine.arguments
let modelPath = arguments.count > 1 ? arguments[1] : "models/SmolLM2-135M-Instruct.Q4_1.gguf"
let kernels = try KernelSet.select(arguments.count > 2 ? KernelChoice(parsing: arguments[2]) : .auto)
let model = try Transformer(file: GGUFFile(path: modelPath), threads: 2, maxStepRows: 64, maxLogitRows: 8, maxContext: 1024,
                            kernels: kernels)

// The counter sees Swift's allocations (else every figure below would be a vacuous 0).
let probeStart = allocation_count()
let probeArray = [Int](repeating: 7, count: 1000 + Int(probeStart % 3))
let counterWorks = allocation_count() > probeStart && probeArray.count > 0

// Forward level.
let cache = model.makeCache(slots: 1, capacity: 512)
var row = [BatchRow(slot: 0, token: 1, position: 0)]
func step() throws {
    try model.forward(row, cache: cache)
    try cache.commit(slot: 0, rows: CollectionOfOne(0), tokens: CollectionOfOne(row[0].token))
    row[0] = BatchRow(slot: 0, token: Ops.argmax(model.logits, count: model.config.vocabularySize), position: cache.lengths[0])
}
for _ in 0..<16 { try step() }
let forwardSteps = 128
let forwardStart = allocation_count()
for _ in 0..<forwardSteps { try step() }
let forwardPerToken = Double(allocation_count() - forwardStart) / Double(forwardSteps)

// Engine level: counts between the 100th and the 300th token of one long greedy request.
final class Counts: @unchecked Sendable {
    var tokens = 0
    var first: Int64 = 0
    var last: Int64 = 0
    let done = DispatchSemaphore(value: 0)
}

/// Allocations per token between the 100th and the 300th token of one greedy request through an
/// engine with `configuration`, and the tokens it produced.
func enginePerToken(_ configuration: EngineConfiguration) throws -> (perToken: Double, tokens: Int) {
    let counts = Counts()
    let engine = Engine(model: model, configuration: configuration)
    try engine.submit(GenerationRequest(promptTokens: [1, 9690, 198, 2683, 359, 253, 5356, 5646], maxTokens: 320,
                                        sampling: .greedy, stopTokens: [])) { event in
        switch event {
        case .token:
            counts.tokens += 1
            if counts.tokens == 100 { counts.first = allocation_count() }
            if counts.tokens == 300 { counts.last = allocation_count() }
        case .finished, .failed:
            counts.done.signal()
        case .started, .promptLogprobs, .embedding:
            break
        }
    }
    counts.done.wait()
    engine.shutdown()
    engine.waitUntilStopped(timeout: .seconds(10))
    return (Double(counts.last - counts.first) / 200, counts.tokens)
}
let plain = try enginePerToken(EngineConfiguration(slots: 2, contextLength: 512, maxWaiting: 4))

// Speculative: the default drafter under a fixed cost model where rows are free, so the guards are
// off and every step drafts, plans and verifies trees (the tree bookkeeping is what it counts).
var speculative = EngineConfiguration(slots: 2, contextLength: 512, maxWaiting: 4, speculation: true)
speculative.costModel = CostModel(body: [(1, 1.0), (64, 1.0)]).fixed()
let drafting = try enginePerToken(speculative)

let result: [String: Any] = ["kernels": kernels.description, "counter_works": counterWorks, "forward_per_token": forwardPerToken,
                             "engine_per_token": plain.perToken, "tokens": plain.tokens,
                             "speculative_engine_per_token": drafting.perToken, "speculative_tokens": drafting.tokens]
print(String(decoding: try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys]), as: UTF8.self))
