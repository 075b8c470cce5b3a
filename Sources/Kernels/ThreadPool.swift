import CKernels

/// A persistent pool of `threads` threads: `threads - 1` workers plus the calling thread.
///
/// Work is expressed as items `0..<n`; the caller and the workers claim items from a shared atomic
/// counter, so a worker that is slow to wake (or descheduled on oversubscribed cores) never holds
/// the caller up: the caller takes its items and waits only for items already in progress.
/// Idle workers spin for about 2 ms, then sleep until the next run. Runs allocate nothing.
///
/// Thread-safety: concurrent runs from different threads take turns; starting a run from inside
/// an item (nesting) aborts with a message. Items run concurrently and must touch disjoint memory.
public final class ThreadPool: @unchecked Sendable {
    let handle: OpaquePointer

    /// Starts `threads - 1` worker threads (`threads` is clamped to at least 1).
    public init(threads: Int) {
        let n = max(1, threads)
        guard let h = ck_pool_create(Int32(n)) else { fatalError("ThreadPool: cannot allocate the pool") }
        handle = h
        threadCount = n
    }

    deinit { ck_pool_destroy(handle) }

    /// Number of threads, the caller included: the most items that run at once.
    public let threadCount: Int

    /// Runs `task.run(item:items:)` exactly once for each item in `0..<items`, at most `threadCount`
    /// at once, and returns when all have finished. Allocates nothing (the closure-taking methods
    /// below allocate two small objects per call for Swift's `withoutActuallyEscaping`; use this one
    /// in per-token code).
    public func run<Task: ThreadPoolTask>(items: Int, task: Task) {
        if items <= 0 { return }
        var local = task
        withUnsafeMutablePointer(to: &local) { pointer in
            var erased: any ErasedPoolTask = PoolTaskPointer(pointer: pointer)
            withUnsafeMutablePointer(to: &erased) { e in
                ck_pool_run(handle, { ctx, item, items in
                    ctx!.assumingMemoryBound(to: (any ErasedPoolTask).self).pointee.invoke(Int(item), Int(items))
                }, UnsafeMutableRawPointer(e), Int64(items))
            }
        }
    }

    /// Runs `body(index, threadCount)` exactly once for each index in `0..<threadCount`, on the pool's
    /// threads (the caller included), and returns when all have finished. `index` identifies the
    /// work item, not the OS thread: each index runs once, but one thread may run several.
    public func run(_ body: (Int, Int) -> Void) {
        run(items: threadCount, body)
    }

    /// Runs `body(item, items)` exactly once for each item in `0..<items`, at most `threadCount` at
    /// once, and returns when all have finished.
    public func run(items: Int, _ body: (Int, Int) -> Void) {
        if items <= 0 { return }
        withoutActuallyEscaping(body) { escapable in
            var closure = escapable
            withUnsafeMutablePointer(to: &closure) { pointer in
                ck_pool_run(handle, { ctx, item, items in
                    ctx!.assumingMemoryBound(to: ((Int, Int) -> Void).self).pointee(Int(item), Int(items))
                }, UnsafeMutableRawPointer(pointer), Int64(items))
            }
        }
    }

    /// Splits `0..<n` into `threadCount` contiguous chunks (sizes differ by at most one; empty
    /// chunks are skipped) and runs `body(chunk)` for each.
    public func parallelFor(_ n: Int, _ body: (Range<Int>) -> Void) {
        parallelFor(n, chunks: threadCount, body)
    }

    /// Splits `0..<n` into `chunks` contiguous chunks (sizes differ by at most one; empty chunks are
    /// skipped) and runs `body(chunk)` for each; more chunks than threads balance uneven progress.
    public func parallelFor(_ n: Int, chunks: Int, _ body: (Range<Int>) -> Void) {
        if n <= 0 { return }
        let c = max(1, min(chunks, n))
        run(items: c) { i, count in
            let lo = i * n / count, hi = (i + 1) * n / count
            if lo < hi { body(lo..<hi) }
        }
    }
}

/// A unit of parallel work for `ThreadPool.run(items:task:)`: a struct holding the pointers and sizes
/// it needs; `run(item:items:)` is called once per item, concurrently, and must write disjoint memory.
public protocol ThreadPoolTask {
    func run(item: Int, items: Int)
}

/// One-pointer wrapper so the existential fits inline (no boxing allocation).
protocol ErasedPoolTask {
    func invoke(_ item: Int, _ items: Int)
}

struct PoolTaskPointer<Task: ThreadPoolTask>: ErasedPoolTask {
    let pointer: UnsafeMutablePointer<Task>
    func invoke(_ item: Int, _ items: Int) { pointer.pointee.run(item: item, items: items) }
}
