import Foundation
import Testing
import Kernels

/// The turn engines of several models take per step: turns never overlap, waiters are served in
/// arrival order (an engine that asks again queues behind the one waiting), and `isShared` sees
/// another engine waiting or recently served.
@Suite struct StepGateTests {
    final class Owner {}

    /// Names appended from several threads, in order.
    final class Recorder: @unchecked Sendable {
        private let lock = NSLock()
        private var names: [String] = []
        func append(_ name: String) {
            lock.lock()
            names.append(name)
            lock.unlock()
        }
        var order: [String] {
            lock.lock()
            defer { lock.unlock() }
            return names
        }
    }

    @Test func turnsNeverOverlap() {
        let gate = StepGate()
        let lock = NSLock()
        var inside = 0, maxInside = 0, turns = 0
        DispatchQueue.concurrentPerform(iterations: 3) { _ in
            for _ in 0..<30 {
                gate.enter()
                lock.lock()
                inside += 1
                maxInside = max(maxInside, inside)
                turns += 1
                lock.unlock()
                usleep(100)
                lock.lock()
                inside -= 1
                lock.unlock()
                gate.leave()
            }
        }
        #expect(maxInside == 1)
        #expect(turns == 90)
    }

    /// An engine that asks again right after its turn queues behind the one already waiting.
    @Test func aWaiterGoesBeforeTheHolderAskingAgain() throws {
        let gate = StepGate()
        let recorder = Recorder()
        gate.enter()  // this thread holds the turn
        let other = Thread {
            gate.enter()
            recorder.append("waiter")
            gate.leave()
        }
        other.start()
        // Until the other thread holds a ticket (a waiter makes the cores shared for anyone).
        let deadline = Date(timeIntervalSinceNow: 30)
        while !gate.isShared(by: Owner()) && Date() < deadline { usleep(1000) }
        try #require(gate.isShared(by: Owner()), "the other thread never queued")
        gate.leave()
        gate.enter()
        recorder.append("holder")
        gate.leave()
        #expect(recorder.order == ["waiter", "holder"])
    }

    @Test func sharingIsSeenFromAnotherOwnersRecentTurn() {
        let gate = StepGate(sharedPrefillRows: 16, sharingWindowSeconds: 60)
        let a = Owner(), b = Owner()
        gate.enter(a)
        gate.leave()
        #expect(!gate.isShared(by: a))
        #expect(gate.isShared(by: b))
        gate.enter(b)
        gate.leave()
        #expect(gate.isShared(by: a))
        gate.remove(b)
        #expect(!gate.isShared(by: a))
        #expect(gate.sharedPrefillRows == 16)
    }
}
