// Private helpers shared by the CKernels translation units: the kernel-set table, target
// attributes, the packed weight layout's geometry, and small scalar helpers every set uses.
#ifndef CK_INTERNAL_H
#define CK_INTERNAL_H
#include "ckernels.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

// Function-level instruction-set targets: the package compiles for the baseline ISA and each set's
// bodies carry their own target, so one binary holds every set and picks one at run time.
#define CK_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,f16c,fma")))
#define CK_AVX2 __attribute__((target("avx2,fma,f16c")))
#define CK_NEON __attribute__((target("arch=armv8.2-a+dotprod")))

/// One kernel set. Every body takes exactly the arguments of its public entry point (ckernels.h).
struct ck_kernels {
    int id;
    void (*matmul)(int fmt, const void *packed, int64_t out, int64_t in, const ck_acts *a, int64_t out_lo,
                   int64_t out_hi, float *y, int64_t ldy);
    void (*quantize_row)(const float *x, int64_t n, int8_t *q, float *d, float *s, int32_t *c);
    float (*dot)(const float *a, const float *b, int64_t n);
    void (*axpy)(float alpha, const float *x, float *y, int64_t n);
    /// y = (x * scale) * w (rmsnorm's second pass).
    void (*scale_mul)(const float *x, const float *w, float scale, int64_t n, float *y);
    void (*softmax)(float *x, int64_t n);
    float (*logits_summary)(const float *x, int64_t n, int top, int32_t *ids, float *vals);
    void (*silu_mul)(float *g, const float *u, int64_t n);
    /// g = gelu_tanh(g) * u, as g / (1 + exp(-z)) with z = g (CK_GELU_K0 + CK_GELU_K1 g^2).
    void (*gelu_tanh_mul)(float *g, const float *u, int64_t n);
    void (*rope)(float *x, int64_t heads, int64_t head_dim, const float *cs, const float *sn, int neox);
    void (*f16_to_f32)(const uint16_t *x, float *y, int64_t n);
    void (*f32_to_f16)(const float *x, uint16_t *y, int64_t n);
    /// ck_attend_range's body.
    void (*attend)(const float *q, int64_t group, int64_t hd, float scale, const ck_kv_view *kv, int64_t begin, int64_t end,
                   float *scores, float *acc, float *max_sum);
};

extern const ck_kernels ck_kernels_scalar;
/// GELU's tanh approximation rewritten as a logistic: 0.5 g (1 + tanh(y)) = g / (1 + exp(-2y)), with
/// 2y = g (2c + 2c a g^2), c = sqrt(2/pi), a = 0.044715 (the constants rounded to f32).
#define CK_GELU_K0 1.5957691669464111f
#define CK_GELU_K1 0.07135481387376785f
/// The logistic's argument z of a gated activation, g / (1 + exp(-z)): g itself for SiLU,
/// g (K0 + K1 g^2) for GELU-tanh (the scalar form every set's tail and the scalar set use).
static inline float ck_gate_arg(int gelu, float x) { return gelu ? x * (CK_GELU_K0 + CK_GELU_K1 * x * x) : x; }
/// The vector exp of every SIMD set (Cephes expf, about 1 ulp): n = round(x log2 e), r = x - n ln 2
/// with ln 2 in two parts (HI has 9 significant bits, so n HI is exact), p = ((((P0 r + P1) r + P2) r +
/// P3) r + P4) r + P5, exp(x) = 2^n (1 + r + p r^2).
#define CK_EXP_LOG2E 1.44269504088896341f
#define CK_EXP_LN2_HI 0.693359375f
#define CK_EXP_LN2_LO -2.12194440e-4f
#define CK_EXP_P0 1.9875691500E-4f
#define CK_EXP_P1 1.3981999507E-3f
#define CK_EXP_P2 8.3334519073E-3f
#define CK_EXP_P3 4.1665795894E-2f
#define CK_EXP_P4 1.6666665459E-1f
#define CK_EXP_P5 5.0000001201E-1f
/// The scalar attention body (SIMD sets fall back to it for head dimensions not a multiple of 32).
void ck_attend_scalar(const float *q, int64_t group, int64_t hd, float scale, const ck_kv_view *kv, int64_t begin,
                      int64_t end, float *scores, float *acc, float *max_sum);
#if defined(__x86_64__)
extern const ck_kernels ck_kernels_avx2;
extern const ck_kernels ck_kernels_avx512;
// avx2 bodies the avx512 set shares.
void ck_rope_avx2(float *x, int64_t heads, int64_t head_dim, const float *cs, const float *sn, int neox);
void ck_f16_to_f32_avx2(const uint16_t *x, float *y, int64_t n);
void ck_f32_to_f16_avx2(const float *x, uint16_t *y, int64_t n);
void ck_attend_avx2(const float *q, int64_t group, int64_t hd, float scale, const ck_kv_view *kv, int64_t begin,
                    int64_t end, float *scores, float *acc, float *max_sum);
#endif
#if defined(__aarch64__)
extern const ck_kernels ck_kernels_neon;
#endif

// ------------------------------------------------------------------ packed weight geometry

static inline int32_t ck_rd32(const void *p) { int32_t v; memcpy(&v, p, 4); return v; }
static inline uint32_t ck_rd32_u(const void *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint16_t ck_rd16(const void *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline float ck_rdf(const void *p) { float v; memcpy(&v, p, 4); return v; }

/// Bytes of packed quant values per block of a 16-row group (low/high nibbles or 8-bit values).
static inline int64_t ck_wbytes(int fmt) { return fmt == CK_Q8_0 ? 512 : 256; }
/// Bytes of per-block scale data per 16-row group: f16 d (and f16 m for Q4_1).
static inline int64_t ck_sbytes(int fmt) { return fmt == CK_Q4_1 ? 64 : 32; }

/// The "kq" formats (Q5_0, Q5_1 and the K-quants) share one packed layout: per 32-value block of a
/// 16-row group, the values as unsigned integers u (0..2^bits-1) in nibble chunks (as Q4_1), then for
/// 5 and 6 bits one or two bit planes, then f32 scales and f32 minimums: value = u * scale + min,
/// with one (scale, min) per 32 values or, for Q2_K, Q3_K and Q6_K, one per 16 (see formats.c).
static inline int ck_is_kq(int fmt) { return fmt >= CK_Q5_0 && fmt <= CK_Q6_K; }
/// Bits per value in the packed layout (Q2_K and Q3_K are held in 4).
static inline int ck_kq_bits(int fmt) {
    return fmt == CK_Q6_K ? 6 : (fmt == CK_Q5_0 || fmt == CK_Q5_1 || fmt == CK_Q5_K) ? 5 : 4;
}
/// 1 when a block has a scale and a minimum per 16-value half.
static inline int ck_kq_halves(int fmt) { return fmt == CK_Q2_K || fmt == CK_Q3_K || fmt == CK_Q6_K; }
/// K when a format's minimum is -K * scale (Q5_0: 16, Q3_K: 4, Q6_K: 32), else 0: dequantization then
/// computes (u - K) * scale, as gguf does (the same value; and -0.0 where gguf gives -0.0).
static inline int ck_kq_offset(int fmt) { return fmt == CK_Q5_0 ? 16 : fmt == CK_Q3_K ? 4 : fmt == CK_Q6_K ? 32 : 0; }
/// Bytes of quant values (nibbles + bit planes) per block of a 16-row group, by bits per value.
static inline int64_t ck_kq_wbytes_of(int bits) { return 256 + 64 * (bits - 4); }
static inline int64_t ck_kq_wbytes(int fmt) { return ck_kq_wbytes_of(ck_kq_bits(fmt)); }
/// 1 for the formats whose per-16 scales are packed compactly (Q3_K, Q6_K: a scale per 16 and an
/// offset K, no stored minimum): as ggml keeps them, an int8 sc per 16 values and one f16 d per 256
/// values of a row; scale = d * sc is exact in f32 (at most 11 + 8 significant bits), so the kernels
/// rebuild the very f32 scale the other formats store. The kernels test `halves && off`.
static inline int ck_kq_compact(int fmt) { return fmt == CK_Q3_K || fmt == CK_Q6_K; }
/// Bytes per block of a 16-row group: values, then either int8 sc [2][16] (compact formats) or f32
/// scales [halves][16] and (unless the minimum is -K * scale, which the kernels compute: exact, a
/// power-of-two multiple) f32 mins [halves][16].
/// By (bits, halves, offset), for the kernels that specialise on bits and halves: compact is
/// halves && offset.
static inline int64_t ck_kq_block_bytes_of(int bits, int halves, int off) {
    if (halves && off) return ck_kq_wbytes_of(bits) + 32;
    return ck_kq_wbytes_of(bits) + (halves ? 128 : 64) * (off ? 1 : 2);
}
static inline int64_t ck_kq_block_bytes(int fmt) {
    return ck_kq_block_bytes_of(ck_kq_bits(fmt), ck_kq_halves(fmt), ck_kq_offset(fmt));
}

/// Bytes of a 16-row group: its blocks, then for the compact formats the f16 d [in / 256][16].
static inline int64_t ck_group_stride(int fmt, int64_t in) {
    if (ck_is_kq(fmt)) return (in / 32) * ck_kq_block_bytes(fmt) + (ck_kq_compact(fmt) ? (in / 256) * 32 : 0);
    return (in / 32) * (ck_wbytes(fmt) + ck_sbytes(fmt));
}

/// The f32 scale of half h (0 where a block has one scale) of lane l in block b of a packed kq group
/// starting at `base` with nb blocks (scalar reference of what the kernels load).
static inline float ck_kq_scale(int fmt, const uint8_t *base, int64_t nb, int64_t b, int h, int l) {
    const uint8_t *s = base + b * ck_kq_block_bytes(fmt) + ck_kq_wbytes(fmt);
    if (ck_kq_compact(fmt)) {
        const uint16_t *dd = (const uint16_t *)(base + nb * ck_kq_block_bytes(fmt));
        return ck_f16_to_f32(dd[(b / 8) * 16 + l]) * (float)(int8_t)s[16 * h + l];
    }
    return ck_rdf(s + 4 * (16 * h + l));
}
/// The stored f32 minimum of half h of lane l in block b (formats without an offset).
static inline float ck_kq_stored_min(int fmt, const uint8_t *base, int64_t b, int h, int l) {
    const uint8_t *s = base + b * ck_kq_block_bytes(fmt) + ck_kq_wbytes(fmt);
    return ck_rdf(s + 4 * ((ck_kq_halves(fmt) ? 32 : 16) + 16 * h + l));
}
/// The unsigned value u of element i (0..31) of lane l in a packed kq block (scalar reference).
/// Element i < 16 is the low nibble of chunk i/4 byte i%4, i >= 16 the high nibble of element i-16's
/// byte; bit 4 (bit 5) of element i is bit 8*(i%4) + 4*(i/16) + (i%16)/4 of the lane's 32-bit word
/// in the first (second) bit plane, so one shift and mask per chunk moves a whole chunk's bits into
/// place in every set.
static inline int ck_kq_value(const uint8_t *blk, int bits, int l, int i) {
    const int half = i >> 4, j = (i & 15) >> 2, t = i & 3;
    const uint8_t nib = blk[j * 64 + l * 4 + t];
    int v = half ? nib >> 4 : nib & 15;
    const int bit = 8 * t + 4 * half + j;
    if (bits >= 5) v |= (int)((ck_rd32_u(blk + 256 + l * 4) >> bit) & 1u) << 4;
    if (bits >= 6) v |= (int)((ck_rd32_u(blk + 320 + l * 4) >> bit) & 1u) << 5;
    return v;
}
static inline int64_t ck_ngroups(int64_t out) { return (out + 15) / 16; }

/// The output lanes of group g that fall in [lo, hi), as a 16-bit mask (bit l = row 16g + l).
static inline uint32_t ck_group_mask(int64_t g, int64_t lo, int64_t hi) {
    const int64_t first = g * CK_GROUP;
    uint32_t bits = 0xFFFFu;
    if (first < lo) bits &= 0xFFFFu << (lo - first);
    if (first + CK_GROUP > hi) bits &= 0xFFFFu >> (first + CK_GROUP - hi);
    return bits;
}


/// Software prefetch distance in bytes ahead of the weights being read (measured best at 16 KiB on
/// Zen 4 with AVX-512 and on Zen 3 with AVX2). Clamped to the matrix end.
#ifndef CK_PF
#define CK_PF 16384
#endif

// ------------------------------------------------------------------ shared scalar pieces

/// The 16-lane fixed-order float dot product (see ck_dot) with b in f32 or f16; every SIMD set
/// reproduces it bit for bit.
float ck_dot16_scalar(const float *a, const void *b, int b_is_f16, int64_t n);

/// Rotates pair i of a head v of 2 * half values by angle i: (x0 c - x1 s, x0 s + x1 c), each product
/// rounded (no fused operations, so every set computes the same bits); the pair is (v[i],
/// v[i + half]) with `neox`, else (v[2i], v[2i + 1]). The scalar set's body and the SIMD sets' tails.
static inline void ck_rope_pair(float *v, int64_t i, int64_t half, int neox, const float *cs, const float *sn) {
    float *p0 = neox ? v + i : v + 2 * i;
    float *p1 = neox ? v + i + half : v + 2 * i + 1;
    const float x0 = *p0, x1 = *p1;
    const float a = x0 * cs[i], b = x1 * sn[i], c = x0 * sn[i], d = x1 * cs[i];
    *p0 = a - b;
    *p1 = c + d;
}

/// An int8 activation block's scale d = amax / 127 (amax: its largest magnitude), and into *inv the
/// factor every set multiplies its values by before rounding: 1 / d, or 0 when d = 0 (all zeros).
static inline float ck_block_scale(float amax, float *inv) {
    const float d = amax / 127.0f;
    *inv = d != 0.0f ? 1.0f / d : 0.0f;
    return d;
}

/// Stores block b's d, s = d * sum(q) and c = 128 * sum(q) (see ck_acts).
static inline void ck_block_sums(int64_t b, float db, int32_t sum, float *d, float *s, int32_t *c) {
    d[b] = db;
    s[b] = db * (float)sum;
    c[b] = 128 * sum;
}

/// Inserts (v, id) into the descending top-k list of `*filled` entries (ties keep the earlier id).
static inline void ck_topk_insert(float v, int32_t id, int k, int *filled, int32_t *ids, float *vals) {
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

/// Offers the lanes `hot` of a block of logits (bit l: x[i + l]) to the top-k list in lane order,
/// and sets *kth to the list's k-th value once it is full (then only lanes above it need offering).
static inline void ck_topk_offer(const float *x, int64_t i, unsigned hot, int k, int *filled, int32_t *ids, float *vals,
                                 float *kth) {
    while (hot) {
        const int lane = __builtin_ctz(hot);
        hot &= hot - 1;
        ck_topk_insert(x[i + lane], (int32_t)(i + lane), k, filled, ids, vals);
        if (*filled == k) *kth = vals[k - 1];
    }
}

/// Start of the head row of position j of a key/value view (cached or chain), keys or values.
/// block_size is a power of two (a shift and a mask, not a division, per position).
static inline const uint8_t *ck_kv_row(const ck_kv_view *v, int64_t j, int values) {
    if (j < v->n_cached) {
        const int shift = __builtin_ctzll((unsigned long long)v->block_size);
        return (values ? v->v_base : v->k_base) + (int64_t)v->table[j >> shift] * v->block_stride + v->layer_offset +
               (j & (v->block_size - 1)) * v->row_bytes;
    }
    return (values ? v->v_chain : v->k_chain)[j - v->n_cached] + v->chain_offset;
}

/// The run of contiguous head rows starting at position j: sets *first to its first row (the
/// next ones follow every row_bytes) and returns its length: up to the end of j's cache block for
/// cached positions, 1 for a chain row.
static inline int64_t ck_kv_run(const ck_kv_view *v, int64_t j, int values, const uint8_t **first) {
    if (j < v->n_cached) {
        const int shift = __builtin_ctzll((unsigned long long)v->block_size);
        const int64_t in_block = j & (v->block_size - 1);
        *first = (values ? v->v_base : v->k_base) + (int64_t)v->table[j >> shift] * v->block_stride + v->layer_offset +
                 in_block * v->row_bytes;
        const int64_t left = v->block_size - in_block;
        return left < v->n_cached - j ? left : v->n_cached - j;
    }
    *first = (values ? v->v_chain : v->k_chain)[j - v->n_cached] + v->chain_offset;
    return 1;
}

#ifndef CK_KV_AHEAD
#define CK_KV_AHEAD 2
#endif

/// Walks a view's head rows in position order, a run (cache block) at a time; on entering a run it
/// prefetches the next one (runs are blocks scattered in memory, each too short for the hardware
/// prefetcher to pick up).
typedef struct {
    const ck_kv_view *view;
    int values;
    int64_t next;  ///< position of the next run
    int64_t left;  ///< rows left in the current run
    const uint8_t *row;
    int prefetch;  ///< 0 on a repeat walk over rows a walk before it brought into the caches
} ck_kv_cursor;

/// A cursor whose first row is position `begin`.
static inline ck_kv_cursor ck_kv_cursor_at(const ck_kv_view *v, int values, int64_t begin) {
    ck_kv_cursor c = {v, values, begin, 0, NULL, 1};
    return c;
}

/// Enters the next run (and prefetches ahead); the slow path of ck_kv_cursor_next.
static __attribute__((noinline, unused)) void ck_kv_cursor_enter(ck_kv_cursor *c) {
    c->left = ck_kv_run(c->view, c->next, c->values, &c->row);
    c->next += c->left;
    if (!c->prefetch) return;
    // Prefetch the run CK_KV_AHEAD runs ahead (the ones in between were prefetched earlier).
    int64_t at = c->next;
    for (int k = 0; k < CK_KV_AHEAD && at < c->view->n_cached; k++) {
        const uint8_t *ahead;
        const int64_t count = ck_kv_run(c->view, at, c->values, &ahead);
        if (k == CK_KV_AHEAD - 1 || c->next == c->left)
            for (int64_t b = 0; b < count * c->view->row_bytes; b += 64) __builtin_prefetch(ahead + b, 0, 3);
        at += count;
    }
}

/// The head row of the next position (the caller stops after n_cached + n_chain of them).
static inline __attribute__((always_inline, unused)) const uint8_t *ck_kv_cursor_next(ck_kv_cursor *c) {
    if (c->left == 0) ck_kv_cursor_enter(c);
    const uint8_t *r = c->row;
    c->row += c->view->row_bytes;
    c->left--;
    return r;
}

/// Q8_0 head rows: the f16 scales follow the head_dim int8 values.
static inline const uint16_t *ck_kv_q8_scales(const uint8_t *row, int64_t head_dim) {
    return (const uint16_t *)(row + head_dim);
}

#endif
