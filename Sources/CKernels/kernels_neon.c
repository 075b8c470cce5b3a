// The neon kernel set: ARMv8.2-A with the dot-product extension (AWS Graviton 2 and later, Ampere
// Altra, Apple M1 and later), 128-bit registers, 32 of them.
//
// Quantized matmul: a 16-row group of the shared packed layout (kernels_scalar.c) is read as four
// quarters of 4 rows, one 128-bit register per 4-value chunk (16 bytes: 4 rows x 4 values), and
// vdotq_laneq_s32 multiplies it with lane j of the block's activations (values 4j..4j+3): signed
// x signed int8 straight into int32, so Q8_0 needs no offset correction and Q4's nibbles enter as
// small positive int8. Integer sums are exact and the float steps are the scalar reference's, in
// its order: every output is bit-identical to the scalar set.
//
// The matmul front-end and the attention dispatch are kernel_frontends.h's; this file holds the
// passes, the plan that picks them per format, and the rest of the set's bodies.
#include "ckernels.h"
#include "internal.h"
#include "kernel_frontends.h"
#include <math.h>
#include <string.h>
#if defined(__aarch64__)
#include <arm_neon.h>

// ------------------------------------------------------------------ reductions

/// Four f32 values of b (f32 or f16) at i, lanes >= n - i zero.
CK_NEON static inline float32x4_t load4(const void *b, int is_f16, int64_t i, int64_t n) {
    if (i + 4 <= n)
        return is_f16 ? vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)b + i))) : vld1q_f32((const float *)b + i);
    float tmp[4] = {0, 0, 0, 0};
    for (int64_t t = i; t < n; t++)
        tmp[t - i] = is_f16 ? ck_f16_to_f32(((const uint16_t *)b)[t]) : ((const float *)b)[t];
    return vld1q_f32(tmp);
}

/// The 16-lane order of ck_dot16_scalar: acc[c] holds lanes 4c..4c+3; then the same tree.
CK_NEON static float dot16_neon(const float *a, const void *b, int is_f16, int64_t n) {
    float32x4_t acc[4] = {vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)};
    for (int64_t i = 0; i < n; i += 16)
        for (int c = 0; c < 4; c++) {
            const int64_t at = i + 4 * c;  // past n: zeros, as the reference's fma(0, 0, acc)
            acc[c] = vfmaq_f32(acc[c], load4(a, 0, at, n), load4(b, is_f16, at, n));
        }
    const float32x4_t s4 = vaddq_f32(vaddq_f32(acc[0], acc[2]), vaddq_f32(acc[1], acc[3]));
    const float32x2_t s2 = vadd_f32(vget_low_f32(s4), vget_high_f32(s4));
    return vget_lane_f32(s2, 0) + vget_lane_f32(s2, 1);
}

CK_NEON static float dot_neon(const float *a, const float *b, int64_t n) { return dot16_neon(a, b, 0, n); }
CK_NEON static float dot_f16_neon(const float *a, const uint16_t *b, int64_t n) { return dot16_neon(a, b, 1, n); }

// ------------------------------------------------------------------ quantized matmul

CK_NEON static inline float32x4_t half4(const uint16_t *p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

CK_NEON static inline void store_lanes4(float *y, float32x4_t v, uint32_t lanes) {
    if (lanes == 0xF) {
        vst1q_f32(y, v);
        return;
    }
    float t[4];
    vst1q_f32(t, v);
    for (int l = 0; l < 4; l++)
        if (lanes & (1u << l)) y[l] = t[l];
}

// Block b's activations of rows r0 .. r0 + N - 1 (N <= 4): x0[i] values 0-15, x1[i] values 16-31, whose
// 4-value groups vdotq_laneq_s32 takes by lane.
#define BLOCK_ACTS(N)                                                                               \
    int8x16_t x0[4], x1[4];                                                                         \
    for (int i = 0; i < (N); i++) {                                                                 \
        const int8_t *x = a->q + (r0 + i) * a->ldq + b * 32;                                        \
        x0[i] = vld1q_s8(x);                                                                        \
        x1[i] = vld1q_s8(x + 16);                                                                   \
    }

// Four output rows (quarter `part` of a group) against NR activation rows from r0.
#define Q4_QUARTER_BODY(NR)                                                                         \
    CK_NEON static void q4_quarter_##NR(CK_PASS_PARAMS) {                                           \
        const int is_q41 = fmt == CK_Q4_1, quarter = part;                                          \
        const uint8x16_t low = vdupq_n_u8(0x0F);                                                   \
        const uint16_t *dp = (const uint16_t *)(base + nb * 256) + quarter * 4;                     \
        const uint16_t *mp = dp + nb * 16;                                                          \
        float32x4_t acc[NR];                                                                        \
        for (int i = 0; i < NR; i++) acc[i] = vdupq_n_f32(0);                                       \
        for (int64_t b = 0; b < nb; b++) {                                                          \
            const uint8_t *w = base + b * 256 + quarter * 16;                                       \
            BLOCK_ACTS(NR)                                                                          \
            int32x4_t s[NR];                                                                        \
            for (int i = 0; i < NR; i++) s[i] = vdupq_n_s32(0);                                     \
            Q4_CHUNK(NR, 0) Q4_CHUNK(NR, 1) Q4_CHUNK(NR, 2) Q4_CHUNK(NR, 3)                         \
            const float32x4_t dw = half4(dp + b * 16);                                              \
            const float32x4_t mw = is_q41 ? half4(mp + b * 16) : vmulq_n_f32(dw, -8.0f);            \
            for (int i = 0; i < NR; i++) {                                                          \
                const float da = a->d[(r0 + i) * a->ldb + b], sa = a->s[(r0 + i) * a->ldb + b];     \
                acc[i] = vfmaq_f32(acc[i], vcvtq_f32_s32(s[i]), vmulq_n_f32(dw, da));               \
                acc[i] = vfmaq_f32(acc[i], mw, vdupq_n_f32(sa));                                    \
            }                                                                                       \
        }                                                                                           \
        for (int i = 0; i < NR; i++) store_lanes4(y + (r0 + i) * ldy, acc[i], lanes);              \
    }

#define Q4_CHUNK(NR, J)                                                                             \
    {                                                                                               \
        const uint8x16_t raw = vld1q_u8(w + (J) * 64);                                              \
        const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(raw, low));                               \
        const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(raw, 4));                               \
        for (int i = 0; i < NR; i++) {                                                              \
            s[i] = vdotq_laneq_s32(s[i], lo, x0[i], J);                                             \
            s[i] = vdotq_laneq_s32(s[i], hi, x1[i], J);                                             \
        }                                                                                           \
    }

#define Q8_QUARTER_BODY(NR)                                                                         \
    CK_NEON static void q8_quarter_##NR(CK_PASS_PARAMS) {                                           \
        const int quarter = part;                                                                   \
        const uint8x16_t flip = vdupq_n_u8(0x80);                                                  \
        const uint16_t *dp = (const uint16_t *)(base + nb * 512) + quarter * 4;                     \
        float32x4_t acc[NR];                                                                        \
        for (int i = 0; i < NR; i++) acc[i] = vdupq_n_f32(0);                                       \
        for (int64_t b = 0; b < nb; b++) {                                                          \
            const uint8_t *w = base + b * 512 + quarter * 16;                                       \
            BLOCK_ACTS(NR)                                                                          \
            int32x4_t s[NR];                                                                        \
            for (int i = 0; i < NR; i++) s[i] = vdupq_n_s32(0);                                     \
            Q8_CHUNK(NR, 0, x0, 0) Q8_CHUNK(NR, 1, x0, 1) Q8_CHUNK(NR, 2, x0, 2) Q8_CHUNK(NR, 3, x0, 3) \
            Q8_CHUNK(NR, 4, x1, 0) Q8_CHUNK(NR, 5, x1, 1) Q8_CHUNK(NR, 6, x1, 2) Q8_CHUNK(NR, 7, x1, 3) \
            const float32x4_t dw = half4(dp + b * 16);                                              \
            for (int i = 0; i < NR; i++)                                                            \
                acc[i] = vfmaq_f32(acc[i], vcvtq_f32_s32(s[i]), vmulq_n_f32(dw, a->d[(r0 + i) * a->ldb + b])); \
        }                                                                                           \
        for (int i = 0; i < NR; i++) store_lanes4(y + (r0 + i) * ldy, acc[i], lanes);              \
    }

#define Q8_CHUNK(NR, J, X, LANE)                                                                    \
    {                                                                                               \
        const int8x16_t ws = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(w + (J) * 64), flip));           \
        for (int i = 0; i < NR; i++) s[i] = vdotq_laneq_s32(s[i], ws, X[i], LANE);                 \
    }

Q4_QUARTER_BODY(1) Q4_QUARTER_BODY(2) Q4_QUARTER_BODY(3) Q4_QUARTER_BODY(4)
Q8_QUARTER_BODY(1) Q8_QUARTER_BODY(2) Q8_QUARTER_BODY(3) Q8_QUARTER_BODY(4)


// The kq formats (Q5_0, Q5_1, K-quants; layout in internal.h, arithmetic in kernels_scalar.c): a
// quarter (4 rows) per pass; a block's values are rebuilt from nibbles and bit planes (one shift
// and mask per plane and chunk) and enter vdotq_laneq_s32 as small positive int8 (0..63); the
// block's halves are summed apart (per-16 scales of Q2_K, Q3_K, Q6_K). Specialised per (bits,
// halves, rows) by inlining.
#define KQ_DOT(J)                                                                                   \
    for (int i = 0; i < nr; i++) {                                                                  \
        s0[i] = vdotq_laneq_s32(s0[i], L[J], x0[i], J);                                             \
        s1[i] = vdotq_laneq_s32(s1[i], H[J], x1[i], J);                                             \
    }
CK_NEON static inline __attribute__((always_inline)) void kq_quarter(const int bits, const int halves, const int nr,
                                                                      CK_PASS_PARAMS) {
    const int off = ck_kq_offset(fmt), quarter = part;
    const uint8x16_t low = vdupq_n_u8(0x0F), b4 = vdupq_n_u8(0x10);
    // Q3_K and Q6_K (halves with an offset) keep int8 scales and f16 d per 256 values (internal.h).
    const int compact = halves && off;
    const int64_t wb = ck_kq_wbytes_of(bits), bb = ck_kq_block_bytes_of(bits, halves, off);
    const uint16_t *dd = (const uint16_t *)(base + nb * bb) + 4 * quarter;
    float32x4_t acc[4];
    for (int i = 0; i < nr; i++) acc[i] = vdupq_n_f32(0);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *w = base + b * bb;
        int8x16_t L[4], H[4];
        const uint32x4_t p4 = bits >= 5 ? vld1q_u32((const uint32_t *)(w + 256 + 16 * quarter)) : vdupq_n_u32(0);
        const uint32x4_t p5 = bits >= 6 ? vld1q_u32((const uint32_t *)(w + 320 + 16 * quarter)) : vdupq_n_u32(0);
        for (int j = 0; j < 4; j++) {
            const uint8x16_t raw = vld1q_u8(w + 64 * j + 16 * quarter);
            uint8x16_t l = vandq_u8(raw, low), h = vshrq_n_u8(raw, 4);
            const int32x4_t up = vdupq_n_s32(4 - j), down = vdupq_n_s32(-j);
            if (bits >= 5) {
                l = vorrq_u8(l, vandq_u8(vreinterpretq_u8_u32(vshlq_u32(p4, up)), b4));
                h = vorrq_u8(h, vandq_u8(vreinterpretq_u8_u32(vshlq_u32(p4, down)), b4));
            }
            if (bits >= 6) {
                l = vorrq_u8(l, vshlq_n_u8(vandq_u8(vreinterpretq_u8_u32(vshlq_u32(p5, up)), b4), 1));
                h = vorrq_u8(h, vshlq_n_u8(vandq_u8(vreinterpretq_u8_u32(vshlq_u32(p5, down)), b4), 1));
            }
            L[j] = vreinterpretq_s8_u8(l);
            H[j] = vreinterpretq_s8_u8(h);
        }
        BLOCK_ACTS(nr)
        int32x4_t s0[4], s1[4];
        for (int i = 0; i < nr; i++) s0[i] = s1[i] = vdupq_n_s32(0);
        KQ_DOT(0) KQ_DOT(1) KQ_DOT(2) KQ_DOT(3)
        const float *sp = (const float *)(w + wb) + 4 * quarter;
        float32x4_t sc0, sc1;
        if (compact) {  // d * sc: exact, the f32 the other formats store
            const float32x4_t d = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(dd + (b / 8) * 16)));
            const int8_t *s8 = (const int8_t *)(w + wb) + 4 * quarter;
            const int8x8_t v0 = vreinterpret_s8_u32(vld1_dup_u32((const uint32_t *)s8));
            const int8x8_t v1 = vreinterpret_s8_u32(vld1_dup_u32((const uint32_t *)(s8 + 16)));
            sc0 = vmulq_f32(d, vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(v0)))));
            sc1 = vmulq_f32(d, vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(v1)))));
        } else {
            sc0 = vld1q_f32(sp);
            sc1 = halves ? vld1q_f32(sp + 16) : sc0;
        }
        // Minimums: stored, or -K * scale (exact) for the formats with an offset K.
        const float32x4_t mn0 = off ? vmulq_n_f32(sc0, (float)-off) : vld1q_f32(sp + (halves ? 32 : 16));
        const float32x4_t mn1 = !halves ? mn0 : off ? vmulq_n_f32(sc1, (float)-off) : vld1q_f32(sp + 48);
        for (int i = 0; i < nr; i++) {
            const float da = a->d[(r0 + i) * a->ldb + b];
            if (halves) {
                const float *hs = a->h + (r0 + i) * 2 * a->ldb + 2 * b;
                acc[i] = vfmaq_f32(acc[i], vcvtq_f32_s32(s0[i]), vmulq_n_f32(sc0, da));
                acc[i] = vfmaq_f32(acc[i], vcvtq_f32_s32(s1[i]), vmulq_n_f32(sc1, da));
                acc[i] = vfmaq_f32(acc[i], mn0, vdupq_n_f32(hs[0]));
                acc[i] = vfmaq_f32(acc[i], mn1, vdupq_n_f32(hs[1]));
            } else {
                acc[i] = vfmaq_f32(acc[i], vcvtq_f32_s32(vaddq_s32(s0[i], s1[i])), vmulq_n_f32(sc0, da));
                acc[i] = vfmaq_f32(acc[i], mn0, vdupq_n_f32(a->s[(r0 + i) * a->ldb + b]));
            }
        }
    }
    for (int i = 0; i < nr; i++) store_lanes4(y + (r0 + i) * ldy, acc[i], lanes);
}

CK_DEFINE_KQ_PASSES(CK_NEON, kq_quarter, 4)

/// How a group runs: a quarter (4 rows, one register) per pass, up to 4 activation rows, in every
/// format.
CK_NEON static ck_plan plan_neon(int fmt, const ck_acts *a) {
    static const ck_pass_fn q4[] = {q4_quarter_1, q4_quarter_2, q4_quarter_3, q4_quarter_4},
                            q8[] = {q8_quarter_1, q8_quarter_2, q8_quarter_3, q8_quarter_4};
    return (ck_plan){4, 4, ck_is_kq(fmt) ? kq_passes[ck_kq_kind(fmt)] : fmt == CK_Q8_0 ? q8 : q4};
}

CK_NEON static void matmul_neon(int fmt, const void *packed, int64_t out, int64_t in, const ck_acts *a,
                                int64_t out_lo, int64_t out_hi, float *y, int64_t ldy) {
    ck_matmul_frontend(fmt, packed, out, in, a, out_lo, out_hi, y, ldy, dot_neon, dot_f16_neon, plan_neon);
}

// ------------------------------------------------------------------ activation quantization

CK_NEON static void quantize_row_neon(const float *x, int64_t n, int8_t *q, float *d, float *s, int32_t *c) {
    for (int64_t b = 0; b < n / CK_QK; b++) {
        const float *xb = x + b * CK_QK;
        float32x4_t v[8];
        float32x4_t m = vdupq_n_f32(0);
        for (int i = 0; i < 8; i++) {
            v[i] = vld1q_f32(xb + 4 * i);
            m = vmaxq_f32(m, vabsq_f32(v[i]));
        }
        const float amax = vmaxvq_f32(m);
        float id;
        const float db = ck_block_scale(amax, &id);
        int32x4_t sum = vdupq_n_s32(0);
        int16x8_t h[4];
        for (int i = 0; i < 4; i++) {
            const int32x4_t a0 = vcvtnq_s32_f32(vmulq_n_f32(v[2 * i], id));
            const int32x4_t a1 = vcvtnq_s32_f32(vmulq_n_f32(v[2 * i + 1], id));
            sum = vaddq_s32(sum, vaddq_s32(a0, a1));
            h[i] = vcombine_s16(vqmovn_s32(a0), vqmovn_s32(a1));
        }
        vst1q_s8(q + b * CK_QK, vcombine_s8(vqmovn_s16(h[0]), vqmovn_s16(h[1])));
        vst1q_s8(q + b * CK_QK + 16, vcombine_s8(vqmovn_s16(h[2]), vqmovn_s16(h[3])));
        const int32_t total = vaddvq_s32(sum);
        ck_block_sums(b, db, total, d, s, c);
    }
}

// ------------------------------------------------------------------ elementwise

CK_NEON static void axpy_neon(float alpha, const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), alpha));
    for (; i < n; i++) y[i] = fmaf(alpha, x[i], y[i]);
}

CK_NEON static void scale_mul_neon(const float *x, const float *w, float scale, int64_t n, float *y) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vmulq_f32(vmulq_n_f32(vld1q_f32(x + i), scale), vld1q_f32(w + i)));
    for (; i < n; i++) {
        const float t = x[i] * scale;
        y[i] = t * w[i];
    }
}

/// exp(x) for 4 lanes (the Cephes expf polynomial, as the avx2 set), 0 below -87.3.
CK_NEON static inline float32x4_t exp4(float32x4_t x0) {
    const float32x4_t x = vmaxq_f32(vminq_f32(x0, vdupq_n_f32(88.0f)), vdupq_n_f32(-87.3f));
    const float32x4_t n = vrndnq_f32(vmulq_n_f32(x, CK_EXP_LOG2E));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(CK_EXP_LN2_HI));
    r = vfmsq_f32(r, n, vdupq_n_f32(CK_EXP_LN2_LO));
    float32x4_t p = vdupq_n_f32(CK_EXP_P0);
    p = vfmaq_f32(vdupq_n_f32(CK_EXP_P1), p, r);
    p = vfmaq_f32(vdupq_n_f32(CK_EXP_P2), p, r);
    p = vfmaq_f32(vdupq_n_f32(CK_EXP_P3), p, r);
    p = vfmaq_f32(vdupq_n_f32(CK_EXP_P4), p, r);
    p = vfmaq_f32(vdupq_n_f32(CK_EXP_P5), p, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), vmulq_f32(p, r), r);
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    const float32x4_t y = vmulq_f32(p, vreinterpretq_f32_s32(e));
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(y), vcgeq_f32(x0, vdupq_n_f32(-87.3f))));
}

CK_NEON static float max_neon(const float *x, int64_t n) {
    float32x4_t m = vdupq_n_f32(-INFINITY);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) m = vmaxq_f32(m, vld1q_f32(x + i));
    float mx = vmaxvq_f32(m);
    for (; i < n; i++) mx = fmaxf(mx, x[i]);
    return mx;
}

/// x[i] = exp(x[i] - mx); returns their sum (4 lanes in index order, then the pairwise lane sum).
CK_NEON static float exp_shift_sum(float *x, int64_t n, float mx) {
    float32x4_t acc = vdupq_n_f32(0);
    for (int64_t i = 0; i < n; i += 4) {
        float t[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
        const int64_t m = n - i < 4 ? n - i : 4;
        memcpy(t, x + i, (size_t)m * 4);
        const float32x4_t e = exp4(vsubq_f32(vld1q_f32(t), vdupq_n_f32(mx)));
        acc = vaddq_f32(acc, e);
        vst1q_f32(t, e);
        memcpy(x + i, t, (size_t)m * 4);
    }
    return vaddvq_f32(acc);
}

CK_NEON static void softmax_neon(float *x, int64_t n) {
    const float inv = 1.0f / exp_shift_sum(x, n, max_neon(x, n));
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(x + i, vmulq_n_f32(vld1q_f32(x + i), inv));
    for (; i < n; i++) x[i] *= inv;
}

/// g = g / (1 + exp(-z)) * u, z = g (SiLU) or g (K0 + K1 g^2) (GELU-tanh; ck_gate_arg).
CK_NEON static inline __attribute__((always_inline)) void gated_mul_neon(const int gelu, float *g, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t vg = vld1q_f32(g + i);
        const float32x4_t z =
            gelu ? vmulq_f32(vg, vfmaq_f32(vdupq_n_f32(CK_GELU_K0), vdupq_n_f32(CK_GELU_K1), vmulq_f32(vg, vg))) : vg;
        const float32x4_t e = exp4(vnegq_f32(z));
        vst1q_f32(g + i, vmulq_f32(vdivq_f32(vg, vaddq_f32(vdupq_n_f32(1.0f), e)), vld1q_f32(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-ck_gate_arg(gelu, g[i]))) * u[i];
}
CK_NEON static void silu_mul_neon(float *g, const float *u, int64_t n) { gated_mul_neon(0, g, u, n); }
CK_NEON static void gelu_tanh_mul_neon(float *g, const float *u, int64_t n) { gated_mul_neon(1, g, u, n); }

CK_NEON static float logits_summary_neon(const float *x, int64_t n, int k, int32_t *ids, float *vals) {
    const float mx = max_neon(x, n);
    float32x4_t acc = vdupq_n_f32(0);
    int filled = 0;
    float kth = -INFINITY;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t v = vld1q_f32(x + i);
        acc = vaddq_f32(acc, exp4(vsubq_f32(v, vdupq_n_f32(mx))));
        // Offered lanes at or below the k-th value leave a full list as it is (ck_topk_insert).
        if (filled < k || vmaxvq_u32(vcgtq_f32(v, vdupq_n_f32(kth))) != 0) ck_topk_offer(x, i, 0xF, k, &filled, ids, vals, &kth);
    }
    float tail = 0;
    for (; i < n; i++) {
        tail += expf(x[i] - mx);
        ck_topk_offer(x, i, 1, k, &filled, ids, vals, &kth);
    }
    return mx + logf(vaddvq_f32(acc) + tail);
}

CK_NEON static void rope_neon(float *x, int64_t heads, int64_t head_dim, const float *cs, const float *sn, int neox) {
    const int64_t half = head_dim / 2;
    for (int64_t h = 0; h < heads; h++) {
        float *v = x + h * head_dim;
        int64_t i = 0;
        for (; i + 4 <= half; i += 4) {
            const float32x4_t c = vld1q_f32(cs + i), s = vld1q_f32(sn + i);
            float32x4x2_t p;
            if (neox) {
                p.val[0] = vld1q_f32(v + i);
                p.val[1] = vld1q_f32(v + i + half);
            } else {
                p = vld2q_f32(v + 2 * i);
            }
            const float32x4_t x0 = p.val[0], x1 = p.val[1];
            p.val[0] = vsubq_f32(vmulq_f32(x0, c), vmulq_f32(x1, s));
            p.val[1] = vaddq_f32(vmulq_f32(x0, s), vmulq_f32(x1, c));
            if (neox) {
                vst1q_f32(v + i, p.val[0]);
                vst1q_f32(v + i + half, p.val[1]);
            } else {
                vst2q_f32(v + 2 * i, p);
            }
        }
        for (; i < half; i++) ck_rope_pair(v, i, half, neox, cs, sn);
    }
}

CK_NEON static void f16_to_f32_neon(const uint16_t *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, half4(x + i));
    for (; i < n; i++) y[i] = ck_f16_to_f32(x[i]);
}

CK_NEON static void f32_to_f16_neon(const float *x, uint16_t *y, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1_u16(y + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
    for (; i < n; i++) y[i] = ck_f32_to_f16(x[i]);
}

// ------------------------------------------------------------------ attention

/// Eight values [v, v + 8) of a head row as f32, in two halves (`type` is a constant after
/// inlining; `d` is the row's Q8_0 scale of the 32-block holding v).
CK_NEON static inline __attribute__((always_inline)) float32x4x2_t kv_load8(int type, const uint8_t *row, int64_t v, float d) {
    float32x4x2_t r;
    if (type == CK_KV_F16) {
        const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16((const uint16_t *)row + v));
        r.val[0] = vcvt_f32_f16(vget_low_f16(h));
        r.val[1] = vcvt_high_f32_f16(h);
    } else if (type == CK_KV_Q8_0) {
        const int16x8_t w = vmovl_s8(vld1_s8((const int8_t *)row + v));
        r.val[0] = vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(w))), d);
        r.val[1] = vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(w)), d);
    } else {
        r.val[0] = vld1q_f32((const float *)row + v);
        r.val[1] = vld1q_f32((const float *)row + v + 4);
    }
    return r;
}

CK_NEON static inline __attribute__((always_inline)) float kv_scale(int type, const uint8_t *row, int64_t hd, int64_t v) {
    return type == CK_KV_Q8_0 ? ck_f16_to_f32(ck_kv_q8_scales(row, hd)[v / CK_QK]) : 0.0f;
}

/// As the avx2 body with 4-lane registers: per position and query head, two accumulators (lanes
/// 0-3 and 4-7 of each 8 values) added, then the pairwise lane sum; values in 16-value tiles.
CK_NEON static inline __attribute__((always_inline)) void attend_body(const float *q, int64_t group, int64_t hd,
                                                                       float scale, const ck_kv_view *kv, int64_t begin,
                                                                       int64_t end, float *scores, float *out, float *max_sum,
                                                                       const int type) {
    const int64_t n = end - begin;
    for (int64_t j = 0; j < n; j++) {
        const uint8_t *row = ck_kv_row(kv, begin + j, 0);
        for (int64_t g = 0; g < group; g++) {
            float32x4_t lo = vdupq_n_f32(0), hi = vdupq_n_f32(0);
            for (int64_t v = 0; v < hd; v += 8) {
                const float32x4x2_t k8 = kv_load8(type, row, v, kv_scale(type, row, hd, v));
                lo = vfmaq_f32(lo, vld1q_f32(q + g * hd + v), k8.val[0]);
                hi = vfmaq_f32(hi, vld1q_f32(q + g * hd + v + 4), k8.val[1]);
            }
            scores[g * n + j] = vaddvq_f32(vaddq_f32(lo, hi)) * scale;
        }
    }
    for (int64_t g = 0; g < group; g++) {
        float *s = scores + g * n;
        const float m = max_neon(s, n);
        max_sum[2 * g] = m;
        max_sum[2 * g + 1] = exp_shift_sum(s, n, m);
    }
    for (int64_t g0 = 0; g0 < group; g0 += 4) {
        const int64_t gn = group - g0 < 4 ? group - g0 : 4;
        for (int64_t t = 0; t < hd; t += 16) {
            float32x4_t acc[4][4];
            for (int g = 0; g < 4; g++)
                for (int c = 0; c < 4; c++) acc[g][c] = vdupq_n_f32(0);
            for (int64_t j = 0; j < n; j++) {
                const uint8_t *row = ck_kv_row(kv, begin + j, 1);
                const float d = kv_scale(type, row, hd, t);
                const float32x4x2_t v0 = kv_load8(type, row, t, d), v1 = kv_load8(type, row, t + 8, d);
                for (int64_t g = 0; g < gn; g++) {
                    const float p = scores[(g0 + g) * n + j];
                    acc[g][0] = vfmaq_n_f32(acc[g][0], v0.val[0], p);
                    acc[g][1] = vfmaq_n_f32(acc[g][1], v0.val[1], p);
                    acc[g][2] = vfmaq_n_f32(acc[g][2], v1.val[0], p);
                    acc[g][3] = vfmaq_n_f32(acc[g][3], v1.val[1], p);
                }
            }
            for (int64_t g = 0; g < gn; g++)
                for (int c = 0; c < 4; c++) vst1q_f32(out + (g0 + g) * hd + t + 4 * c, acc[g][c]);
        }
    }
}

CK_DEFINE_ATTEND(CK_NEON static void attend_neon, attend_body)

const ck_kernels ck_kernels_neon = {
    .id = CK_SET_NEON,
    .matmul = matmul_neon,
    .quantize_row = quantize_row_neon,
    .dot = dot_neon,
    .axpy = axpy_neon,
    .scale_mul = scale_mul_neon,
    .softmax = softmax_neon,
    .logits_summary = logits_summary_neon,
    .silu_mul = silu_mul_neon,
    .gelu_tanh_mul = gelu_tanh_mul_neon,
    .rope = rope_neon,
    .f16_to_f32 = f16_to_f32_neon,
    .f32_to_f16 = f32_to_f16_neon,
    .attend = attend_neon,
};
#endif
