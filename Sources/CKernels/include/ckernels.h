#ifndef CKERNELS_H
#define CKERNELS_H
// CKernels: C microkernels behind the Swift `Kernels` target.
//
// Every entry point dispatches at run time: an AVX-512 VNNI body when the CPU has it (and
// ck_set_force_scalar(0)), otherwise a plain C body. Both bodies of the quantized matmul
// perform the same integer sums and the same float operations (multiply, then fused
// multiply-adds, block by block in order), so they give bit-identical results.
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Weight formats (values match Swift's WeightFormat mapping in Kernels).
enum {
    CK_F32 = 0,
    CK_F16 = 1,
    CK_Q4_0 = 2,
    CK_Q4_1 = 3,
    CK_Q8_0 = 4,
};

/// Rows of a quantized matrix are processed in groups of this many (the packed layout
/// interleaves them; the last group is zero-padded).
#define CK_GROUP 16
/// Values per quantization block (ggml q4_0/q4_1/q8_0 and our int8 activations).
#define CK_QK 32

/// 1 when the AVX-512 VNNI bodies are in use.
int ck_simd_active(void);
/// Test hook: 1 forces the scalar bodies, 0 restores automatic choice.
void ck_set_force_scalar(int force);

/// Exact IEEE half -> float conversion (scalar).
float ck_f16_to_f32(uint16_t h);

// ---------------------------------------------------------------------------------------------
// Weights

/// Bytes of a raw ggml matrix of this format and shape (rows of `in` values).
size_t ck_raw_size(int fmt, int64_t out, int64_t in);
/// Bytes of the packed (kernel) layout.
size_t ck_packed_size(int fmt, int64_t out, int64_t in);
/// Repacks raw ggml bytes into `dst` (ck_packed_size bytes, 64-byte aligned).
void ck_pack(int fmt, const void *src, int64_t out, int64_t in, void *dst);
/// Dequantizes output row r of a packed matrix into dst[0..<in].
void ck_dequant_row(int fmt, const void *packed, int64_t out, int64_t in, int64_t r, float *dst);
/// Dequantizes one row of a RAW ggml matrix (scalar reference, straight from the ggml block layout).
void ck_dequant_raw_row(int fmt, const void *raw, int64_t in, int64_t r, float *dst);

// ---------------------------------------------------------------------------------------------
// Activations: per row, int8 values q[k] plus per 32-block: d (scale, f32), s = d * sum(q) (f32),
// and c = 128 * sum(q) (int32, the offset correction of the u8 x s8 trick).

typedef struct {
    int8_t *q;        ///< rows x ldq bytes
    float *d;         ///< rows x ldb
    float *s;         ///< rows x ldb
    int32_t *c;       ///< rows x ldb
    const float *x;   ///< rows x ldx f32 originals (for F32/F16 weights)
    int64_t ldq;      ///< bytes between rows of q
    int64_t ldb;      ///< elements between rows of d/s/c
    int64_t ldx;      ///< floats between rows of x
    int64_t rows;
    int64_t k;        ///< inFeatures
} ck_acts;

/// Quantizes rows [r0, r1) of x (row stride ldx) into a: per 32-block d = amax/127,
/// q = round-to-nearest-even(x / d) (q = 0 when amax = 0). Requires k % 32 == 0.
void ck_quantize_rows(const float *x, int64_t ldx, int64_t r0, int64_t r1, int64_t k, const ck_acts *a);

/// y[r*ldy + (o - out_lo)] = dot(act row r, weight row o) for o in [out_lo, out_hi), all rows of a.
/// Work is done per 16-row group; a caller splits [out_lo, out_hi) between threads on any boundary.
void ck_matmul(int fmt, const void *packed, int64_t out, int64_t in, const ck_acts *a,
               int64_t out_lo, int64_t out_hi, float *y, int64_t ldy);
typedef struct ck_pool ck_pool;
/// ck_matmul over [out_lo, out_hi) split into `chunks` contiguous runs of whole 16-row groups,
/// claimed by the pool's threads (the result does not depend on the split).
void ck_matmul_parallel(ck_pool *pool, int64_t chunks, int fmt, const void *packed, int64_t out, int64_t in,
                        const ck_acts *a, int64_t out_lo, int64_t out_hi, float *y, int64_t ldy);
/// Copies rows x k floats of x into a->x and, when `blocks`, quantizes them (rows split over the pool).
void ck_prepare_acts(ck_pool *pool, const float *x, int64_t ldx, int64_t rows, int64_t k, const ck_acts *a, int blocks);
/// Scalar reference of ck_matmul for ONE (row, output) pair, reading the packed layout.
float ck_matmul_ref1(int fmt, const void *packed, int64_t out, int64_t in, const ck_acts *a,
                     int64_t row, int64_t o);

// ---------------------------------------------------------------------------------------------
// Elementwise / reductions (fixed 16-lane order, independent of pointer alignment).

float ck_dot(const float *a, const float *b, int64_t n);
/// Scalar body of ck_dot (same lane order and reduction tree: bit-identical to the SIMD body).
float ck_dot_reference(const float *a, const float *b, int64_t n);
void ck_axpy(float alpha, const float *x, float *y, int64_t n);
void ck_rmsnorm(const float *x, const float *w, int64_t n, float eps, float *y);
void ck_softmax(float *x, int64_t n);
/// The `k` largest of x[0..n) in descending order into ids/vals (ties: the lower index first;
/// k <= n), and returns log(sum(exp(x))), for turning them into probabilities.
float ck_logits_summary(const float *x, int64_t n, int k, int32_t *ids, float *vals);
void ck_silu_mul(float *g, const float *u, int64_t n);
/// ggml "normal" RoPE over heads x head_dim, in place.
void ck_rope(float *x, int64_t heads, int64_t head_dim, int64_t pos, float theta);

// ---------------------------------------------------------------------------------------------
// Thread pool: persistent workers that claim work items; see pool.c.

typedef void (*ck_task)(void *ctx, int64_t item, int64_t items);
ck_pool *ck_pool_create(int threads);
void ck_pool_destroy(ck_pool *p);
int ck_pool_threads(const ck_pool *p);
/// Runs fn(ctx, i, n) exactly once for each i in 0..<n, spread over the caller and the workers
/// (at most `threads` at once), and returns when all have finished.
void ck_pool_run(ck_pool *p, ck_task fn, void *ctx, int64_t n);

// ---------------------------------------------------------------------------------------------
// OpenBLAS (declared here so no cblas.h include path is needed).

void ck_sgemm(int transA, int transB, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);
void ck_blas_set_threads(int n);

// ---------------------------------------------------------------------------------------------
// Attention

/// Attention of `group` query heads (q: [group][hd], contiguous) that share one key/value head,
/// over `n_cached` cached rows followed by `n_chain` step rows. Cached row j lives at
/// base + table[j / block_size] * block_stride + (j % block_size) * row_stride + offset (keys from
/// k_base, values from v_base); step row c at k_chain[c] + chain_offset. scores: scratch of
/// group*(n_cached+n_chain) floats. out: [group][hd]. Positions are reduced in order, so a row's
/// result never depends on the rest of the batch. group <= 64.
void ck_attend(const float *q, int64_t group, int64_t hd, float scale,
               const float *k_base, const float *v_base, const int32_t *table, int64_t block_size,
               int64_t block_stride, int64_t row_stride, int64_t offset, int64_t n_cached,
               const float *const *k_chain, const float *const *v_chain, int64_t chain_offset, int64_t n_chain,
               float *scores, float *out);
/// Scalar reference of ck_attend (same math; equal within float rounding).
void ck_attend_reference(const float *q, int64_t group, int64_t hd, float scale,
                         const float *k_base, const float *v_base, const int32_t *table, int64_t block_size,
                         int64_t block_stride, int64_t row_stride, int64_t offset, int64_t n_cached,
                         const float *const *k_chain, const float *const *v_chain, int64_t chain_offset, int64_t n_chain,
                         float *scores, float *out);

#ifdef __cplusplus
}
#endif
#endif
