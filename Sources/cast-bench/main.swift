import ArgumentParser
import ChatTemplate
import Foundation
import GGUF
import Kernels
import Model

/// cast-bench: CastServe's benchmark. Figures come from one run against a baseline in the same run.
struct CastBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cast-bench",
        abstract: "Benchmark CastServe on this machine.",
        subcommands: [Run.self, Matrix.self, Replies.self, Features.self, DrafterCheck.self],
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

    @Option(help: "Kernel set: auto, avx512, avx2, neon or scalar (auto: the fastest this CPU runs).")
    var kernels = "auto"

    @Option(help: "Key/value cache storage: f16, q8_0 or f32.")
    var kvCacheType = "f16"

    /// Makes the chosen kernel set the process-wide one (an error names what this CPU lacks).
    func selectKernels() throws -> KernelSet {
        try KernelSet.select(KernelChoice(parsing: kernels))
    }

    func cacheType() throws -> KVCacheType { try KVCacheType(parsing: kvCacheType) }
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

        @Option(help: "Context depths for extra decode figures (tg128 after a prefill of D tokens), comma-separated.")
        var depths = "128,2048"

        @Flag(help: "Also measure tg128 while a busy-loop thread competes for the cores (the pool must share them fairly).")
        var neighbour = false

        func run() throws {
            let log: (String) -> Void = { FileHandle.standardError.write(Data(("cast-bench: " + $0 + "\n").utf8)) }
            let contextSizes = try contexts.split(separator: ",").map {
                guard let c = Int($0.trimmingCharacters(in: .whitespaces)), c >= 0 else {
                    throw ValidationError("--contexts takes comma-separated non-negative integers, e.g. 128,1024")
                }
                return c
            }
            let depthList = try depths.split(separator: ",").map {
                guard let d = Int($0.trimmingCharacters(in: .whitespaces)), d >= 0 && d <= 3900 else {
                    throw ValidationError("--depths takes comma-separated integers in 0...3900, e.g. 128,2048")
                }
                return d
            }
            let kernels = try common.selectKernels()
            let cacheType = try common.cacheType()
            let file = try GGUFFile(path: common.model)
            log("loading \(common.model) with \(common.threads) threads, \(kernels) kernels, \(cacheType.rawValue) KV cache")
            let model = try Transformer(file: file, threads: common.threads, maxStepRows: max(512, maxRows),
                                        maxLogitRows: max(256, maxRows), maxContext: 4096, kernels: kernels)
            try cacheType.validate(headDimension: model.config.headDimension)
            let readBandwidth = MemoryBandwidth.measure(pool: model.pool)
            log(String(format: "host read bandwidth: %.1f GB/s with %d threads", readBandwidth, common.threads))
            let formatter = try PromptFormatter(file: file)
            var prompts = try BenchPrompt.load(path: common.prompts)
            if let limit { prompts = Array(prompts.prefix(limit)) }
            let bench = SingleStreamBench(model: model, prompts: prompts, formatter: formatter, cacheType: cacheType, log: log)

            var synthetic = try bench.runSynthetic(repetitions: repetitions)
            for d in depthList { synthetic.append(try bench.runDecode(depth: d, repetitions: repetitions)) }
            var neighbourFigures: NeighbourFigures?
            if neighbour {
                let alone = synthetic[1].tokensPerSecond
                let contended = try BusyNeighbour.whileRunning { try bench.runDecode(depth: 0, repetitions: repetitions, name: "tg128 with a busy neighbour") }
                neighbourFigures = NeighbourFigures(aloneTokS: alone, withNeighbourTokS: contended.tokensPerSecond)
                log(String(format: "tg128 alone %.1f tok/s, with one busy-loop neighbour %.1f tok/s (%.2fx)", alone,
                           contended.tokensPerSecond, contended.tokensPerSecond / alone))
            }
            var total = CategoryFigures(category: "total", prompts: 0, promptTokens: 0, completionTokens: 0,
                                        prefillTokS: 0, decodeTokS: 0, e2eTokS: 0)
            var categories: [CategoryFigures] = []
            if !skipPrompts { (total, categories) = try bench.runPrompts() }
            let head = try bench.runHeadShare(context: 128)
            let curve = try bench.runCostCurve(maxRows: maxRows, contexts: contextSizes, maxSequences: 16)
            let modelBytes = (try? FileManager.default.attributesOfItem(atPath: common.model)[.size] as? Int) ?? 0
            let decodeRate = skipPrompts ? synthetic[1].tokensPerSecond : total.decodeTokS
            let report = SingleStreamReport(
                machine: .current(), model: (common.model as NSString).lastPathComponent, modelBytes: modelBytes,
                weightBytesPerStep: model.weightBytes, threads: common.threads,
                prefillTokS: skipPrompts ? synthetic[0].tokensPerSecond : total.prefillTokS, decodeTokS: decodeRate,
                e2eTokS: total.e2eTokS, decodeBandwidthGBs: Double(model.weightBytes) * decodeRate / 1e9,
                readBandwidthGBs: readBandwidth, kernels: kernels.description, kvCacheType: cacheType.rawValue,
                kvBytesPerPosition: model.makeCache(slots: 1, capacity: 16, type: cacheType).bytesPerPosition,
                categories: categories, synthetic: synthetic, costCurve: curve, neighbour: neighbourFigures, head: head)
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
