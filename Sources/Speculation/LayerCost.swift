import Foundation

/// D: what one frontier layer of a drafter that runs weights costs, by the rows it computes (all
/// sequences' frontier nodes of that layer together), in milliseconds. A table over powers of two
/// measured when the drafter loads (`CostModel.interpolate` between points), times one online
/// correction: an exponential moving average of the log ratio observed / predicted over every layer
/// the drafter runs (so load from other processes and thermal changes reach the planner).
///
/// Thread-safety: a value type; the engine thread owns it.
public struct LayerCost: Sendable, Codable, Equatable {
    /// Measured milliseconds by rows, sorted by rows.
    public private(set) var points: [CostModel.Point]
    /// Online correction (observed / predicted, geometric moving average).
    public private(set) var scale = 1.0
    /// Layers observed online.
    public private(set) var observedLayers = 0

    /// A table of (rows, ms) points (at least one).
    public init(points: [(rows: Int, ms: Double)]) {
        precondition(!points.isEmpty)
        self.points = CostModel.nonDecreasing(points).map { CostModel.Point(rows: $0.rows, ms: $0.ms) }
    }

    /// Predicted milliseconds of a layer of `rows` rows (0 rows: 0).
    public func milliseconds(rows: Int) -> Double {
        rows <= 0 ? 0 : CostModel.interpolate(points, rows) * scale
    }

    /// Folds in one observed layer.
    public mutating func observe(rows: Int, ms: Double, alpha: Double = 0.05) {
        let predicted = CostModel.interpolate(points, rows)
        guard rows > 0, predicted > 0, ms > 0 else { return }
        scale = Foundation.exp((1 - alpha) * Foundation.log(scale) + alpha * Foundation.log(ms / predicted))
        observedLayers += 1
    }

    /// The table after online correction.
    public var corrected: [(rows: Int, ms: Double)] { points.map { ($0.rows, $0.ms * scale) } }
}
