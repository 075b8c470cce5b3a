import Foundation
import Testing
import GGUF
import Kernels
import Model
import Speculation
import ChatTemplate

/// Figures for choosing the skip drafter's default depth: how often the early exit's top token is
/// the target's greedy token, and what a drafting level costs. Runs only when
/// `SKIP_BENCH_PROMPTS` names a prompts file (shared/bench/prompts.jsonl); prints a table.
@Suite(.serialized) struct SkipDrafterBench {
    static let promptsPath = ProcessInfo.processInfo.environment["SKIP_BENCH_PROMPTS"]
    static let depths = [6, 10, 15, 20, 30]

    /// Prompt tokens of the first `perCategory` rows of each category.
    static func prompts(file: GGUFFile, perCategory: Int, path: String? = nil) throws -> [(id: String, tokens: [Int32])] {
        let formatter = try PromptFormatter(file: file)
        let text = try String(contentsOfFile: path ?? promptsPath!, encoding: .utf8)
        var taken: [String: Int] = [:]
        var out: [(String, [Int32])] = []
        for line in text.split(separator: "\n") {
            guard let row = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let id = row["id"] as? String, let category = row["category"] as? String,
                  taken[category, default: 0] < perCategory else { continue }
            taken[category, default: 0] += 1
            if let messages = row["messages"] as? [[String: String]] {
                out.append((id, try formatter.chatTokens(messages.map { ChatMessage(role: $0["role"]!, content: $0["content"]!) })))
            } else if let prompt = row["prompt"] as? String {
                out.append((id, formatter.completionTokens(prompt)))
            }
        }
        return out
    }

    static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let t = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
    }

    /// Layer sets to compare: early exits (prefixes) and patterns that skip middle layers.
    static let patterns: [(name: String, layers: [Int])] = {
        var p: [(String, [Int])] = depths.map { ("first \($0)", Array(0..<$0)) }
        for (a, b) in [(5, 15), (5, 12), (5, 10), (5, 8), (3, 18), (8, 20), (10, 20)] {
            p.append(("0-\(a - 1) + \(b)-29", Array(0..<a) + Array(b..<30)))
        }
        p.append(("searched 22", [0, 1, 2, 8, 9, 10, 11, 12, 13, 14, 15, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29]))
        p.append(("0-24 + 28-29", Array(0..<25) + [28, 29]))
        p.append(("every 3rd of 3-26 dropped", (0..<30).filter { $0 < 3 || $0 >= 27 || $0 % 3 != 2 }))
        return p
    }()
    static let heads = [49152, 16384, 8192]

    @Test(.enabled(if: promptsPath != nil)) func acceptanceAndLevelTimeByDepth() throws {
        let file = try GGUFFile(path: SkipDrafterTests.modelPath)
        let model = try Transformer(file: file, threads: 2, maxStepRows: 160, maxLogitRows: 64, maxContext: 2048)
        let prompts = try Self.prompts(file: file, perCategory: 2)
        let generate = 16
        let vocabulary = model.config.vocabularySize
        let n = prompts.count

        // Every prompt but its last token committed in its slot by the full target; then greedy
        // decoding, one root row per slot per step. At each step every layer set drafts the same
        // roots (exactly what the drafter sees at depth 1) before the full step commits them.
        let cache = model.makeCache(slots: n, capacity: 2048)
        for (s, p) in prompts.enumerated() {
            try model.forward(BatchRow.chain(slot: s, tokens: p.tokens.dropLast(), startPosition: 0), cache: cache)
            try cache.commit(slot: s, rows: 0..<(p.tokens.count - 1))
        }
        var histories = prompts.map(\.tokens)
        let P = Self.patterns.count, H = Self.heads.count
        var hits = [[Int]](repeating: [Int](repeating: 0, count: H), count: P)
        var covered = hits
        var confidence = [Double](repeating: 0, count: P)
        var tops = [[[[Int32]]]](repeating: [], count: P)   // [pattern][row][head] -> top-3
        var shortlisted = [Int](repeating: 0, count: H)
        for _ in 0..<generate {
            let rows = (0..<n).map { BatchRow(slot: $0, token: histories[$0].last!, position: cache.lengths[$0]) }
            for (k, pattern) in Self.patterns.enumerated() {
                try model.forward(rows, cache: cache, only: pattern.layers)
                tops[k] = (0..<n).map { r in
                    let row = model.logits + r * vocabulary
                    return Self.heads.map { head in
                        var order = (0..<3).map { _ in (id: Int32(-1), value: -Float.infinity) }
                        for v in 0..<head where row[v] > order[2].value {
                            order[2] = (Int32(v), row[v])
                            order.sort { $0.value > $1.value }
                        }
                        if head == vocabulary {
                            var sum: Float = 0
                            for v in 0..<vocabulary { sum += expf(row[v] - order[0].value) }
                            confidence[k] += Double(1 / sum)
                        }
                        return order.map(\.id)
                    }
                }
            }
            try model.forward(rows, cache: cache)
            for s in 0..<n {
                let greedy = Ops.argmax(model.logits + s * vocabulary, count: vocabulary)
                for (h, head) in Self.heads.enumerated() where Int(greedy) < head { shortlisted[h] += 1 }
                for k in 0..<P {
                    for h in 0..<H {
                        if tops[k][s][h][0] == greedy { hits[k][h] += 1 }
                        if tops[k][s][h].contains(greedy) { covered[k][h] += 1 }
                    }
                }
                try cache.commit(slot: s, rows: s..<(s + 1))
                histories[s].append(greedy)
            }
        }
        let total = Double(n * generate)
        print("prompts: \(prompts.map(\.id).joined(separator: ", ")); positions: \(n * generate)")
        print("greedy tokens inside the shortlist: " + Self.heads.indices.map { "\(Self.heads[$0]): \(String(format: "%.3f", Double(shortlisted[$0]) / total))" }.joined(separator: ", "))
        print("| layers run | count | head | top-1 = greedy | greedy in top-3 | forward 1 row (ms) | 8 rows | 32 rows |")
        print("|---|---|---|---|---|---|---|---|")
        let full = try Self.bestTime(model, cache: cache, n: n, layers: Array(0..<30), head: vocabulary)
        for (k, pattern) in Self.patterns.enumerated() {
            for (h, head) in Self.heads.enumerated() {
                let times = try Self.bestTime(model, cache: cache, n: n, layers: pattern.layers, head: head)
                print("| \(pattern.name) " + String(format: "| %d | %d | %.3f | %.3f | %.2f | %.2f | %.2f |", pattern.layers.count, head,
                             Double(hits[k][h]) / total, Double(covered[k][h]) / total, times[0], times[1], times[2]))
            }
        }
        print(String(format: "full target: 1 row %.2f ms, 8 rows %.2f ms, 32 rows %.2f ms", full[0], full[1], full[2]))
        #expect(hits[Self.depths.count - 1][0] == n * generate)

        // Drafting time per level for 1 and 8 sequences (trees of 16 nodes, depth 4, width 3),
        // against the full target's step at the same rows measured alongside (the machine is shared).
        print("| layers run | head | sequences | levels per propose | rows per level | ms per level | target step at 1 / 8 rows (ms) | level / target 1-row step |")
        print("|---|---|---|---|---|---|---|---|")
        let searched = [0, 1, 2, 8, 9, 10, 11, 12, 13, 14, 15, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29]
        let drafters: [(String, [Int], Int?)] = [("first 20", Array(0..<20), nil),
                                                 ("0-4 + 15-29", Array(0..<5) + Array(15..<30), 16384),
                                                 ("searched 22", searched, 16384),
                                                 ("default: 0-4 + 8-29", SkipDrafter.defaultLayers(layerCount: 30), 16384),
                                                 ("all 30", Array(0..<30), 16384)]
        for (name, layers, head) in drafters {
            for sequences in [1, 8] where sequences <= n {
                let drafter = try SkipDrafter(model: model, cache: cache, layers: layers, headTokens: head)
                let inputs = (0..<sequences).map { DraftInput(slot: $0, history: histories[$0], maxNodes: 16, maxDepth: 4) }
                _ = try drafter.propose(inputs)  // warm-up
                let before = drafter.statistics
                let reps = 9
                var best = Double.infinity, target1 = Double.infinity, target8 = Double.infinity
                let one = [BatchRow(slot: 0, token: 42, position: cache.lengths[0])]
                let eight = (0..<8).map { BatchRow(slot: $0, token: 42, position: cache.lengths[$0]) }
                for _ in 0..<reps {
                    best = min(best, try Self.seconds { _ = try drafter.propose(inputs) })
                    target1 = min(target1, try Self.seconds { try model.forward(one, cache: cache) })
                    target8 = min(target8, try Self.seconds { try model.forward(eight, cache: cache) })
                }
                let s = drafter.statistics
                let levels = Double(s.levels - before.levels) / Double(reps), rows = Double(s.rows - before.rows) / Double(reps)
                print("| \(name) " + String(format: "| %d | %d | %.1f | %.1f | %.2f | %.2f / %.2f | %.2f |", head ?? vocabulary, sequences,
                                           levels, rows / levels, best * 1000 / levels, target1 * 1000, target8 * 1000,
                                           best / levels / target1))
            }
        }
    }

    /// Forward cost of layer subsets against the full target at the same rows, interleaved and
    /// best of 40 (the machine is shared; minima approach the quiet cost).
    @Test(.enabled(if: promptsPath != nil)) func subsetCostAgainstTargetStep() throws {
        let file = try GGUFFile(path: SkipDrafterTests.modelPath)
        let model = try Transformer(file: file, threads: 2, maxStepRows: 1024, maxLogitRows: 64, maxContext: 1024)
        let prompts = try Self.prompts(file: file, perCategory: 2).filter { $0.tokens.count < 900 }
        let n = min(8, prompts.count)
        let cache = model.makeCache(slots: n, capacity: 1024)
        for s in 0..<n {
            try model.forward(BatchRow.chain(slot: s, tokens: prompts[s].tokens, startPosition: 0), cache: cache)
            try cache.commit(slot: s, rows: 0..<prompts[s].tokens.count)
        }
        let subsets: [(String, [Int], Int)] = [("all 30, full head", Array(0..<30), 49152),
                                               ("all 30", Array(0..<30), 16384),
                                               ("default 0-4 + 8-29", SkipDrafter.defaultLayers(layerCount: 30), 16384),
                                               ("searched 22", [0, 1, 2, 8, 9, 10, 11, 12, 13, 14, 15, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29], 16384),
                                               ("0-4 + 15-29", Array(0..<5) + Array(15..<30), 16384),
                                               ("first 20, full head", Array(0..<20), 49152)]
        let rowCounts = [1, 3, 8, 24]
        var best = [[Double]](repeating: [Double](repeating: .infinity, count: rowCounts.count), count: subsets.count)
        for _ in 0..<40 {
            for (k, subset) in subsets.enumerated() {
                for (j, r) in rowCounts.enumerated() {
                    let rows = (0..<r).map { BatchRow(slot: $0 % n, token: 42, position: cache.lengths[$0 % n]) }
                    best[k][j] = min(best[k][j], try Self.seconds { try model.forward(rows, cache: cache, only: subset.1, headTokens: subset.2) })
                }
            }
        }
        print("| layers run | head | " + rowCounts.map { "\($0) rows (ms)" }.joined(separator: " | ") + " | 1 row / target 1 row |")
        print("|---|---|" + rowCounts.map { _ in "---|" }.joined() + "---|")
        for (k, subset) in subsets.enumerated() {
            print("| \(subset.0) | \(subset.2) | " + best[k].map { String(format: "%.2f", $0 * 1000) }.joined(separator: " | ")
                  + String(format: " | %.2f |", best[k][0] / best[0][0]))
        }
    }

    /// Best of 9 forward times (ms) at 1, 8 and 32 rows.
    static func bestTime(_ model: Transformer, cache: KVCache, n: Int, layers: [Int], head: Int) throws -> [Double] {
        try [1, 8, 32].map { r in
            let rows = (0..<r).map { BatchRow(slot: $0 % n, token: 42, position: cache.lengths[$0 % n]) }
            return try (0..<9).map { _ in try seconds { try model.forward(rows, cache: cache, only: layers, headTokens: head) } }.min()! * 1000
        }
    }
}

/// Which layers to skip: greedy backward elimination on depth-1 acceptance (drop, one at a time,
/// the layer whose removal keeps the most early-exit top-1 tokens equal to the target's greedy
/// token), chosen on even positions and checked on held-out odd positions. Runs only when
/// `SKIP_BENCH_SEARCH` names a prompts file; prints the elimination order.
@Suite(.serialized) struct SkipLayerSearch {
    static let promptsPath = ProcessInfo.processInfo.environment["SKIP_BENCH_SEARCH"]

    @Test(.enabled(if: promptsPath != nil)) func greedyBackwardElimination() throws {
        let file = try GGUFFile(path: SkipDrafterTests.modelPath)
        let model = try Transformer(file: file, threads: 2, maxStepRows: 256, maxLogitRows: 128, maxContext: 2048)
        let prompts = try SkipDrafterBench.prompts(file: file, perCategory: 2, path: Self.promptsPath!)
        let vocabulary = model.config.vocabularySize
        let generate = 16
        let n = prompts.count
        // Greedy continuations, one slot per prompt.
        let base = model.makeCache(slots: n, capacity: 2048)
        var histories: [[Int32]] = prompts.map { $0.tokens }
        for s in 0..<n {
            let count = prompts[s].tokens.count
            try model.forward(BatchRow.chain(slot: s, tokens: prompts[s].tokens, startPosition: 0), cache: base)
            try base.commit(slot: s, rows: 0..<count)
            histories[s].append(Ops.argmax(model.logits, count: vocabulary))
        }
        for _ in 1..<generate {
            let step = (0..<n).map { BatchRow(slot: $0, token: histories[$0].last!, position: base.lengths[$0]) }
            try model.forward(step, cache: base)
            for s in 0..<n {
                histories[s].append(Ops.argmax(model.logits + s * vocabulary, count: vocabulary))
                try base.commit(slot: s, rows: s..<(s + 1))
            }
        }
        // One slot per (prompt, position): history up to the root committed; the target is the next token.
        var blocks = n * generate * 3
        for p in prompts { blocks += p.tokens.count / 16 + 3 }
        let cache = model.makeCache(slots: n * generate, capacity: 2048, blockCount: blocks)
        var roots: [BatchRow] = []
        var targets: [Int32] = []
        var heldOut: [Bool] = []
        for s in 0..<n {
            let p = prompts[s].tokens.count
            for j in 0..<generate {
                let slot = s * generate + j
                let context = Array(histories[s][..<(p + j - 1)])
                if j == 0 {
                    try model.forward(BatchRow.chain(slot: slot, tokens: context, startPosition: 0), cache: cache)
                    try cache.commit(slot: slot, rows: 0..<context.count, tokens: context)
                    cache.registerPrefix(slot: slot)
                } else {
                    let attached = cache.attachPrefix(slot: slot, tokens: context)
                    let rest = Array(context[attached...])
                    try model.forward(BatchRow.chain(slot: slot, tokens: rest, startPosition: attached), cache: cache)
                    try cache.commit(slot: slot, rows: 0..<rest.count, tokens: rest)
                }
                roots.append(BatchRow(slot: slot, token: histories[s][p + j - 1], position: p + j - 1))
                targets.append(histories[s][p + j])
                heldOut.append(j % 2 == 1)
            }
        }
        func acceptance(_ layers: [Int]) throws -> (search: Double, held: Double) {
            var hits = [0, 0], counts = [0, 0]
            var start = 0
            while start < roots.count {
                let chunk = Array(roots[start..<min(start + model.maxLogitRows, roots.count)])
                try model.forward(chunk, cache: cache, only: layers)
                for i in chunk.indices {
                    let k = heldOut[start + i] ? 1 : 0
                    counts[k] += 1
                    if Ops.argmax(model.logits + i * vocabulary, count: vocabulary) == targets[start + i] { hits[k] += 1 }
                }
                start += chunk.count
            }
            return (Double(hits[0]) / Double(counts[0]), Double(hits[1]) / Double(counts[1]))
        }
        var kept = Array(0..<30)
        let full = try acceptance(kept)
        #expect(full.search == 1 && full.held == 1)
        print("| layers run | dropped | search acceptance | held-out acceptance | layers kept |")
        print("|---|---|---|---|---|")
        while kept.count > 12 {
            var best: (layer: Int, score: (search: Double, held: Double))? = nil
            for l in kept {
                let score = try acceptance(kept.filter { $0 != l })
                if best == nil || score.search > best!.score.search { best = (l, score) }
            }
            kept.removeAll { $0 == best!.layer }
            print(String(format: "| %d | %d | %.3f | %.3f | ", kept.count, best!.layer, best!.score.search, best!.score.held)
                  + kept.map(String.init).joined(separator: ",") + " |")
        }
    }
}
