// Compares every SIMD kernel set this CPU can run with the scalar reference set, kernel by kernel,
// on seeded random data and odd sizes. Built without SwiftPM so that it also cross-compiles for
// aarch64 (`make test-kernels-arm`: gcc-aarch64-linux-gnu, run under qemu-aarch64) and checks the
// neon set on an x86-64 host. Prints which sets ran and which this CPU could not run; exits 1 on
// the first set with a mismatch (after reporting every failing check of that set).
//
// Bit-identical to scalar: quantized matmul (every format), activation quantization, dot, axpy,
// rmsnorm, RoPE (both pairings), f16 conversion both ways, key/value row storage. Within a named
// tolerance (these use a vector exp): softmax, SiLU, the log-sum-exp of the logits summary (its
// top-k ids and values are exact), attention over f32, f16 and q8_0 keys and values.
#include "ckernels.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/// Relative tolerance of the exp-based kernels (softmax, SiLU, log-sum-exp, attention) against scalar.
#define EXP_RTOL 2e-5
/// Attention output: absolute tolerance relative to the largest |value| of the head.
#define ATTEND_TOL 1e-4

static uint64_t rng_state;
static uint32_t rnd(void) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33);
}
static float rndf(float scale) { return ((float)rnd() / 2147483648.0f - 1.0f) * scale; }

static int failures = 0;
static const char *current_set = "";

#define CHECK(cond, ...)                                          \
    do {                                                          \
        if (!(cond)) {                                            \
            if (failures < 40) {                                  \
                printf("  FAIL [%s] ", current_set);              \
                printf(__VA_ARGS__);                              \
                printf("\n");                                     \
            }                                                     \
            failures++;                                           \
        }                                                         \
    } while (0)

static int same_bits(float a, float b) { return memcmp(&a, &b, 4) == 0; }
static int close_rel(float a, float b, double rtol) {
    return fabs((double)a - (double)b) <= rtol * fmax(fabs((double)a), fabs((double)b)) + 1e-30;
}

// ------------------------------------------------------------------ half precision

static void test_f16(const ck_kernels *k, const ck_kernels *ref) {
    static uint16_t h[65536];
    static float f[65536], g[65536];
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    ck_f16_to_f32_row(k, h, f, 65536);
    ck_f16_to_f32_row(ref, h, g, 65536);
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        const int nan = isnan(f[i]) && isnan(g[i]);
        if (!nan && !same_bits(f[i], g[i])) bad++;
    }
    CHECK(bad == 0, "f16 -> f32: %d of 65536 halves differ", bad);

    enum { N = 4099 };
    static float x[N];
    static uint16_t a[N], b[N];
    const float specials[] = {0.0f, -0.0f, 65504.0f, 65519.99f, 65520.0f, 1e9f, -1e9f, 5.96e-8f, 2.98e-8f, 2.99e-8f,
                              6.1035e-5f, 6.1e-5f, 1e-10f, INFINITY, -INFINITY, 1.00048828125f, 1.00146484375f};
    const int ns = (int)(sizeof specials / sizeof specials[0]);
    for (int i = 0; i < N; i++) {
        if (i < ns) x[i] = specials[i];
        else if (i % 3 == 0) x[i] = rndf(1.0f) * powf(2.0f, (float)(rnd() % 50) - 30.0f);  // wide exponent range
        else x[i] = rndf(4.0f);
    }
    ck_f32_to_f16_row(k, x, a, N);
    ck_f32_to_f16_row(ref, x, b, N);
    bad = 0;
    for (int i = 0; i < N; i++)
        if (a[i] != b[i]) {
            if (bad < 3) printf("  f32 -> f16 of %.9g: %04x vs %04x\n", x[i], a[i], b[i]);
            bad++;
        }
    CHECK(bad == 0, "f32 -> f16: %d of %d values differ", bad, N);
}

// ------------------------------------------------------------------ activations and matmul

typedef struct {
    int8_t *q;
    float *d, *s, *x, *h;
    int32_t *c;
    ck_acts a;
} acts_buf;

static void acts_alloc(acts_buf *b, int64_t rows, int64_t k) {
    const int64_t ldq = (k + 63) / 64 * 64, ldb = (k + 31) / 32 + 1;
    b->q = calloc((size_t)(rows * ldq), 1);
    b->d = calloc((size_t)(rows * ldb), 4);
    b->s = calloc((size_t)(rows * ldb), 4);
    b->c = calloc((size_t)(rows * ldb), 4);
    b->x = calloc((size_t)(rows * k), 4);
    b->h = calloc((size_t)(rows * 2 * ldb), 4);
    b->a = (ck_acts){b->q, b->d, b->s, b->c, b->x, ldq, ldb, k, rows, k, b->h};
}

static void acts_free(acts_buf *b) {
    free(b->q); free(b->d); free(b->s); free(b->c); free(b->x); free(b->h);
}

static void test_quantize(const ck_kernels *k, const ck_kernels *ref) {
    const int64_t sizes[] = {32, 64, 576, 1536};
    for (int si = 0; si < 4; si++) {
        const int64_t n = sizes[si], rows = 5;
        float *x = malloc((size_t)(rows * n) * 4);
        for (int64_t i = 0; i < rows * n; i++) x[i] = rndf(3.0f) * (i % 97 == 0 ? 40.0f : 1.0f);
        for (int64_t i = 0; i < 32; i++) x[n + i] = 0.0f;  // an all-zero block
        acts_buf a, b;
        acts_alloc(&a, rows, n);
        acts_alloc(&b, rows, n);
        ck_quantize_rows(k, x, n, 0, rows, n, &a.a);
        ck_quantize_rows(ref, x, n, 0, rows, n, &b.a);
        int bad = 0;
        for (int64_t r = 0; r < rows; r++) {
            bad += memcmp(a.q + r * a.a.ldq, b.q + r * b.a.ldq, (size_t)n) != 0;
            for (int64_t bl = 0; bl < n / 32; bl++) {
                const int64_t i = r * a.a.ldb + bl;
                bad += !same_bits(a.d[i], b.d[i]) || !same_bits(a.s[i], b.s[i]) || a.c[i] != b.c[i];
                bad += !same_bits(a.h[2 * i], b.h[2 * i]) || !same_bits(a.h[2 * i + 1], b.h[2 * i + 1]);
            }
        }
        CHECK(bad == 0, "quantize n %lld: %d mismatches", (long long)n, bad);
        acts_free(&a);
        acts_free(&b);
        free(x);
    }
}

/// Raw block bytes and the offsets of its f16 scale fields (-1: none), per quantized format.
typedef struct { int fmt; const char *name; int64_t block_values, block_bytes; int f16_at[2]; } raw_geometry;
static const raw_geometry geometries[] = {
    {CK_Q4_0, "Q4_0", 32, 18, {0, -1}},   {CK_Q4_1, "Q4_1", 32, 20, {0, 2}},   {CK_Q8_0, "Q8_0", 32, 34, {0, -1}},
    {CK_Q5_0, "Q5_0", 32, 22, {0, -1}},   {CK_Q5_1, "Q5_1", 32, 24, {0, 2}},   {CK_Q2_K, "Q2_K", 256, 84, {80, 82}},
    {CK_Q3_K, "Q3_K", 256, 110, {108, -1}}, {CK_Q4_K, "Q4_K", 256, 144, {0, 2}}, {CK_Q5_K, "Q5_K", 256, 176, {0, 2}},
    {CK_Q6_K, "Q6_K", 256, 210, {208, -1}}, {CK_IQ4_NL, "IQ4_NL", 32, 18, {0, -1}},
};
static const raw_geometry *geometry(int fmt) {
    for (size_t i = 0; i < sizeof geometries / sizeof geometries[0]; i++)
        if (geometries[i].fmt == fmt) return &geometries[i];
    return NULL;
}

/// Random raw ggml bytes of a matrix with finite, modest f16 scales (every other byte random: all
/// quant values, sub-block scales and minimums occur).
static uint8_t *random_weights(int fmt, int64_t out, int64_t in) {
    const size_t size = ck_raw_size(fmt, out, in);
    uint8_t *w = malloc(size);
    if (fmt == CK_F32) {
        for (int64_t i = 0; i < out * in; i++) ((float *)w)[i] = rndf(1.0f);
        return w;
    }
    if (fmt == CK_F16) {
        for (int64_t i = 0; i < out * in; i++) ((uint16_t *)w)[i] = ck_f32_to_f16(rndf(1.0f));
        return w;
    }
    if (fmt == CK_BF16) {
        for (int64_t i = 0; i < out * in; i++) {
            const float f = rndf(1.0f);
            uint32_t bits;
            memcpy(&bits, &f, 4);
            ((uint16_t *)w)[i] = (uint16_t)(bits >> 16);
        }
        return w;
    }
    for (size_t i = 0; i < size; i++) w[i] = (uint8_t)rnd();
    const raw_geometry *g = geometry(fmt);
    const int k = g->block_values == 256;  // K-quant super-block scales multiply 4-8 bit sub-scales
    for (int64_t b = 0; b < (int64_t)size / g->block_bytes; b++) {
        const uint16_t d = ck_f32_to_f16(rndf(k ? 0.002f : 0.02f));
        memcpy(w + b * g->block_bytes + g->f16_at[0], &d, 2);
        if (g->f16_at[1] >= 0) {
            const uint16_t m = ck_f32_to_f16(rndf(k ? 0.002f : 0.1f));
            memcpy(w + b * g->block_bytes + g->f16_at[1], &m, 2);
        }
    }
    return w;
}

static void test_matmul(const ck_kernels *k, const ck_kernels *ref) {
    const int fmts[] = {CK_F32, CK_F16, CK_BF16, CK_Q4_0, CK_Q4_1, CK_Q8_0, CK_Q5_0, CK_Q5_1,
                        CK_Q2_K, CK_Q3_K, CK_Q4_K, CK_Q5_K, CK_Q6_K, CK_IQ4_NL};
    const char *names[] = {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0", "Q5_0", "Q5_1",
                           "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL"};
    const int64_t qins[] = {32, 96, 576}, kins[] = {256, 512, 768}, fins[] = {1, 3, 31, 33, 129};
    const int64_t outs[] = {1, 7, 16, 33, 49};
    for (int fi = 0; fi < 14; fi++) {
        const int fmt = fmts[fi];
        const int quant = fmt != CK_F32 && fmt != CK_F16 && fmt != CK_BF16;
        const int kquant = fmt >= CK_Q2_K && fmt <= CK_Q6_K;
        for (int ii = 0; ii < (quant ? 3 : 5); ii++) {
            const int64_t in = kquant ? kins[ii] : quant ? qins[ii] : fins[ii];
            for (int oi = 0; oi < 5; oi++) {
                const int64_t out = outs[oi];
                uint8_t *raw = random_weights(fmt, out, in);
                void *packed = aligned_alloc(64, (ck_packed_size(fmt, out, in) + 63) / 64 * 64 + 64);
                ck_pack(fmt, raw, out, in, packed);
                // The packed layout dequantizes exactly as the raw ggml blocks (checked against gguf's
                // dequantize by the Swift fixture test).
                {
                    float *d1 = malloc((size_t)in * 4), *d2 = malloc((size_t)in * 4);
                    int badq = 0;
                    for (int64_t o = 0; o < out; o++) {
                        ck_dequant_row(fmt, packed, out, in, o, d1);
                        ck_dequant_raw_row(fmt, raw, in, o, d2);
                        for (int64_t i = 0; i < in; i++) badq += !same_bits(d1[i], d2[i]);
                    }
                    CHECK(badq == 0, "dequant %s in %lld out %lld: %d values differ from the raw blocks", names[fi],
                          (long long)in, (long long)out, badq);
                    free(d1);
                    free(d2);
                }
                for (int64_t rows = 1; rows <= 9; rows += (rows < 5 ? 1 : 4)) {
                    acts_buf a;
                    acts_alloc(&a, rows, in);
                    float *x = malloc((size_t)(rows * in) * 4);
                    for (int64_t i = 0; i < rows * in; i++) x[i] = rndf(2.0f);
                    memcpy(a.x, x, (size_t)(rows * in) * 4);
                    if (quant) ck_quantize_rows(ref, x, in, 0, rows, in, &a.a);
                    float *y1 = calloc((size_t)(rows * out), 4), *y2 = calloc((size_t)(rows * out), 4);
                    ck_matmul(k, fmt, packed, out, in, &a.a, 0, out, y1, out);
                    ck_matmul(ref, fmt, packed, out, in, &a.a, 0, out, y2, out);
                    int bad = 0;
                    for (int64_t i = 0; i < rows * out; i++) bad += !same_bits(y1[i], y2[i]);
                    // The reference is the dot product of the dequantized weights with the dequantized
                    // activations, up to float rounding (relative to the sum of |products|).
                    if (quant) {
                        float *wrow = malloc((size_t)in * 4);
                        int far = 0;
                        for (int64_t o = 0; o < out; o++) {
                            ck_dequant_raw_row(fmt, raw, in, o, wrow);
                            for (int64_t r = 0; r < rows; r++) {
                                double dot = 0, mag = 0;
                                for (int64_t i = 0; i < in; i++) {
                                    const double xv = (double)a.q[r * a.a.ldq + i] * a.d[r * a.a.ldb + i / 32];
                                    dot += xv * wrow[i];
                                    mag += fabs(xv * wrow[i]);
                                }
                                far += fabs(dot - y2[r * out + o]) > 1e-5 * mag + 1e-30;
                            }
                        }
                        CHECK(far == 0, "matmul %s in %lld out %lld rows %lld: %d outputs far from the dequantized dot",
                              names[fi], (long long)in, (long long)out, (long long)rows, far);
                        free(wrow);
                    }
                    CHECK(bad == 0, "matmul %s in %lld out %lld rows %lld: %d of %lld outputs differ", names[fi],
                          (long long)in, (long long)out, (long long)rows, bad, (long long)(rows * out));
                    // A partial output range writes exactly its outputs.
                    if (out > 5) {
                        const int64_t lo = 3, hi = out - 2;
                        float *y3 = malloc((size_t)(rows * out) * 4);
                        for (int64_t i = 0; i < rows * out; i++) y3[i] = -1234.5f;
                        ck_matmul(k, fmt, packed, out, in, &a.a, lo, hi, y3, out);
                        int bad3 = 0;
                        for (int64_t r = 0; r < rows; r++)
                            for (int64_t o = 0; o < out; o++) {
                                const float got = y3[r * out + o];
                                if (o < hi - lo) bad3 += !same_bits(got, y2[r * out + lo + o]);
                                else bad3 += got != -1234.5f;
                            }
                        CHECK(bad3 == 0, "matmul %s in %lld out %lld rows %lld range [%lld, %lld): %d wrong", names[fi],
                              (long long)in, (long long)out, (long long)rows, (long long)lo, (long long)hi, bad3);
                        free(y3);
                    }
                    free(y1); free(y2); free(x);
                    acts_free(&a);
                }
                free(packed);
                free(raw);
            }
        }
    }
}

// ------------------------------------------------------------------ elementwise

static void test_elementwise(const ck_kernels *k, const ck_kernels *ref) {
    const int64_t sizes[] = {1, 3, 8, 15, 16, 17, 31, 33, 127, 129, 576, 1000};
    for (int si = 0; si < 12; si++) {
        const int64_t n = sizes[si];
        float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4), *y1 = malloc((size_t)n * 4), *y2 = malloc((size_t)n * 4);
        for (int64_t i = 0; i < n; i++) { a[i] = rndf(2.0f); b[i] = rndf(2.0f); }
        CHECK(same_bits(ck_dot(k, a, b, n), ck_dot(ref, a, b, n)), "dot n %lld", (long long)n);

        memcpy(y1, b, (size_t)n * 4);
        memcpy(y2, b, (size_t)n * 4);
        ck_axpy(k, 0.37f, a, y1, n);
        ck_axpy(ref, 0.37f, a, y2, n);
        int bad = 0;
        for (int64_t i = 0; i < n; i++) bad += !same_bits(y1[i], y2[i]);
        CHECK(bad == 0, "axpy n %lld: %d differ", (long long)n, bad);

        ck_rmsnorm(k, a, b, n, 1e-5f, y1);
        ck_rmsnorm(ref, a, b, n, 1e-5f, y2);
        bad = 0;
        for (int64_t i = 0; i < n; i++) bad += !same_bits(y1[i], y2[i]);
        CHECK(bad == 0, "rmsnorm n %lld: %d differ", (long long)n, bad);

        for (int64_t i = 0; i < n; i++) y1[i] = y2[i] = a[i] * 8.0f;
        if (n > 2) y1[1] = y2[1] = -INFINITY;  // a masked logit
        ck_softmax(k, y1, n);
        ck_softmax(ref, y2, n);
        bad = 0;
        for (int64_t i = 0; i < n; i++) bad += fabsf(y1[i] - y2[i]) > EXP_RTOL * fmaxf(y2[i], 1e-6f);
        CHECK(bad == 0, "softmax n %lld: %d differ", (long long)n, bad);
        CHECK(n <= 2 || y1[1] == 0.0f, "softmax n %lld: a -inf logit has probability %g", (long long)n, y1[1]);

        for (int64_t i = 0; i < n; i++) { y1[i] = y2[i] = a[i] * 6.0f; }
        ck_silu_mul(k, y1, b, n);
        ck_silu_mul(ref, y2, b, n);
        bad = 0;
        for (int64_t i = 0; i < n; i++) bad += !close_rel(y1[i], y2[i], EXP_RTOL) && fabsf(y1[i] - y2[i]) > 1e-6f;
        CHECK(bad == 0, "silu n %lld: %d differ", (long long)n, bad);

        for (int64_t i = 0; i < n; i++) { y1[i] = y2[i] = a[i] * 6.0f; }
        ck_gelu_tanh_mul(k, y1, b, n);
        ck_gelu_tanh_mul(ref, y2, b, n);
        bad = 0;
        for (int64_t i = 0; i < n; i++) bad += !close_rel(y1[i], y2[i], EXP_RTOL) && fabsf(y1[i] - y2[i]) > 1e-6f;
        CHECK(bad == 0, "gelu_tanh n %lld: %d differ", (long long)n, bad);

        const int top = n < 5 ? (int)n : 5;
        int32_t i1[5], i2[5];
        float v1[5], v2[5];
        for (int64_t i = 0; i < n; i++) y1[i] = a[i] * 10.0f;
        if (n > 9) y1[9] = y1[3];  // a tie: the lower id first
        const float l1 = ck_logits_summary(k, y1, n, top, i1, v1);
        const float l2 = ck_logits_summary(ref, y1, n, top, i2, v2);
        // log(sum) carries the sum's relative error as an absolute one (the lse may be near 0).
        CHECK(fabs((double)l1 - (double)l2) <= EXP_RTOL * fmax(1.0, fabs((double)l2)),
              "logits summary n %lld: lse %.8g vs %.8g", (long long)n, l1, l2);
        CHECK(memcmp(i1, i2, (size_t)top * 4) == 0 && memcmp(v1, v2, (size_t)top * 4) == 0,
              "logits summary n %lld: top-%d differs", (long long)n, top);
        free(a); free(b); free(y1); free(y2);
    }
}

static void test_rope(const ck_kernels *k, const ck_kernels *ref) {
    const int64_t dims[] = {8, 64, 128, 256, 18};
    for (int di = 0; di < 5; di++)
        for (int neox = 0; neox < 2; neox++) {
            const int64_t hd = dims[di], heads = 3;
            float cs[512], sn[512], x1[3 * 256], x2[3 * 256];
            ck_rope_angles(1234, 10000.0f, hd, 1.0f, NULL, cs, sn);
            for (int64_t i = 0; i < heads * hd; i++) x1[i] = x2[i] = rndf(3.0f);
            ck_rope(k, x1, heads, hd, cs, sn, neox);
            ck_rope(ref, x2, heads, hd, cs, sn, neox);
            int bad = 0;
            for (int64_t i = 0; i < heads * hd; i++) bad += !same_bits(x1[i], x2[i]);
            CHECK(bad == 0, "rope hd %lld neox %d: %d differ", (long long)hd, neox, bad);
        }
}

// ------------------------------------------------------------------ keys, values, attention

static void test_attention(const ck_kernels *k, const ck_kernels *ref) {
    const int types[] = {CK_KV_F32, CK_KV_F16, CK_KV_Q8_0};
    const char *tnames[] = {"f32", "f16", "q8_0"};
    const int64_t hds[] = {64, 128, 256};
    const int64_t groups[] = {1, 3, 4, 5};
    const int64_t cached[] = {0, 1, 17, 100};
    for (int ti = 0; ti < 3; ti++)
        for (int hi = 0; hi < 3; hi++)
            for (int gi = 0; gi < 4; gi++)
                for (int ci = 0; ci < 4; ci++) {
                    const int type = types[ti];
                    const int64_t hd = hds[hi], group = groups[gi], n_cached = cached[ci], n_chain = 1 + ci % 3;
                    // Two heads (ours is head 1) and two layers (ours is layer 1), as the cache lays
                    // them out: block = [layer][head][block_size head rows].
                    const int64_t heads = 2, head = 1, rb = ck_kv_row_bytes(type, hd), bs = 16;
                    const int64_t nblocks = (n_cached + bs - 1) / bs + 1, layer_stride = heads * bs * rb;
                    const int64_t block_stride = 2 * layer_stride, layer_off = layer_stride + head * bs * rb;
                    uint8_t *kb = malloc((size_t)(nblocks * block_stride)), *vb = malloc((size_t)(nblocks * block_stride));
                    int32_t table[64];
                    for (int64_t i = 0; i < nblocks; i++) table[i] = (int32_t)(nblocks - 1 - i);  // out of order
                    float row[512];
                    uint8_t full[2048];
                    for (int64_t j = 0; j < n_cached; j++) {
                        const int64_t at = table[j / bs] * block_stride + layer_off + (j % bs) * rb;
                        for (int64_t i = 0; i < heads * hd; i++) row[i] = rndf(1.0f);
                        ck_kv_store(ref, type, row, heads * hd, hd, full);
                        memcpy(kb + at, full + head * rb, (size_t)rb);
                        for (int64_t i = 0; i < heads * hd; i++) row[i] = rndf(1.0f);
                        ck_kv_store(ref, type, row, heads * hd, hd, full);
                        memcpy(vb + at, full + head * rb, (size_t)rb);
                    }
                    uint8_t *kc[3], *vc[3];
                    for (int64_t c = 0; c < n_chain; c++) {
                        kc[c] = malloc((size_t)(heads * rb));
                        vc[c] = malloc((size_t)(heads * rb));
                        for (int64_t i = 0; i < heads * hd; i++) row[i] = rndf(1.0f);
                        ck_kv_store(ref, type, row, heads * hd, hd, kc[c]);
                        for (int64_t i = 0; i < heads * hd; i++) row[i] = rndf(1.0f);
                        ck_kv_store(ref, type, row, heads * hd, hd, vc[c]);
                    }
                    float *q = malloc((size_t)(group * hd) * 4);
                    for (int64_t i = 0; i < group * hd; i++) q[i] = rndf(1.5f);
                    const ck_kv_view view = {type, rb, kb, vb, table, bs, block_stride, layer_off, n_cached,
                                             (const uint8_t *const *)kc, (const uint8_t *const *)vc, head * rb, n_chain};
                    float *s1 = malloc((size_t)(group * (n_cached + n_chain)) * 4), *s2 = malloc((size_t)(group * (n_cached + n_chain)) * 4);
                    float *o1 = malloc((size_t)(group * hd) * 4), *o2 = malloc((size_t)(group * hd) * 4);
                    ck_attend(k, q, group, hd, 0.125f, &view, s1, o1);
                    ck_attend(ref, q, group, hd, 0.125f, &view, s2, o2);
                    float mag = 0;
                    for (int64_t i = 0; i < group * hd; i++) mag = fmaxf(mag, fabsf(o2[i]));
                    int bad = 0;
                    for (int64_t i = 0; i < group * hd; i++) bad += fabsf(o1[i] - o2[i]) > ATTEND_TOL * mag;
                    CHECK(bad == 0, "attention %s hd %lld group %lld cached %lld chain %lld: %d of %lld differ",
                          tnames[ti], (long long)hd, (long long)group, (long long)n_cached, (long long)n_chain, bad,
                          (long long)(group * hd));
                    // Split into position ranges (uneven, across the cached/chain boundary) and merged: the same.
                    const int64_t n = n_cached + n_chain;
                    if (n >= 3) {
                        const int64_t cut[4] = {0, n / 3, n - 1, n};
                        float *acc = malloc((size_t)(3 * group * hd) * 4), ms[3 * 2 * 8];
                        for (int part = 0; part < 3; part++)
                            ck_attend_range(k, q, group, hd, 0.125f, &view, cut[part], cut[part + 1], s1, acc + part * group * hd,
                                            ms + part * group * 2);
                        float *merged = malloc((size_t)(group * hd) * 4);
                        ck_attend_merge(group, hd, 3, acc, ms, merged);
                        int badm = 0;
                        for (int64_t i = 0; i < group * hd; i++) badm += fabsf(merged[i] - o2[i]) > ATTEND_TOL * mag;
                        CHECK(badm == 0, "attention %s hd %lld group %lld n %lld in 3 merged ranges: %d differ", tnames[ti],
                              (long long)hd, (long long)group, (long long)n, badm);
                        free(acc);
                        free(merged);
                    }
                    for (int64_t c = 0; c < n_chain; c++) { free(kc[c]); free(vc[c]); }
                    free(kb); free(vb); free(q); free(s1); free(s2); free(o1); free(o2);
                }

    // Row storage is the same in every set.
    for (int ti = 1; ti < 3; ti++) {
        const int64_t n = 192;
        float x[192];
        uint8_t r1[1024], r2[1024];
        for (int i = 0; i < n; i++) x[i] = rndf(2.0f);
        ck_kv_store(k, types[ti], x, n, 64, r1);
        ck_kv_store(ref, types[ti], x, n, 64, r2);
        CHECK(memcmp(r1, r2, (size_t)(3 * ck_kv_row_bytes(types[ti], 64))) == 0, "kv store %s differs", tnames[ti]);
    }
}

int main(void) {
    const ck_kernels *ref = ck_kernels_get(CK_SET_SCALAR);
    const int sets[] = {CK_SET_AVX2, CK_SET_AVX512, CK_SET_NEON};
    int ran = 0, failed_sets = 0;
    for (int i = 0; i < 3; i++) {
        char why[256];
        if (!ck_kernels_supported(sets[i])) {
            ck_kernels_missing(sets[i], why, sizeof why);
            printf("kernel set %-6s: not run here (%s)\n", ck_kernels_name(sets[i]), why);
            continue;
        }
        const ck_kernels *k = ck_kernels_get(sets[i]);
        current_set = ck_kernels_name(sets[i]);
        rng_state = 0x5eed0000ULL + (uint64_t)sets[i];
        failures = 0;
        test_f16(k, ref);
        test_quantize(k, ref);
        test_matmul(k, ref);
        test_elementwise(k, ref);
        test_rope(k, ref);
        test_attention(k, ref);
        printf("kernel set %-6s: %s against scalar (%d failures)\n", current_set, failures ? "FAILED" : "matches", failures);
        ran++;
        failed_sets += failures > 0;
    }
    printf("%d kernel set(s) checked against scalar, %d failed; best set on this CPU: %s\n", ran, failed_sets,
           ck_kernels_name(ck_kernels_best()));
    return failed_sets ? 1 : 0;
}
