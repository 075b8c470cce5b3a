import Testing
import Kernels

@Suite struct ThreadPoolTests {
    /// Every thread index runs exactly once per `run`, over many consecutive runs.
    @Test(arguments: [1, 2, 3, 4])
    func runVisitsEveryThreadOnce(threads: Int) {
        let pool = ThreadPool(threads: threads)
        #expect(pool.threadCount == threads)
        let counts = UnsafeMutablePointer<Int>.allocate(capacity: threads * 16)
        counts.initialize(repeating: 0, count: threads * 16)
        defer { counts.deallocate() }
        for _ in 0..<2000 {
            pool.run { t, n in
                precondition(n == threads)
                counts[t * 16] += 1
            }
        }
        for t in 0..<threads { #expect(counts[t * 16] == 2000, "thread \(t)") }
    }

    @Test(arguments: [0, 1, 2, 3, 7, 100])
    func parallelForCoversRangeOnce(n: Int) {
        let pool = ThreadPool(threads: 3)
        let hits = UnsafeMutablePointer<Int>.allocate(capacity: max(n, 1))
        hits.initialize(repeating: 0, count: max(n, 1))
        defer { hits.deallocate() }
        pool.parallelFor(n) { range in for i in range { hits[i] += 1 } }
        for i in 0..<n { #expect(hits[i] == 1, "index \(i) of \(n)") }
    }

    /// Workers that fell asleep (idle longer than the spin window) wake up for the next run.
    @Test func wakesAfterSleeping() async throws {
        let pool = ThreadPool(threads: 2)
        let seen = UnsafeMutablePointer<Int>.allocate(capacity: 32)
        seen.initialize(repeating: 0, count: 32)
        defer { seen.deallocate() }
        pool.run { t, _ in seen[t * 16] += 1 }
        try await Task.sleep(for: .milliseconds(30))
        pool.run { t, _ in seen[t * 16] += 1 }
        #expect(seen[0] == 2 && seen[16] == 2)
    }
}

private struct MarkItems: ThreadPoolTask {
    let hits: UnsafeMutablePointer<Int>
    func run(item: Int, items: Int) { hits[item * 16] += items }
}

@Suite struct ThreadPoolTaskTests {
    @Test(arguments: [1, 2, 3])
    func taskRunsEveryItemOnce(threads: Int) {
        let pool = ThreadPool(threads: threads)
        let hits = UnsafeMutablePointer<Int>.allocate(capacity: 9 * 16)
        hits.initialize(repeating: 0, count: 9 * 16)
        defer { hits.deallocate() }
        for _ in 0..<500 { pool.run(items: 9, task: MarkItems(hits: hits)) }
        for i in 0..<9 { #expect(hits[i * 16] == 500 * 9, "item \(i)") }
    }
}
