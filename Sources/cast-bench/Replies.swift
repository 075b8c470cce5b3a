import ArgumentParser
import ChatTemplate
import Engine
import Foundation
import GGUF
import Kernels
import Model

extension CastBench {
    /// The target's own replies to a prompt file, for a learned drafter's training data: each
    /// prompt through the chat template as the server applies it, answered greedily and with
    /// seeded sampling by the continuous-batching engine (speculation off, many at once).
    ///
    /// Output: JSON lines {"id", "category", "mode", "seed", "prompt_tokens", "tokens", "top1"} where
    /// `tokens` is the prompt's token ids followed by the reply's (a final end-of-turn token
    /// included) and `top1[i]` is the target's most likely token where reply token i was chosen
    /// (the greedy choice; for a sampled reply it can differ from the token drawn).
    struct Replies: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Generate the target's greedy and sampled replies to prompts and write their token ids.")

        @Option(help: "Path to the GGUF model.")
        var model = "models/SmolLM2-135M-Instruct.Q4_1.gguf"

        @Option(help: "Prompts: JSON lines as the bench prompts ({\"id\", \"category\", \"messages\", \"prompt\" or \"tokens\", \"max_tokens\"}).")
        var prompts: String

        @Option(help: "Where to write the replies (JSON lines).")
        var out: String

        @Option(help: "Sampled replies per prompt, besides the greedy one.")
        var samples = 1

        @Option(help: "Temperature of the sampled replies.")
        var temperature: Float = 0.8

        @Option(help: "Seed of the sampled replies (each prompt and sample gets seed + a fixed offset).")
        var seed: UInt64 = 1

        @Option(help: "Sequences decoded together.")
        var slots = 16

        @Option(help: "Kernel set: auto, avx512, avx2, neon or scalar (auto: the fastest this CPU runs).")
        var kernels = "auto"

        @Option(help: "Worker threads (default: all cores).")
        var threads = ProcessInfo.processInfo.activeProcessorCount

        func run() throws {
            let log: (String) -> Void = { FileHandle.standardError.write(Data(("cast-bench: " + $0 + "\n").utf8)) }
            guard samples >= 0 else { throw ValidationError("--samples must be 0 or more") }
            guard slots >= 1 && slots <= 64 else { throw ValidationError("--slots takes 1 to 64") }
            guard temperature > 0 else { throw ValidationError("--temperature must be above 0 (the greedy reply is always made)") }
            let kernelSet = try KernelSet.select(KernelChoice(parsing: kernels))
            let file = try GGUFFile(path: model)
            let transformer = try Transformer(file: file, threads: threads, maxStepRows: 512, maxLogitRows: 256, maxContext: 1536,
                                              kernels: kernelSet)
            let rows = try BenchPrompt.load(path: prompts)
            // Rows given as token ids need no tokenizer (synthetic test models have none that works).
            let formatter = rows.allSatisfy({ $0.tokens != nil }) ? nil : try PromptFormatter(file: file)
            let tokens = try rows.map { try $0.tokens ?? formatter!.tokens(for: $0) }
            for (row, t) in zip(rows, tokens) where t.isEmpty || t.contains(where: { $0 < 0 || Int($0) >= transformer.config.vocabularySize }) {
                throw BenchError.badPrompt(path: prompts, line: 0, reason: "prompt \(row.id): empty, or a token outside the vocabulary 0..<\(transformer.config.vocabularySize)")
            }
            let stopTokens = formatter?.stopTokens ?? []
            guard FileManager.default.createFile(atPath: out, contents: nil), let handle = FileHandle(forWritingAtPath: out) else {
                throw FeaturesError.outputUnwritable(path: out)
            }
            defer { try? handle.close() }

            struct Job { var prompt: Int; var mode: String; var seed: UInt64? }
            var jobs: [Job] = []
            for i in rows.indices {
                jobs.append(Job(prompt: i, mode: "greedy", seed: nil))
                for k in 0..<samples { jobs.append(Job(prompt: i, mode: "sample", seed: seed &+ UInt64(i) &* 1009 &+ UInt64(k))) }
            }
            var config = EngineConfiguration(slots: slots, contextLength: 1536, maxWaiting: jobs.count, prefillChunk: 256, speculation: false)
            config.kvCacheType = .f16
            let engine = Engine(model: transformer, configuration: config)
            defer {
                engine.shutdown()
                _ = engine.waitUntilStopped(timeout: .seconds(10))
            }
            log("\(rows.count) prompts, \(jobs.count) replies (greedy + \(samples) sampled at temperature \(temperature)), \(slots) slots, \(kernelSet) kernels")

            final class Collector: @unchecked Sendable {
                let lock = NSLock()
                var replies: [[Int32]]
                var top1: [[Int32]]
                var failures: [String] = []
                var finished = 0, generated = 0
                init(count: Int) {
                    replies = Array(repeating: [], count: count)
                    top1 = Array(repeating: [], count: count)
                }
            }
            let collector = Collector(count: jobs.count)
            let done = DispatchSemaphore(value: 0)
            for (j, job) in jobs.enumerated() {
                let sampling = job.seed.map { SamplingParameters(temperature: temperature, seed: $0) } ?? .greedy
                try engine.submit(GenerationRequest(promptTokens: tokens[job.prompt], maxTokens: rows[job.prompt].maxTokens,
                                                    sampling: sampling, stopTokens: stopTokens, topLogprobs: 1,
                                                    speculation: false)) { event in
                    switch event {
                    case .token(let t):
                        collector.lock.lock()
                        collector.replies[j].append(t.id)
                        collector.top1[j].append(t.topLogprobs.first?.id ?? t.id)
                        collector.generated += 1
                        collector.lock.unlock()
                    case .finished:
                        collector.lock.lock()
                        collector.finished += 1
                        collector.lock.unlock()
                        done.signal()
                    case .failed(let error):
                        collector.lock.lock()
                        collector.failures.append("\(rows[job.prompt].id) (\(job.mode)): \(error)")
                        collector.lock.unlock()
                        done.signal()
                    default:
                        break
                    }
                }
            }
            let clock = ContinuousClock()
            let started = clock.now
            for n in 1...jobs.count {
                done.wait()
                if n % 50 == 0 || n == jobs.count {
                    collector.lock.lock()
                    let generated = collector.generated
                    collector.lock.unlock()
                    log(String(format: "[%d/%d] replies, %d tokens, %.0f tok/s", n, jobs.count, generated,
                               Double(generated) / max((clock.now - started).seconds, 1e-9)))
                }
            }
            collector.lock.lock()
            defer { collector.lock.unlock() }
            if let first = collector.failures.first {
                throw ValidationError("\(collector.failures.count) replies failed, the first: \(first)")
            }
            var text = ""
            for (j, job) in jobs.enumerated() {
                let line: [String: Any] = [
                    "id": rows[job.prompt].id, "category": rows[job.prompt].category, "mode": job.mode,
                    "seed": job.seed.map { Int($0) } ?? NSNull(), "prompt_tokens": tokens[job.prompt].count,
                    "tokens": (tokens[job.prompt] + collector.replies[j]).map { Int($0) },
                    "top1": collector.top1[j].map { Int($0) },
                ]
                text += String(decoding: try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]), as: UTF8.self) + "\n"
            }
            handle.write(Data(text.utf8))
        }
    }
}
