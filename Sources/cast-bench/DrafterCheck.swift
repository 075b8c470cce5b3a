import ArgumentParser
import ChatTemplate
import Engine
import Foundation
import GGUF
import Kernels
import Model
import Speculation

/// The learned drafter's figures taken three ways on the same greedy replies, so that a gap
/// between what training measured and what the engine gets can be located.
struct DrafterCheckReport: Codable {
    /// (observed, accepted) per depth 1, 2, ...
    struct Depth: Codable {
        var observed: Int
        var accepted: Int
        var rate: Double { observed > 0 ? Double(accepted) / Double(observed) : 0 }

        enum CodingKeys: String, CodingKey { case observed, accepted }
    }

    var model: String
    var drafter: String
    var kernels: String
    var sequences: Int
    var replyTokens: Int
    /// The engine's own count: chain drafts (width 1, `chain4`), greedy, one sequence at a time.
    var engine: [Depth]
    /// The same walk replayed on the prefill features (rounded to f16, as training reads them):
    /// from each step's root (the token after the previous step's last accepted one), the
    /// drafter's top-1 chain against the reply. Equal to `engine` when the engine feeds the
    /// drafter the features and tokens training used.
    var replayed: [Depth]
    /// Training's offline figure: the chain from every reply position (not only step roots).
    var everyPosition: [Depth]
    /// Whether every reply the engine gave with drafts equals the one it gives without.
    var greedyIdentical: Bool

    enum CodingKeys: String, CodingKey {
        case model, drafter, kernels, sequences, engine, replayed
        case replyTokens = "reply_tokens"
        case everyPosition = "every_position"
        case greedyIdentical = "greedy_identical"
    }
}

extension CastBench {
    /// Checks the learned drafter in the engine against the drafter offline, on greedy replies to
    /// prompts of the training source (never the bench workload). Runs each prompt through the
    /// engine twice (speculation off; then the learned drafter alone drafting chains of up to
    /// `depth` tokens every step) and reports the engine's acceptance per depth next to the same
    /// walk replayed offline on the prefill features, and training's every-position figure.
    /// `--dump` writes, per reply, its tokens and the drafter's depth-1 top-1 token and
    /// probability at every reply position (input of `cast-bench features` and of
    /// tools/drafter/parity.py, which compares them with the numpy reference forward).
    struct DrafterCheck: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "drafter-check",
            abstract: "The learned drafter's acceptance in the engine against the same replies replayed offline.")

        @Option(help: "Path to the GGUF model.")
        var model = "models/SmolLM2-135M-Instruct.Q4_1.gguf"

        @Option(help: "The learned drafter GGUF.")
        var drafterModel: String

        @Option(help: "Prompts of the training source (JSON lines as the bench prompts); the bench workload is refused.")
        var prompts: String

        @Option(help: "Reply length (every reply runs to it: no stop tokens, so the engine's drafts never pass a reply's end).")
        var maxTokens = 64

        @Option(help: "Deepest chain drafted.")
        var depth = 4

        @Option(help: "Kernel set: auto, avx512, avx2, neon or scalar (auto: the fastest this CPU runs).")
        var kernels = "auto"

        @Option(help: "Worker threads (default: all cores).")
        var threads = ProcessInfo.processInfo.activeProcessorCount

        @Option(help: "Write the replies and the drafter's depth-1 top-1 per position here (JSON lines).")
        var dump: String?

        @Flag(help: "Print the report as JSON.")
        var json = false

        func run() throws {
            let log: (String) -> Void = { FileHandle.standardError.write(Data(("cast-bench: " + $0 + "\n").utf8)) }
            guard maxTokens >= 2, depth >= 1 else { throw ValidationError("--max-tokens must be at least 2 and --depth at least 1") }
            // The bench workload's place (CommonOptions' default --prompts), held out from training.
            let bench = URL(fileURLWithPath: "../shared/bench/prompts.jsonl").standardizedFileURL.resolvingSymlinksInPath()
            guard URL(fileURLWithPath: prompts).standardizedFileURL.resolvingSymlinksInPath() != bench else {
                throw ValidationError("\(prompts) is the held-out bench workload; pass prompts of the training source (tools/drafter/data.py build)")
            }
            let kernelSet = try KernelSet.select(KernelChoice(parsing: kernels))
            let file = try GGUFFile(path: model)
            let transformer = try Transformer(file: file, threads: threads, maxStepRows: 512, maxLogitRows: 256, maxContext: 2048,
                                              kernels: kernelSet)
            let weights = try LearnedDrafterWeights(path: drafterModel, target: transformer)
            let rows = try BenchPrompt.load(path: prompts)
            let formatter = rows.allSatisfy({ $0.tokens != nil }) ? nil : try PromptFormatter(file: file)
            let promptTokens = try rows.map { try $0.tokens ?? formatter!.tokens(for: $0) }
            log("\(rows.count) prompts, \(maxTokens) tokens each, drafter \(drafterModel), \(kernelSet) kernels")

            let plain = try generate(transformer, promptTokens, speculation: false, weights: nil)
            let drafted = try generate(transformer, promptTokens, speculation: true, weights: weights)
            let sequences = zip(promptTokens, drafted.replies).map { $0 + $1 }

            // Offline: prefill features (rounded to f16) and the drafter's chain at every position.
            let drafter = try LearnedDrafter(weights: weights, slots: 1, width: 1, layerRows: 256, cost: LayerCost(points: [(1, 1)]))
            let cache = transformer.makeCache(slots: 1, capacity: 2048, type: .f16)
            var replayed = [DrafterCheckReport.Depth](repeating: .init(observed: 0, accepted: 0), count: depth)
            var everyPosition = replayed
            var dumpLines: [String] = []
            for (s, tokens) in sequences.enumerated() {
                let p = promptTokens[s].count, n = tokens.count
                let features = try prefillFeatures(transformer, cache: cache, tokens: tokens, kernels: kernelSet)
                // hits[k][t - (p - 1)]: whether the depth-(k+1) draft from start t (feature t, token
                // t + 1, then its own features and the reply's tokens) is the reply's token t + k + 2.
                let starts = Array((p - 1)..<(n - 1))
                var hits = [[Bool]](repeating: [], count: depth)
                var top1: [Int32] = [], top1Probability: [Float] = []
                var inputs = starts.map { Array(features[($0 * transformer.config.embeddingLength)...].prefix(transformer.config.embeddingLength)) }
                for k in 0..<depth {
                    let live = starts.indices.filter { starts[$0] + k + 2 < n }
                    var next = inputs
                    for chunk in stride(from: 0, to: live.count, by: drafter.layerRows) {
                        let part = Array(live[chunk..<min(chunk + drafter.layerRows, live.count)])
                        let out = drafter.forward(features: part.flatMap { inputs[$0] }, tokens: part.map { tokens[starts[$0] + k + 1] })
                        let d = transformer.config.embeddingLength, vocabulary = weights.vocabularyCount
                        for (r, i) in part.enumerated() {
                            next[i] = Array(out.features[(r * d)..<((r + 1) * d)])
                            let (id, probability) = Self.best(out.logits, row: r, count: vocabulary)
                            let token = weights.vocabulary[id]
                            if hits[k].count <= i { hits[k] += [Bool](repeating: false, count: i + 1 - hits[k].count) }
                            hits[k][i] = token == tokens[starts[i] + k + 2]
                            if k == 0 {
                                top1.append(token)
                                top1Probability.append(probability)
                            }
                        }
                    }
                    inputs = next
                }
                for i in starts.indices {
                    for k in 0..<depth where starts[i] + k + 2 < n {
                        everyPosition[k].observed += 1
                        guard hits[k][i] else { break }
                        everyPosition[k].accepted += 1
                    }
                }
                // The engine's walk: a step's root is at q (the drafter starts from feature q - 1);
                // it drafts up to min(depth, tokens left - 1) and goes on after the accepted ones
                // and the target's own token.
                var q = p
                while q - p + 1 < maxTokens {
                    let room = min(depth, maxTokens - (q - p + 1) - 1)
                    var accepted = 0
                    for k in 0..<room {
                        replayed[k].observed += 1
                        guard hits[k][q - p] else { break }
                        replayed[k].accepted += 1
                        accepted += 1
                    }
                    q += accepted + 1
                }
                if dump != nil {
                    let line: [String: Any] = ["tokens": tokens.map(Int.init), "prompt_tokens": p, "draft_top1": top1.map(Int.init),
                                               "draft_top1_probability": top1Probability.map(Double.init)]
                    dumpLines.append(String(decoding: try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]), as: UTF8.self))
                }
            }
            if let dump {
                guard FileManager.default.createFile(atPath: dump, contents: Data((dumpLines.joined(separator: "\n") + "\n").utf8)) else {
                    throw FeaturesError.outputUnwritable(path: dump)
                }
            }
            let engineDepths = drafted.acceptance.prefix(depth).map { DrafterCheckReport.Depth(observed: $0.observed, accepted: $0.accepted) }
            let report = DrafterCheckReport(model: (model as NSString).lastPathComponent, drafter: drafterModel, kernels: kernelSet.description,
                                            sequences: sequences.count, replyTokens: sequences.count * maxTokens, engine: engineDepths,
                                            replayed: replayed, everyPosition: everyPosition, greedyIdentical: plain.replies == drafted.replies)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
            } else {
                func line(_ name: String, _ depths: [DrafterCheckReport.Depth]) -> String {
                    "| \(name) | " + depths.map { String(format: "%.3f (%d/%d)", $0.rate, $0.accepted, $0.observed) }.joined(separator: " | ") + " |"
                }
                print(["| acceptance | " + (1...depth).map { "depth \($0)" }.joined(separator: " | ") + " |",
                       "|---|" + String(repeating: "---:|", count: depth),
                       line("engine (chain, width 1)", engineDepths), line("replayed offline at the engine's roots", replayed),
                       line("offline, every reply position", everyPosition)].joined(separator: "\n"))
                print("greedy output identical with and without drafts: \(report.greedyIdentical)")
            }
        }

        /// The draft-vocabulary index of the largest logit of `row` and its softmax probability.
        static func best(_ logits: [Float], row: Int, count: Int) -> (Int, Float) {
            logits.withUnsafeBufferPointer { l in
                let x = l.baseAddress! + row * count
                let id = Int(Ops.argmax(x, count: count))
                var sum: Float = 0
                for j in 0..<count { sum += expf(x[j] - x[id]) }
                return (id, 1 / sum)
            }
        }

        /// Every row's feature over a prefill of `tokens`, rounded to f16 (as `cast-bench features` writes them).
        func prefillFeatures(_ transformer: Transformer, cache: KVCache, tokens: [Int32], kernels: KernelSet) throws -> [Float] {
            cache.reset(slot: 0)
            var half: [UInt16] = []
            half.reserveCapacity(tokens.count * transformer.config.embeddingLength)
            try appendPrefillFeatures(transformer, cache: cache, tokens: tokens, from: 0, kernels: kernels, to: &half)
            var out = [Float](repeating: 0, count: half.count)
            out.withUnsafeMutableBufferPointer { Ops.halfToFloat(half, $0.baseAddress!, count: half.count, kernels: kernels) }
            return out
        }

        /// Greedy replies of exactly `maxTokens` tokens, one prompt at a time (B = 1), with speculation
        /// off or with `weights` drafting alone in chains (width 1, `chain4` up to `depth`); the
        /// engine's learned acceptance per depth.
        func generate(_ transformer: Transformer, _ prompts: [[Int32]], speculation: Bool,
                      weights: LearnedDrafterWeights?) throws -> (replies: [[Int32]], acceptance: [(observed: Int, accepted: Int)]) {
            var config = EngineConfiguration(slots: 1, contextLength: 2048, maxWaiting: prompts.count, prefillChunk: 256,
                                             speculation: speculation, strategy: .chain4)
            config.kvCacheType = .f16
            config.drafter = .learned
            config.learnedDrafter = weights
            config.learnedDraftWidth = 1
            config.learnedLayerCost = LayerCost(points: [(1, 1)])
            config.maxDraftDepth = depth
            config.costModel = CostModel(points: [(1, 10), (256, 10)]).fixed()
            let engine = Engine(model: transformer, configuration: config)
            var replies: [[Int32]] = []
            for prompt in prompts {
                final class Reply: @unchecked Sendable {
                    var tokens: [Int32] = []
                    var failure: String?
                }
                let reply = Reply()
                let done = DispatchSemaphore(value: 0)
                try engine.submit(GenerationRequest(promptTokens: prompt, maxTokens: maxTokens, sampling: .greedy, stopTokens: [])) { event in
                    switch event {
                    case .token(let t): reply.tokens.append(t.id)
                    case .finished: done.signal()
                    case .failed(let error):
                        reply.failure = "\(error)"
                        done.signal()
                    default: break
                    }
                }
                done.wait()
                if let failure = reply.failure {
                    engine.shutdown()
                    throw ValidationError("a reply failed: \(failure)")
                }
                replies.append(reply.tokens)
            }
            // A request's end is reported inside its last step; the counters are published after
            // that step, so they are read once the engine has stopped.
            engine.shutdown()
            _ = engine.waitUntilStopped(timeout: .seconds(30))
            return (replies, engine.snapshot.learnedAcceptanceByDepth)
        }
    }
}
