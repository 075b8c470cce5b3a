import Foundation
import Kernels
import Model

/// Measures a `CostModel` on the loaded model: real forward steps on one free slot of `cache`.
///
/// - body(R): chains of R rows without logits after a short context (64 positions), minus their
///   attention;
/// - head(L): the same chains with logits for every row, minus the chain without (L = R);
/// - msPerPosition: the extra time per attended position between the short context and a long one
///   (up to 1024 positions), at R = 1, 4 and 16, without logits.
/// Each figure is the second fastest of `repetitions` runs (the machine's own cost, robust to a busy
/// neighbour; the online refresh adds load that persists). The host cost starts from zero and is
/// learned from the first steps. Takes a few seconds (R up to 128 on 2 cores); reports progress.
/// A model that shares its cores with other models (`Transformer.gate`) takes a turn for each
/// forward call, timed inside the turn: the others keep serving between measurements and no
/// measurement runs beside another model's step.
public enum CostCalibration {
    public static func measure(model: Transformer, cache: KVCache, slot: Int = 0, repetitions: Int = 7,
                               progress: ((Int, Int) -> Void)? = nil) throws -> CostModel {
        let clock = ContinuousClock()
        let shortContext = min(64, cache.capacity / 4)
        let maxRows = min(128, model.maxStepRows, model.maxLogitRows, max(1, cache.capacity - shortContext - 1))
        let longContext = min(1024, cache.capacity - 17)
        var rowCounts: [Int] = []
        var r = 1
        while r <= maxRows { rowCounts.append(r); r *= 2 }
        let longRows = longContext > 2 * shortContext ? [1, 4, 16].filter { $0 <= maxRows } : []
        let total = 2 * rowCounts.count + longRows.count
        var done = 0

        /// One forward call in a turn of the shared cores (when shared); returns its milliseconds.
        @discardableResult
        func forward(_ rows: [BatchRow]) throws -> Double {
            model.gate?.enter()
            defer { model.gate?.leave() }
            let t = clock.now
            try model.forward(rows, cache: cache)
            return (clock.now - t).seconds * 1000
        }
        func fill(context: Int) throws {
            cache.reset(slot: slot)
            let prompt = (0..<context).map { Int32(100 + ($0 * 7919) % 30000) }
            var filled = 0
            while filled < context {
                let n = min(context - filled, model.maxStepRows)
                try forward(BatchRow.chain(slot: slot, tokens: prompt[filled..<(filled + n)], startPosition: filled, allLogits: false))
                try cache.commit(slot: slot, rows: 0..<n)
                filled += n
            }
        }
        /// Milliseconds of a chain of `r` rows after the slot's context (second fastest).
        func time(rows r: Int, context: Int, logits: Bool) throws -> (positions: Int, ms: Double) {
            let tokens = (0..<r).map { Int32(200 + ($0 * 104_729) % 30000) }
            var rows = BatchRow.chain(slot: slot, tokens: tokens[...], startPosition: context, allLogits: logits)
            if !logits { for i in rows.indices { rows[i].wantsLogits = false } }
            try forward(rows)
            var times: [Double] = []
            for _ in 0..<repetitions { times.append(try forward(rows)) }
            done += 1
            progress?(done, total)
            return (rows.reduce(0) { $0 + $1.position + 1 }, times.sorted()[min(1, times.count - 1)])
        }

        defer { cache.reset(slot: slot) }
        try fill(context: shortContext)
        var short: [(rows: Int, positions: Int, ms: Double)] = []
        var withLogits: [Double] = []
        for r in rowCounts {
            let plain = try time(rows: r, context: shortContext, logits: false)
            short.append((r, plain.positions, plain.ms))
            withLogits.append(try time(rows: r, context: shortContext, logits: true).ms)
        }
        var long: [(rows: Int, positions: Int, ms: Double)] = []
        if !longRows.isEmpty {
            try fill(context: longContext)
            for r in longRows {
                let t = try time(rows: r, context: longContext, logits: false)
                long.append((r, t.positions, t.ms))
            }
        }
        let beta = CostModel.attentionSlope(short: short, long: long)
        let body = CostModel.nonDecreasing(short.map { ($0.rows, $0.ms - beta * Double($0.positions)) })
        let head = CostModel.nonDecreasing(zip(short, withLogits).map { ($0.rows, max(0.001, $1 - $0.ms)) })
        return CostModel(body: body, head: head, msPerPosition: beta)
    }
}
