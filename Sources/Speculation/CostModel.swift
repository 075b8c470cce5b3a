import Foundation

/// T(R, C): the wall time of one target step with R new rows that together attend to C cached
/// positions (each row attends to its position + 1), measured on this machine and refreshed
/// online. The model is W(R) + beta * C: W, the weight-bound part, is a table over
/// R = 1, 2, 4, ... interpolated linearly in between (extrapolated along the last segment);
/// beta, the attention cost per attended position, is fitted from steps at two context sizes.
/// Each table point carries an online correction (exponential moving average of observed /
/// predicted for the steps nearest it), so the model tracks load from other processes.
///
/// Thread-safety: a value type; the engine thread owns it.
public struct CostModel: Sendable, Codable, Equatable {
    /// Weight-bound time per row count, sorted by rows (milliseconds, attention excluded).
    public private(set) var points: [Point]
    /// Milliseconds per attended position (summed over a step's rows).
    public private(set) var msPerPosition: Double
    /// Online correction per point (observed / predicted), starting at 1.
    public private(set) var scales: [Double]

    public struct Point: Sendable, Codable, Equatable {
        public var rows: Int
        public var ms: Double
    }

    /// A model from weight-bound points and the attention slope.
    public init(points: [(rows: Int, ms: Double)], msPerPosition: Double = 0) {
        precondition(!points.isEmpty && msPerPosition >= 0)
        self.points = points.map { Point(rows: $0.rows, ms: $0.ms) }.sorted { $0.rows < $1.rows }
        self.msPerPosition = msPerPosition
        scales = Array(repeating: 1, count: points.count)
    }

    /// Fits a model from measured steps: `short` at one context size and `long` at a larger one,
    /// each (rows, attended positions, ms). Beta is the median over the row counts both have of
    /// the extra time per extra attended position; the points are `short` minus its attention,
    /// made non-decreasing in rows.
    public static func fit(short: [(rows: Int, positions: Int, ms: Double)],
                           long: [(rows: Int, positions: Int, ms: Double)]) -> CostModel {
        var slopes: [Double] = []
        for l in long {
            guard let s = short.first(where: { $0.rows == l.rows }), l.positions > s.positions else { continue }
            slopes.append(max(0, (l.ms - s.ms) / Double(l.positions - s.positions)))
        }
        let beta = slopes.isEmpty ? 0 : slopes.sorted()[slopes.count / 2]
        // More rows never cost less: a noisy measurement below a smaller row count's is raised to it.
        var floor = 0.01
        let points = short.sorted { $0.rows < $1.rows }.map { s -> (rows: Int, ms: Double) in
            floor = max(floor, s.ms - beta * Double(s.positions))
            return (s.rows, floor)
        }
        return CostModel(points: points, msPerPosition: beta)
    }

    /// The table segment around `rows`: indices of its two points and the weight of the second.
    private func segment(_ rows: Int) -> (Int, Int, Double) {
        let r = max(rows, 1)
        if points.count == 1 || r <= points[0].rows { return (0, 0, 0) }
        for i in 1..<points.count where r <= points[i].rows {
            return (i - 1, i, Double(r - points[i - 1].rows) / Double(points[i].rows - points[i - 1].rows))
        }
        let n = points.count
        return (n - 2, n - 1, Double(r - points[n - 2].rows) / Double(points[n - 1].rows - points[n - 2].rows))
    }

    private func unscaled(rows: Int, positions: Int) -> Double {
        let (a, b, t) = segment(rows)
        var weights = points[a].ms + t * (points[b].ms - points[a].ms)
        if let last = points.last, rows > last.rows {
            // Beyond the table rows are never cheaper than the table's average row.
            weights = max(weights, last.ms + (last.ms / Double(last.rows)) * Double(rows - last.rows))
        }
        return weights + msPerPosition * Double(max(positions, 0))
    }

    private func scale(rows: Int) -> Double {
        let (a, b, t) = segment(rows)
        let w = min(max(t, 0), 1)
        return scales[a] + w * (scales[b] - scales[a])
    }

    /// Predicted milliseconds of a step of `rows` rows attending to `positions` positions in all.
    public func milliseconds(rows: Int, positions: Int) -> Double {
        unscaled(rows: rows, positions: positions) * scale(rows: rows)
    }

    /// Predicted milliseconds of a step of `rows` rows at negligible context.
    public func milliseconds(rows: Int) -> Double { milliseconds(rows: rows, positions: 0) }

    /// Folds in one observed step: the nearest point's correction moves toward observed /
    /// predicted (EMA with weight `alpha`).
    public mutating func observe(rows: Int, positions: Int = 0, ms: Double, alpha: Double = 0.05) {
        let predicted = unscaled(rows: rows, positions: positions)
        guard predicted > 0, ms > 0 else { return }
        let (a, b, t) = segment(rows)
        let i = t < 0.5 ? a : b
        scales[i] = (1 - alpha) * scales[i] + alpha * (ms / predicted)
    }

    /// The table after online correction: (rows, weight-bound ms) per point.
    public var corrected: [(rows: Int, ms: Double)] {
        zip(points, scales).map { ($0.rows, $0.ms * $1) }
    }
}

/// The CAST planner: chooses how many drafted nodes the step verifies, across all sequences, to
/// maximise expected committed tokens per second of step time (see shared/design/CAST.md).
public enum CASTPlanner {
    /// One candidate node of some sequence.
    public struct Candidate: Sendable {
        public var sequence: Int
        public var node: Int
        public var score: Float
        public var depth: Int
        /// Positions the node's row attends to (its position + 1).
        public var positions: Int
        public init(sequence: Int, node: Int, score: Float, depth: Int, positions: Int = 0) {
            self.sequence = sequence
            self.node = node
            self.score = score
            self.depth = depth
            self.positions = positions
        }
    }

    /// The number of nodes to keep per sequence.
    ///
    /// - Parameters:
    ///   - baseRows: rows the step has anyway (one root per decoding sequence plus prefill rows).
    ///   - baseTokens: tokens the step commits anyway (one per decoding sequence).
    ///   - basePositions: positions the base rows attend to in all.
    ///   - maxRows: the step's row limit.
    /// Scans every prefix of the candidates sorted by score (ties: shallower first) and keeps the
    /// best goodput; the empty prefix is plain decoding, so the plan is never predicted worse. A
    /// plan that beats plain decoding by less than `minimumGain` (a fraction) is not worth its risk:
    /// plain decoding is returned instead.
    public static func plan(candidates: [Candidate], sequences: Int, baseRows: Int, baseTokens: Int, basePositions: Int = 0,
                            maxRows: Int, cost: CostModel, minimumGain: Double = 0.03) -> (perSequence: [Int], goodput: Double, plainGoodput: Double) {
        let sorted = candidates.sorted { $0.score != $1.score ? $0.score > $1.score : $0.depth < $1.depth }
        let plain = Double(baseTokens) / cost.milliseconds(rows: baseRows, positions: basePositions)
        var best = 0
        var bestGoodput = plain
        var expected = Double(baseTokens)
        var positions = basePositions
        let limit = min(sorted.count, max(0, maxRows - baseRows))
        for k in 0..<limit {
            expected += Double(sorted[k].score)
            positions += sorted[k].positions
            let goodput = expected / cost.milliseconds(rows: baseRows + k + 1, positions: positions)
            if goodput > bestGoodput {
                bestGoodput = goodput
                best = k + 1
            }
        }
        // A plan must beat plain decoding by a margin: the cost model and the calibration are
        // estimates, and a step predicted barely better is as likely to be worse.
        if bestGoodput < plain * (1 + minimumGain) {
            best = 0
            bestGoodput = plain
        }
        var perSequence = [Int](repeating: 0, count: sequences)
        for c in sorted.prefix(best) { perSequence[c.sequence] += 1 }
        return (perSequence, bestGoodput * 1000, plain * 1000)
    }
}
