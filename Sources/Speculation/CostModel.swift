import Foundation

/// The composition of one engine step, as the cost model sees it.
public struct StepShape: Sendable, Equatable, Codable, CustomStringConvertible {
    /// Rows the forward pass computes (prefill chunks, decode roots, draft-tree nodes).
    public var rows: Int
    /// Rows whose logits the output head computes (decode roots, tree nodes, a prefill's last row).
    public var logitRows: Int
    /// Positions attended in all: each row attends to its position + 1.
    public var positions: Int
    /// Draft-tree nodes verified (each also a row with logits).
    public var nodes: Int

    public init(rows: Int, logitRows: Int, positions: Int, nodes: Int = 0) {
        self.rows = rows
        self.logitRows = logitRows
        self.positions = positions
        self.nodes = nodes
    }

    /// The step with `count` more draft nodes that attend to `positions` positions in all.
    public func adding(nodes count: Int, positions extra: Int) -> StepShape {
        StepShape(rows: rows + count, logitRows: logitRows + count, positions: positions + extra, nodes: nodes + count)
    }

    public var description: String { "\(rows) rows (\(logitRows) with logits, \(nodes) draft nodes), \(positions) positions" }
}

/// What one step costs, predicted from its shape: the forward pass (the model's weights streamed
/// once for all rows: `body(rows)`; the output head for the rows that need logits: `head(logitRows)`;
/// attention: `msPerPosition` per attended position) plus the engine's host-side work (sampling,
/// verification, drafting bookkeeping, events: `host`). `body` and `head` are tables over powers of
/// two, interpolated linearly and extended beyond the last point at its average cost per row.
///
/// Measured at start-up (`CostCalibration`), cached on disk (`CostModelCache`), and refreshed
/// online from every step's observed forward and host times, kept apart: the forward's correction
/// is a factor per `body` point (an EMA of observed / predicted), the host model a recursive
/// least-squares fit. `accuracy` keeps recent prediction errors.
///
/// A *fixed* model (`fixed()`: a recorded table or a synthetic curve, given by a test or by
/// `--cost-model`) is never refreshed: `observe` changes nothing, and the speculator's measured
/// guards are off under it, so what the planner decides depends on the table and the drafts alone,
/// the same on any host at any load.
///
/// Thread-safety: a value type; the engine thread owns it.
public struct CostModel: Sendable, Codable, Equatable {
    public struct Point: Sendable, Codable, Equatable {
        public var rows: Int
        public var ms: Double
        public init(rows: Int, ms: Double) {
            self.rows = rows
            self.ms = ms
        }
    }

    /// Forward time without logits and attention, by rows (milliseconds), sorted by rows.
    public private(set) var body: [Point]
    /// Output-head time by rows with logits (milliseconds); empty: included in `body`.
    public private(set) var head: [Point]
    /// Milliseconds per attended position (summed over a step's rows).
    public private(set) var msPerPosition: Double
    /// Online correction of the forward prediction per `body` point (observed / predicted).
    public private(set) var scales: [Double]
    /// Host-side milliseconds per step.
    public private(set) var host: HostCost
    /// Whether the model is fixed (see `fixed()`); not stored: a cached table is a measured one.
    public private(set) var isFixed = false

    enum CodingKeys: String, CodingKey {
        case body, head, msPerPosition, scales, host
    }

    /// A model from its tables. `head` empty means the body times include the head (every row
    /// with logits, as the model of one sequence's verification chain).
    public init(body: [(rows: Int, ms: Double)], head: [(rows: Int, ms: Double)] = [], msPerPosition: Double = 0,
                host: HostCost = HostCost()) {
        precondition(!body.isEmpty && msPerPosition >= 0)
        self.body = body.map { Point(rows: $0.rows, ms: $0.ms) }.sorted { $0.rows < $1.rows }
        self.head = head.map { Point(rows: $0.rows, ms: $0.ms) }.sorted { $0.rows < $1.rows }
        self.msPerPosition = msPerPosition
        self.host = host
        scales = Array(repeating: 1, count: body.count)
    }

    /// A model of weight-bound points only (rows with logits included), as a table of step times.
    public init(points: [(rows: Int, ms: Double)], msPerPosition: Double = 0) {
        self.init(body: points, msPerPosition: msPerPosition)
    }

    /// Fits a chain model from measured steps: `short` at one context size and `long` at a larger
    /// one, each (rows, attended positions, ms) with logits for every row. Beta is the median over
    /// the row counts both have of the extra time per extra attended position; the points are
    /// `short` minus its attention, made non-decreasing in rows.
    public static func fit(short: [(rows: Int, positions: Int, ms: Double)],
                           long: [(rows: Int, positions: Int, ms: Double)]) -> CostModel {
        let beta = attentionSlope(short: short, long: long)
        return CostModel(points: nonDecreasing(short.map { ($0.rows, $0.ms - beta * Double($0.positions)) }), msPerPosition: beta)
    }

    /// The median over row counts measured at both context sizes of the extra milliseconds per
    /// extra attended position (0 when none pair up).
    static func attentionSlope(short: [(rows: Int, positions: Int, ms: Double)],
                               long: [(rows: Int, positions: Int, ms: Double)]) -> Double {
        var slopes: [Double] = []
        for l in long {
            guard let s = short.first(where: { $0.rows == l.rows }), l.positions > s.positions else { continue }
            slopes.append(max(0, (l.ms - s.ms) / Double(l.positions - s.positions)))
        }
        return slopes.isEmpty ? 0 : slopes.sorted()[slopes.count / 2]
    }

    /// Sorted by rows, each at least the one before (more rows never cost less: a noisy measurement
    /// below a smaller row count's is raised to it) and at least 0.01 ms.
    static func nonDecreasing(_ points: [(rows: Int, ms: Double)]) -> [(rows: Int, ms: Double)] {
        var floor = 0.01
        return points.sorted { $0.rows < $1.rows }.map { p in
            floor = max(floor, p.ms)
            return (p.rows, floor)
        }
    }

    // MARK: - Prediction

    /// Predicted milliseconds of the forward pass of a step.
    public func forwardMilliseconds(_ s: StepShape) -> Double {
        let logits = head.isEmpty ? 0 : Self.interpolate(head, s.logitRows)
        return (Self.interpolate(body, s.rows) + logits + msPerPosition * Double(max(s.positions, 0))) * scale(rows: s.rows)
    }

    /// Predicted host-side milliseconds of a step.
    public func hostMilliseconds(_ s: StepShape) -> Double { host.milliseconds(s) }

    /// Predicted milliseconds of a whole step.
    public func milliseconds(_ s: StepShape) -> Double { forwardMilliseconds(s) + hostMilliseconds(s) }

    /// Predicted milliseconds of a step of `rows` rows, all with logits, attending to `positions`
    /// positions (one sequence's verification chain).
    public func milliseconds(rows: Int, positions: Int = 0) -> Double {
        milliseconds(StepShape(rows: rows, logitRows: rows, positions: positions))
    }

    /// Linear interpolation in a table over rows (0 rows: 0); below the first point its value; beyond the
    /// last at least the last point's average cost per row.
    public static func interpolate(_ table: [Point], _ rows: Int) -> Double {
        guard let first = table.first, let last = table.last else { return 0 }
        let r = max(rows, 0)
        if r == 0 { return 0 }
        if r <= first.rows { return first.ms }
        if r > last.rows {
            let along = table.count >= 2 ? extrapolate(table, r) : last.ms
            return max(along, last.ms + last.ms / Double(last.rows) * Double(r - last.rows))
        }
        for i in 1..<table.count where r <= table[i].rows {
            let a = table[i - 1], b = table[i]
            return a.ms + Double(r - a.rows) / Double(b.rows - a.rows) * (b.ms - a.ms)
        }
        return last.ms
    }

    private static func extrapolate(_ table: [Point], _ r: Int) -> Double {
        let a = table[table.count - 2], b = table[table.count - 1]
        return b.ms + Double(r - b.rows) / Double(b.rows - a.rows) * (b.ms - a.ms)
    }

    /// The body segment around `rows`: its two point indices and the second's weight.
    private func segment(_ rows: Int) -> (Int, Int, Double) {
        let r = max(rows, 1)
        if body.count == 1 || r <= body[0].rows { return (0, 0, 0) }
        for i in 1..<body.count where r <= body[i].rows {
            return (i - 1, i, Double(r - body[i - 1].rows) / Double(body[i].rows - body[i - 1].rows))
        }
        return (body.count - 1, body.count - 1, 0)
    }

    private func scale(rows: Int) -> Double {
        let (a, b, t) = segment(rows)
        return scales[a] + t * (scales[b] - scales[a])
    }

    // MARK: - Online refresh

    /// This model, fixed: observations no longer change it, and a speculator planning with it
    /// drafts wherever the plan says it pays, whatever the steps measure (no measured guards;
    /// drafting time counts as zero in the layer gate).
    public func fixed() -> CostModel {
        var m = self
        m.isFixed = true
        return m
    }

    /// Folds in one observed step (nothing for a fixed model): the forward time moves the
    /// correction of the nearest body point (an EMA of the log ratio, weight `alpha`: a geometric
    /// mean, so the rare slow step a preempted thread makes does not drag the typical prediction
    /// up), the host time refines the host fit.
    public mutating func observe(_ s: StepShape, forwardMs: Double, hostMs: Double, alpha: Double = 0.1) {
        guard !isFixed else { return }
        let predicted = forwardMilliseconds(s) / scale(rows: s.rows)
        if predicted > 0 && forwardMs > 0 {
            let (a, b, t) = segment(s.rows)
            let i = t < 0.5 ? a : b
            scales[i] = Foundation.exp((1 - alpha) * Foundation.log(scales[i]) + alpha * Foundation.log(forwardMs / predicted))
        }
        if hostMs >= 0 { host.observe(s, ms: hostMs) }
    }

    /// Folds in one observed step of a chain of `rows` rows, all with logits (forward time only).
    public mutating func observe(rows: Int, positions: Int = 0, ms: Double, alpha: Double = 0.1) {
        observe(StepShape(rows: rows, logitRows: rows, positions: positions), forwardMs: ms, hostMs: -1, alpha: alpha)
    }

    /// The body table after online correction: (rows, ms) per point.
    public var corrected: [(rows: Int, ms: Double)] {
        zip(body, scales).map { ($0.rows, $0.ms * $1) }
    }
}

/// Host-side milliseconds of a step: fixed + perLogitRow x logit rows + perNode x draft nodes,
/// fitted online by recursive least squares with forgetting (recent steps weigh most), from a prior
/// measured at start-up. Never predicts below zero.
public struct HostCost: Sendable, Codable, Equatable {
    /// Coefficients: fixed, per logit row, per draft node (milliseconds).
    public private(set) var coefficients: [Double]
    /// Inverse information matrix of the fit (3 x 3, row-major).
    private var p: [Double]
    /// Forgetting factor: an observation's weight halves after about 0.69 / (1 - lambda) steps.
    public let lambda: Double

    public init(fixed: Double = 0, perLogitRow: Double = 0, perNode: Double = 0, lambda: Double = 0.995) {
        coefficients = [fixed, perLogitRow, perNode]
        // A weak prior: the first observations move the fit quickly.
        p = [1, 0, 0, 0, 1, 0, 0, 0, 1]
        self.lambda = lambda
    }

    static func features(_ s: StepShape) -> [Double] { [1, Double(s.logitRows), Double(s.nodes)] }

    public func milliseconds(_ s: StepShape) -> Double {
        let x = Self.features(s)
        return max(0, zip(coefficients, x).reduce(0) { $0 + $1.0 * $1.1 })
    }

    /// One recursive least-squares update toward `ms` for shape `s`. The error is clipped to
    /// `outlierMs` (a Huber-like fit): host time is skewed (a page fault, a descheduled thread),
    /// and a fit to the mean would overpredict the typical step.
    public mutating func observe(_ s: StepShape, ms: Double, outlierMs: Double = 1.0) {
        let x = Self.features(s)
        var px = [Double](repeating: 0, count: 3)
        for i in 0..<3 { for j in 0..<3 { px[i] += p[i * 3 + j] * x[j] } }
        let denominator = lambda + zip(x, px).reduce(0) { $0 + $1.0 * $1.1 }
        guard denominator > 1e-12 else { return }
        let gain = px.map { $0 / denominator }
        let error = min(max(ms - zip(coefficients, x).reduce(0) { $0 + $1.0 * $1.1 }, -outlierMs), outlierMs)
        for i in 0..<3 { coefficients[i] += gain[i] * error }
        var next = p
        for i in 0..<3 { for j in 0..<3 { next[i * 3 + j] = (p[i * 3 + j] - gain[i] * px[j]) / lambda } }
        p = next
    }
}

/// Recent prediction errors of a cost model: (observed - predicted) / predicted per step, the last
/// `capacity` of them, with their median and 90th percentile of the absolute value.
public struct CostAccuracy: Sendable {
    public let capacity: Int
    public private(set) var errors: [Double] = []
    private var next = 0
    /// Steps observed in all.
    public private(set) var count = 0

    public init(capacity: Int = 512) {
        precondition(capacity > 0)
        self.capacity = capacity
        errors.reserveCapacity(capacity)
    }

    /// Records one step; returns its relative error.
    @discardableResult
    public mutating func record(predictedMs: Double, observedMs: Double) -> Double {
        guard predictedMs > 0 else { return 0 }
        let e = (observedMs - predictedMs) / predictedMs
        if errors.count < capacity { errors.append(e) } else { errors[next] = e }
        next = (next + 1) % capacity
        count += 1
        return e
    }

    /// Median and 90th percentile of |error| over the kept steps (nil before any).
    public var summary: (median: Double, p90: Double)? {
        guard !errors.isEmpty else { return nil }
        let sorted = errors.map(abs).sorted()
        return (sorted[sorted.count / 2], sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.9))])
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

    /// The plan: nodes kept per sequence, and the predicted goodput (tokens per second) of the
    /// plan and of plain decoding.
    public struct Plan: Sendable {
        public var perSequence: [Int]
        public var goodput: Double
        public var plainGoodput: Double
        /// The step's predicted shape with the plan's nodes.
        public var shape: StepShape
    }

    /// The number of nodes to keep per sequence.
    ///
    /// - Parameters:
    ///   - base: the step without drafts (its prefill rows, decode roots and logit rows).
    ///   - baseTokens: tokens the step commits anyway (one per decoding sequence).
    ///   - maxRows: the step's row limit.
    /// Scans every prefix of the candidates sorted by score (ties: shallower first) and keeps the
    /// best goodput; the empty prefix is plain decoding, so the plan is never predicted worse. A
    /// plan that beats plain decoding by less than `minimumGain` (a fraction) is not worth its risk:
    /// plain decoding is returned instead.
    public static func plan(candidates: [Candidate], sequences: Int, base: StepShape, baseTokens: Int, maxRows: Int,
                            cost: CostModel, minimumGain: Double = 0.03) -> Plan {
        let sorted = candidates.sorted { $0.score != $1.score ? $0.score > $1.score : $0.depth < $1.depth }
        let plain = Double(baseTokens) / cost.milliseconds(base)
        var best = 0
        var bestGoodput = plain
        var expected = Double(baseTokens)
        var positions = 0
        let limit = min(sorted.count, max(0, maxRows - base.rows))
        for k in 0..<limit {
            expected += Double(sorted[k].score)
            positions += sorted[k].positions
            let goodput = expected / cost.milliseconds(base.adding(nodes: k + 1, positions: positions))
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
        var extra = 0
        for c in sorted.prefix(best) {
            perSequence[c.sequence] += 1
            extra += c.positions
        }
        return Plan(perSequence: perSequence, goodput: bestGoodput * 1000, plainGoodput: plain * 1000,
                    shape: base.adding(nodes: best, positions: extra))
    }
}
