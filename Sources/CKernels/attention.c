// Causal attention for one key/value head and the query heads that share it (grouped-query
// attention), over a sequence's cached positions followed by this step's ancestor rows.
//
// Reduction order is fixed: positions in order (cached, then chain), lanes of 16 then a fixed
// tree inside ck_dot-like reductions. A row's result therefore does not depend on which other
// rows share the step, so batching and speculation never change greedy output.
#include "ckernels.h"
#include "internal.h"
#include <math.h>
#include <immintrin.h>

/// Where cached rows live: row j at base + table[j / block_size] * block_stride
/// + (j % block_size) * row_stride + offset.
typedef struct {
    const int32_t *table;
    int64_t block_size, block_stride, row_stride, offset, n;
} ck_cached_layout;

static inline const float *row_at(int64_t j, const float *base, const ck_cached_layout *c,
                                  const float *const *chain, int64_t chain_offset) {
    if (j < c->n) return base + (int64_t)c->table[j / c->block_size] * c->block_stride + (j % c->block_size) * c->row_stride + c->offset;
    return chain[j - c->n] + chain_offset;
}

static void softmax_rows(float *scores, int64_t group, int64_t n, float *inv_sum) {
    for (int64_t g = 0; g < group; g++) {
        float *s = scores + g * n;
        float m = -INFINITY;
        for (int64_t j = 0; j < n; j++) m = s[j] > m ? s[j] : m;
        float sum = 0;
        for (int64_t j = 0; j < n; j++) { s[j] = expf(s[j] - m); sum += s[j]; }
        inv_sum[g] = 1.0f / sum;
    }
}

static void attend_scalar(const float *q, int64_t group, int64_t hd, float scale,
                          const float *k_base, const float *v_base, const ck_cached_layout *c,
                          const float *const *k_chain, const float *const *v_chain, int64_t chain_offset, int64_t n_chain,
                          float *scores, float *out) {
    const int64_t n = c->n + n_chain;
    for (int64_t j = 0; j < n; j++) {
        const float *k = row_at(j, k_base, c, k_chain, chain_offset);
        for (int64_t g = 0; g < group; g++) {
            float acc = 0;
            for (int64_t i = 0; i < hd; i++) acc += q[g * hd + i] * k[i];
            scores[g * n + j] = acc * scale;
        }
    }
    float inv[64];
    softmax_rows(scores, group, n, inv);
    for (int64_t g = 0; g < group; g++)
        for (int64_t i = 0; i < hd; i++) out[g * hd + i] = 0;
    for (int64_t j = 0; j < n; j++) {
        const float *v = row_at(j, v_base, c, v_chain, chain_offset);
        for (int64_t g = 0; g < group; g++) {
            const float p = scores[g * n + j];
            for (int64_t i = 0; i < hd; i++) out[g * hd + i] += p * v[i];
        }
    }
    for (int64_t g = 0; g < group; g++)
        for (int64_t i = 0; i < hd; i++) out[g * hd + i] *= inv[g];
}

/// AVX-512 body for head dimension 64 and up to 4 query heads per key/value head.
__attribute__((target("avx512f")))
static void attend_avx64(const float *q, int64_t group, float scale,
                         const float *k_base, const float *v_base, const ck_cached_layout *c,
                         const float *const *k_chain, const float *const *v_chain, int64_t chain_offset, int64_t n_chain,
                         float *scores, float *out) {
    const int64_t n = c->n + n_chain;
    __m512 qv[4][4];
    for (int64_t g = 0; g < group; g++)
        for (int c = 0; c < 4; c++) qv[g][c] = _mm512_loadu_ps(q + g * 64 + c * 16);
    for (int64_t j = 0; j < n; j++) {
        const float *k = row_at(j, k_base, c, k_chain, chain_offset);
        const __m512 k0 = _mm512_loadu_ps(k), k1 = _mm512_loadu_ps(k + 16);
        const __m512 k2 = _mm512_loadu_ps(k + 32), k3 = _mm512_loadu_ps(k + 48);
        for (int64_t g = 0; g < group; g++) {
            __m512 a = _mm512_mul_ps(qv[g][0], k0);
            a = _mm512_fmadd_ps(qv[g][1], k1, a);
            a = _mm512_fmadd_ps(qv[g][2], k2, a);
            a = _mm512_fmadd_ps(qv[g][3], k3, a);
            scores[g * n + j] = _mm512_reduce_add_ps(a) * scale;
        }
    }
    float inv[4];
    softmax_rows(scores, group, n, inv);
    __m512 acc[4][4];
    for (int64_t g = 0; g < group; g++)
        for (int c = 0; c < 4; c++) acc[g][c] = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j++) {
        const float *v = row_at(j, v_base, c, v_chain, chain_offset);
        const __m512 v0 = _mm512_loadu_ps(v), v1 = _mm512_loadu_ps(v + 16);
        const __m512 v2 = _mm512_loadu_ps(v + 32), v3 = _mm512_loadu_ps(v + 48);
        for (int64_t g = 0; g < group; g++) {
            const __m512 p = _mm512_set1_ps(scores[g * n + j]);
            acc[g][0] = _mm512_fmadd_ps(p, v0, acc[g][0]);
            acc[g][1] = _mm512_fmadd_ps(p, v1, acc[g][1]);
            acc[g][2] = _mm512_fmadd_ps(p, v2, acc[g][2]);
            acc[g][3] = _mm512_fmadd_ps(p, v3, acc[g][3]);
        }
    }
    for (int64_t g = 0; g < group; g++) {
        const __m512 s = _mm512_set1_ps(inv[g]);
        for (int c = 0; c < 4; c++) _mm512_storeu_ps(out + g * 64 + c * 16, _mm512_mul_ps(acc[g][c], s));
    }
}

void ck_attend(const float *q, int64_t group, int64_t hd, float scale,
               const float *k_base, const float *v_base, const int32_t *table, int64_t block_size,
               int64_t block_stride, int64_t row_stride, int64_t offset, int64_t n_cached,
               const float *const *k_chain, const float *const *v_chain, int64_t chain_offset, int64_t n_chain,
               float *scores, float *out) {
    const ck_cached_layout c = {table, block_size, block_stride, row_stride, offset, n_cached};
    if (ck_simd_active() && hd == 64 && group <= 4) {
        attend_avx64(q, group, scale, k_base, v_base, &c, k_chain, v_chain, chain_offset, n_chain, scores, out);
    } else {
        attend_scalar(q, group, hd, scale, k_base, v_base, &c, k_chain, v_chain, chain_offset, n_chain, scores, out);
    }
}

void ck_attend_reference(const float *q, int64_t group, int64_t hd, float scale,
                         const float *k_base, const float *v_base, const int32_t *table, int64_t block_size,
                         int64_t block_stride, int64_t row_stride, int64_t offset, int64_t n_cached,
                         const float *const *k_chain, const float *const *v_chain, int64_t chain_offset, int64_t n_chain,
                         float *scores, float *out) {
    const ck_cached_layout c = {table, block_size, block_stride, row_stride, offset, n_cached};
    attend_scalar(q, group, hd, scale, k_base, v_base, &c, k_chain, v_chain, chain_offset, n_chain, scores, out);
}
