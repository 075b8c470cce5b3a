// The avx2 kernel set: x86-64-v3 (AVX2 + FMA + F16C), for CPUs without AVX-512 (AMD Zen 1-3,
// Intel before Ice Lake) and as a like-for-like comparison on those with it.
//
// Quantized matmul: a 16-row group of the shared packed layout (kernels_scalar.c) is read as two
// halves of 8 rows, one 256-bit register per 4-value chunk. Int8 products use vpmaddubsw (u8 x s8
// -> pairs summed into s16) and vpmaddwd against ones (-> s32), as llama.cpp's AVX2 path does:
//   Q4_0/Q4_1: nibbles (0..15) x activations (-127..127): a pair is at most 3,810 in magnitude and
//              the eight of a block at most 30,480, so the s16 sums never saturate and one vpmaddwd
//              per block finishes them.
//   Q8_0:      the signed weight w = stored ^ 0x80 enters as |w| (u8) against sign(x, w) (s8): a pair
//              is at most 32,512; each 4-value chunk goes to s32 at once.
// Integer sums are exact and the float steps are the scalar reference's, in its order, so every
// output is bit-identical to the scalar set. Registers: one chunk (2 for Q4's nibbles), and per
// activation row an s16/s32 partial and an f32 accumulator. Q4 groups are read whole (both halves
// share each broadcast activation group: measured 20% faster than half at a time), two rows at a
// time; Q8_0 half a group at a time, up to 4 rows.
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

// ------------------------------------------------------------------ reductions

/// The 16-lane order of ck_dot16_scalar: lo holds lanes 0-7, hi lanes 8-15; then the same tree.
CK_AVX2 static inline float tree16(__m256 lo, __m256 hi) {
    const __m256 s8 = _mm256_add_ps(lo, hi);
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

/// Lanes 0..n-1 (n < 8) set, as a maskload/maskstore mask.
CK_AVX2 static inline __m256i tail_mask(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

CK_AVX2 static inline float hsum8(__m256 v) {
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

CK_AVX2 static inline float hmax8(__m256 v) {
    const __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    return _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1)));
}

CK_AVX2 static inline int32_t hsum8i(__m256i v) {
    const __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    const __m128i s2 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    return _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0xB1)));
}

/// Loads 8 floats of b (f32 or f16) at i, lanes >= n - i zero.
CK_AVX2 static inline __m256 load_b(const void *b, int is_f16, int64_t i, int64_t n) {
    if (i + 8 <= n)
        return is_f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)b + i)))
                      : _mm256_loadu_ps((const float *)b + i);
    if (i >= n) return _mm256_setzero_ps();
    if (!is_f16) return _mm256_maskload_ps((const float *)b + i, tail_mask(n - i));
    uint16_t tmp[8] = {0};
    memcpy(tmp, (const uint16_t *)b + i, (size_t)(n - i) * 2);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)tmp));
}

CK_AVX2 static inline __m256 load_a(const float *a, int64_t i, int64_t n) {
    if (i + 8 <= n) return _mm256_loadu_ps(a + i);
    if (i >= n) return _mm256_setzero_ps();
    return _mm256_maskload_ps(a + i, tail_mask(n - i));
}

CK_AVX2 static float dot16_avx2(const float *a, const void *b, int is_f16, int64_t n) {
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        lo = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load_b(b, is_f16, i, n), lo);
        hi = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), load_b(b, is_f16, i + 8, n), hi);
    }
    if (i < n) {
        lo = _mm256_fmadd_ps(load_a(a, i, n), load_b(b, is_f16, i, n), lo);
        hi = _mm256_fmadd_ps(load_a(a, i + 8, n), load_b(b, is_f16, i + 8, n), hi);
    }
    return tree16(lo, hi);
}

CK_AVX2 static float dot_avx2(const float *a, const float *b, int64_t n) { return dot16_avx2(a, b, 0, n); }

// ------------------------------------------------------------------ quantized matmul

#define BCAST(p) _mm256_set1_epi32(ck_rd32(p))

/// Stores the lanes of `lanes` (bit l = lane l) of v at y.
CK_AVX2 static inline void store_lanes(float *y, __m256 v, uint32_t lanes) {
    if (lanes == 0xFF) _mm256_storeu_ps(y, v);
    else _mm256_maskstore_ps(y, _mm256_cmpgt_epi32(_mm256_and_si256(_mm256_set1_epi32((int)lanes),
                                                                    _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128)),
                                                   _mm256_setzero_si256()), v);
}

/// Prefetches the group bytes CK_PF ahead of block b (first pass over a group only).
#define PREFETCH_AHEAD(base, b, block_bytes, end)                                                   \
    do {                                                                                            \
        const uint8_t *pf_ = (base) + CK_PF + (b) * (block_bytes);                                  \
        if (pf_ < (end))                                                                            \
            for (int c_ = 0; c_ < (block_bytes); c_ += 64) _mm_prefetch((const char *)pf_ + c_, _MM_HINT_T0); \
    } while (0)

// Q4_0/Q4_1: all 16 output rows of a group against NR activation rows from r0, both halves in one
// pass: each broadcast 4-byte activation group feeds two vpmaddubsw (rows 0-7 and 8-15).
#define Q4_GROUP_BODY(NR)                                                                           \
    CK_AVX2 static void q4_group_##NR(CK_PASS_PARAMS) {                                             \
        const int is_q41 = fmt == CK_Q4_1;                                                          \
        const __m256i low = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);                   \
        const uint16_t *dp = (const uint16_t *)(base + nb * 256);                                   \
        const uint16_t *mp = dp + nb * 16;                                                          \
        const int block_bytes = is_q41 ? 320 : 288;                                                 \
        __m256 acc0[NR], acc1[NR];                                                                  \
        for (int i = 0; i < NR; i++) {                                                              \
            acc0[i] = _mm256_setzero_ps();                                                          \
            acc1[i] = _mm256_setzero_ps();                                                          \
        }                                                                                           \
        for (int64_t b = 0; b < nb; b++) {                                                          \
            const uint8_t *w = base + b * 256;                                                      \
            if (prefetch) PREFETCH_AHEAD(base, b, block_bytes, end);                                \
            __m256i p0[NR], p1[NR];                                                                 \
            _Pragma("clang loop unroll(full)")                                                      \
            for (int j = 0; j < 4; j++) {                                                           \
                const __m256i raw0 = _mm256_loadu_si256((const __m256i *)(w + j * 64));            \
                const __m256i raw1 = _mm256_loadu_si256((const __m256i *)(w + j * 64 + 32));       \
                const __m256i lo0 = _mm256_and_si256(raw0, low), hi0 = _mm256_and_si256(_mm256_srli_epi16(raw0, 4), low); \
                const __m256i lo1 = _mm256_and_si256(raw1, low), hi1 = _mm256_and_si256(_mm256_srli_epi16(raw1, 4), low); \
                _Pragma("clang loop unroll(full)")                                                  \
                for (int i = 0; i < NR; i++) {                                                      \
                    const int8_t *x = a->q + (r0 + i) * a->ldq + b * 32 + 4 * j;                    \
                    const __m256i xl = BCAST(x), xh = BCAST(x + 16);                                \
                    const __m256i t0 = _mm256_add_epi16(_mm256_maddubs_epi16(lo0, xl), _mm256_maddubs_epi16(hi0, xh)); \
                    const __m256i t1 = _mm256_add_epi16(_mm256_maddubs_epi16(lo1, xl), _mm256_maddubs_epi16(hi1, xh)); \
                    p0[i] = j == 0 ? t0 : _mm256_add_epi16(p0[i], t0);                              \
                    p1[i] = j == 0 ? t1 : _mm256_add_epi16(p1[i], t1);                              \
                }                                                                                   \
            }                                                                                       \
            const __m256 dw0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dp + b * 16)));    \
            const __m256 dw1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dp + b * 16 + 8)));\
            const __m256 mw0 = is_q41 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(mp + b * 16))) \
                                      : _mm256_mul_ps(dw0, _mm256_set1_ps(-8.0f));                  \
            const __m256 mw1 = is_q41 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(mp + b * 16 + 8))) \
                                      : _mm256_mul_ps(dw1, _mm256_set1_ps(-8.0f));                  \
            _Pragma("clang loop unroll(full)")                                                      \
            for (int i = 0; i < NR; i++) {                                                          \
                const __m256 da = _mm256_set1_ps(a->d[(r0 + i) * a->ldb + b]);                      \
                const __m256 sa = _mm256_set1_ps(a->s[(r0 + i) * a->ldb + b]);                      \
                acc0[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p0[i], ones)), _mm256_mul_ps(dw0, da), acc0[i]); \
                acc1[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p1[i], ones)), _mm256_mul_ps(dw1, da), acc1[i]); \
                acc0[i] = _mm256_fmadd_ps(mw0, sa, acc0[i]);                                        \
                acc1[i] = _mm256_fmadd_ps(mw1, sa, acc1[i]);                                        \
            }                                                                                       \
        }                                                                                           \
        for (int i = 0; i < NR; i++) {                                                              \
            store_lanes(y + (r0 + i) * ldy, acc0[i], lanes & 0xFF);                                 \
            store_lanes(y + (r0 + i) * ldy + 8, acc1[i], lanes >> 8);                               \
        }                                                                                           \
    }

Q4_GROUP_BODY(1) Q4_GROUP_BODY(2)

// Q8_0: eight output rows (half `part` of a group) against NR activation rows from r0.
#define Q8_HALF_BODY(NR)                                                                            \
    CK_AVX2 static void q8_half_##NR(CK_PASS_PARAMS) {                                              \
        const __m256i flip = _mm256_set1_epi8((char)0x80), ones = _mm256_set1_epi16(1);            \
        const uint16_t *dp = (const uint16_t *)(base + nb * 512) + part * 8;                        \
        __m256 acc[NR];                                                                             \
        const int8_t *aq[NR];                                                                       \
        const float *ad[NR];                                                                        \
        for (int i = 0; i < NR; i++) {                                                              \
            acc[i] = _mm256_setzero_ps();                                                           \
            aq[i] = a->q + (r0 + i) * a->ldq;                                                       \
            ad[i] = a->d + (r0 + i) * a->ldb;                                                       \
        }                                                                                           \
        for (int64_t b = 0; b < nb; b++) {                                                          \
            const uint8_t *w = base + b * 512 + part * 32;                                          \
            if (prefetch) PREFETCH_AHEAD(base, b, 544, end);                                        \
            __m256i s[NR];                                                                          \
            _Pragma("clang loop unroll(full)")                                                      \
            for (int j = 0; j < 8; j++) {                                                           \
                const __m256i ws = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(w + j * 64)), flip); \
                const __m256i aw = _mm256_abs_epi8(ws);                                             \
                _Pragma("clang loop unroll(full)")                                                  \
                for (int i = 0; i < NR; i++) {                                                      \
                    const __m256i xs = _mm256_sign_epi8(BCAST(aq[i] + b * 32 + 4 * j), ws);         \
                    const __m256i t = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xs), ones);        \
                    s[i] = j == 0 ? t : _mm256_add_epi32(s[i], t);                                  \
                }                                                                                   \
            }                                                                                       \
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dp + b * 16)));     \
            _Pragma("clang loop unroll(full)")                                                      \
            for (int i = 0; i < NR; i++)                                                            \
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[i]), _mm256_mul_ps(dw, _mm256_set1_ps(ad[i][b])), acc[i]); \
        }                                                                                           \
        for (int i = 0; i < NR; i++) store_lanes(y + (r0 + i) * ldy, acc[i], lanes);                \
    }

Q8_HALF_BODY(1) Q8_HALF_BODY(2) Q8_HALF_BODY(3) Q8_HALF_BODY(4)

/// Q8_0 against a single activation row (decode): the whole group per pass, so each 64-byte chunk
/// line is read once, in order, and each activation group is broadcast once for both halves. The
/// same arithmetic per lane as q8_half.
CK_AVX2 static void q8_group_1(CK_PASS_PARAMS) {
    const __m256i flip = _mm256_set1_epi8((char)0x80), ones = _mm256_set1_epi16(1);
    const uint16_t *dp = (const uint16_t *)(base + nb * 512);
    const int8_t *aq = a->q + r0 * a->ldq;
    const float *ad = a->d + r0 * a->ldb;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *w = base + b * 512;
        PREFETCH_AHEAD(base, b, 512, end);
        __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
        _Pragma("clang loop unroll(full)")
        for (int j = 0; j < 8; j++) {
            const __m256i x = BCAST(aq + b * 32 + 4 * j);
            const __m256i w0 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(w + j * 64)), flip);
            const __m256i w1 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(w + j * 64 + 32)), flip);
            const __m256i t0 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w0), _mm256_sign_epi8(x, w0)), ones);
            const __m256i t1 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w1), _mm256_sign_epi8(x, w1)), ones);
            s0 = _mm256_add_epi32(s0, t0);
            s1 = _mm256_add_epi32(s1, t1);
        }
        const __m256 da = _mm256_set1_ps(ad[b]);
        const __m256 d0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dp + b * 16)));
        const __m256 d1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dp + b * 16 + 8)));
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_mul_ps(d0, da), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_mul_ps(d1, da), acc1);
    }
    store_lanes(y + r0 * ldy, acc0, lanes & 0xFF);
    store_lanes(y + r0 * ldy + 8, acc1, lanes >> 8);
}

/// Activation rows per pass over a Q8_0 half group (registers: see the file comment).
#ifndef CK_AVX2_NR
#define CK_AVX2_NR 4
#endif
_Static_assert(CK_AVX2_NR >= 1 && CK_AVX2_NR <= 4, "CK_AVX2_NR: 1 to 4 rows (the q8_half passes)");


// The kq formats (Q5_0, Q5_1, K-quants; layout in internal.h, arithmetic in kernels_scalar.c): half a
// group (8 rows) per pass; a block's values are rebuilt from nibbles and bit planes (one shift and
// mask per plane and chunk), then vpmaddubsw (u8 values 0..63 x s8 activations: a pair is at most
// 16,002, two chunks' pairs at most 32,004, so two chunks are summed in s16 before vpmaddwd). The
// block's halves are summed apart (per-16 scales of Q2_K, Q3_K, Q6_K). Specialised per (bits,
// halves, rows) by inlining.
CK_AVX2 static inline __attribute__((always_inline)) void kq_half(const int bits, const int halves, const int nr,
                                                                   CK_PASS_PARAMS) {
    const int off = ck_kq_offset(fmt), half = part;
    const __m256i lo = _mm256_set1_epi8(0x0F), b4 = _mm256_set1_epi8(0x10), ones = _mm256_set1_epi16(1);
    // Q3_K and Q6_K (halves with an offset) keep int8 scales and f16 d per 256 values (internal.h).
    const int compact = halves && off;
    const int64_t wb = ck_kq_wbytes_of(bits), bb = ck_kq_block_bytes_of(bits, halves, off);
    const uint16_t *dd = (const uint16_t *)(base + nb * bb) + 8 * half;
    __m256 acc[2];
    for (int i = 0; i < nr; i++) acc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *w = base + b * bb;
        if (prefetch) {
            const uint8_t *pf = w + CK_PF;
            if (pf < end)
                for (int c = 0; c < bb; c += 64) _mm_prefetch((const char *)pf + c, _MM_HINT_T0);
        }
        __m256i L[4], H[4];
        const __m256i p4 = bits >= 5 ? _mm256_loadu_si256((const __m256i *)(w + 256 + 32 * half)) : _mm256_setzero_si256();
        const __m256i p5 = bits >= 6 ? _mm256_loadu_si256((const __m256i *)(w + 320 + 32 * half)) : _mm256_setzero_si256();
        _Pragma("clang loop unroll(full)")
        for (int j = 0; j < 4; j++) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(w + 64 * j + 32 * half));
            L[j] = _mm256_and_si256(raw, lo);
            H[j] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), lo);
            if (bits >= 5) {
                L[j] = _mm256_or_si256(L[j], _mm256_and_si256(_mm256_slli_epi32(p4, 4 - j), b4));
                H[j] = _mm256_or_si256(H[j], _mm256_and_si256(_mm256_srli_epi32(p4, j), b4));
            }
            if (bits >= 6) {
                L[j] = _mm256_or_si256(L[j], _mm256_slli_epi32(_mm256_and_si256(_mm256_slli_epi32(p5, 4 - j), b4), 1));
                H[j] = _mm256_or_si256(H[j], _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(p5, j), b4), 1));
            }
        }
        const float *sp = (const float *)(w + wb) + 8 * half;
        __m256 sc0, sc1;
        if (compact) {  // d * sc: exact, the f32 the other formats store
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(dd + (b / 8) * 16)));
            const uint8_t *s8 = w + wb + 8 * half;
            sc0 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)s8))));
            sc1 = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(s8 + 16)))));
        } else {
            sc0 = _mm256_loadu_ps(sp);
            sc1 = halves ? _mm256_loadu_ps(sp + 16) : sc0;
        }
        // Minimums: stored, or -K * scale (exact) for the formats with an offset K.
        const __m256 mn0 = off ? _mm256_mul_ps(sc0, _mm256_set1_ps((float)-off)) : _mm256_loadu_ps(sp + (halves ? 32 : 16));
        const __m256 mn1 = !halves ? mn0 : off ? _mm256_mul_ps(sc1, _mm256_set1_ps((float)-off)) : _mm256_loadu_ps(sp + 48);
        _Pragma("clang loop unroll(full)")
        for (int i = 0; i < nr; i++) {
            const int8_t *x = a->q + (r0 + i) * a->ldq + b * 32;
            const __m256i l01 = _mm256_add_epi16(_mm256_maddubs_epi16(L[0], BCAST(x)), _mm256_maddubs_epi16(L[1], BCAST(x + 4)));
            const __m256i l23 = _mm256_add_epi16(_mm256_maddubs_epi16(L[2], BCAST(x + 8)), _mm256_maddubs_epi16(L[3], BCAST(x + 12)));
            const __m256i h01 = _mm256_add_epi16(_mm256_maddubs_epi16(H[0], BCAST(x + 16)), _mm256_maddubs_epi16(H[1], BCAST(x + 20)));
            const __m256i h23 = _mm256_add_epi16(_mm256_maddubs_epi16(H[2], BCAST(x + 24)), _mm256_maddubs_epi16(H[3], BCAST(x + 28)));
            // Up to 5 bits a pair is at most 7,874 and four chunks' pairs 31,496: one vpmaddwd per half.
            const __m256i s0 = bits <= 5 ? _mm256_madd_epi16(_mm256_add_epi16(l01, l23), ones)
                                         : _mm256_add_epi32(_mm256_madd_epi16(l01, ones), _mm256_madd_epi16(l23, ones));
            const __m256i s1 = bits <= 5 ? _mm256_madd_epi16(_mm256_add_epi16(h01, h23), ones)
                                         : _mm256_add_epi32(_mm256_madd_epi16(h01, ones), _mm256_madd_epi16(h23, ones));
            const __m256 da = _mm256_set1_ps(a->d[(r0 + i) * a->ldb + b]);
            if (halves) {
                const float *h = a->h + (r0 + i) * 2 * a->ldb + 2 * b;
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_mul_ps(sc0, da), acc[i]);
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_mul_ps(sc1, da), acc[i]);
                acc[i] = _mm256_fmadd_ps(mn0, _mm256_set1_ps(h[0]), acc[i]);
                acc[i] = _mm256_fmadd_ps(mn1, _mm256_set1_ps(h[1]), acc[i]);
            } else {
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1)), _mm256_mul_ps(sc0, da), acc[i]);
                acc[i] = _mm256_fmadd_ps(mn0, _mm256_set1_ps(a->s[(r0 + i) * a->ldb + b]), acc[i]);
            }
        }
    }
    for (int i = 0; i < nr; i++) store_lanes(y + (r0 + i) * ldy, acc[i], lanes);
}

CK_DEFINE_KQ_PASSES(CK_AVX2, kq_half, 2)

/// How a group runs (registers: see the file comment): the kq formats half a group per pass, 2
/// rows; Q4 the whole group, 2 rows; Q8_0 the whole group for a single row (decode), else half a
/// group, up to CK_AVX2_NR rows (a chunk's |w| and w take two registers).
CK_AVX2 static ck_plan plan_avx2(int fmt, const ck_acts *a) {
    static const ck_pass_fn q4[] = {q4_group_1, q4_group_2}, q8_decode[] = {q8_group_1},
                            q8[] = {q8_half_1, q8_half_2, q8_half_3, q8_half_4};
    if (ck_is_kq(fmt)) return (ck_plan){2, 2, kq_passes[ck_kq_kind(fmt)]};
    if (fmt != CK_Q8_0) return (ck_plan){1, 2, q4};
    if (a->rows == 1) return (ck_plan){1, 1, q8_decode};
    return (ck_plan){2, CK_AVX2_NR, q8};
}

CK_AVX2 static float dot_f16_avx2(const float *a, const uint16_t *b, int64_t n) { return dot16_avx2(a, b, 1, n); }

CK_AVX2 static void matmul_avx2(int fmt, const void *packed, int64_t out, int64_t in, const ck_acts *a,
                                int64_t out_lo, int64_t out_hi, float *y, int64_t ldy) {
    ck_matmul_frontend(fmt, packed, out, in, a, out_lo, out_hi, y, ldy, dot_avx2, dot_f16_avx2, plan_avx2);
}

// ------------------------------------------------------------------ activation quantization

CK_AVX2 static void quantize_row_avx2(const float *x, int64_t n, int8_t *q, float *d, float *s, int32_t *c) {
    const __m256 signless = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t b = 0; b < n / CK_QK; b++) {
        const float *xb = x + b * CK_QK;
        const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8);
        const __m256 x2 = _mm256_loadu_ps(xb + 16), x3 = _mm256_loadu_ps(xb + 24);
        const __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(x0, signless), _mm256_and_ps(x1, signless)),
                                       _mm256_max_ps(_mm256_and_ps(x2, signless), _mm256_and_ps(x3, signless)));
        const float amax = hmax8(m);
        float id;
        const float db = ck_block_scale(amax, &id);
        const __m256 vid = _mm256_set1_ps(id);
        const __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(x0, vid)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(x1, vid));
        const __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(x2, vid)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(x3, vid));
        const int32_t sum = hsum8i(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
        const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        _mm256_storeu_si256((__m256i *)(q + b * CK_QK), _mm256_permutevar8x32_epi32(packed, order));
        ck_block_sums(b, db, sum, d, s, c);
    }
}

// ------------------------------------------------------------------ elementwise

CK_AVX2 static void axpy_avx2(float alpha, const float *x, float *y, int64_t n) {
    const __m256 va = _mm256_set1_ps(alpha);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] = fmaf(alpha, x[i], y[i]);
}

CK_AVX2 static void scale_mul_avx2(const float *x, const float *w, float scale, int64_t n, float *y) {
    const __m256 vs = _mm256_set1_ps(scale);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs), _mm256_loadu_ps(w + i)));
    for (; i < n; i++) {
        const float t = x[i] * scale;
        y[i] = t * w[i];
    }
}

/// exp(x) for 8 lanes: range reduction by ln 2 and the Cephes expf polynomial (about 1 ulp), x
/// clamped to at most 88; 0 below -87.3 (where the true value is a subnormal) and for NaN.
CK_AVX2 static inline __m256 exp8(__m256 x0) {
    const __m256 x = _mm256_max_ps(_mm256_min_ps(x0, _mm256_set1_ps(88.0f)), _mm256_set1_ps(-87.3f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(CK_EXP_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(CK_EXP_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(CK_EXP_LN2_LO), r);
    __m256 p = _mm256_set1_ps(CK_EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(CK_EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(CK_EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(CK_EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(CK_EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(CK_EXP_P5));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), _mm256_cmp_ps(x0, _mm256_set1_ps(-87.3f), _CMP_GE_OQ));
}

CK_AVX2 static float max_avx2(const float *x, int64_t n) {
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    float mx = hmax8(vmax);
    for (; i < n; i++) mx = fmaxf(mx, x[i]);
    return mx;
}

/// x[i] = exp(x[i] - mx) over n values; returns their sum (8 lanes in index order, then hsum8).
CK_AVX2 static float exp_shift_sum(float *x, int64_t n, float mx) {
    const __m256 vm = _mm256_set1_ps(mx);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 8) {
        const int64_t left = n - i;
        if (left >= 8) {
            const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
            acc = _mm256_add_ps(acc, e);
            _mm256_storeu_ps(x + i, e);
        } else {
            const __m256i m = tail_mask(left);
            const __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), vm)), _mm256_castsi256_ps(m));
            acc = _mm256_add_ps(acc, e);
            _mm256_maskstore_ps(x + i, m, e);
        }
    }
    return hsum8(acc);
}

CK_AVX2 static void softmax_avx2(float *x, int64_t n) {
    const float sum = exp_shift_sum(x, n, max_avx2(x, n));
    const __m256 inv = _mm256_set1_ps(1.0f / sum);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (; i < n; i++) x[i] *= 1.0f / sum;
}

/// g = g / (1 + exp(-z)) * u, z = g (SiLU) or g (K0 + K1 g^2) (GELU-tanh; ck_gate_arg).
CK_AVX2 static inline __attribute__((always_inline)) void gated_mul_avx2(const int gelu, float *g, const float *u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), k0 = _mm256_set1_ps(CK_GELU_K0), k1 = _mm256_set1_ps(CK_GELU_K1);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 vg = _mm256_loadu_ps(g + i);
        const __m256 z = gelu ? _mm256_mul_ps(vg, _mm256_fmadd_ps(k1, _mm256_mul_ps(vg, vg), k0)) : vg;
        const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), z));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(vg, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-ck_gate_arg(gelu, g[i]))) * u[i];
}
CK_AVX2 static void silu_mul_avx2(float *g, const float *u, int64_t n) { gated_mul_avx2(0, g, u, n); }
CK_AVX2 static void gelu_tanh_mul_avx2(float *g, const float *u, int64_t n) { gated_mul_avx2(1, g, u, n); }

CK_AVX2 static float logits_summary_avx2(const float *x, int64_t n, int k, int32_t *ids, float *vals) {
    const float mx = max_avx2(x, n);
    // Sum of exp(x - max) over everything, and the top k among lanes above the running k-th value
    // (almost every block of 8 has none, so it costs one compare).
    const __m256 vm = _mm256_set1_ps(mx);
    __m256 acc = _mm256_setzero_ps();
    int filled = 0;
    float kth = -INFINITY;
    for (int64_t i = 0; i < n; i += 8) {
        const int64_t left = n - i;
        const __m256i m = left >= 8 ? _mm256_set1_epi32(-1) : tail_mask(left);
        const __m256 v = left >= 8 ? _mm256_loadu_ps(x + i) : _mm256_maskload_ps(x + i, m);
        acc = _mm256_add_ps(acc, _mm256_and_ps(exp8(_mm256_sub_ps(v, vm)), _mm256_castsi256_ps(m)));
        unsigned hot = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(m));
        if (filled == k) hot &= (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_set1_ps(kth), _CMP_GT_OQ));
        ck_topk_offer(x, i, hot, k, &filled, ids, vals, &kth);
    }
    return mx + logf(hsum8(acc));
}

CK_AVX2 void ck_rope_avx2(float *x, int64_t heads, int64_t head_dim, const float *cs, const float *sn, int neox) {
    const int64_t half = head_dim / 2;
    for (int64_t h = 0; h < heads; h++) {
        float *v = x + h * head_dim;
        int64_t i = 0;
        if (neox) {
            for (; i + 8 <= half; i += 8) {
                const __m256 x0 = _mm256_loadu_ps(v + i), x1 = _mm256_loadu_ps(v + i + half);
                const __m256 c = _mm256_loadu_ps(cs + i), s = _mm256_loadu_ps(sn + i);
                _mm256_storeu_ps(v + i, _mm256_sub_ps(_mm256_mul_ps(x0, c), _mm256_mul_ps(x1, s)));
                _mm256_storeu_ps(v + i + half, _mm256_add_ps(_mm256_mul_ps(x0, s), _mm256_mul_ps(x1, c)));
            }
        } else {
            // Four pairs at a time: lanes (x0 x1 x2 x3 ...) with angles duplicated (c0 c0 c1 c1 ...);
            // addsub gives x0 c - x1 s in even lanes and x1 c + x0 s in odd ones.
            for (; i + 4 <= half; i += 4) {
                const __m256 xv = _mm256_loadu_ps(v + 2 * i);
                const __m128 c4 = _mm_loadu_ps(cs + i), s4 = _mm_loadu_ps(sn + i);
                const __m256 c = _mm256_set_m128(_mm_unpackhi_ps(c4, c4), _mm_unpacklo_ps(c4, c4));
                const __m256 s = _mm256_set_m128(_mm_unpackhi_ps(s4, s4), _mm_unpacklo_ps(s4, s4));
                const __m256 swapped = _mm256_permute_ps(xv, 0xB1);
                _mm256_storeu_ps(v + 2 * i, _mm256_addsub_ps(_mm256_mul_ps(xv, c), _mm256_mul_ps(swapped, s)));
            }
        }
        for (; i < half; i++) ck_rope_pair(v, i, half, neox, cs, sn);
    }
}

CK_AVX2 void ck_f16_to_f32_avx2(const uint16_t *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    for (; i < n; i++) y[i] = ck_f16_to_f32(x[i]);
}

CK_AVX2 void ck_f32_to_f16_avx2(const float *x, uint16_t *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; i++) y[i] = ck_f32_to_f16(x[i]);
}

// ------------------------------------------------------------------ attention

/// Eight values [v, v + 8) of a head row as f32 (`type` is a constant after inlining; `d` is the
/// row's Q8_0 scale of the 32-block holding v).
CK_AVX2 static inline __attribute__((always_inline)) __m256 kv_load8(int type, const uint8_t *row, int64_t v, __m256 d) {
    if (type == CK_KV_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * v)));
    if (type == CK_KV_Q8_0)
        return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(row + v)))), d);
    return _mm256_loadu_ps((const float *)row + v);
}

CK_AVX2 static inline __attribute__((always_inline)) __m256 kv_scale(int type, const uint8_t *row, int64_t hd, int64_t v) {
    if (type != CK_KV_Q8_0) return _mm256_setzero_ps();
    return _mm256_set1_ps(_cvtsh_ss(ck_kv_q8_scales(row, hd)[v / CK_QK]));
}

/// The four sums of a, b, c, d, each ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7)).
CK_AVX2 static inline __m128 hsum4x8(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

/// Scores of 4 positions (rows r[0..3]) for NH (1-3) query heads: 4 NH accumulators of 8 lanes over
/// the head row in order, then hsum4x8. A position's score depends only on its own q and k.
CK_AVX2 static inline __attribute__((always_inline)) void score_quad(const int nh, const float *const qh[3],
                                                                      const uint8_t *const r[4], int64_t hd, __m128 scale,
                                                                      __m128 out[3], const int type) {
    const __m256 zero = _mm256_setzero_ps();
    __m256 acc[3][4];
    for (int h = 0; h < nh; h++)
        for (int p = 0; p < 4; p++) acc[h][p] = zero;
    for (int64_t v = 0; v < hd; v += 8) {
        __m256 x[3];
        for (int h = 0; h < nh; h++) x[h] = _mm256_loadu_ps(qh[h] + v);
        for (int p = 0; p < 4; p++) {
            const __m256 k8 = kv_load8(type, r[p], v, kv_scale(type, r[p], hd, v));
            for (int h = 0; h < nh; h++) acc[h][p] = _mm256_fmadd_ps(x[h], k8, acc[h][p]);
        }
    }
    for (int h = 0; h < nh; h++) out[h] = _mm_mul_ps(hsum4x8(acc[h][0], acc[h][1], acc[h][2], acc[h][3]), scale);
}

/// NH (1-3) query heads from `first` over positions [begin, end): scores four positions at a time
/// (the last quad repeats the last row; score_quad), softmax by exp8 lane sums (exp_shift_sum), then
/// values in 32-value tiles, NH heads x 4 accumulators, position by position in order. Rows come
/// from a cursor (cache blocks, then this step's rows). Each head's result depends on its own q only.
CK_AVX2 static inline __attribute__((always_inline)) void attend_heads(const int nh, const float *q, int64_t first, int64_t hd,
                                                                        float scale, const ck_kv_view *kv, int64_t begin,
                                                                        int64_t end, float *scores, float *out, float *max_sum,
                                                                        const int type) {
    const int64_t n = end - begin;
    const __m256 zero = _mm256_setzero_ps();
    const __m128 vscale = _mm_set1_ps(scale);
    const float *qh[3];
    float *sh[3];
    for (int h = 0; h < nh; h++) {
        qh[h] = q + (first + h) * hd;
        sh[h] = scores + (first + h) * n;
    }
    ck_kv_cursor keys = ck_kv_cursor_at(kv, 0, begin);
    for (int64_t j = 0; j < n; j += 4) {
        const int64_t m = n - j < 4 ? n - j : 4;
        const uint8_t *r[4];
        for (int64_t t = 0; t < m; t++) r[t] = ck_kv_cursor_next(&keys);
        for (int64_t t = m; t < 4; t++) r[t] = r[m - 1];
        __m128 sq[3];
        score_quad(nh, qh, r, hd, vscale, sq, type);
        if (m == 4) {
            for (int h = 0; h < nh; h++) _mm_storeu_ps(sh[h] + j, sq[h]);
        } else {
            for (int h = 0; h < nh; h++) {
                float t[4];
                _mm_storeu_ps(t, sq[h]);
                for (int64_t i = 0; i < m; i++) sh[h][j + i] = t[i];
            }
        }
    }
    for (int h = 0; h < nh; h++) {
        const float mx = max_avx2(sh[h], n);
        max_sum[2 * (first + h)] = mx;
        max_sum[2 * (first + h) + 1] = exp_shift_sum(sh[h], n, mx);
    }
    for (int64_t t = 0; t < hd; t += 32) {
        __m256 acc[3][4];
        for (int h = 0; h < nh; h++)
            for (int c = 0; c < 4; c++) acc[h][c] = zero;
        ck_kv_cursor values = ck_kv_cursor_at(kv, 1, begin);
        // Later tiles walk the rows the first one fetched, while they fit in L2.
        values.prefetch = t == 0 || n * kv->row_bytes > (256 << 10);
        for (int64_t j = 0; j < n; j++) {
            const uint8_t *row = ck_kv_cursor_next(&values);
            const __m256 d = kv_scale(type, row, hd, t);
            __m256 w[3];
            for (int h = 0; h < nh; h++) w[h] = _mm256_set1_ps(sh[h][j]);
            for (int c = 0; c < 4; c++) {
                const __m256 v8 = kv_load8(type, row, t + 8 * c, d);
                for (int h = 0; h < nh; h++) acc[h][c] = _mm256_fmadd_ps(w[h], v8, acc[h][c]);
            }
        }
        for (int h = 0; h < nh; h++)
            for (int c = 0; c < 4; c++) _mm256_storeu_ps(out + (first + h) * hd + t + 8 * c, acc[h][c]);
    }
}

/// Query heads in chunks of at most 3 (registers: 3 heads x 4 accumulators), as even as possible
/// (a group of 4 runs as 2 + 2); head_dim a multiple of 32.
CK_AVX2 static inline __attribute__((always_inline)) void attend_body(const float *q, int64_t group, int64_t hd,
                                                                       float scale, const ck_kv_view *kv, int64_t begin,
                                                                       int64_t end, float *scores, float *out, float *max_sum,
                                                                       const int type) {
    const int64_t chunks = (group + 2) / 3, base = group / chunks, extra = group % chunks;
    int64_t first = 0;
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t nh = base + (c < extra ? 1 : 0);
        switch (nh) {
        case 3: attend_heads(3, q, first, hd, scale, kv, begin, end, scores, out, max_sum, type); break;
        case 2: attend_heads(2, q, first, hd, scale, kv, begin, end, scores, out, max_sum, type); break;
        default: attend_heads(1, q, first, hd, scale, kv, begin, end, scores, out, max_sum, type); break;
        }
        first += nh;
    }
}

CK_DEFINE_ATTEND(CK_AVX2 void ck_attend_avx2, attend_body)

const ck_kernels ck_kernels_avx2 = {
    .id = CK_SET_AVX2,
    .matmul = matmul_avx2,
    .quantize_row = quantize_row_avx2,
    .dot = dot_avx2,
    .axpy = axpy_avx2,
    .scale_mul = scale_mul_avx2,
    .softmax = softmax_avx2,
    .logits_summary = logits_summary_avx2,
    .silu_mul = silu_mul_avx2,
    .gelu_tanh_mul = gelu_tanh_mul_avx2,
    .rope = ck_rope_avx2,
    .f16_to_f32 = ck_f16_to_f32_avx2,
    .f32_to_f16 = ck_f32_to_f16_avx2,
    .attend = ck_attend_avx2,
};
#endif
