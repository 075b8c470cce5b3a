import ArgumentParser
import Foundation
import GGUF
import Model

/// cast-bench: CastServe's benchmark. Figures come from one run against a baseline in the same run.
struct CastBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cast-bench",
        abstract: "Benchmark CastServe on this machine.",
        subcommands: [Run.self, Matrix.self],
        defaultSubcommand: Run.self)
}

/// Options every benchmark shares.
struct CommonOptions: ParsableArguments {
    @Option(help: "Path to the GGUF model.")
    var model = "models/SmolLM2-135M-Instruct.Q4_1.gguf"

    @Option(help: "The benchmark workload (JSON lines).")
    var prompts = "../shared/bench/prompts.jsonl"

    @Option(help: "Worker threads (default: all cores).")
    var threads = ProcessInfo.processInfo.activeProcessorCount

    @Flag(help: "Print one JSON object instead of Markdown tables.")
    var json = false
}

extension CastBench {
    /// Single-stream figures (prefill, decode, end-to-end), llama-bench's pp512/tg128, and the
    /// step-cost curve T(rows, context).
    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Single-stream throughput and the step-cost curve.")

        @OptionGroup var common: CommonOptions

        @Option(help: "Use only the first N prompts.")
        var limit: Int?

        @Option(help: "Largest row count of the cost curve (powers of two up to it).")
        var maxRows = 128

        @Option(help: "Context sizes of the cost curve, comma-separated.")
        var contexts = "128,1024"

        @Option(help: "Repetitions of pp512 and tg128.")
        var repetitions = 3

        @Flag(help: "Skip the bench prompts (only pp/tg and the cost curve).")
        var skipPrompts = false

        func run() throws {
            let log: (String) -> Void = { FileHandle.standardError.write(Data(("cast-bench: " + $0 + "\n").utf8)) }
            let contextSizes = try contexts.split(separator: ",").map {
                guard let c = Int($0.trimmingCharacters(in: .whitespaces)), c >= 0 else {
                    throw ValidationError("--contexts takes comma-separated non-negative integers, e.g. 128,1024")
                }
                return c
            }
            let file = try GGUFFile(path: common.model)
            log("loading \(common.model) with \(common.threads) threads")
            let model = try Transformer(file: file, threads: common.threads, maxStepRows: max(512, maxRows),
                                        maxLogitRows: max(256, maxRows), maxContext: 4096)
            let formatter = try PromptFormatter(file: file)
            var prompts = try BenchPrompt.load(path: common.prompts)
            if let limit { prompts = Array(prompts.prefix(limit)) }
            let bench = SingleStreamBench(model: model, prompts: prompts, formatter: formatter, log: log)

            let synthetic = try bench.runSynthetic(repetitions: repetitions)
            var total = CategoryFigures(category: "total", prompts: 0, promptTokens: 0, completionTokens: 0,
                                        prefillTokS: 0, decodeTokS: 0, e2eTokS: 0)
            var categories: [CategoryFigures] = []
            if !skipPrompts { (total, categories) = try bench.runPrompts() }
            let curve = try bench.runCostCurve(maxRows: maxRows, contexts: contextSizes, maxSequences: 16)
            let modelBytes = (try? FileManager.default.attributesOfItem(atPath: common.model)[.size] as? Int) ?? 0
            let decodeRate = skipPrompts ? synthetic[1].tokensPerSecond : total.decodeTokS
            let report = SingleStreamReport(
                machine: .current(), model: (common.model as NSString).lastPathComponent, modelBytes: modelBytes,
                weightBytesPerStep: model.weightBytes, threads: common.threads,
                prefillTokS: skipPrompts ? synthetic[0].tokensPerSecond : total.prefillTokS, decodeTokS: decodeRate,
                e2eTokS: total.e2eTokS, decodeBandwidthGBs: Double(model.weightBytes) * decodeRate / 1e9,
                categories: categories, synthetic: synthetic, costCurve: curve)
            if common.json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
            } else {
                print(MarkdownReport.render(report))
            }
        }
    }
}

CastBench.main()
