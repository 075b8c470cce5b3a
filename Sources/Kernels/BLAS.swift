import CKernels

/// f32 matrix products through OpenBLAS.
public enum BLAS {
    /// Sets OpenBLAS's own thread count. The first `sgemm` call sets it to 1 unless this was called,
    /// so OpenBLAS threads do not compete with `ThreadPool` workers for the cores.
    public static func setThreads(_ n: Int) {
        ck_blas_set_threads(Int32(max(1, n)))
        configured = true
    }

    nonisolated(unsafe) private static var configured = false

    /// C[m x n] = alpha * op(A) · op(B) + beta * C, row-major f32. op(A) is A [m x k] (lda >= k), or Aᵀ
    /// when transposeA (A stored [k x m], lda >= m); op(B) is B [k x n] (ldb >= n), or Bᵀ when
    /// transposeB (B stored [n x k], ldb >= k). ldc >= n. Runs on the calling thread (OpenBLAS threads
    /// as configured).
    public static func sgemm(m: Int, n: Int, k: Int,
                             a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
                             b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
                             c: UnsafeMutablePointer<Float>, ldc: Int,
                             alpha: Float = 1, beta: Float = 0) {
        precondition(m >= 0 && n >= 0 && k >= 0)
        precondition(lda >= max(1, transposeA ? m : k) && ldb >= max(1, transposeB ? k : n) && ldc >= max(1, n),
                     "sgemm: leading dimension too small")
        if m == 0 || n == 0 { return }
        if !configured { setThreads(1) }
        ck_sgemm(transposeA ? 1 : 0, transposeB ? 1 : 0, Int64(m), Int64(n), Int64(k), alpha, a, Int64(lda),
                 b, Int64(ldb), beta, c, Int64(ldc))
    }
}
