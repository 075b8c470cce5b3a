import Engine
import Foundation
import Model

/// The engine's most recent steps, for the live engine view (`GET /v1/cast/events`): a ring of
/// the last `capacity` step reports, each numbered, so every events client sends the steps it has
/// not sent yet.
///
/// Thread-safe: `record` runs on the engine thread (wired to `Engine.onStep` by the executable),
/// `steps(after:)` on connection threads; both under one lock, held only to copy.
public final class StepHistory: @unchecked Sendable {
    /// One step as the engine view draws it (milliseconds; nil where speculation planned nothing).
    struct Entry: Encodable {
        var number: Int
        /// Seconds since the history started.
        var time: Double
        var rows: Int
        var treeRows: Int
        var treeRowsPerSequence: [Int]
        var acceptedPerSequence: [Int]
        var durationMs: Double
        var predictedMs: Double?
        var observedMs: Double?
        var positions: Int?

        enum CodingKeys: String, CodingKey {
            case n, t, rows, treeRows = "tree_rows", treeRowsPerSequence = "tree_rows_per_sequence"
            case acceptedPerSequence = "accepted_per_sequence", durationMs = "duration_ms", predictedMs = "predicted_ms"
            case observedMs = "observed_ms", positions
        }

        /// Times rounded to microseconds (milliseconds with three decimals).
        func encode(to encoder: Encoder) throws {
            let micro = { (ms: Double) in (ms * 1000).rounded() / 1000 }
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(number, forKey: .n)
            try c.encode(micro(time), forKey: .t)
            try c.encode(rows, forKey: .rows)
            try c.encode(treeRows, forKey: .treeRows)
            try c.encode(treeRowsPerSequence, forKey: .treeRowsPerSequence)
            try c.encode(acceptedPerSequence, forKey: .acceptedPerSequence)
            try c.encode(micro(durationMs), forKey: .durationMs)
            try c.encodeIfPresent(predictedMs.map(micro), forKey: .predictedMs)
            try c.encodeIfPresent(observedMs.map(micro), forKey: .observedMs)
            try c.encodeIfPresent(positions, forKey: .positions)
        }
    }

    /// Steps kept (the oldest are dropped first).
    public let capacity: Int
    private let lock = NSLock()
    private var ring: [Entry] = []
    private var next = 0
    private var count = 0
    private let clock = ContinuousClock()
    private let start: ContinuousClock.Instant

    public init(capacity: Int = 512) {
        precondition(capacity > 0)
        self.capacity = capacity
        start = clock.now
        ring.reserveCapacity(capacity)
    }

    /// Records one engine step (engine thread).
    public func record(_ step: StepReport) {
        let time = (clock.now - start).seconds
        lock.lock()
        count += 1
        let entry = Entry(number: count, time: time, rows: step.rows, treeRows: step.treeRows,
                          treeRowsPerSequence: step.treeRowsPerSequence, acceptedPerSequence: step.acceptedPerSequence,
                          durationMs: step.duration.seconds * 1000, predictedMs: step.predictedMilliseconds,
                          observedMs: step.observedMilliseconds, positions: step.positions)
        if ring.count < capacity { ring.append(entry) } else { ring[next] = entry }
        next = (next + 1) % capacity
        lock.unlock()
    }

    /// The number of the last recorded step (0: none yet).
    var lastNumber: Int {
        lock.lock()
        defer { lock.unlock() }
        return count
    }

    /// The kept steps numbered above `number`, oldest first, at most `limit` (the newest ones).
    func steps(after number: Int, limit: Int) -> [Entry] {
        lock.lock()
        defer { lock.unlock() }
        let available = min(count - number, ring.count, limit)
        guard available > 0 else { return [] }
        var out: [Entry] = []
        out.reserveCapacity(available)
        // The newest entry sits just before `next`.
        for k in stride(from: available, through: 1, by: -1) {
            out.append(ring[(next - k + capacity) % capacity])
        }
        return out
    }
}
