import ArgumentParser
import ChatTemplate
import Engine
import Foundation
import GGUF
import Model
import Speculation

/// Spread of a set of figures: median and the 10th and 90th percentiles.
struct Spread: Codable {
    var median: Double
    var p10: Double
    var p90: Double
    var count: Int

    init?(_ values: [Double]) {
        guard !values.isEmpty else { return nil }
        let v = values.sorted()
        func at(_ q: Double) -> Double { v[min(v.count - 1, Int((Double(v.count - 1) * q).rounded()))] }
        median = at(0.5)
        p10 = at(0.1)
        p90 = at(0.9)
        count = v.count
    }
}

/// One cell of the speculation matrix: a strategy at a concurrency, over every round.
struct MatrixCell: Codable {
    var strategy: String
    var batch: Int
    /// Committed tokens per second: the median over rounds of each round's total tokens / total time.
    var tokS: Double
    /// Per unit (a group of `batch` prompts run together), this strategy's tok/s over plain
    /// decoding's for the same unit in the same round (absent for plain).
    var pairedRatio: Spread?
    /// The same over the decode phase only: per request, the tokens after its first over the time
    /// from its first token to its last (the prompt's prefill, the same work in every strategy, left
    /// out); summed over the unit's requests.
    var decodePairedRatio: Spread?
    var acceptedPerStep: Double
    var treeRows: Double
    var stepMs: Double
    /// Of `stepMs`, the forward call and the drafters' time.
    var forwardMs: Double
    var draftMs: Double
    /// The drafters' share of step time: draftMs / stepMs.
    var draftShare: Double
    /// The learned drafter's nodes accepted over those verified with their parent accepted, by
    /// depth 1, 2, ... (empty without a learned drafter).
    var learnedAcceptanceByDepth: [Double]
    /// Per depth, the learned drafter's expansions with an accepted child over those verified (an
    /// expanded node brings up to 3 children, at most one right).
    var learnedAcceptancePerExpansion: [Double]
    var completionTokens: Int
    /// The cost model's |observed - predicted| / predicted over the cell's steps (speculating strategies).
    var costError: Spread?
    var categories: [String: Double]
    /// Tokens committed per decode step of a request, per category.
    var categoryTokensPerStep: [String: Double]
    /// Per category, the paired ratio to plain decoding (median over units and rounds).
    var categoryRatio: [String: Double]
    /// Per category, the decode phase's paired ratio (as `decodePairedRatio`).
    var categoryDecodeRatio: [String: Double]
    /// Per category, draft tokens accepted over draft tokens verified.
    var categoryAcceptance: [String: Double]
    /// Per category, the drafters' share of the step time of its units (at B = 1 a unit is one
    /// prompt, so this is the category's own; at larger B a unit mixes categories).
    var categoryDraftShare: [String: Double]

    enum CodingKeys: String, CodingKey {
        case strategy, batch, categories
        case pairedRatio = "paired_ratio_to_plain"
        case decodePairedRatio = "decode_paired_ratio_to_plain"
        case categoryDecodeRatio = "category_decode_paired_ratio"
        case categoryTokensPerStep = "category_tokens_per_step"
        case categoryRatio = "category_paired_ratio"
        case tokS = "tok_s"
        case acceptedPerStep = "accepted_per_step"
        case treeRows = "tree_rows"
        case stepMs = "step_ms"
        case forwardMs = "forward_ms"
        case draftMs = "draft_ms"
        case draftShare = "draft_share"
        case learnedAcceptanceByDepth = "learned_acceptance_by_depth"
        case learnedAcceptancePerExpansion = "learned_acceptance_per_expansion"
        case categoryAcceptance = "category_acceptance"
        case categoryDraftShare = "category_draft_share"
        case completionTokens = "completion_tokens"
        case costError = "cost_model_abs_error"
    }
}

struct MatrixReport: Codable {
    var machine: MachineInfo
    var model: String
    var threads: Int
    var kernels: String
    var prompts: Int
    var rounds: Int
    var drafter: String
    /// The learned drafter's file (nil: none).
    var drafterModel: String?
    var cells: [MatrixCell]
}

/// One recorded engine step (cast-bench matrix --record-steps): the cost model's inputs and what
/// the step took, for replaying the model offline.
struct RecordedStep: Codable {
    var batch: Int
    var round: Int
    var rows: Int
    var logitRows: Int
    var positions: Int
    var nodes: Int
    var forwardMs: Double
    var hostMs: Double
    var predictedMs: Double
    /// Wall time of the whole step, drafting included.
    var stepMs: Double

    enum CodingKeys: String, CodingKey {
        case batch, round, rows, positions, nodes
        case logitRows = "logit_rows"
        case forwardMs = "forward_ms"
        case hostMs = "host_ms"
        case predictedMs = "predicted_ms"
        case stepMs = "step_ms"
    }
}

/// One recorded step of plain decoding (no cost model runs there): its rows and wall time.
struct RecordedPlainStep: Codable {
    var batch: Int
    var round: Int
    var rows: Int
    var stepMs: Double

    enum CodingKeys: String, CodingKey {
        case batch, round, rows
        case stepMs = "step_ms"
    }
}

struct RecordedSteps: Codable {
    var machine: MachineInfo
    var kernels: String
    var costModel: CostModel
    var steps: [RecordedStep]
    var plainSteps: [RecordedPlainStep]

    enum CodingKeys: String, CodingKey {
        case machine, kernels, steps
        case costModel = "cost_model"
        case plainSteps = "plain_steps"
    }
}

extension CastBench {
    /// Speculation strategies against plain decoding at each concurrency, through the engine
    /// (no HTTP), in paired runs: the prompts are split into units of `batch` prompts run together,
    /// and each unit runs under every strategy back to back (order rotating per unit and round),
    /// so the machine's noise hits every strategy alike. Each round uses fresh engines (what the
    /// drafters learn stays within a round; the corpus drafter never sees a prompt's own earlier run).
    struct Matrix: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Plain vs chain4 vs tree vs cast_b1 vs cast at each concurrency, paired.")

        @OptionGroup var common: CommonOptions

        @Option(help: "Concurrency levels, comma-separated.")
        var batches = "1,2,4,8,16"

        @Option(help: "Strategies, comma-separated (plain, chain4, tree, cast_b1, cast).")
        var strategies = "plain,chain4,tree,cast_b1,cast"

        @Option(help: "Rounds over the whole matrix, each with fresh engines.")
        var rounds = 2

        @Option(help: "Draft source: recycle, suffix, ngram, skip or learned.")
        var drafter = "recycle"

        @Option(help: "Learned drafter GGUF (default: drafters/<model file stem>.drafter.gguf when present; \"\" for none).")
        var drafterModel: String?

        @Option(help: "Use at most N prompts per category.")
        var perCategory: Int?

        @Option(help: "Write an SVG chart (tokens/s vs concurrency, one line per strategy) to this path.")
        var svg: String?

        @Option(help: "Write every step of the cast strategy (shape, forward and host ms, prediction) as JSON to this path.")
        var recordSteps: String?

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
            guard rounds >= 1 else { throw ValidationError("--rounds must be at least 1") }
            let kernels = try common.selectKernels()
            let cacheType = try common.cacheType()
            let file = try GGUFFile(path: common.model)
            let model = try Transformer(file: file, threads: common.threads, maxStepRows: 512, maxLogitRows: 256, maxContext: 2048,
                                        kernels: kernels)
            try cacheType.validate(headDimension: model.config.headDimension)
            let learnedPath = drafterModel.map { $0.isEmpty ? nil : $0 } ?? {
                let stem = ((common.model as NSString).lastPathComponent as NSString).deletingPathExtension
                return FileManager.default.fileExists(atPath: "drafters/\(stem).drafter.gguf") ? "drafters/\(stem).drafter.gguf" : nil
            }()
            let learned = try learnedPath.map { try LearnedDrafterWeights(path: $0, target: model) }
            if drafterKind == .learned && learned == nil {
                throw ValidationError("--drafter learned needs a drafter file: pass --drafter-model PATH or put drafters/<model file stem>.drafter.gguf in place")
            }
            log("\(kernels) kernels, \(cacheType.rawValue) KV cache, drafter \(drafter)\(learnedPath.map { " + learned \($0)" } ?? ""), \(rounds) rounds")
            let formatter = try PromptFormatter(file: file)
            var prompts = try BenchPrompt.load(path: common.prompts)
            if let perCategory {
                var seen: [String: Int] = [:]
                prompts = prompts.filter { seen[$0.category, default: 0] += 1; return seen[$0.category]! <= perCategory }
            }
            let tokens = try prompts.map { try formatter.tokens(for: $0) }

            // One step-cost model for every engine, measured once.
            var calibration = EngineConfiguration(slots: 1, contextLength: 2048, speculation: true)
            calibration.kvCacheType = cacheType
            calibration.drafter = drafterKind
            calibration.calibrationProgress = { done, total in if done == total { log("step-cost model measured") } }
            let calibrating = Engine(model: model, configuration: calibration)
            guard let cost = calibrating.snapshot.costModel else { throw ValidationError("the step-cost model could not be measured") }
            calibrating.shutdown()
            calibrating.waitUntilStopped(timeout: .seconds(10))
            log("step-cost model: body " + cost.corrected.map { String(format: "%d:%.2f", $0.rows, $0.ms) }.joined(separator: " ")
                + " head " + cost.head.map { String(format: "%d:%.2f", $0.rows, $0.ms) }.joined(separator: " ")
                + String(format: " ms, %.5f ms/position", cost.msPerPosition))

            let recorder = StepRecorder()
            var runs: [String: [Int: [UnitRun]]] = [:]  // strategy -> batch -> units (all rounds)
            var stats: [String: [Int: EngineStats]] = [:]
            for round in 1...rounds {
                for batch in levels {
                    var engines: [String: Engine] = [:]
                    var totals: [String: StepTotals] = [:]
                    for name in names {
                        var config = EngineConfiguration(slots: batch, contextLength: 2048, maxWaiting: prompts.count, prefillChunk: 256,
                                                         speculation: name != "plain", strategy: DraftStrategy(rawValue: name) ?? .cast)
                        config.drafter = drafterKind
                        config.learnedDrafter = learned
                        config.kvCacheType = cacheType
                        config.costModel = cost
                        let engine = Engine(model: model, configuration: config)
                        let record = (name == "cast" || name == "plain") && recordSteps != nil
                        let stepTotals = StepTotals()
                        engine.onStep = {
                            stepTotals.add($0)
                            if record { recorder.add($0, batch: batch, round: round) }
                        }
                        engines[name] = engine
                        totals[name] = stepTotals
                    }
                    let units = stride(from: 0, to: prompts.count, by: batch).map { Array($0..<min($0 + batch, prompts.count)) }
                    for (u, unit) in units.enumerated() {
                        let shift = (u + round) % names.count
                        for name in names[shift...] + names[..<shift] {
                            let from = totals[name]!.value
                            var r = try runUnit(engines[name]!, unit: unit, round: round, prompts: prompts, tokens: tokens,
                                                stopTokens: formatter.stopTokens)
                            r.stepsFrom = from
                            runs[name, default: [:]][batch, default: []].append(r)
                        }
                    }
                    for name in names {
                        let engine = engines[name]!
                        // The counters of a request's last step are published after it ends.
                        engine.shutdown()
                        engine.waitUntilStopped(timeout: .seconds(10))
                        stats[name, default: [:]][batch, default: EngineStats()].add(engine.snapshot)
                        // A unit's steps: from its start to the next unit's on this engine (a
                        // unit's last step is reported just after its requests finish).
                        var ends = totals[name]!.value
                        let level = runs[name]![batch]!.indices.filter { runs[name]![batch]![$0].round == round }
                        for i in level.reversed() {
                            let from = runs[name]![batch]![i].stepsFrom
                            runs[name]![batch]![i].steps = StepTotals.Value(stepMs: ends.stepMs - from.stepMs,
                                                                             draftMs: ends.draftMs - from.draftMs)
                            ends = from
                        }
                        let mine = runs[name]![batch]!.filter { $0.round == round }
                        let t = Double(mine.reduce(0) { $0 + $1.tokens }) / mine.reduce(0) { $0 + $1.seconds }
                        log(String(format: "round %d  %-8@ B=%2d  %7.1f tok/s", round, name as NSString, batch, t))
                    }
                }
            }
            var cells: [MatrixCell] = []
            for batch in levels {
                for name in names {
                    cells.append(cell(name, batch: batch, runs: runs[name]![batch]!, plain: runs["plain"]?[batch], stats: stats[name]![batch]!))
                }
            }
            let report = MatrixReport(machine: .current(), model: (common.model as NSString).lastPathComponent,
                                      threads: common.threads, kernels: kernels.description, prompts: prompts.count, rounds: rounds,
                                      drafter: drafter, drafterModel: learnedPath, cells: cells)
            if let svg { try MatrixChart.svg(report).write(toFile: svg, atomically: true, encoding: .utf8) }
            if let path = recordSteps {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                try encoder.encode(RecordedSteps(machine: .current(), kernels: kernels.description, costModel: cost, steps: recorder.steps,
                                                         plainSteps: recorder.plainSteps))
                    .write(to: URL(fileURLWithPath: path))
                log("\(recorder.steps.count) cast steps and \(recorder.plainSteps.count) plain steps recorded in \(path)")
            }
            if common.json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
            } else {
                print(MatrixChart.markdown(report))
            }
        }

        /// One unit's result under one strategy.
        struct UnitRun {
            var round: Int
            var unit: [Int]
            var tokens: Int
            var seconds: Double
            /// Per category: completion tokens, request seconds, decode steps.
            var byCategory: [String: (tokens: Int, seconds: Double, steps: Int)]
            /// Per category: draft tokens verified and accepted.
            var draftsByCategory: [String: (drafted: Int, accepted: Int)]
            /// Per category, the decode phase of its requests: the tokens after each request's
            /// first and the seconds from that first token to its last (prefill left out).
            var decodeByCategory: [String: (tokens: Int, seconds: Double)]
            /// The engine's step totals when the unit started, and the unit's own step and drafting time.
            var stepsFrom = StepTotals.Value()
            var steps = StepTotals.Value()
        }

        /// Engine counters summed over rounds.
        struct EngineStats {
            var roots = 0, steps = 0, drafted = 0
            var stepSeconds = 0.0, forwardSeconds = 0.0, draftSeconds = 0.0
            var errors: [Double] = []
            var learnedByDepth: [(observed: Int, accepted: Int)] = []
            var learnedExpansions: [(observed: Int, accepted: Int)] = []
            mutating func add(_ s: EngineSnapshot) {
                Self.sum(s.learnedAcceptanceByDepth, into: &learnedByDepth)
                Self.sum(s.learnedExpansionsByDepth.map { ($0.expanded, $0.accepted) }, into: &learnedExpansions)
                roots += s.decodeRoots
                steps += s.stepsTotal
                drafted += s.draftedTokens
                stepSeconds += s.stepSecondsTotal
                forwardSeconds += s.forwardSecondsTotal
                draftSeconds += s.draftSecondsTotal
                if let m = s.costErrorMedian { errors.append(m) }
            }

            /// Adds per-depth counts into `total` (longer lists extend it).
            static func sum(_ counts: [(Int, Int)], into total: inout [(observed: Int, accepted: Int)]) {
                for (d, c) in counts.enumerated() {
                    if d == total.count { total.append((0, 0)) }
                    total[d] = (total[d].observed + c.0, total[d].accepted + c.1)
                }
            }

            /// Accepted over observed per depth, up to the first depth never observed.
            static func rates(_ counts: [(observed: Int, accepted: Int)]) -> [Double] {
                counts.prefix { $0.observed > 0 }.map { Double($0.accepted) / Double($0.observed) }
            }
        }

        /// Runs the unit's prompts together (greedy, each prompt's max_tokens) and waits for all.
        func runUnit(_ engine: Engine, unit: [Int], round: Int, prompts: [BenchPrompt], tokens: [[Int32]],
                     stopTokens: Set<Int32>) throws -> UnitRun {
            let done = DispatchSemaphore(value: 0)
            final class Tally: @unchecked Sendable {
                let lock = NSLock()
                var completion = 0
                var byCategory: [String: (tokens: Int, seconds: Double, steps: Int)] = [:]
                var drafts: [String: (drafted: Int, accepted: Int)] = [:]
                var decode: [String: (tokens: Int, seconds: Double)] = [:]
                /// Per prompt of the unit, when its first token arrived.
                var firstToken: [Int: Double] = [:]
            }
            let tally = Tally()
            let clock = ContinuousClock()
            let start = clock.now
            for i in unit {
                let category = prompts[i].category
                try engine.submit(GenerationRequest(promptTokens: tokens[i], maxTokens: prompts[i].maxTokens, sampling: .greedy,
                                                    stopTokens: stopTokens)) { event in
                    switch event {
                    case .token:
                        let seconds = (clock.now - start).seconds
                        tally.lock.lock()
                        if tally.firstToken[i] == nil { tally.firstToken[i] = seconds }
                        tally.lock.unlock()
                    case .finished(_, _, let completion, let usage):
                        let seconds = (clock.now - start).seconds
                        tally.lock.lock()
                        if let first = tally.firstToken[i], completion > 1 {
                            let old = tally.decode[category] ?? (0, 0)
                            tally.decode[category] = (old.tokens + completion - 1, old.seconds + seconds - first)
                        }
                        tally.completion += completion
                        let old = tally.byCategory[category] ?? (0, 0, 0)
                        tally.byCategory[category] = (old.tokens + completion, old.seconds + seconds, old.steps + usage.decodeSteps + 1)
                        let drafts = tally.drafts[category] ?? (0, 0)
                        tally.drafts[category] = (drafts.drafted + usage.draftedTokens, drafts.accepted + usage.acceptedTokens)
                        tally.lock.unlock()
                        done.signal()
                    case .failed:
                        done.signal()
                    default:
                        break
                    }
                }
            }
            for _ in unit { done.wait() }
            return UnitRun(round: round, unit: unit, tokens: tally.completion, seconds: (clock.now - start).seconds,
                           byCategory: tally.byCategory, draftsByCategory: tally.drafts, decodeByCategory: tally.decode)
        }

        func cell(_ name: String, batch: Int, runs: [UnitRun], plain: [UnitRun]?, stats: EngineStats) -> MatrixCell {
            let roundsSeen = Set(runs.map(\.round)).sorted()
            let perRound = roundsSeen.map { r -> Double in
                let mine = runs.filter { $0.round == r }
                return Double(mine.reduce(0) { $0 + $1.tokens }) / max(mine.reduce(0) { $0 + $1.seconds }, 1e-9)
            }
            var ratios: [Double] = [], decodeRatios: [Double] = []
            var categoryRatios: [String: [Double]] = [:], categoryDecodeRatios: [String: [Double]] = [:]
            /// This run's tokens per second over plain's (nil when either has none).
            func ratio(_ a: (tokens: Int, seconds: Double)?, _ b: (tokens: Int, seconds: Double)?) -> Double? {
                guard let a, let b, a.tokens > 0, b.tokens > 0, a.seconds > 0, b.seconds > 0 else { return nil }
                return (Double(a.tokens) / a.seconds) / (Double(b.tokens) / b.seconds)
            }
            func decodeTotal(_ r: UnitRun) -> (tokens: Int, seconds: Double) {
                r.decodeByCategory.values.reduce((0, 0.0)) { ($0.0 + $1.tokens, $0.1 + $1.seconds) }
            }
            if name != "plain", let plain {
                for r in runs {
                    guard let p = plain.first(where: { $0.round == r.round && $0.unit == r.unit }) else { continue }
                    if let x = ratio((r.tokens, r.seconds), (p.tokens, p.seconds)) { ratios.append(x) }
                    if let x = ratio(decodeTotal(r), decodeTotal(p)) { decodeRatios.append(x) }
                    for (c, v) in r.byCategory {
                        if let q = p.byCategory[c], let x = ratio((v.tokens, v.seconds), (q.tokens, q.seconds)) { categoryRatios[c, default: []].append(x) }
                        if let x = ratio(r.decodeByCategory[c], p.decodeByCategory[c]) { categoryDecodeRatios[c, default: []].append(x) }
                    }
                }
            }
            var byCategory: [String: (tokens: Int, seconds: Double, steps: Int)] = [:]
            // Per category, the step and drafting time of the units it ran in.
            var stepTime: [String: StepTotals.Value] = [:]
            for r in runs {
                for (c, v) in r.byCategory {
                    let old = byCategory[c] ?? (0, 0, 0)
                    byCategory[c] = (old.tokens + v.tokens, old.seconds + v.seconds, old.steps + v.steps)
                    stepTime[c, default: StepTotals.Value()].add(r.steps)
                }
            }
            var drafts: [String: (drafted: Int, accepted: Int)] = [:]
            for r in runs {
                for (c, v) in r.draftsByCategory {
                    let old = drafts[c] ?? (0, 0)
                    drafts[c] = (old.drafted + v.drafted, old.accepted + v.accepted)
                }
            }
            let completion = runs.reduce(0) { $0 + $1.tokens }
            let steps = max(stats.steps, 1), roots = max(stats.roots, 1)
            return MatrixCell(
                strategy: name, batch: batch, tokS: Spread(perRound)?.median ?? 0, pairedRatio: Spread(ratios),
                decodePairedRatio: Spread(decodeRatios),
                acceptedPerStep: Double(completion) / Double(roots), treeRows: Double(stats.drafted) / Double(roots),
                stepMs: stats.stepSeconds * 1000 / Double(steps), forwardMs: stats.forwardSeconds * 1000 / Double(steps),
                draftMs: stats.draftSeconds * 1000 / Double(steps),
                draftShare: stats.draftSeconds / max(stats.stepSeconds, 1e-9),
                learnedAcceptanceByDepth: EngineStats.rates(stats.learnedByDepth),
                learnedAcceptancePerExpansion: EngineStats.rates(stats.learnedExpansions),
                completionTokens: completion, costError: Spread(stats.errors),
                categories: byCategory.mapValues { $0.seconds > 0 ? Double($0.tokens) / $0.seconds : 0 },
                categoryTokensPerStep: byCategory.mapValues { Double($0.tokens) / Double(max($0.steps, 1)) },
                categoryRatio: categoryRatios.compactMapValues { Spread($0)?.median },
                categoryDecodeRatio: categoryDecodeRatios.compactMapValues { Spread($0)?.median },
                categoryAcceptance: drafts.compactMapValues { $0.drafted > 0 ? Double($0.accepted) / Double($0.drafted) : nil },
                categoryDraftShare: stepTime.compactMapValues { $0.stepMs > 0 ? $0.draftMs / $0.stepMs : nil })
        }
    }
}

/// One engine's step and drafting time so far, from its step reports (thread-safe: reports
/// arrive on the engine thread).
final class StepTotals: @unchecked Sendable {
    struct Value {
        var stepMs = 0.0, draftMs = 0.0

        mutating func add(_ other: Value) {
            stepMs += other.stepMs
            draftMs += other.draftMs
        }
    }
    private let lock = NSLock()
    private var total = Value()

    func add(_ r: StepReport) {
        lock.lock()
        total.add(Value(stepMs: r.duration.seconds * 1000, draftMs: r.draftMilliseconds))
        lock.unlock()
    }

    var value: Value {
        lock.lock()
        defer { lock.unlock() }
        return total
    }
}

/// Collects the cast engines' steps (thread-safe: steps arrive on engine threads).
final class StepRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var steps: [RecordedStep] = []
    private(set) var plainSteps: [RecordedPlainStep] = []

    /// A cast step (one the cost model predicted) or a plain one (no shape).
    func add(_ r: StepReport, batch: Int, round: Int) {
        let stepMs = r.duration.seconds * 1000
        lock.lock()
        defer { lock.unlock() }
        guard let shape = r.shape, let forward = r.forwardMilliseconds, let host = r.hostMilliseconds else {
            plainSteps.append(RecordedPlainStep(batch: batch, round: round, rows: r.rows, stepMs: stepMs))
            return
        }
        steps.append(RecordedStep(batch: batch, round: round, rows: shape.rows, logitRows: shape.logitRows, positions: shape.positions,
                                  nodes: shape.nodes, forwardMs: forward, hostMs: host, predictedMs: r.predictedMilliseconds ?? 0,
                                  stepMs: stepMs))
    }
}

/// Markdown and SVG renderings of the matrix.
enum MatrixChart {
    /// The learned drafter's acceptance by depth, per node then per expansion ("0.16 0.30 / 0.41 0.45").
    static func learned(_ c: MatrixCell) -> String {
        func rates(_ r: [Double]) -> String { r.prefix(6).map { String(format: "%.2f", $0) }.joined(separator: " ") }
        return c.learnedAcceptanceByDepth.isEmpty ? "" : rates(c.learnedAcceptanceByDepth) + " / " + rates(c.learnedAcceptancePerExpansion)
    }

    static func markdown(_ r: MatrixReport) -> String {
        func spread(_ s: Spread?) -> String {
            guard let s else { return "" }
            return String(format: "%.2f (%.2f-%.2f)", s.median, s.p10, s.p90)
        }
        var out = ["CastServe speculation matrix — \(r.model), \(r.threads) threads, \(r.kernels) kernels, drafter \(r.drafter)"
                   + (r.drafterModel.map { " + learned (\($0))" } ?? "") + ", "
                   + "\(r.prompts) prompts, \(r.rounds) paired rounds, commit \(r.machine.commit)", "",
                   "| strategy | B | tok/s | x plain, paired (p10-p90) | decode phase x plain (p10-p90) | tokens/step | draft rows/step | step ms | draft share | learned acceptance by depth, per node / per expansion | cost model abs error |",
                   "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
        for c in r.cells {
            out.append(String(format: "| %@ | %d | %.1f | %@ | %@ | %.2f | %.2f | %.2f | %.3f | %@ | %@ |", c.strategy, c.batch, c.tokS,
                              spread(c.pairedRatio), spread(c.decodePairedRatio), c.acceptedPerStep, c.treeRows, c.stepMs, c.draftShare,
                              learned(c),
                              c.costError.map { String(format: "%.3f", $0.median) } ?? ""))
        }
        let categories = Array(Set(r.cells.flatMap { $0.categories.keys })).sorted()
        out += ["", "Per category at B = 1: paired ratio to plain (decode phase's paired ratio; tokens committed per decode step; "
                + "draft tokens accepted / verified; drafters' share of step time):", "",
                "| strategy | " + categories.joined(separator: " | ") + " |",
                "|---|" + categories.map { _ in "---:" }.joined(separator: "|") + "|"]
        for c in r.cells where c.batch == 1 {
            out.append("| \(c.strategy) | " + categories.map {
                String(format: "%.2f (%.2f; %.2f; %.2f; %.3f)", c.categoryRatio[$0] ?? 1, c.categoryDecodeRatio[$0] ?? 1,
                       c.categoryTokensPerStep[$0] ?? 0, c.categoryAcceptance[$0] ?? 0,
                       c.categoryDraftShare[$0] ?? 0)
            }.joined(separator: " | ") + " |")
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
