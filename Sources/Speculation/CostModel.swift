import Foundation

/// T(R): the wall time of one target step with R rows, measured on this machine (a table over
/// R = 1, 2, 4, ... interpolated linearly in between), refreshed online from observed steps by an
/// exponential moving average of the ratio observed/predicted.
///
/// Thread-safety: engine thread only.
public struct CostModel: Sendable, Codable {
    /// Measured (rows, milliseconds), sorted by rows.
    public private(set) var points: [Point]
    /// Online correction factor (observed / predicted), starts at 1.
    public private(set) var scale: Double = 1

    public struct Point: Sendable, Codable, Equatable {
        public var rows: Int
        public var ms: Double
    }

    public init(points: [(rows: Int, ms: Double)]) {
        precondition(!points.isEmpty)
        self.points = points.map { Point(rows: $0.rows, ms: $0.ms) }.sorted { $0.rows < $1.rows }
    }

    /// Predicted milliseconds of a step of `rows` rows.
    public func milliseconds(rows: Int) -> Double {
        let r = max(rows, 1)
        if r <= points[0].rows { return points[0].ms * scale }
        for i in 1..<points.count where r <= points[i].rows {
            let a = points[i - 1], b = points[i]
            let t = Double(r - a.rows) / Double(b.rows - a.rows)
            return (a.ms + t * (b.ms - a.ms)) * scale
        }
        // Beyond the table: extrapolate the last segment's slope.
        let a = points[points.count - 2 < 0 ? 0 : points.count - 2], b = points[points.count - 1]
        let slope = b.rows > a.rows ? (b.ms - a.ms) / Double(b.rows - a.rows) : b.ms / Double(b.rows)
        return (b.ms + slope * Double(r - b.rows)) * scale
    }

    /// Folds in one observed step (EMA with weight `alpha`).
    public mutating func observe(rows: Int, ms: Double, alpha: Double = 0.05) {
        let predicted = milliseconds(rows: rows) / scale
        guard predicted > 0, ms > 0 else { return }
        scale = (1 - alpha) * scale + alpha * (ms / predicted)
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
        public init(sequence: Int, node: Int, score: Float, depth: Int) {
            self.sequence = sequence
            self.node = node
            self.score = score
            self.depth = depth
        }
    }

    /// The number of nodes to keep per sequence.
    ///
    /// - Parameters:
    ///   - baseRows: rows the step has anyway (one root per decoding sequence plus prefill rows).
    ///   - baseTokens: tokens the step commits anyway (one per decoding sequence).
    ///   - maxRows: the step's row limit.
    /// Scans every prefix of the candidates sorted by score (ties: shallower first) and keeps the
    /// best goodput; the empty prefix is plain decoding, so the plan is never predicted worse.
    public static func plan(candidates: [Candidate], sequences: Int, baseRows: Int, baseTokens: Int, maxRows: Int,
                            cost: CostModel) -> (perSequence: [Int], goodput: Double, plainGoodput: Double) {
        let sorted = candidates.sorted { $0.score != $1.score ? $0.score > $1.score : $0.depth < $1.depth }
        let plain = Double(baseTokens) / cost.milliseconds(rows: baseRows)
        var best = 0
        var bestGoodput = plain
        var expected = Double(baseTokens)
        let limit = min(sorted.count, max(0, maxRows - baseRows))
        for k in 0..<limit {
            expected += Double(sorted[k].score)
            let goodput = expected / cost.milliseconds(rows: baseRows + k + 1)
            if goodput > bestGoodput {
                bestGoodput = goodput
                best = k + 1
            }
        }
        var perSequence = [Int](repeating: 0, count: sequences)
        for c in sorted.prefix(best) { perSequence[c.sequence] += 1 }
        return (perSequence, bestGoodput * 1000, plain * 1000)
    }
}
