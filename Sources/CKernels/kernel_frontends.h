// The front-ends every SIMD kernel set shares, so that a set holds only what its instruction set
// decides: its microkernels ("passes"), how many parts a 16-row group splits into (its register
// width) and how many activation rows a pass takes (its register count).
//
//   ck_matmul_frontend   ck_kernels.matmul: F32/F16 rows by the set's dot products, the quantized
//                        formats group by group, each group by the passes the set's plan names
//   CK_DEFINE_KQ_PASSES  a set's kq passes, one per (kq kind, row count), from one inlined body
//   CK_DEFINE_ATTEND     ck_kernels.attend: the scalar body for odd head sizes, else the set's
//                        body specialised per cache type
//
// A set includes this header after internal.h, defines its passes with CK_PASS_PARAMS, and
// instantiates the front-ends with them inside its own target attribute.
#ifndef CK_KERNEL_FRONTENDS_H
#define CK_KERNEL_FRONTENDS_H
#include "internal.h"

// ------------------------------------------------------------------ quantized matmul passes

/// The parameters of every pass, one microkernel call over part of a 16-row group:
///   fmt       the compute format (a pass family may serve several: Q4_0 and Q4_1, or the kq formats)
///   base, nb  the packed group and its number of 32-value blocks
///   part      which part of the group (lanes part * 16 / parts onwards), 0 for a whole group
///   prefetch  1 on the first pass over the group (a set that prefetches on every pass ignores it)
///   a, r0     the activations; the pass takes rows r0 onwards (as many as it is specialised for)
///   y, ldy    the output of the part's first lane for activation row 0, rows ldy floats apart
///   lanes     the lanes of the part to write (bit l: lane l), never 0
///   end       the end of the packed matrix (prefetching stops there)
#define CK_PASS_PARAMS                                                                              \
    int fmt, const uint8_t *base, int64_t nb, int part, int prefetch, const ck_acts *a, int64_t r0, float *y, \
        int64_t ldy, uint32_t lanes, const uint8_t *end
/// The arguments of CK_PASS_PARAMS, to hand them on to an inlined body.
#define CK_PASS_ARGS fmt, base, nb, part, prefetch, a, r0, y, ldy, lanes, end
typedef void (*ck_pass_fn)(CK_PASS_PARAMS);

/// How a set runs a quantized format: a group as `parts` parts of CK_GROUP / parts rows, each
/// part over the activation rows at most `rows` at a time; by_rows[n - 1] is the pass for n rows.
typedef struct {
    int parts;
    int rows;
    const ck_pass_fn *by_rows;
} ck_plan;

/// The row of a kq pass table for a format: its (bits, halves) kind, in the order of
/// CK_DEFINE_KQ_PASSES (4 bits with one scale per block, 4 with one per half, 5, 6).
static inline int ck_kq_kind(int fmt) {
    const int bits = ck_kq_bits(fmt);
    return bits == 4 ? ck_kq_halves(fmt) : bits == 5 ? 2 : 3;
}

/// The matmul body of a set (ck_kernels.matmul; fmt is a compute format): F32 and F16 weights row
/// by row with the set's fixed-order dot products (each the 16-lane order of ck_dot16_scalar), the
/// quantized formats 16-row group by group, each group in the parts and passes plan(fmt, a)
/// names. A pass computes whole outputs, so the split changes no bit of the result.
static inline __attribute__((always_inline)) void ck_matmul_frontend(
    int fmt, const void *packed, int64_t out, int64_t in, const ck_acts *a, int64_t out_lo, int64_t out_hi, float *y,
    int64_t ldy, float (*dot)(const float *, const float *, int64_t),
    float (*dot_f16)(const float *, const uint16_t *, int64_t), ck_plan (*plan)(int, const ck_acts *)) {
    if (fmt == CK_F32 || fmt == CK_F16) {
        for (int64_t o = out_lo; o < out_hi; o++)
            for (int64_t r = 0; r < a->rows; r++) {
                const float *x = a->x + r * a->ldx;
                y[r * ldy + (o - out_lo)] = fmt == CK_F32 ? dot(x, (const float *)packed + o * in, in)
                                                          : dot_f16(x, (const uint16_t *)packed + o * in, in);
            }
        return;
    }
    const ck_plan p = plan(fmt, a);
    const int width = CK_GROUP / p.parts;
    const uint32_t part_mask = (1u << width) - 1;
    const int64_t nb = in / CK_QK, gs = ck_group_stride(fmt, in);
    const uint8_t *end = (const uint8_t *)packed + ck_ngroups(out) * gs;
    for (int64_t g = out_lo / CK_GROUP; g * CK_GROUP < out_hi; g++) {
        const uint32_t mask = ck_group_mask(g, out_lo, out_hi);
        const uint8_t *base = (const uint8_t *)packed + g * gs;
        for (int part = 0; part < p.parts; part++) {
            const uint32_t lanes = (mask >> (width * part)) & part_mask;
            if (!lanes) continue;
            float *yp = y + (g * CK_GROUP + width * part - out_lo);
            for (int64_t r0 = 0; r0 < a->rows;) {
                const int64_t nr = a->rows - r0 < p.rows ? a->rows - r0 : p.rows;
                p.by_rows[nr - 1](fmt, base, nb, part, part == 0 && r0 == 0, a, r0, yp, ldy, lanes, end);
                r0 += nr;
            }
        }
    }
}

// A set's kq passes: kq_<bits>_<halves>_<rows>(CK_PASS_PARAMS), each BODY(bits, halves, rows,
// CK_PASS_ARGS) (an always-inline body, so each is specialised), for the four kinds and rows
// 1..ROWS (2 or 4), and their table kq_passes[ck_kq_kind(fmt)][rows - 1].
#define CK_KQ_PASS(ATTR, BODY, BITS, HALVES, NR)                                                   \
    ATTR static void kq_##BITS##_##HALVES##_##NR(CK_PASS_PARAMS) { BODY(BITS, HALVES, NR, CK_PASS_ARGS); }
#define CK_KQ_PASSES_2(ATTR, BODY, BITS, HALVES) CK_KQ_PASS(ATTR, BODY, BITS, HALVES, 1) CK_KQ_PASS(ATTR, BODY, BITS, HALVES, 2)
#define CK_KQ_PASSES_4(ATTR, BODY, BITS, HALVES)                                                   \
    CK_KQ_PASSES_2(ATTR, BODY, BITS, HALVES) CK_KQ_PASS(ATTR, BODY, BITS, HALVES, 3) CK_KQ_PASS(ATTR, BODY, BITS, HALVES, 4)
#define CK_KQ_ROW_2(BITS, HALVES) kq_##BITS##_##HALVES##_1, kq_##BITS##_##HALVES##_2
#define CK_KQ_ROW_4(BITS, HALVES) CK_KQ_ROW_2(BITS, HALVES), kq_##BITS##_##HALVES##_3, kq_##BITS##_##HALVES##_4
#define CK_DEFINE_KQ_PASSES(ATTR, BODY, ROWS)                                                      \
    CK_KQ_PASSES_##ROWS(ATTR, BODY, 4, 0) CK_KQ_PASSES_##ROWS(ATTR, BODY, 4, 1)                    \
    CK_KQ_PASSES_##ROWS(ATTR, BODY, 5, 0) CK_KQ_PASSES_##ROWS(ATTR, BODY, 6, 1)                    \
    static const ck_pass_fn kq_passes[4][ROWS] = {{CK_KQ_ROW_##ROWS(4, 0)}, {CK_KQ_ROW_##ROWS(4, 1)}, \
                                                  {CK_KQ_ROW_##ROWS(5, 0)}, {CK_KQ_ROW_##ROWS(6, 1)}};

// ------------------------------------------------------------------ attention

/// Defines `DECL(q, group, hd, scale, kv, begin, end, scores, acc, max_sum)`, a set's attention
/// body (ck_kernels.attend; DECL is the target attribute, storage and name): head dimensions that
/// are not a multiple of 32 go to ck_attend_scalar; the rest to BODY(same arguments, type), an
/// always-inline body specialised per cache type.
#define CK_DEFINE_ATTEND(DECL, BODY)                                                               \
    DECL(const float *q, int64_t group, int64_t hd, float scale, const ck_kv_view *kv, int64_t begin, int64_t end, \
         float *scores, float *acc, float *max_sum) {                                             \
        if (hd % 32 != 0) {                                                                        \
            ck_attend_scalar(q, group, hd, scale, kv, begin, end, scores, acc, max_sum);           \
            return;                                                                                \
        }                                                                                          \
        switch (kv->type) {                                                                        \
        case CK_KV_F16: BODY(q, group, hd, scale, kv, begin, end, scores, acc, max_sum, CK_KV_F16); break; \
        case CK_KV_Q8_0: BODY(q, group, hd, scale, kv, begin, end, scores, acc, max_sum, CK_KV_Q8_0); break; \
        default: BODY(q, group, hd, scale, kv, begin, end, scores, acc, max_sum, CK_KV_F32); break; \
        }                                                                                          \
    }

#endif
