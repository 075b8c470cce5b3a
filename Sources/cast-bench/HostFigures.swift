import Foundation
import Kernels

/// The host's memory read bandwidth: a STREAM-like pass (sum of every value) over a buffer far
/// larger than the caches, split over the pool's threads, best of a few passes. Decode reads every
/// weight once per token, so this bounds decode: tokens/s <= bandwidth / weight bytes per token.
enum MemoryBandwidth {
    static func measure(pool: ThreadPool, bytes: Int = 512 << 20, passes: Int = 5) -> Double {
        let count = bytes / MemoryLayout<Float>.size
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { buffer.deallocate() }
        buffer.initialize(repeating: 1, count: count)
        let sums = UnsafeMutablePointer<Float>.allocate(capacity: pool.threadCount)
        defer { sums.deallocate() }
        var best = 0.0
        let clock = ContinuousClock()
        for _ in 0..<passes {
            let t = clock.now
            pool.parallelFor(count, chunks: pool.threadCount) { range in
                sums[range.lowerBound * pool.threadCount / count] = Ops.readSum(buffer + range.lowerBound, count: range.count)
            }
            best = max(best, Double(bytes) / (clock.now - t).seconds / 1e9)
        }
        return best
    }
}

/// A thread that spins on the CPU while `body` runs (the "busy neighbour" of cast-bench --neighbour).
enum BusyNeighbour {
    final class Flag: @unchecked Sendable {
        private let lock = NSLock()
        private var stopped = false
        var isStopped: Bool { lock.lock(); defer { lock.unlock() }; return stopped }
        func stop() { lock.lock(); stopped = true; lock.unlock() }
    }

    static func whileRunning<T>(_ body: () throws -> T) rethrows -> T {
        let flag = Flag()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            var x = 1.0
            while !flag.isStopped {
                for _ in 0..<100_000 { x = x * 1.000000001 + 1e-12 }
            }
            if x == 0 { print(x) }  // keeps the loop from being optimized away
            done.signal()
        }
        thread.start()
        defer {
            flag.stop()
            done.wait()
        }
        return try body()
    }
}
