// Activation quantization and elementwise ops (SIMD body + plain C body each).
#include "ckernels.h"
#include "internal.h"
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

float ck_dot_reference(const float *a, const float *b, int64_t n);
#if defined(__x86_64__)
float ck_dot_avx(const float *a, const float *b, int64_t n);
#endif

// ------------------------------------------------------------------ activation quantization

static void quantize_row_scalar(const float *x, int64_t k, int8_t *q, float *d, float *s, int32_t *c) {
    for (int64_t b = 0; b < k / CK_QK; b++) {
        const float *xb = x + b * CK_QK;
        float amax = 0.0f;
        for (int i = 0; i < CK_QK; i++) amax = fmaxf(amax, fabsf(xb[i]));
        const float db = amax / 127.0f;
        const float id = db != 0.0f ? 1.0f / db : 0.0f;
        int32_t sum = 0;
        for (int i = 0; i < CK_QK; i++) {
            const int32_t v = (int32_t)nearbyintf(xb[i] * id);
            q[b * CK_QK + i] = (int8_t)v;
            sum += v;
        }
        d[b] = db;
        s[b] = db * (float)sum;
        c[b] = 128 * sum;
    }
}

#if defined(__x86_64__)
CK_AVX512 static void quantize_row_avx(const float *x, int64_t k, int8_t *q, float *d, float *s, int32_t *c) {
    const __m512 signless = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
    for (int64_t b = 0; b < k / CK_QK; b++) {
        const __m512 x0 = _mm512_loadu_ps(x + b * CK_QK), x1 = _mm512_loadu_ps(x + b * CK_QK + 16);
        const __m512 a = _mm512_max_ps(_mm512_and_ps(x0, signless), _mm512_and_ps(x1, signless));
        const float amax = _mm512_reduce_max_ps(a);
        const float db = amax / 127.0f;
        const float id = db != 0.0f ? 1.0f / db : 0.0f;
        const __m512 vid = _mm512_set1_ps(id);
        const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, vid));
        const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, vid));
        _mm_storeu_si128((__m128i *)(q + b * CK_QK), _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(q + b * CK_QK + 16), _mm512_cvtepi32_epi8(q1));
        const int32_t sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        d[b] = db;
        s[b] = db * (float)sum;
        c[b] = 128 * sum;
    }
}
#endif

void ck_quantize_rows(const float *x, int64_t ldx, int64_t r0, int64_t r1, int64_t k, const ck_acts *a) {
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * ldx;
        int8_t *q = a->q + r * a->ldq;
        float *d = a->d + r * a->ldb, *s = a->s + r * a->ldb;
        int32_t *c = a->c + r * a->ldb;
#if defined(__x86_64__)
        if (ck_simd_active()) { quantize_row_avx(xr, k, q, d, s, c); continue; }
#endif
        quantize_row_scalar(xr, k, q, d, s, c);
    }
}

typedef struct {
    const float *x;
    int64_t ldx, rows, k;
    const ck_acts *a;
    int blocks;
} quantize_job;

static void quantize_item(void *ctx, int64_t item, int64_t items) {
    const quantize_job *j = (const quantize_job *)ctx;
    const int64_t r0 = item * j->rows / items, r1 = (item + 1) * j->rows / items;
    for (int64_t r = r0; r < r1; r++)
        memcpy((float *)j->a->x + r * j->a->ldx, j->x + r * j->ldx, (size_t)j->k * sizeof(float));
    if (j->blocks) ck_quantize_rows(j->x, j->ldx, r0, r1, j->k, j->a);
}

void ck_prepare_acts(ck_pool *pool, const float *x, int64_t ldx, int64_t rows, int64_t k, const ck_acts *a, int blocks) {
    quantize_job j = {x, ldx, rows, k, a, blocks};
    int64_t items = pool ? ck_pool_threads(pool) : 1;
    if (items > rows) items = rows;
    if (items <= 1) {
        quantize_item(&j, 0, 1);
        return;
    }
    ck_pool_run(pool, quantize_item, &j, items);
}

// ------------------------------------------------------------------ elementwise

float ck_dot(const float *a, const float *b, int64_t n) {
#if defined(__x86_64__)
    if (ck_simd_active()) return ck_dot_avx(a, b, n);
#endif
    return ck_dot_reference(a, b, n);
}

#if defined(__x86_64__)
CK_AVX512 static void axpy_avx(float alpha, const float *x, float *y, int64_t n) {
    const __m512 va = _mm512_set1_ps(alpha);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    for (; i < n; i++) y[i] = fmaf(alpha, x[i], y[i]);
}

// exp(x) for a vector: range reduction by ln2 and a degree-6 polynomial (Cephes expf), ~1 ulp.
CK_AVX512 static inline __m512 exp_avx(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.5f)), _mm512_set1_ps(-103.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500E-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/// The maximum of x[0..n).
CK_AVX512 static float max_avx(const float *x, int64_t n) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(x + i));
    float mx = _mm512_reduce_max_ps(vmax);
    for (; i < n; i++) mx = fmaxf(mx, x[i]);
    return mx;
}

CK_AVX512 static void softmax_avx(float *x, int64_t n) {
    const float mx = max_avx(x, n);
    const __m512 vm = _mm512_set1_ps(mx);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 e = exp_avx(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vm));
        acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(m, e));
        _mm512_mask_storeu_ps(x + i, m, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(acc));
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
    }
}

CK_AVX512 static void silu_mul_avx(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 vg = _mm512_maskz_loadu_ps(m, g + i);
        const __m512 e = exp_avx(_mm512_sub_ps(_mm512_setzero_ps(), vg));
        const __m512 sg = _mm512_div_ps(vg, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(sg, _mm512_maskz_loadu_ps(m, u + i)));
    }
}

CK_AVX512 static void scale_mul_avx(const float *x, const float *w, float scale, int64_t n, float *y) {
    const __m512 vs = _mm512_set1_ps(scale);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs), _mm512_maskz_loadu_ps(m, w + i));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}
#endif

void ck_axpy(float alpha, const float *x, float *y, int64_t n) {
#if defined(__x86_64__)
    if (ck_simd_active()) { axpy_avx(alpha, x, y, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) y[i] = fmaf(alpha, x[i], y[i]);
}

void ck_rmsnorm(const float *x, const float *w, int64_t n, float eps, float *y) {
    const float ss = ck_dot(x, x, n);
    const float scale = 1.0f / sqrtf(ss / (float)n + eps);
#if defined(__x86_64__)
    if (ck_simd_active()) { scale_mul_avx(x, w, scale, n, y); return; }
#endif
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] * scale) * w[i];
}

// ------------------------------------------------------------------ logits summary

/// Inserts (v, id) into the descending top-k list of `*filled` entries (ties keep the earlier id).
static inline void topk_insert(float v, int32_t id, int k, int *filled, int32_t *ids, float *vals) {
    int at = *filled < k ? *filled : k - 1;
    if (*filled == k && !(v > vals[k - 1])) return;
    while (at > 0 && vals[at - 1] < v) {
        vals[at] = vals[at - 1];
        ids[at] = ids[at - 1];
        at--;
    }
    vals[at] = v;
    ids[at] = id;
    if (*filled < k) (*filled)++;
}

static float logits_summary_scalar(const float *x, int64_t n, int k, int32_t *ids, float *vals) {
    int filled = 0;
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        mx = fmaxf(mx, x[i]);
        if (filled < k || x[i] > vals[k - 1]) topk_insert(x[i], (int32_t)i, k, &filled, ids, vals);
    }
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += exp((double)x[i] - mx);
    return mx + (float)log(sum);
}

#if defined(__x86_64__)
CK_AVX512 static float logits_summary_avx(const float *x, int64_t n, int k, int32_t *ids, float *vals) {
    const float mx = max_avx(x, n);  // pass 1
    // Pass 2: sum of exp(x - max) over everything, and the top k among lanes above the running
    // k-th value (almost every block has none, so it costs one compare per 16 logits).
    const __m512 vm = _mm512_set1_ps(mx);
    __m512 acc = _mm512_setzero_ps();
    int filled = 0;
    float kth = -INFINITY;
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(m, exp_avx(_mm512_sub_ps(v, vm))));
        __mmask16 hot = filled < k ? m : _mm512_mask_cmp_ps_mask(m, v, _mm512_set1_ps(kth), _CMP_GT_OQ);
        while (hot) {
            const int lane = __builtin_ctz(hot);
            hot &= hot - 1;
            topk_insert(x[i + lane], (int32_t)(i + lane), k, &filled, ids, vals);
            if (filled == k) kth = vals[k - 1];
        }
    }
    return mx + logf(_mm512_reduce_add_ps(acc));
}
#endif

float ck_logits_summary(const float *x, int64_t n, int k, int32_t *ids, float *vals) {
    if (n <= 0 || k <= 0) return -INFINITY;
#if defined(__x86_64__)
    if (ck_simd_active()) return logits_summary_avx(x, n, k, ids, vals);
#endif
    return logits_summary_scalar(x, n, k, ids, vals);
}

void ck_softmax(float *x, int64_t n) {
    if (n <= 0) return;
#if defined(__x86_64__)
    if (ck_simd_active()) { softmax_avx(x, n); return; }
#endif
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) mx = fmaxf(mx, x[i]);
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) { x[i] = expf(x[i] - mx); sum += x[i]; }
    const float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void ck_silu_mul(float *g, const float *u, int64_t n) {
#if defined(__x86_64__)
    if (ck_simd_active()) { silu_mul_avx(g, u, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void ck_rope(float *x, int64_t heads, int64_t head_dim, int64_t pos, float theta) {
    // As ggml rope_cache_init ("normal" mode, no scaling): theta_i = pos * scale^i, computed by
    // repeated multiplication in float, scale = theta^(-2/head_dim).
    float cs[512], sn[512];
    const int64_t half = head_dim / 2 < 512 ? head_dim / 2 : 512;
    const float scale = powf(theta, -2.0f / (float)head_dim);
    float t = (float)pos;
    for (int64_t i = 0; i < half; i++) { cs[i] = cosf(t); sn[i] = sinf(t); t *= scale; }
    for (int64_t h = 0; h < heads; h++) {
        float *v = x + h * head_dim;
        for (int64_t i = 0; i < half; i++) {
            const float x0 = v[2 * i], x1 = v[2 * i + 1];
            v[2 * i] = x0 * cs[i] - x1 * sn[i];
            v[2 * i + 1] = x0 * sn[i] + x1 * cs[i];
        }
    }
}
