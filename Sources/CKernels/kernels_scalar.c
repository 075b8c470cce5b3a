// The scalar kernel set: plain C, the reference every SIMD set is tested against. It serves only
// when a test or a user forces it (--kernels scalar); it never serves when a SIMD set can run.
//
// Packed layout of a quantized matrix (ck_pack, the same for every set): output rows are taken 16
// at a time (a "group", zero-padded at the end). A group holds, for its nb = in/32 blocks in order:
//   nb x wbytes  quant values; block b, chunk j (64 bytes): lane l (row 16g+l) holds 4 bytes
//                Q4_0/Q4_1: raw qs[4j..4j+3] (low nibbles = elements 4j.., high = 16+4j..), j < 4
//                Q8_0:      raw qs[4j..4j+3] XOR 0x80 (the value + 128 as unsigned), j < 8
//   nb x 16      f16 d, lane order
//   nb x 16      f16 m (Q4_1 only)
// so one 4-byte group of activations, broadcast, meets 4 consecutive values of 16 rows: one
// 512-bit vpdpbusd (avx512), two 256-bit halves of 8 rows (avx2), four 128-bit quarters of 4 rows
// (neon, vdotq_laneq_s32), and a block needs no horizontal reduction.
//
// Arithmetic, identical in every set, for activation row r and output o:
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

// ------------------------------------------------------------------ quantized matmul

/// The kq formats (formats.c, internal.h): per block, with I0 and I1 the exact int32 sums of
/// u * aq over the block's two 16-value halves and da the activation scale:
///   one (scale, min) per block:  acc = fma((float)(I0 + I1), scale * da, acc); acc = fma(min, s[b], acc)
///   one per half (Q2_K/Q3_K/Q6_K): acc = fma((float)I0, scale0 * da, acc); acc = fma((float)I1, scale1 * da, acc);
///                                  acc = fma(min0, h[2b], acc); acc = fma(min1, h[2b + 1], acc)
static float kq_ref1(int fmt, const void *packed, int64_t in, const ck_acts *a, int64_t row, int64_t o) {
    const int64_t nb = in / CK_QK, bb = ck_kq_block_bytes(fmt);
    const int bits = ck_kq_bits(fmt), halves = ck_kq_halves(fmt), off = ck_kq_offset(fmt);
    const int l = (int)(o % CK_GROUP);
    const uint8_t *base = (const uint8_t *)packed + (o / CK_GROUP) * ck_group_stride(fmt, in);
    const int8_t *aq = a->q + row * a->ldq;
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *w = base + b * bb;
        // The scales (stored, or d * sc for the compact formats: the same f32) and the minimums
        // (stored, or -K * scale, exact, for the formats with an offset K).
        float sc[32], mn[32];
        for (int h = 0; h < (halves ? 2 : 1); h++) {
            sc[16 * h + l] = ck_kq_scale(fmt, base, nb, b, h, l);
            mn[16 * h + l] = off ? sc[16 * h + l] * (float)-off : ck_kq_stored_min(fmt, base, b, h, l);
        }
        int32_t isum[2] = {0, 0};
        for (int i = 0; i < 32; i++) isum[i >> 4] += (int32_t)ck_kq_value(w, bits, l, i) * aq[b * CK_QK + i];
        const float da = a->d[row * a->ldb + b];
        if (halves) {
            const float *h = a->h + row * 2 * a->ldb + 2 * b;
            acc = fmaf((float)isum[0], sc[l] * da, acc);
            acc = fmaf((float)isum[1], sc[16 + l] * da, acc);
            acc = fmaf(mn[l], h[0], acc);
            acc = fmaf(mn[16 + l], h[1], acc);
        } else {
            acc = fmaf((float)(isum[0] + isum[1]), sc[l] * da, acc);
            acc = fmaf(mn[l], a->s[row * a->ldb + b], acc);
        }
    }
    return acc;
}

float ck_matmul_ref1(int fmt, const void *packed, int64_t out, int64_t in, const ck_acts *a,
                     int64_t row, int64_t o) {
    (void)out;
    fmt = ck_compute_format(fmt);
    if (ck_is_kq(fmt)) return kq_ref1(fmt, packed, in, a, row, o);
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
float ck_dot16_scalar(const float *a, const void *b, int b_is_f16, int64_t n) {
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

static void matmul_scalar(int fmt, const void *packed, int64_t out, int64_t in, const ck_acts *a,
                          int64_t out_lo, int64_t out_hi, float *y, int64_t ldy) {
    for (int64_t o = out_lo; o < out_hi; o++)
        for (int64_t r = 0; r < a->rows; r++) {
            float v;
            if (fmt == CK_F32 || fmt == CK_BF16)
                v = ck_dot16_scalar(a->x + r * a->ldx, (const float *)packed + o * in, 0, in);
            else if (fmt == CK_F16)
                v = ck_dot16_scalar(a->x + r * a->ldx, (const uint16_t *)packed + o * in, 1, in);
            else
                v = ck_matmul_ref1(fmt, packed, out, in, a, r, o);
            y[r * ldy + (o - out_lo)] = v;
        }
}

// ------------------------------------------------------------------ activation quantization

static void quantize_row_scalar(const float *x, int64_t n, int8_t *q, float *d, float *s, int32_t *c) {
    for (int64_t b = 0; b < n / CK_QK; b++) {
        const float *xb = x + b * CK_QK;
        float amax = 0.0f;
        for (int i = 0; i < CK_QK; i++) amax = fmaxf(amax, fabsf(xb[i]));
        float id;
        const float db = ck_block_scale(amax, &id);
        int32_t sum = 0;
        for (int i = 0; i < CK_QK; i++) {
            const int32_t v = (int32_t)nearbyintf(xb[i] * id);
            q[b * CK_QK + i] = (int8_t)v;
            sum += v;
        }
        ck_block_sums(b, db, sum, d, s, c);
    }
}

// ------------------------------------------------------------------ elementwise

static float dot_scalar(const float *a, const float *b, int64_t n) { return ck_dot16_scalar(a, b, 0, n); }

static void axpy_scalar(float alpha, const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = fmaf(alpha, x[i], y[i]);
}

static void scale_mul_scalar(const float *x, const float *w, float scale, int64_t n, float *y) {
    for (int64_t i = 0; i < n; i++) {
        const float t = x[i] * scale;  // two roundings, as the SIMD sets (no contraction)
        y[i] = t * w[i];
    }
}

static void softmax_scalar(float *x, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) mx = fmaxf(mx, x[i]);
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    const float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

static float logits_summary_scalar(const float *x, int64_t n, int k, int32_t *ids, float *vals) {
    int filled = 0;
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        mx = fmaxf(mx, x[i]);
        if (filled < k || x[i] > vals[k - 1]) ck_topk_insert(x[i], (int32_t)i, k, &filled, ids, vals);
    }
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += exp((double)x[i] - mx);
    return mx + (float)log(sum);
}

/// g = g / (1 + exp(-z)) * u, z = ck_gate_arg(gelu, g): SiLU (gelu 0) or GELU-tanh (gelu 1).
static inline void gated_mul_scalar(const int gelu, float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-ck_gate_arg(gelu, g[i]))) * u[i];
}
static void silu_mul_scalar(float *g, const float *u, int64_t n) { gated_mul_scalar(0, g, u, n); }
static void gelu_tanh_mul_scalar(float *g, const float *u, int64_t n) { gated_mul_scalar(1, g, u, n); }

/// Every pair by ck_rope_pair (whose bits every set reproduces).
static void rope_scalar(float *x, int64_t heads, int64_t head_dim, const float *cs, const float *sn, int neox) {
    const int64_t half = head_dim / 2;
    for (int64_t h = 0; h < heads; h++) {
        float *v = x + h * head_dim;
        for (int64_t i = 0; i < half; i++) ck_rope_pair(v, i, half, neox, cs, sn);
    }
}

static void f16_to_f32_scalar(const uint16_t *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = ck_f16_to_f32(x[i]);
}

static void f32_to_f16_scalar(const float *x, uint16_t *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = ck_f32_to_f16(x[i]);
}

// ------------------------------------------------------------------ attention

void ck_attend_scalar(const float *q, int64_t group, int64_t hd, float scale, const ck_kv_view *kv, int64_t begin,
                      int64_t end, float *scores, float *acc, float *max_sum) {
    const int64_t n = end - begin;
    float row[1024];  // hd <= 1024 (checked by the Swift wrapper)
    for (int64_t j = 0; j < n; j++) {
        ck_kv_load(kv->type, ck_kv_row(kv, begin + j, 0), hd, row);
        for (int64_t g = 0; g < group; g++) {
            float a = 0;
            for (int64_t i = 0; i < hd; i++) a = fmaf(q[g * hd + i], row[i], a);
            scores[g * n + j] = a * scale;
        }
    }
    for (int64_t g = 0; g < group; g++) {
        float *s = scores + g * n;
        float m = -INFINITY;
        for (int64_t j = 0; j < n; j++) m = s[j] > m ? s[j] : m;
        float sum = 0;
        for (int64_t j = 0; j < n; j++) {
            s[j] = expf(s[j] - m);
            sum += s[j];
        }
        max_sum[2 * g] = m;
        max_sum[2 * g + 1] = sum;
    }
    for (int64_t i = 0; i < group * hd; i++) acc[i] = 0;
    for (int64_t j = 0; j < n; j++) {
        ck_kv_load(kv->type, ck_kv_row(kv, begin + j, 1), hd, row);
        for (int64_t g = 0; g < group; g++) {
            const float p = scores[g * n + j];
            for (int64_t i = 0; i < hd; i++) acc[g * hd + i] = fmaf(p, row[i], acc[g * hd + i]);
        }
    }
}

const ck_kernels ck_kernels_scalar = {
    .id = CK_SET_SCALAR,
    .matmul = matmul_scalar,
    .quantize_row = quantize_row_scalar,
    .dot = dot_scalar,
    .axpy = axpy_scalar,
    .scale_mul = scale_mul_scalar,
    .softmax = softmax_scalar,
    .logits_summary = logits_summary_scalar,
    .silu_mul = silu_mul_scalar,
    .gelu_tanh_mul = gelu_tanh_mul_scalar,
    .rope = rope_scalar,
    .f16_to_f32 = f16_to_f32_scalar,
    .f32_to_f16 = f32_to_f16_scalar,
    .attend = ck_attend_scalar,
};
