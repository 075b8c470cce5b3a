import Foundation

/// A fair, first-come-first-served turn on the shared cores: the engines of several models (one
/// `ThreadPool` between them) take a turn for each step, so their steps never run at once (the
/// cores are never oversubscribed) and interleave round-robin: an engine that asks again right
/// after its turn queues behind every engine already waiting. A long prefill is chunked into
/// steps, and while another engine shares the cores its chunks shrink to `sharedPrefillRows`, so it
/// delays another model's decode by one short chunk per turn, never by the whole prompt.
///
/// Thread-safety: any thread may take and leave turns; a turn is not reentrant (taking it again
/// from inside a turn deadlocks, a programmer error).
public final class StepGate: @unchecked Sendable {
    private let condition = NSCondition()
    /// The ticket of the next arrival and of the turn being served (a ticket lock: FIFO order).
    private var nextTicket: UInt64 = 0
    private var serving: UInt64 = 0
    /// When each engine (by identity) last took a turn, in uptime nanoseconds.
    private var lastTurn: [ObjectIdentifier: UInt64] = [:]

    /// Prompt rows one step of an engine may take while another engine uses the cores too. 16:
    /// on the 2-core AVX-512 host a step of 16 rows costs about 4x one of 1 row (Gemma 3 270M:
    /// 41 ms against 9), and per row no more than longer chunks (32 rows: 105 ms).
    public let sharedPrefillRows: Int
    /// How recent another engine's turn must be for the cores to count as shared.
    public let sharingWindowSeconds: Double

    public init(sharedPrefillRows: Int = 16, sharingWindowSeconds: Double = 0.25) {
        self.sharedPrefillRows = max(1, sharedPrefillRows)
        self.sharingWindowSeconds = sharingWindowSeconds
    }

    /// Takes a ticket and waits until it is served; returns the seconds waited. `owner` (an
    /// engine) is remembered as using the cores, for `isShared(by:)`.
    @discardableResult
    public func enter(_ owner: AnyObject? = nil) -> Double {
        condition.lock()
        let ticket = nextTicket
        nextTicket += 1
        var waited = 0.0
        if ticket != serving {
            let start = DispatchTime.now().uptimeNanoseconds
            while ticket != serving { condition.wait() }
            waited = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        }
        if let owner { lastTurn[ObjectIdentifier(owner)] = DispatchTime.now().uptimeNanoseconds }
        condition.unlock()
        return waited
    }

    /// Whether an engine other than `owner` waits for a turn now or took one within
    /// `sharingWindowSeconds`: its decodes would wait behind a long step of `owner`.
    public func isShared(by owner: AnyObject) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        if nextTicket > serving + 1 { return true }
        let now = DispatchTime.now().uptimeNanoseconds
        let window = UInt64(sharingWindowSeconds * 1e9)
        let me = ObjectIdentifier(owner)
        return lastTurn.contains { $0.key != me && now - $0.value < window }
    }

    /// Forgets `owner` (an engine that stopped), so it no longer counts as sharing the cores.
    public func remove(_ owner: AnyObject) {
        condition.lock()
        lastTurn[ObjectIdentifier(owner)] = nil
        condition.unlock()
    }

    /// Ends the current turn and wakes the waiters (the next ticket proceeds).
    public func leave() {
        condition.lock()
        serving += 1
        condition.broadcast()
        condition.unlock()
    }
}
