import Foundation

/// A fair, first-come-first-served turn on the shared cores: the engines of several models (one
/// `ThreadPool` between them) take a turn for each step, so their steps never run at once (the
/// cores are never oversubscribed) and interleave round-robin: an engine that asks again right
/// after its turn queues behind every engine already waiting. A long prefill is chunked into
/// steps, so it delays another model's decode by one chunk per turn, never by the whole prompt.
///
/// Thread-safety: any thread may take and leave turns; a turn is not reentrant (taking it again
/// from inside a turn deadlocks, a programmer error).
public final class StepGate: @unchecked Sendable {
    private let condition = NSCondition()
    /// The ticket of the next arrival and of the turn being served (a ticket lock: FIFO order).
    private var nextTicket: UInt64 = 0
    private var serving: UInt64 = 0
    private var waitedSecondsTotal = 0.0
    private var turnsTotal = 0
    private var contendedTurnsTotal = 0

    public init() {}

    /// Waits for this caller's turn, runs `body`, then passes the turn on. Returns what `body`
    /// returns and how long the caller waited for the turn (seconds).
    public func withTurn<T>(_ body: () throws -> T) rethrows -> (value: T, waitedSeconds: Double) {
        let waited = enter()
        defer { leave() }
        return (try body(), waited)
    }

    /// Takes a ticket and waits until it is served; returns the seconds waited.
    @discardableResult
    public func enter() -> Double {
        condition.lock()
        let ticket = nextTicket
        nextTicket += 1
        var waited = 0.0
        if ticket != serving {
            let start = DispatchTime.now().uptimeNanoseconds
            while ticket != serving { condition.wait() }
            waited = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            contendedTurnsTotal += 1
        }
        turnsTotal += 1
        waitedSecondsTotal += waited
        condition.unlock()
        return waited
    }

    /// Ends the current turn and wakes the waiters (the next ticket proceeds).
    public func leave() {
        condition.lock()
        serving += 1
        condition.broadcast()
        condition.unlock()
    }

    /// Turns taken, turns that had to wait for another holder, and seconds waited in all.
    public var statistics: (turns: Int, contendedTurns: Int, waitedSeconds: Double) {
        condition.lock()
        defer { condition.unlock() }
        return (turnsTotal, contendedTurnsTotal, waitedSecondsTotal)
    }
}
