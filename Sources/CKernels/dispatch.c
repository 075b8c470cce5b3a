// Kernel sets: CPU feature checks, the process-wide default, and the public entry points, each of
// which calls the body of the table it is given.
#include "ckernels.h"
#include "internal.h"
#include <stdatomic.h>
#include <stdio.h>
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#endif

// ------------------------------------------------------------------ CPU features

typedef struct {
    const char *name;
    int (*present)(void);
} ck_feature;

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define X86_FEATURE(f) static int has_##f(void) { __builtin_cpu_init(); return __builtin_cpu_supports(#f); }
X86_FEATURE(avx2)
X86_FEATURE(fma)
X86_FEATURE(f16c)
X86_FEATURE(avx512f)
X86_FEATURE(avx512bw)
X86_FEATURE(avx512vl)
X86_FEATURE(avx512dq)
X86_FEATURE(avx512vnni)
static const ck_feature avx2_features[] = {{"avx2", has_avx2}, {"fma", has_fma}, {"f16c", has_f16c}, {NULL, NULL}};
static const ck_feature avx512_features[] = {
    {"avx512f", has_avx512f}, {"avx512bw", has_avx512bw}, {"avx512vl", has_avx512vl}, {"avx512dq", has_avx512dq},
    {"avx512vnni", has_avx512vnni}, {"avx2", has_avx2}, {"fma", has_fma}, {"f16c", has_f16c}, {NULL, NULL}};
#endif

#if defined(__aarch64__)
#if defined(__linux__)
static int has_asimd(void) { return (getauxval(AT_HWCAP) & HWCAP_ASIMD) != 0; }
static int has_asimddp(void) { return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0; }
#else
static int has_asimd(void) { return 1; }
static int has_asimddp(void) { return 0; }
#endif
static const ck_feature neon_features[] = {{"asimd", has_asimd}, {"asimddp", has_asimddp}, {NULL, NULL}};
#endif

static const ck_feature *features_of(int set) {
    switch (set) {
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
    case CK_SET_AVX2: return avx2_features;
    case CK_SET_AVX512: return avx512_features;
#endif
#if defined(__aarch64__)
    case CK_SET_NEON: return neon_features;
#endif
    default: return NULL;
    }
}

const ck_kernels *ck_kernels_get(int set) {
    switch (set) {
    case CK_SET_SCALAR: return &ck_kernels_scalar;
#if defined(__x86_64__)
    case CK_SET_AVX2: return &ck_kernels_avx2;
    case CK_SET_AVX512: return &ck_kernels_avx512;
#endif
#if defined(__aarch64__)
    case CK_SET_NEON: return &ck_kernels_neon;
#endif
    default: return NULL;
    }
}

const char *ck_kernels_name(int set) {
    switch (set) {
    case CK_SET_SCALAR: return "scalar";
    case CK_SET_AVX2: return "avx2";
    case CK_SET_AVX512: return "avx512";
    case CK_SET_NEON: return "neon";
    default: return "unknown";
    }
}

int ck_kernels_missing(int set, char *buf, size_t size) {
    if (size > 0) buf[0] = 0;
    if (set == CK_SET_SCALAR) return 0;
    const ck_feature *f = features_of(set);
    if (!ck_kernels_get(set) || !f) {
#if defined(__x86_64__)
        const char *arch = "x86-64";
#elif defined(__aarch64__)
        const char *arch = "arm64";
#else
        const char *arch = "this architecture";
#endif
        if (size > 0) snprintf(buf, size, "the %s kernels do not exist for %s CPUs", ck_kernels_name(set), arch);
        return 1;
    }
    int missing = 0;
    size_t used = 0;
    for (; f->name; f++) {
        if (f->present()) continue;
        if (size > used) used += (size_t)snprintf(buf + used, size - used, "%s%s", missing ? " " : "", f->name);
        missing++;
    }
    return missing;
}

int ck_kernels_supported(int set) {
    char buf[8];
    return set >= 0 && set < CK_SET_COUNT && ck_kernels_get(set) != NULL && ck_kernels_missing(set, buf, sizeof buf) == 0;
}

int ck_kernels_best(void) {
    static const int order[] = {CK_SET_AVX512, CK_SET_NEON, CK_SET_AVX2};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (ck_kernels_supported(order[i])) return order[i];
    return CK_SET_SCALAR;
}

int ck_kernels_id(const ck_kernels *k) { return k->id; }

static _Atomic(const ck_kernels *) default_table = NULL;

const ck_kernels *ck_kernels_default(void) {
    const ck_kernels *k = atomic_load_explicit(&default_table, memory_order_acquire);
    if (k) return k;
    const ck_kernels *best = ck_kernels_get(ck_kernels_best());
    const ck_kernels *expected = NULL;
    atomic_compare_exchange_strong(&default_table, &expected, best);
    return atomic_load_explicit(&default_table, memory_order_acquire);
}

int ck_kernels_set_default(int set) {
    if (!ck_kernels_supported(set)) return -1;
    atomic_store_explicit(&default_table, ck_kernels_get(set), memory_order_release);
    return 0;
}

// ------------------------------------------------------------------ entry points

void ck_f16_to_f32_row(const ck_kernels *k, const uint16_t *x, float *y, int64_t n) { k->f16_to_f32(x, y, n); }
void ck_f32_to_f16_row(const ck_kernels *k, const float *x, uint16_t *y, int64_t n) { k->f32_to_f16(x, y, n); }

void ck_quantize_rows(const ck_kernels *k, const float *x, int64_t ldx, int64_t r0, int64_t r1, int64_t n,
                      const ck_acts *a) {
    for (int64_t r = r0; r < r1; r++) {
        k->quantize_row(x + r * ldx, n, a->q + r * a->ldq, a->d + r * a->ldb, a->s + r * a->ldb, a->c + r * a->ldb);
        if (!a->h) continue;
        // Half-block sums for the formats with a minimum per 16 values (the same plain C in every set).
        const int8_t *q = a->q + r * a->ldq;
        for (int64_t b = 0; b < n / CK_QK; b++)
            for (int half = 0; half < 2; half++) {
                int32_t sum = 0;
                for (int i = 0; i < 16; i++) sum += q[b * CK_QK + 16 * half + i];
                a->h[r * 2 * a->ldb + 2 * b + half] = a->d[r * a->ldb + b] * (float)sum;
            }
    }
}

void ck_matmul(const ck_kernels *k, int fmt, const void *packed, int64_t out, int64_t in, const ck_acts *a,
               int64_t out_lo, int64_t out_hi, float *y, int64_t ldy) {
    fmt = ck_compute_format(fmt);  // BF16 is packed as F32, IQ4_NL as Q8_0
    k->matmul(fmt, packed, out, in, a, out_lo, out_hi, y, ldy);
}

float ck_dot(const ck_kernels *k, const float *a, const float *b, int64_t n) { return k->dot(a, b, n); }
void ck_axpy(const ck_kernels *k, float alpha, const float *x, float *y, int64_t n) { k->axpy(alpha, x, y, n); }

void ck_rmsnorm(const ck_kernels *k, const float *x, const float *w, int64_t n, float eps, float *y) {
    const float ss = k->dot(x, x, n);
    const float scale = 1.0f / sqrtf(ss / (float)n + eps);
    k->scale_mul(x, w, scale, n, y);
}

void ck_softmax(const ck_kernels *k, float *x, int64_t n) {
    if (n > 0) k->softmax(x, n);
}

float ck_logits_summary(const ck_kernels *k, const float *x, int64_t n, int top, int32_t *ids, float *vals) {
    if (n <= 0 || top <= 0) return -INFINITY;
    return k->logits_summary(x, n, top, ids, vals);
}

void ck_silu_mul(const ck_kernels *k, float *g, const float *u, int64_t n) { k->silu_mul(g, u, n); }
void ck_gelu_tanh_mul(const ck_kernels *k, float *g, const float *u, int64_t n) { k->gelu_tanh_mul(g, u, n); }

void ck_rope_angles(int64_t pos, float theta, int64_t head_dim, float freq_scale, const float *factors, float *cs,
                    float *sn) {
    // As ggml's rope cache: t_i = pos * step^i, computed by repeated multiplication in float,
    // step = theta^(-2/head_dim); then the scaled angle. freq_scale * t is t itself when freq_scale
    // is 1 (exact), so the unscaled angles need no path of their own.
    const float step = powf(theta, -2.0f / (float)head_dim);
    float t = (float)pos;
    for (int64_t i = 0; i < head_dim / 2; i++) {
        const float angle = freq_scale * (factors ? t / factors[i] : t);
        cs[i] = cosf(angle);
        sn[i] = sinf(angle);
        t *= step;
    }
}

void ck_rope(const ck_kernels *k, float *x, int64_t heads, int64_t head_dim, const float *cs, const float *sn, int neox) {
    k->rope(x, heads, head_dim, cs, sn, neox);
}

int64_t ck_kv_row_bytes(int type, int64_t head_dim) {
    switch (type) {
    case CK_KV_F16: return 2 * head_dim;
    case CK_KV_Q8_0: return head_dim + head_dim / CK_QK * 2;
    default: return 4 * head_dim;
    }
}

void ck_kv_store(const ck_kernels *k, int type, const float *x, int64_t n, int64_t head_dim, void *dst) {
    const int64_t rb = ck_kv_row_bytes(type, head_dim);
    for (int64_t h = 0; h < n / head_dim; h++) {
        const float *xh = x + h * head_dim;
        uint8_t *row = (uint8_t *)dst + h * rb;
        switch (type) {
        case CK_KV_F16:
            k->f32_to_f16(xh, (uint16_t *)row, head_dim);
            break;
        case CK_KV_Q8_0:
            // The activation quantizer's blocks (bit-identical in every set), with d kept as f16.
            for (int64_t b = 0; b < head_dim / CK_QK; b++) {
                float d, s;
                int32_t c;
                k->quantize_row(xh + b * CK_QK, CK_QK, (int8_t *)row + b * CK_QK, &d, &s, &c);
                const uint16_t half = ck_f32_to_f16(d);
                memcpy(row + head_dim + 2 * b, &half, 2);
            }
            break;
        default:
            memcpy(row, xh, (size_t)head_dim * 4);
        }
    }
}

void ck_kv_load(int type, const void *row, int64_t head_dim, float *y) {
    switch (type) {
    case CK_KV_F16:
        for (int64_t i = 0; i < head_dim; i++) y[i] = ck_f16_to_f32(((const uint16_t *)row)[i]);
        break;
    case CK_KV_Q8_0: {
        const int8_t *q = (const int8_t *)row;
        const uint8_t *scales = (const uint8_t *)row + head_dim;
        for (int64_t i = 0; i < head_dim; i++) y[i] = (float)q[i] * ck_f16_to_f32(ck_rd16(scales + 2 * (i / CK_QK)));
        break;
    }
    default:
        memcpy(y, row, (size_t)head_dim * 4);
    }
}

void ck_attend(const ck_kernels *k, const float *q, int64_t group, int64_t hd, float scale, const ck_kv_view *kv,
               float *scores, float *out) {
    float max_sum[128];
    k->attend(q, group, hd, scale, kv, 0, kv->n_cached + kv->n_chain, scores, out, max_sum);
    for (int64_t g = 0; g < group; g++) {
        const float inv = 1.0f / max_sum[2 * g + 1];
        for (int64_t i = 0; i < hd; i++) out[g * hd + i] *= inv;
    }
}

void ck_attend_range(const ck_kernels *k, const float *q, int64_t group, int64_t hd, float scale, const ck_kv_view *kv,
                     int64_t begin, int64_t end, float *scores, float *acc, float *max_sum) {
    k->attend(q, group, hd, scale, kv, begin, end, scores, acc, max_sum);
}

void ck_attend_merge(int64_t group, int64_t hd, int64_t parts, const float *acc, const float *max_sum, float *out) {
    for (int64_t g = 0; g < group; g++) {
        float m = -INFINITY;
        for (int64_t p = 0; p < parts; p++) m = fmaxf(m, max_sum[(p * group + g) * 2]);
        float l = 0.0f;
        for (int64_t i = 0; i < hd; i++) out[g * hd + i] = 0.0f;
        for (int64_t p = 0; p < parts; p++) {
            const float w = expf(max_sum[(p * group + g) * 2] - m);
            l = fmaf(w, max_sum[(p * group + g) * 2 + 1], l);
            const float *a = acc + (p * group + g) * hd;
            for (int64_t i = 0; i < hd; i++) out[g * hd + i] = fmaf(w, a[i], out[g * hd + i]);
        }
        const float inv = 1.0f / l;
        for (int64_t i = 0; i < hd; i++) out[g * hd + i] *= inv;
    }
}

// ------------------------------------------------------------------ pool-parallel entry points

typedef struct {
    const ck_kernels *k;
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
    if (a < b) j->k->matmul(j->fmt, j->packed, j->out, j->in, j->a, a, b, j->y + (a - j->lo), j->ldy);
}

void ck_matmul_parallel(ck_pool *pool, int64_t chunks, const ck_kernels *k, int fmt, const void *packed, int64_t out,
                        int64_t in, const ck_acts *a, int64_t out_lo, int64_t out_hi, float *y, int64_t ldy) {
    if (out_lo >= out_hi || a->rows == 0) return;
    fmt = ck_compute_format(fmt);  // BF16 is packed as F32, IQ4_NL as Q8_0
    matmul_job j = {k, fmt, packed, out, in, out_lo, out_hi, out_lo / CK_GROUP, 0, a, y, ldy};
    j.groups = (out_hi + CK_GROUP - 1) / CK_GROUP - j.first_group;
    if (chunks > j.groups) chunks = j.groups;
    if (chunks <= 1 || !pool || ck_pool_threads(pool) == 1) {
        k->matmul(fmt, packed, out, in, a, out_lo, out_hi, y, ldy);
        return;
    }
    ck_pool_run(pool, matmul_item, &j, chunks);
}

typedef struct {
    const ck_kernels *k;
    const float *x;
    int64_t ldx, rows, n;
    const ck_acts *a;
    int blocks;
} quantize_job;

static void quantize_item(void *ctx, int64_t item, int64_t items) {
    const quantize_job *j = (const quantize_job *)ctx;
    const int64_t r0 = item * j->rows / items, r1 = (item + 1) * j->rows / items;
    for (int64_t r = r0; r < r1; r++)
        memcpy((float *)j->a->x + r * j->a->ldx, j->x + r * j->ldx, (size_t)j->n * sizeof(float));
    if (j->blocks) ck_quantize_rows(j->k, j->x, j->ldx, r0, r1, j->n, j->a);
}

void ck_prepare_acts(ck_pool *pool, const ck_kernels *k, const float *x, int64_t ldx, int64_t rows, int64_t n,
                     const ck_acts *a, int blocks) {
    quantize_job j = {k, x, ldx, rows, n, a, blocks};
    int64_t items = pool ? ck_pool_threads(pool) : 1;
    if (items > rows) items = rows;
    if (items <= 1) {
        quantize_item(&j, 0, 1);
        return;
    }
    ck_pool_run(pool, quantize_item, &j, items);
}

uint64_t ck_read_sum(const void *p, int64_t bytes) {
    const uint64_t *w = (const uint64_t *)p;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (int64_t i = 0; i + 4 <= bytes / 8; i += 4) {
        a += w[i];
        b += w[i + 1];
        c += w[i + 2];
        d += w[i + 3];
    }
    return a + b + c + d;
}
