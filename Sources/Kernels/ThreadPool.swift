import CKernels

/// A persistent pool of `threads` threads: `threads - 1` workers plus the calling thread.
/// Idle workers spin for about 2 ms, then sleep until the next `run`. `run` allocates nothing.
/// Thread-safety: concurrent `run` calls from different threads take turns; calling `run` from
/// inside a body (nesting) aborts with a message. The body runs on several threads at once and
/// must only touch disjoint memory per thread index.
public final class ThreadPool: @unchecked Sendable {
    private let handle: OpaquePointer

    /// Starts `threads - 1` worker threads (`threads` is clamped to at least 1).
    public init(threads: Int) {
        let n = max(1, threads)
        guard let h = ck_pool_create(Int32(n)) else { fatalError("ThreadPool: cannot allocate the pool") }
        handle = h
        threadCount = n
    }

    deinit { ck_pool_destroy(handle) }

    /// Number of threads `run` uses, the caller included.
    public let threadCount: Int

    /// Runs `body(threadIndex, threadCount)` once on every thread (index 0 on the caller) and
    /// returns when all have finished.
    public func run(_ body: (Int, Int) -> Void) {
        if threadCount == 1 {
            body(0, 1)
            return
        }
        withoutActuallyEscaping(body) { escapable in
            var closure = escapable
            withUnsafeMutablePointer(to: &closure) { pointer in
                ck_pool_run(handle, { ctx, thread, threads in
                    ctx!.assumingMemoryBound(to: ((Int, Int) -> Void).self).pointee(Int(thread), Int(threads))
                }, UnsafeMutableRawPointer(pointer))
            }
        }
    }

    /// Splits `0..<n` into `threadCount` contiguous chunks (sizes differ by at most one; empty
    /// chunks are skipped) and runs `body(chunk)` for each on its own thread.
    public func parallelFor(_ n: Int, _ body: (Range<Int>) -> Void) {
        if n <= 0 { return }
        run { t, count in
            let lo = t * n / count, hi = (t + 1) * n / count
            if lo < hi { body(lo..<hi) }
        }
    }
}
