// The avx512 kernel set: AVX-512 with VNNI (vpdpbusd over 16-row groups, 512-bit float ops).
// RoPE, the f16 conversions and attention use the avx2 bodies (every AVX-512 CPU runs them): their
// cost is in memory traffic and exp, where 512-bit registers gain little.
//
// The matmul front-end and the attention dispatch are kernel_frontends.h's; this file holds the
// passes, the plan that picks them per format, and the rest of the set's bodies.
#include "ckernels.h"
#include "internal.h"
#include "kernel_frontends.h"
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>

// ------------------------------------------------------------------ quantized matmul

CK_AVX512 static inline float hsum16(__m512 v) {
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    const __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    return _mm_cvtss_f32(s1);
}

CK_AVX512 static float dot_avx512(const float *a, const float *b, int64_t n) {
    __m512 acc = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc);
    }
    return hsum16(acc);
}

CK_AVX512 static float dot_f16_avx512(const float *a, const uint16_t *b, int64_t n) {
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

#define BCAST(p) _mm512_set1_epi32(ck_rd32(p))

/// A block's 4-bit values of 16 rows from its four 64-byte nibble chunks: chunk j's low nibbles
/// (values 4j..4j+3) into lo[j], its high nibbles (values 16+4j..) into hi[j].
CK_AVX512 static inline __attribute__((always_inline)) void nibbles(const uint8_t *w, __m512i lo[4], __m512i hi[4]) {
    const __m512i low = _mm512_set1_epi8(0x0F);
    _Pragma("clang loop unroll(full)")
    for (int j = 0; j < 4; j++) {
        const __m512i raw = _mm512_loadu_si512(w + 64 * j);
        lo[j] = _mm512_and_si512(raw, low);
        hi[j] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low);
    }
}

/// A block's exact int32 sums over 16 rows against the activations x: values 0-15 (4 per chunk,
/// lo[0..3]) into *s0 and values 16-31 (hi[0..3]) into *s1, each chunk with vpdpbusd (unsigned
/// weight bytes x signed activations) against its 4 activations broadcast.
CK_AVX512 static inline __attribute__((always_inline)) void dot_block(const __m512i lo[4], const __m512i hi[4],
                                                                       const int8_t *x, __m512i *s0, __m512i *s1) {
    __m512i l = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[0], BCAST(x));
    __m512i h = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi[0], BCAST(x + 16));
    _Pragma("clang loop unroll(full)")
    for (int j = 1; j < 4; j++) {
        l = _mm512_dpbusd_epi32(l, lo[j], BCAST(x + 4 * j));
        h = _mm512_dpbusd_epi32(h, hi[j], BCAST(x + 16 + 4 * j));
    }
    *s0 = l;
    *s1 = h;
}

// One 16-row group against NR activation rows starting at row r0; writes `lanes`.
#define Q4_GROUP_BODY(NR)                                                                          \
    CK_AVX512 static void q4_group_##NR(CK_PASS_PARAMS) {                                          \
        const int is_q41 = fmt == CK_Q4_1;                                                        \
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
            __m512i L[4], H[4];                                                                   \
            nibbles(w, L, H);                                                                     \
            const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(dp + b * 16))); \
            const __m512 mw = is_q41 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(mp + b * 16))) \
                                     : _mm512_mul_ps(dw, _mm512_set1_ps(-8.0f));                  \
            _Pragma("clang loop unroll(full)")                                                    \
            for (int i = 0; i < NR; i++) {                                                        \
                __m512i s0, s1;                                                                   \
                dot_block(L, H, aq[i] + b * 32, &s0, &s1);                                        \
                const __m512 fs = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));                   \
                acc[i] = _mm512_fmadd_ps(fs, _mm512_mul_ps(dw, _mm512_set1_ps(ad[i][b])), acc[i]); \
                acc[i] = _mm512_fmadd_ps(mw, _mm512_set1_ps(as[i][b]), acc[i]);                   \
            }                                                                                     \
        }                                                                                         \
        for (int i = 0; i < NR; i++) _mm512_mask_storeu_ps(y + (r0 + i) * ldy, (__mmask16)lanes, acc[i]); \
    }

#define Q8_GROUP_BODY(NR)                                                                          \
    CK_AVX512 static void q8_group_##NR(CK_PASS_PARAMS) {                                          \
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
            __m512i W[8];                                                                         \
            _Pragma("clang loop unroll(full)")                                                    \
            for (int j = 0; j < 8; j++) W[j] = _mm512_loadu_si512(w + 64 * j);                    \
            const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(dp + b * 16))); \
            _Pragma("clang loop unroll(full)")                                                    \
            for (int i = 0; i < NR; i++) {                                                        \
                __m512i s0, s1;                                                                   \
                dot_block(W, W + 4, aq[i] + b * 32, &s0, &s1);                                    \
                const __m512i si = _mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_set1_epi32(ac[i][b])); \
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(si), _mm512_mul_ps(dw, _mm512_set1_ps(ad[i][b])), acc[i]); \
            }                                                                                     \
        }                                                                                         \
        for (int i = 0; i < NR; i++) _mm512_mask_storeu_ps(y + (r0 + i) * ldy, (__mmask16)lanes, acc[i]); \
    }

Q4_GROUP_BODY(1) Q4_GROUP_BODY(2) Q4_GROUP_BODY(3) Q4_GROUP_BODY(4)
Q4_GROUP_BODY(5) Q4_GROUP_BODY(6) Q4_GROUP_BODY(7) Q4_GROUP_BODY(8)
Q8_GROUP_BODY(1) Q8_GROUP_BODY(2) Q8_GROUP_BODY(3) Q8_GROUP_BODY(4)
Q8_GROUP_BODY(5) Q8_GROUP_BODY(6) Q8_GROUP_BODY(7) Q8_GROUP_BODY(8)

/// Activation rows per Q4 or Q8_0 pass (1 to 8).
#ifndef CK_NR
#define CK_NR 4
#endif
_Static_assert(CK_NR >= 1 && CK_NR <= 8, "CK_NR: 1 to 8 rows (the q4_group and q8_group passes)");


// The kq formats (Q5_0, Q5_1, K-quants; layout in internal.h, arithmetic in kernels_scalar.c): a
// block's values are rebuilt in registers from the nibble chunks and bit planes (one shift and mask
// per plane and chunk: the planes are laid out so a chunk's bits of all 16 rows move together),
// then enter vpdpbusd as unsigned bytes (0..63) exactly as Q4_1's nibbles do; low and high halves
// of the block are summed apart, so per-16 scales (Q2_K, Q3_K, Q6_K) cost two more fmas, not a
// second pass. Specialised per (bits, halves, rows) by inlining.
CK_AVX512 static inline __attribute__((always_inline)) void kq_group(const int bits, const int halves, const int nr,
                                                                      CK_PASS_PARAMS) {
    const int off = ck_kq_offset(fmt);
    const __m512i b4 = _mm512_set1_epi8(0x10);
    // Q3_K and Q6_K (halves with an offset) keep int8 scales and f16 d per 256 values (internal.h).
    const int compact = halves && off;
    const int64_t wb = ck_kq_wbytes_of(bits), bb = ck_kq_block_bytes_of(bits, halves, off);
    const uint16_t *dd = (const uint16_t *)(base + nb * bb);
    __m512 acc[4];
    for (int i = 0; i < nr; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *w = base + b * bb;
        const uint8_t *pf = w + CK_PF;
        if (pf < end)
            for (int c = 0; c < bb; c += 64) _mm_prefetch((const char *)pf + c, _MM_HINT_T0);
        __m512i L[4], H[4];
        const __m512i p4 = bits >= 5 ? _mm512_loadu_si512(w + 256) : _mm512_setzero_si512();
        const __m512i p5 = bits >= 6 ? _mm512_loadu_si512(w + 320) : _mm512_setzero_si512();
        nibbles(w, L, H);
        _Pragma("clang loop unroll(full)")
        for (int j = 0; j < 4; j++) {
            if (bits >= 5) {
                L[j] = _mm512_or_si512(L[j], _mm512_and_si512(_mm512_slli_epi32(p4, 4 - j), b4));
                H[j] = _mm512_or_si512(H[j], _mm512_and_si512(_mm512_srli_epi32(p4, j), b4));
            }
            if (bits >= 6) {
                L[j] = _mm512_or_si512(L[j], _mm512_slli_epi32(_mm512_and_si512(_mm512_slli_epi32(p5, 4 - j), b4), 1));
                H[j] = _mm512_or_si512(H[j], _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(p5, j), b4), 1));
            }
        }
        const float *sp = (const float *)(w + wb);
        __m512 sc0, sc1;
        if (compact) {  // d * sc: exact, the f32 the other formats store
            const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(dd + (b / 8) * 16)));
            sc0 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w + wb)))));
            sc1 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w + wb + 16)))));
        } else {
            sc0 = _mm512_loadu_ps(sp);
            sc1 = halves ? _mm512_loadu_ps(sp + 16) : sc0;
        }
        // Minimums: stored, or -K * scale (exact) for the formats with an offset K.
        const __m512 mn0 = off ? _mm512_mul_ps(sc0, _mm512_set1_ps((float)-off)) : _mm512_loadu_ps(sp + (halves ? 32 : 16));
        const __m512 mn1 = !halves ? mn0 : off ? _mm512_mul_ps(sc1, _mm512_set1_ps((float)-off)) : _mm512_loadu_ps(sp + 48);
        _Pragma("clang loop unroll(full)")
        for (int i = 0; i < nr; i++) {
            __m512i s0, s1;
            dot_block(L, H, a->q + (r0 + i) * a->ldq + b * 32, &s0, &s1);
            const __m512 da = _mm512_set1_ps(a->d[(r0 + i) * a->ldb + b]);
            if (halves) {
                const float *h = a->h + (r0 + i) * 2 * a->ldb + 2 * b;
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s0), _mm512_mul_ps(sc0, da), acc[i]);
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s1), _mm512_mul_ps(sc1, da), acc[i]);
                acc[i] = _mm512_fmadd_ps(mn0, _mm512_set1_ps(h[0]), acc[i]);
                acc[i] = _mm512_fmadd_ps(mn1, _mm512_set1_ps(h[1]), acc[i]);
            } else {
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), _mm512_mul_ps(sc0, da), acc[i]);
                acc[i] = _mm512_fmadd_ps(mn0, _mm512_set1_ps(a->s[(r0 + i) * a->ldb + b]), acc[i]);
            }
        }
    }
    for (int i = 0; i < nr; i++) _mm512_mask_storeu_ps(y + (r0 + i) * ldy, (__mmask16)lanes, acc[i]);
}

CK_DEFINE_KQ_PASSES(CK_AVX512, kq_group, 4)

/// How a group runs: whole, by every format's passes; CK_NR rows a pass for Q4 and Q8_0, 4 for the
/// kq formats.
CK_AVX512 static ck_plan plan_avx512(int fmt, const ck_acts *a) {
    static const ck_pass_fn q4[] = {q4_group_1, q4_group_2, q4_group_3, q4_group_4,
                                    q4_group_5, q4_group_6, q4_group_7, q4_group_8},
                            q8[] = {q8_group_1, q8_group_2, q8_group_3, q8_group_4,
                                    q8_group_5, q8_group_6, q8_group_7, q8_group_8};
    if (ck_is_kq(fmt)) return (ck_plan){1, 4, kq_passes[ck_kq_kind(fmt)]};
    return (ck_plan){1, CK_NR, fmt == CK_Q8_0 ? q8 : q4};
}

CK_AVX512 static void matmul_avx512(int fmt, const void *packed, int64_t out, int64_t in, const ck_acts *a,
                                    int64_t out_lo, int64_t out_hi, float *y, int64_t ldy) {
    ck_matmul_frontend(fmt, packed, out, in, a, out_lo, out_hi, y, ldy, dot_avx512, dot_f16_avx512, plan_avx512);
}

// ------------------------------------------------------------------ activation quantization

CK_AVX512 static void quantize_row_avx512(const float *x, int64_t k, int8_t *q, float *d, float *s, int32_t *c) {
    const __m512 signless = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
    for (int64_t b = 0; b < k / CK_QK; b++) {
        const __m512 x0 = _mm512_loadu_ps(x + b * CK_QK), x1 = _mm512_loadu_ps(x + b * CK_QK + 16);
        const __m512 a = _mm512_max_ps(_mm512_and_ps(x0, signless), _mm512_and_ps(x1, signless));
        const float amax = _mm512_reduce_max_ps(a);
        float id;
        const float db = ck_block_scale(amax, &id);
        const __m512 vid = _mm512_set1_ps(id);
        const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, vid));
        const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, vid));
        _mm_storeu_si128((__m128i *)(q + b * CK_QK), _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(q + b * CK_QK + 16), _mm512_cvtepi32_epi8(q1));
        const int32_t sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        ck_block_sums(b, db, sum, d, s, c);
    }
}

// ------------------------------------------------------------------ elementwise

CK_AVX512 static void axpy_avx512(float alpha, const float *x, float *y, int64_t n) {
    const __m512 va = _mm512_set1_ps(alpha);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    for (; i < n; i++) y[i] = fmaf(alpha, x[i], y[i]);
}

// exp(x) for a vector: range reduction by ln2 and a degree-6 polynomial (Cephes expf), ~1 ulp;
// 0 below -87.3.
CK_AVX512 static inline __m512 exp_avx(__m512 x0) {
    const __m512 x = _mm512_max_ps(_mm512_min_ps(x0, _mm512_set1_ps(88.5f)), _mm512_set1_ps(-103.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(CK_EXP_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(CK_EXP_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(CK_EXP_LN2_LO), r);
    __m512 p = _mm512_set1_ps(CK_EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(CK_EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(CK_EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(CK_EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(CK_EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(CK_EXP_P5));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    // 0 below -87.3 (as the other sets) and for NaN: a banned logit (-infinity) gets probability 0.
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x0, _mm512_set1_ps(-87.3f), _CMP_GE_OQ), _mm512_scalef_ps(p, n));
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

CK_AVX512 static void softmax_avx512(float *x, int64_t n) {
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

/// g = g / (1 + exp(-z)) * u, z = g (SiLU) or g (K0 + K1 g^2) (GELU-tanh; ck_gate_arg).
CK_AVX512 static inline __attribute__((always_inline)) void gated_mul_avx512(const int gelu, float *g, const float *u, int64_t n) {
    const __m512 k0 = _mm512_set1_ps(CK_GELU_K0), k1 = _mm512_set1_ps(CK_GELU_K1);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 vg = _mm512_maskz_loadu_ps(m, g + i);
        const __m512 z = gelu ? _mm512_mul_ps(vg, _mm512_fmadd_ps(k1, _mm512_mul_ps(vg, vg), k0)) : vg;
        const __m512 e = exp_avx(_mm512_sub_ps(_mm512_setzero_ps(), z));
        const __m512 sg = _mm512_div_ps(vg, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(sg, _mm512_maskz_loadu_ps(m, u + i)));
    }
}
CK_AVX512 static void silu_mul_avx512(float *g, const float *u, int64_t n) { gated_mul_avx512(0, g, u, n); }
CK_AVX512 static void gelu_tanh_mul_avx512(float *g, const float *u, int64_t n) { gated_mul_avx512(1, g, u, n); }

CK_AVX512 static void scale_mul_avx512(const float *x, const float *w, float scale, int64_t n, float *y) {
    const __m512 vs = _mm512_set1_ps(scale);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs), _mm512_maskz_loadu_ps(m, w + i));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

CK_AVX512 static float logits_summary_avx512(const float *x, int64_t n, int k, int32_t *ids, float *vals) {
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
        ck_topk_offer(x, i, hot, k, &filled, ids, vals, &kth);
    }
    return mx + logf(_mm512_reduce_add_ps(acc));
}

const ck_kernels ck_kernels_avx512 = {
    .id = CK_SET_AVX512,
    .matmul = matmul_avx512,
    .quantize_row = quantize_row_avx512,
    .dot = dot_avx512,
    .axpy = axpy_avx512,
    .scale_mul = scale_mul_avx512,
    .softmax = softmax_avx512,
    .logits_summary = logits_summary_avx512,
    .silu_mul = silu_mul_avx512,
    .gelu_tanh_mul = gelu_tanh_mul_avx512,
    .rope = ck_rope_avx2,
    .f16_to_f32 = ck_f16_to_f32_avx2,
    .f32_to_f16 = ck_f32_to_f16_avx2,
    .attend = ck_attend_avx2,
};
#endif
