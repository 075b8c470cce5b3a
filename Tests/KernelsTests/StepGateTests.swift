import Foundation
import Testing
import Kernels

/// The turn engines of several models take per step: turns never overlap, waiters are served in
/// arrival order (an engine that asks again queues behind the others), and `isShared` sees another
/// engine waiting or recently served.
@Suite struct StepGateTests {
    final class Owner {}

    @Test func turnsNeverOverlapAndAlternate() {
        let gate = StepGate()
        let lock = NSLock()
        var inside = 0, maxInside = 0
        var order: [Int] = []
        let threads = 2, turns = 50
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            for _ in 0..<turns {
                gate.enter()
                lock.lock()
                inside += 1
                maxInside = max(maxInside, inside)
                order.append(t)
                lock.unlock()
                usleep(200)  // a step's work, long enough for the other thread to queue
                lock.lock()
                inside -= 1
                lock.unlock()
                gate.leave()
            }
        }
        #expect(maxInside == 1)
        #expect(order.count == threads * turns)
        // Once both queue, turns alternate: a long run of one thread means the gate is not FIFO.
        var longest = 1, run = 1
        for i in 1..<order.count {
            run = order[i] == order[i - 1] ? run + 1 : 1
            longest = max(longest, run)
        }
        #expect(longest <= 3, "longest run of one thread's turns: \(longest)")
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
