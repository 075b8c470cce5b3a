import ArgumentParser
import Engine
import Foundation
import GGUF
import Model
import Speculation

/// One cell of the speculation matrix: a strategy at a concurrency.
struct MatrixCell: Codable {
    var strategy: String
    var batch: Int
    var tokS: Double
    var acceptedPerStep: Double
    var treeRows: Double
    var stepMs: Double
    /// Of `stepMs`, the forward call; and drafting time per step (outside `stepMs`).
    var forwardMs: Double
    var draftMs: Double
    var completionTokens: Int
    var categories: [String: Double]
    /// Tokens committed per decode step of a request, per category.
    var categoryTokensPerStep: [String: Double]

    enum CodingKeys: String, CodingKey {
        case strategy, batch, categories
        case categoryTokensPerStep = "category_tokens_per_step"
        case tokS = "tok_s"
        case acceptedPerStep = "accepted_per_step"
        case treeRows = "tree_rows"
        case stepMs = "step_ms"
        case forwardMs = "forward_ms"
        case draftMs = "draft_ms"
        case completionTokens = "completion_tokens"
    }
}

struct MatrixReport: Codable {
    var machine: MachineInfo
    var model: String
    var threads: Int
    var kernels: String
    var prompts: Int
    var cells: [MatrixCell]
}

extension CastBench {
    /// Speculation strategies against plain decoding at each concurrency, through the engine
    /// (no HTTP): committed tokens/s, tokens committed per sequence-step, draft rows per
    /// sequence-step, step time, and tokens/s per category.
    struct Matrix: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Plain vs chain4 vs tree vs cast_b1 vs cast at each concurrency.")

        @OptionGroup var common: CommonOptions

        @Option(help: "Concurrency levels, comma-separated.")
        var batches = "1,2,4,8,16"

        @Option(help: "Strategies, comma-separated (plain, chain4, tree, cast_b1, cast).")
        var strategies = "plain,chain4,tree,cast_b1,cast"

        @Option(help: "Rounds over the whole matrix (cells interleaved); each cell reports its best round.")
        var rounds = 1

        @Option(help: "Draft source: ngram, recycle or skip.")
        var drafter = "recycle"

        @Option(help: "Use at most N prompts per category.")
        var perCategory: Int?

        @Option(help: "Write an SVG chart (tokens/s vs concurrency, one line per strategy) to this path.")
        var svg: String?

        func run() throws {
            let log: (String) -> Void = { FileHandle.standardError.write(Data(("cast-bench: " + $0 + "\n").utf8)) }
            let levels = try batches.split(separator: ",").map {
                guard let b = Int($0), b >= 1, b <= 64 else { throw ValidationError("--batches takes integers from 1 to 64") }
                return b
            }
            let names = strategies.split(separator: ",").map(String.init)
            for n in names where n != "plain" && DraftStrategy(rawValue: n) == nil {
                throw ValidationError("unknown strategy '\(n)'; choose from plain, chain4, tree, cast_b1, cast")
            }
            guard let drafterKind = DrafterKind(rawValue: drafter) else {
                throw ValidationError("unknown drafter '\(drafter)'; choose from \(DrafterKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            let kernels = try common.selectKernels()
            let cacheType = try common.cacheType()
            let file = try GGUFFile(path: common.model)
            let model = try Transformer(file: file, threads: common.threads, maxStepRows: 512, maxLogitRows: 256, maxContext: 2048,
                                        kernels: kernels)
            try cacheType.validate(headDimension: model.config.headDimension)
            log("\(kernels) kernels, \(cacheType.rawValue) KV cache")
            let formatter = try PromptFormatter(file: file)
            var prompts = try BenchPrompt.load(path: common.prompts)
            if let perCategory {
                var seen: [String: Int] = [:]
                prompts = prompts.filter { seen[$0.category, default: 0] += 1; return seen[$0.category]! <= perCategory }
            }
            let tokens = try prompts.map { try formatter.tokens(for: $0) }
            var cells: [MatrixCell] = []
            // One step-cost model for every cell (measured by the first speculative engine).
            var cost: CostModel?
            for round in 1...max(rounds, 1) {
            for batch in levels {
                for name in names {
                    let strategy = DraftStrategy(rawValue: name) ?? .cast
                    var config = EngineConfiguration(
                        slots: max(batch, 1), contextLength: 2048, maxWaiting: prompts.count, prefillChunk: 256,
                        speculation: name != "plain", strategy: strategy)
                    config.drafter = drafterKind
                    config.kvCacheType = cacheType
                    config.costModel = cost
                    let engine = Engine(model: model, configuration: config)
                    if cost == nil, let measured = engine.snapshot.costModel {
                        cost = measured
                        log("step-cost model: " + measured.corrected.map { String(format: "T(%d)=%.2f", $0.rows, $0.ms) }.joined(separator: " ")
                            + String(format: " ms + %.5f ms/position", measured.msPerPosition))
                    }
                    let cell = try measure(engine, name: name, batch: batch, prompts: prompts, tokens: tokens, stopTokens: formatter.stopTokens)
                    engine.shutdown()
                    log(String(format: "%-8@ B=%2d  %7.1f tok/s  %.2f tokens/step  %.2f draft rows/step  %.2f ms/step (forward %.2f, drafting %.2f)",
                               name as NSString, batch, cell.tokS, cell.acceptedPerStep, cell.treeRows, cell.stepMs, cell.forwardMs, cell.draftMs))
                    if let i = cells.firstIndex(where: { $0.strategy == name && $0.batch == batch }) {
                        if cell.tokS > cells[i].tokS { cells[i] = cell }
                    } else {
                        cells.append(cell)
                    }
                }
            }
            if rounds > 1 { log("round \(round) of \(rounds) done") }
            }
            let report = MatrixReport(machine: .current(), model: (common.model as NSString).lastPathComponent,
                                      threads: common.threads, kernels: kernels.description, prompts: prompts.count, cells: cells)
            if let svg { try MatrixChart.svg(report).write(toFile: svg, atomically: true, encoding: .utf8) }
            if common.json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
            } else {
                print(MatrixChart.markdown(report))
            }
        }

        /// Runs every prompt once with `batch` requests in flight; greedy, each prompt's max_tokens.
        func measure(_ engine: Engine, name: String, batch: Int, prompts: [BenchPrompt], tokens: [[Int32]],
                     stopTokens: Set<Int32>) throws -> MatrixCell {
            let done = DispatchSemaphore(value: 0)
            let slots = DispatchSemaphore(value: batch)
            final class Tally: @unchecked Sendable {
                let lock = NSLock()
                var completion = 0
                var byCategory: [String: (tokens: Int, seconds: Double)] = [:]
                var stepsByCategory: [String: Int] = [:]
            }
            let tally = Tally()
            let before = engine.snapshot
            let clock = ContinuousClock()
            let start = clock.now
            for (i, p) in prompts.enumerated() {
                slots.wait()
                let submitted = clock.now
                let category = p.category
                try engine.submit(GenerationRequest(promptTokens: tokens[i], maxTokens: p.maxTokens, sampling: .greedy, stopTokens: stopTokens)) { event in
                    switch event {
                    case .finished(_, _, let completion, let usage):
                        let seconds = (clock.now - submitted).seconds
                        tally.lock.lock()
                        tally.completion += completion
                        tally.stepsByCategory[category, default: 0] += usage.decodeSteps + 1
                        let old = tally.byCategory[category] ?? (0, 0)
                        tally.byCategory[category] = (old.tokens + completion, old.seconds + seconds)
                        tally.lock.unlock()
                        slots.signal()
                        done.signal()
                    case .failed:
                        slots.signal()
                        done.signal()
                    default:
                        break
                    }
                }
            }
            for _ in prompts { done.wait() }
            let wall = (clock.now - start).seconds
            let after = engine.snapshot
            let roots = max(after.decodeRoots - before.decodeRoots, 1)
            let steps = max(after.stepsTotal - before.stepsTotal, 1)
            return MatrixCell(
                strategy: name, batch: batch, tokS: Double(tally.completion) / wall,
                acceptedPerStep: Double(tally.completion) / Double(roots),
                treeRows: Double(after.draftedTokens - before.draftedTokens) / Double(roots),
                stepMs: (after.stepSecondsTotal - before.stepSecondsTotal) * 1000 / Double(steps),
                forwardMs: (after.forwardSecondsTotal - before.forwardSecondsTotal) * 1000 / Double(steps),
                draftMs: (after.draftSecondsTotal - before.draftSecondsTotal) * 1000 / Double(steps),
                completionTokens: tally.completion,
                categories: tally.byCategory.mapValues { $0.seconds > 0 ? Double($0.tokens) / $0.seconds : 0 },
                categoryTokensPerStep: tally.byCategory.reduce(into: [:]) { out, entry in
                    out[entry.key] = Double(entry.value.tokens) / Double(max(tally.stepsByCategory[entry.key] ?? 1, 1))
                })
        }
    }
}

/// Markdown and SVG renderings of the matrix.
enum MatrixChart {
    static func markdown(_ r: MatrixReport) -> String {
        var out = ["CastServe speculation matrix — \(r.model), \(r.threads) threads, \(r.prompts) prompts, commit \(r.machine.commit)", "",
                   "| strategy | B | tok/s | tokens/step | draft rows/step | step ms |", "|---|---:|---:|---:|---:|---:|"]
        for c in r.cells {
            out.append(String(format: "| %@ | %d | %.1f | %.2f | %.2f | %.2f |", c.strategy, c.batch, c.tokS, c.acceptedPerStep, c.treeRows, c.stepMs))
        }
        let categories = Array(Set(r.cells.flatMap { $0.categories.keys })).sorted()
        out += ["", "Per category (tokens/s per request, B = 1):", "", "| strategy | " + categories.joined(separator: " | ") + " |",
                "|---|" + categories.map { _ in "---:" }.joined(separator: "|") + "|"]
        for c in r.cells where c.batch == 1 {
            out.append("| \(c.strategy) | " + categories.map { String(format: "%.1f", c.categories[$0] ?? 0) }.joined(separator: " | ") + " |")
        }
        out += ["", "Per category (tokens committed per decode step, B = 1):", "", "| strategy | " + categories.joined(separator: " | ") + " |",
                "|---|" + categories.map { _ in "---:" }.joined(separator: "|") + "|"]
        for c in r.cells where c.batch == 1 {
            out.append("| \(c.strategy) | " + categories.map { String(format: "%.2f", c.categoryTokensPerStep[$0] ?? 0) }.joined(separator: " | ") + " |")
        }
        return out.joined(separator: "\n")
    }

    static func svg(_ r: MatrixReport) -> String {
        let width = 640.0, height = 400.0, left = 60.0, right = 130.0, top = 30.0, bottom = 50.0
        let batches = Array(Set(r.cells.map(\.batch))).sorted()
        let strategies = r.cells.map(\.strategy).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        let maxY = (r.cells.map(\.tokS).max() ?? 1) * 1.1
        func x(_ b: Int) -> Double {
            let i = Double(batches.firstIndex(of: b) ?? 0)
            return left + (batches.count > 1 ? i / Double(batches.count - 1) : 0.5) * (width - left - right)
        }
        func y(_ v: Double) -> Double { height - bottom - v / maxY * (height - top - bottom) }
        let colors = ["#888888", "#1f77b4", "#ff7f0e", "#9467bd", "#d62728"]
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(left)\" y=\"18\" font-size=\"14\">Committed tokens/s by strategy and concurrency (\(r.model))</text>\n"
        s += "<line x1=\"\(left)\" y1=\"\(height - bottom)\" x2=\"\(width - right)\" y2=\"\(height - bottom)\" stroke=\"black\"/>\n"
        s += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(height - bottom)\" stroke=\"black\"/>\n"
        for b in batches {
            s += "<text x=\"\(x(b))\" y=\"\(height - bottom + 18)\" text-anchor=\"middle\">\(b)</text>\n"
        }
        s += "<text x=\"\((left + width - right) / 2)\" y=\"\(height - 10)\" text-anchor=\"middle\">concurrent requests</text>\n"
        for k in 0...4 {
            let v = maxY * Double(k) / 4
            s += "<text x=\"\(left - 6)\" y=\"\(y(v) + 4)\" text-anchor=\"end\">\(Int(v))</text>\n"
            s += "<line x1=\"\(left)\" y1=\"\(y(v))\" x2=\"\(width - right)\" y2=\"\(y(v))\" stroke=\"#eeeeee\"/>\n"
        }
        for (i, name) in strategies.enumerated() {
            let color = colors[i % colors.count]
            let points = r.cells.filter { $0.strategy == name }.sorted { $0.batch < $1.batch }.map { "\(x($0.batch)),\(y($0.tokS))" }
            s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(points.joined(separator: " "))\"/>\n"
            s += "<text x=\"\(width - right + 10)\" y=\"\(top + 20 + Double(i) * 18)\" fill=\"\(color)\">\(name)</text>\n"
        }
        return s + "</svg>\n"
    }
}
