// OpenBLAS entry points, declared here so that no cblas.h include path is needed.
#include "ckernels.h"

extern void cblas_sgemm(int order, int transA, int transB, int m, int n, int k, float alpha,
                        const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
extern void openblas_set_num_threads(int n);

void ck_sgemm(int transA, int transB, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    enum { RowMajor = 101, NoTrans = 111, Trans = 112 };
    cblas_sgemm(RowMajor, transA ? Trans : NoTrans, transB ? Trans : NoTrans, (int)m, (int)n, (int)k, alpha,
                a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

void ck_blas_set_threads(int n) { openblas_set_num_threads(n); }
