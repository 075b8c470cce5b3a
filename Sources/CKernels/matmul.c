// Quantized and float matmul kernels: y[r, o] = dot(activation row r, weight row o).
//
// Packed layout of a quantized matrix (ck_pack): output rows are taken 16 at a time (a "group",
// zero-padded at the end). A group holds, for its nb = in/32 blocks in order:
//   nb x wbytes  quant values; block b, chunk j (64 bytes): lane l (row 16g+l) holds 4 bytes
//                Q4_0/Q4_1: raw qs[4j..4j+3] (low nibbles = elements 4j.., high = 16+4j..), j < 4
//                Q8_0:      raw qs[4j..4j+3] XOR 0x80 (the value + 128 as unsigned), j < 8
//   nb x 16      f16 d, lane order
//   nb x 16      f16 m (Q4_1 only)
// so one 512-bit vpdpbusd multiplies 4 consecutive values of 16 rows by one broadcast
// 4-byte group of activations, and a block needs no horizontal reduction.
//
// Arithmetic, identical in the SIMD and scalar bodies, for activation row r and output o:
//   acc = 0
//   for b in blocks, in order:
//     isum = sum_i wq_i * aq_i      (exact int32; Q4: wq = nibble 0..15; Q8_0: signed value)
//     acc  = fma((float)isum, dw * da[b], acc)
//     Q4_1: acc = fma(mw, s[b], acc)       Q4_0: acc = fma(dw * -8, s[b], acc)
//   y = acc
// where s[b] = da[b] * (float)sum(aq in block b). Nothing depends on how many rows are in the
// call, where the row sits, or how outputs are split between threads.
#include "ckernels.h"
#include "internal.h"
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

// ------------------------------------------------------------------ scalar reference

static inline int32_t rd32(const int8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }

float ck_matmul_ref1(int fmt, const void *packed, int64_t out, int64_t in, const ck_acts *a,
                     int64_t row, int64_t o) {
    (void)out;
    const int64_t nb = in / CK_QK, wb = ck_wbytes(fmt);
    const int64_t g = o / CK_GROUP, l = o % CK_GROUP;
    const uint8_t *base = (const uint8_t *)packed + g * ck_group_stride(fmt, in);
    const uint16_t *dd = (const uint16_t *)(base + nb * wb);
    const uint16_t *mm = dd + nb * CK_GROUP;
    const int8_t *aq = a->q + row * a->ldq;
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *w = base + b * wb;
        const int8_t *x = aq + b * CK_QK;
        int32_t isum = 0;
        if (fmt == CK_Q8_0) {
            for (int j = 0; j < 8; j++)
                for (int t = 0; t < 4; t++)
                    isum += (int32_t)(int8_t)(w[j * 64 + l * 4 + t] ^ 0x80) * x[4 * j + t];
        } else {
            for (int j = 0; j < 4; j++)
                for (int t = 0; t < 4; t++) {
                    const uint8_t q = w[j * 64 + l * 4 + t];
                    isum += (int32_t)(q & 0x0F) * x[4 * j + t] + (int32_t)(q >> 4) * x[16 + 4 * j + t];
                }
        }
        const float dw = ck_f16_to_f32(dd[b * CK_GROUP + l]);
        const float da = a->d[row * a->ldb + b];
        acc = fmaf((float)isum, dw * da, acc);
        if (fmt == CK_Q4_1) acc = fmaf(ck_f16_to_f32(mm[b * CK_GROUP + l]), a->s[row * a->ldb + b], acc);
        if (fmt == CK_Q4_0) acc = fmaf(dw * -8.0f, a->s[row * a->ldb + b], acc);
    }
    return acc;
}

// Fixed-order float dot: 16 lanes, lane l accumulates elements i with i % 16 == l (fma, in order;
// the partial last chunk contributes zeros in missing lanes), then a fixed pairwise tree.
static float dot_scalar16(const float *a, const void *b, int b_is_f16, int64_t n) {
    float acc[16] = {0};
    for (int64_t i = 0; i < n; i += 16)
        for (int l = 0; l < 16; l++) {
            float x = 0.0f, y = 0.0f;
            if (i + l < n) {
                x = a[i + l];
                y = b_is_f16 ? ck_f16_to_f32(((const uint16_t *)b)[i + l]) : ((const float *)b)[i + l];
            }
            acc[l] = fmaf(x, y, acc[l]);
        }
    float s8[8], s4[4];
    for (int i = 0; i < 8; i++) s8[i] = acc[i] + acc[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    const float s2a = s4[0] + s4[2], s2b = s4[1] + s4[3];
    return s2a + s2b;
}

float ck_dot_reference(const float *a, const float *b, int64_t n) { return dot_scalar16(a, b, 0, n); }

static void matmul_scalar(int fmt, const void *packed, int64_t out, int64_t in, const ck_acts *a,
                          int64_t out_lo, int64_t out_hi, float *y, int64_t ldy) {
    for (int64_t o = out_lo; o < out_hi; o++)
        for (int64_t r = 0; r < a->rows; r++) {
            float v;
            if (fmt == CK_F32)
                v = dot_scalar16(a->x + r * a->ldx, (const float *)packed + o * in, 0, in);
            else if (fmt == CK_F16)
                v = dot_scalar16(a->x + r * a->ldx, (const uint16_t *)packed + o * in, 1, in);
            else
                v = ck_matmul_ref1(fmt, packed, out, in, a, r, o);
            y[r * ldy + (o - out_lo)] = v;
        }
}

#if defined(__x86_64__)
// ------------------------------------------------------------------ AVX-512 VNNI

CK_AVX512 static inline float hsum16(__m512 v) {
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    const __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    return _mm_cvtss_f32(s1);
}

CK_AVX512 float ck_dot_avx(const float *a, const float *b, int64_t n) {
    __m512 acc = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc);
    }
    return hsum16(acc);
}

CK_AVX512 static float dot_f16_avx(const float *a, const uint16_t *b, int64_t n) {
    __m512 acc = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i),
                              _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(b + i))), acc);
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i),
                              _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, b + i)), acc);
    }
    return hsum16(acc);
}

/// Software prefetch distance in bytes ahead of the weights being read (measured best at 16 KiB on
/// Zen 4: R=1 streaming ~35% faster than hardware prefetch alone). Clamped to the matrix end.
#ifndef CK_PF
#define CK_PF 16384
#endif

#define BCAST(p) _mm512_set1_epi32(rd32(p))

// One 16-row group against NR activation rows starting at row r0; writes lanes in `mask`.
#define Q4_GROUP_BODY(NR)                                                                          \
    CK_AVX512 static void q4_group_##NR(const uint8_t *base, int64_t nb, int is_q41,              \
                                        const ck_acts *a, int64_t r0, float *y, int64_t ldy,      \
                                        __mmask16 mask, const uint8_t *end) {                     \
        const __m512i lo = _mm512_set1_epi8(0x0F);                                               \
        const uint16_t *dp = (const uint16_t *)(base + nb * 256);                                 \
        const uint16_t *mp = dp + nb * 16;                                                        \
        __m512 acc[NR];                                                                           \
        const int8_t *aq[NR];                                                                     \
        const float *ad[NR], *as[NR];                                                             \
        for (int i = 0; i < NR; i++) {                                                            \
            acc[i] = _mm512_setzero_ps();                                                         \
            aq[i] = a->q + (r0 + i) * a->ldq;                                                     \
            ad[i] = a->d + (r0 + i) * a->ldb;                                                     \
            as[i] = a->s + (r0 + i) * a->ldb;                                                     \
        }                                                                                         \
        for (int64_t b = 0; b < nb; b++) {                                                        \
            const uint8_t *w = base + b * 256;                                                    \
            const uint8_t *pf = base + CK_PF + b * (is_q41 ? 320 : 288);                          \
            if (pf < end)                                                                         \
                for (int c = 0; c < 320; c += 64) _mm_prefetch((const char *)pf + c, _MM_HINT_T0); \
            const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 64);           \
            const __m512i w2 = _mm512_loadu_si512(w + 128), w3 = _mm512_loadu_si512(w + 192);    \
            const __m512i l0 = _mm512_and_si512(w0, lo), h0 = _mm512_and_si512(_mm512_srli_epi16(w0, 4), lo); \
            const __m512i l1 = _mm512_and_si512(w1, lo), h1 = _mm512_and_si512(_mm512_srli_epi16(w1, 4), lo); \
            const __m512i l2 = _mm512_and_si512(w2, lo), h2 = _mm512_and_si512(_mm512_srli_epi16(w2, 4), lo); \
            const __m512i l3 = _mm512_and_si512(w3, lo), h3 = _mm512_and_si512(_mm512_srli_epi16(w3, 4), lo); \
            const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(dp + b * 16))); \
            const __m512 mw = is_q41 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(mp + b * 16))) \
                                     : _mm512_mul_ps(dw, _mm512_set1_ps(-8.0f));                  \
            _Pragma("clang loop unroll(full)")                                                    \
            for (int i = 0; i < NR; i++) {                                                        \
                const int8_t *x = aq[i] + b * 32;                                                 \
                __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), l0, BCAST(x));          \
                __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), h0, BCAST(x + 16));     \
                s0 = _mm512_dpbusd_epi32(s0, l1, BCAST(x + 4));                                   \
                s1 = _mm512_dpbusd_epi32(s1, h1, BCAST(x + 20));                                  \
                s0 = _mm512_dpbusd_epi32(s0, l2, BCAST(x + 8));                                   \
                s1 = _mm512_dpbusd_epi32(s1, h2, BCAST(x + 24));                                  \
                s0 = _mm512_dpbusd_epi32(s0, l3, BCAST(x + 12));                                  \
                s1 = _mm512_dpbusd_epi32(s1, h3, BCAST(x + 28));                                  \
                const __m512 fs = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));                   \
                acc[i] = _mm512_fmadd_ps(fs, _mm512_mul_ps(dw, _mm512_set1_ps(ad[i][b])), acc[i]); \
                acc[i] = _mm512_fmadd_ps(mw, _mm512_set1_ps(as[i][b]), acc[i]);                   \
            }                                                                                     \
        }                                                                                         \
        for (int i = 0; i < NR; i++) _mm512_mask_storeu_ps(y + (r0 + i) * ldy, mask, acc[i]);     \
    }

#define Q8_GROUP_BODY(NR)                                                                          \
    CK_AVX512 static void q8_group_##NR(const uint8_t *base, int64_t nb, const ck_acts *a,         \
                                        int64_t r0, float *y, int64_t ldy, __mmask16 mask,        \
                                        const uint8_t *end) {                                     \
        const uint16_t *dp = (const uint16_t *)(base + nb * 512);                                 \
        __m512 acc[NR];                                                                           \
        const int8_t *aq[NR];                                                                     \
        const float *ad[NR];                                                                      \
        const int32_t *ac[NR];                                                                    \
        for (int i = 0; i < NR; i++) {                                                            \
            acc[i] = _mm512_setzero_ps();                                                         \
            aq[i] = a->q + (r0 + i) * a->ldq;                                                     \
            ad[i] = a->d + (r0 + i) * a->ldb;                                                     \
            ac[i] = a->c + (r0 + i) * a->ldb;                                                     \
        }                                                                                         \
        for (int64_t b = 0; b < nb; b++) {                                                        \
            const uint8_t *w = base + b * 512;                                                    \
            const uint8_t *pf = base + CK_PF + b * 544;                                           \
            if (pf < end)                                                                         \
                for (int c = 0; c < 576; c += 64) _mm_prefetch((const char *)pf + c, _MM_HINT_T0); \
            const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 64);           \
            const __m512i w2 = _mm512_loadu_si512(w + 128), w3 = _mm512_loadu_si512(w + 192);    \
            const __m512i w4 = _mm512_loadu_si512(w + 256), w5 = _mm512_loadu_si512(w + 320);    \
            const __m512i w6 = _mm512_loadu_si512(w + 384), w7 = _mm512_loadu_si512(w + 448);    \
            const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(dp + b * 16))); \
            _Pragma("clang loop unroll(full)")                                                    \
            for (int i = 0; i < NR; i++) {                                                        \
                const int8_t *x = aq[i] + b * 32;                                                 \
                __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w0, BCAST(x));          \
                __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w4, BCAST(x + 16));     \
                s0 = _mm512_dpbusd_epi32(s0, w1, BCAST(x + 4));                                   \
                s1 = _mm512_dpbusd_epi32(s1, w5, BCAST(x + 20));                                  \
                s0 = _mm512_dpbusd_epi32(s0, w2, BCAST(x + 8));                                   \
                s1 = _mm512_dpbusd_epi32(s1, w6, BCAST(x + 24));                                  \
                s0 = _mm512_dpbusd_epi32(s0, w3, BCAST(x + 12));                                  \
                s1 = _mm512_dpbusd_epi32(s1, w7, BCAST(x + 28));                                  \
                const __m512i si = _mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_set1_epi32(ac[i][b])); \
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(si), _mm512_mul_ps(dw, _mm512_set1_ps(ad[i][b])), acc[i]); \
            }                                                                                     \
        }                                                                                         \
        for (int i = 0; i < NR; i++) _mm512_mask_storeu_ps(y + (r0 + i) * ldy, mask, acc[i]);     \
    }

Q4_GROUP_BODY(1) Q4_GROUP_BODY(2) Q4_GROUP_BODY(3) Q4_GROUP_BODY(4)
Q4_GROUP_BODY(5) Q4_GROUP_BODY(6) Q4_GROUP_BODY(7) Q4_GROUP_BODY(8)
Q8_GROUP_BODY(1) Q8_GROUP_BODY(2) Q8_GROUP_BODY(3) Q8_GROUP_BODY(4)
Q8_GROUP_BODY(5) Q8_GROUP_BODY(6) Q8_GROUP_BODY(7) Q8_GROUP_BODY(8)

#ifndef CK_NR
#define CK_NR 4
#endif

CK_AVX512 static void matmul_avx(int fmt, const void *packed, int64_t out, int64_t in, const ck_acts *a,
                                 int64_t out_lo, int64_t out_hi, float *y, int64_t ldy) {
    if (fmt == CK_F32 || fmt == CK_F16) {
        for (int64_t o = out_lo; o < out_hi; o++)
            for (int64_t r = 0; r < a->rows; r++) {
                const float *x = a->x + r * a->ldx;
                y[r * ldy + (o - out_lo)] = fmt == CK_F32 ? ck_dot_avx(x, (const float *)packed + o * in, in)
                                                          : dot_f16_avx(x, (const uint16_t *)packed + o * in, in);
            }
        return;
    }
    const int64_t nb = in / CK_QK, gs = ck_group_stride(fmt, in);
    const int is_q41 = fmt == CK_Q4_1;
    const uint8_t *end = (const uint8_t *)packed + ck_ngroups(out) * gs;
    for (int64_t g = out_lo / CK_GROUP; g * CK_GROUP < out_hi; g++) {
        const int64_t first = g * CK_GROUP;
        uint32_t bits = 0xFFFFu;
        if (first < out_lo) bits &= 0xFFFFu << (out_lo - first);
        if (first + CK_GROUP > out_hi) bits &= 0xFFFFu >> (first + CK_GROUP - out_hi);
        const __mmask16 mask = (__mmask16)bits;
        const uint8_t *base = (const uint8_t *)packed + g * gs;
        float *yg = y + (first - out_lo);
        int64_t r0 = 0;
        while (r0 < a->rows) {
            int64_t nr = a->rows - r0;
            if (nr > CK_NR) nr = CK_NR;
            if (fmt == CK_Q8_0) {
                switch (nr) {
                case 1: q8_group_1(base, nb, a, r0, yg, ldy, mask, end); break;
                case 2: q8_group_2(base, nb, a, r0, yg, ldy, mask, end); break;
                case 3: q8_group_3(base, nb, a, r0, yg, ldy, mask, end); break;
                case 4: q8_group_4(base, nb, a, r0, yg, ldy, mask, end); break;
                case 5: q8_group_5(base, nb, a, r0, yg, ldy, mask, end); break;
                case 6: q8_group_6(base, nb, a, r0, yg, ldy, mask, end); break;
                case 7: q8_group_7(base, nb, a, r0, yg, ldy, mask, end); break;
                default: q8_group_8(base, nb, a, r0, yg, ldy, mask, end); break;
                }
            } else {
                switch (nr) {
                case 1: q4_group_1(base, nb, is_q41, a, r0, yg, ldy, mask, end); break;
                case 2: q4_group_2(base, nb, is_q41, a, r0, yg, ldy, mask, end); break;
                case 3: q4_group_3(base, nb, is_q41, a, r0, yg, ldy, mask, end); break;
                case 4: q4_group_4(base, nb, is_q41, a, r0, yg, ldy, mask, end); break;
                case 5: q4_group_5(base, nb, is_q41, a, r0, yg, ldy, mask, end); break;
                case 6: q4_group_6(base, nb, is_q41, a, r0, yg, ldy, mask, end); break;
                case 7: q4_group_7(base, nb, is_q41, a, r0, yg, ldy, mask, end); break;
                default: q4_group_8(base, nb, is_q41, a, r0, yg, ldy, mask, end); break;
                }
            }
            r0 += nr;
        }
    }
}
#endif

void ck_matmul(int fmt, const void *packed, int64_t out, int64_t in, const ck_acts *a,
               int64_t out_lo, int64_t out_hi, float *y, int64_t ldy) {
#if defined(__x86_64__)
    if (ck_simd_active()) {
        matmul_avx(fmt, packed, out, in, a, out_lo, out_hi, y, ldy);
        return;
    }
#endif
    matmul_scalar(fmt, packed, out, in, a, out_lo, out_hi, y, ldy);
}

// ------------------------------------------------------------------ pool-parallel entry points

typedef struct {
    int fmt;
    const void *packed;
    int64_t out, in, lo, hi, first_group, groups;
    const ck_acts *a;
    float *y;
    int64_t ldy;
} matmul_job;

static void matmul_item(void *ctx, int64_t item, int64_t items) {
    const matmul_job *j = (const matmul_job *)ctx;
    const int64_t g0 = j->first_group + item * j->groups / items, g1 = j->first_group + (item + 1) * j->groups / items;
    const int64_t a = g0 * CK_GROUP > j->lo ? g0 * CK_GROUP : j->lo;
    const int64_t b = g1 * CK_GROUP < j->hi ? g1 * CK_GROUP : j->hi;
    if (a < b) ck_matmul(j->fmt, j->packed, j->out, j->in, j->a, a, b, j->y + (a - j->lo), j->ldy);
}

void ck_matmul_parallel(ck_pool *pool, int64_t chunks, int fmt, const void *packed, int64_t out, int64_t in,
                        const ck_acts *a, int64_t out_lo, int64_t out_hi, float *y, int64_t ldy) {
    if (out_lo >= out_hi || a->rows == 0) return;
    matmul_job j = {fmt, packed, out, in, out_lo, out_hi, out_lo / CK_GROUP, 0, a, y, ldy};
    j.groups = (out_hi + CK_GROUP - 1) / CK_GROUP - j.first_group;
    if (chunks > j.groups) chunks = j.groups;
    if (chunks <= 1 || !pool || ck_pool_threads(pool) == 1) {
        ck_matmul(fmt, packed, out, in, a, out_lo, out_hi, y, ldy);
        return;
    }
    ck_pool_run(pool, matmul_item, &j, chunks);
}
