// Matmul throughput per weight format and kernel set (`make bench-formats`): one matrix of
// out x in (default 8192 x 2048, 16M weights: larger than the caches, so each call streams it from
// memory as a model's layers do), random blocks with finite scales, int8 activations of R rows;
// prints the best of N calls as milliseconds and GMAC/s (rows x out x in / time), single thread.
// A measurement tool, not a test: it checks nothing.
#include "ckernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t state = 42;
static uint32_t rnd(void) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(state >> 33);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/// Random raw bytes with every f16 field of a block (at the given offsets) set to a small finite value.
static void *weights(int fmt, int64_t out, int64_t in, int64_t block_bytes, const int *f16_at, int n16) {
    const size_t size = ck_raw_size(fmt, out, in);
    uint8_t *w = malloc(size);
    for (size_t i = 0; i < size; i++) w[i] = (uint8_t)rnd();
    const uint16_t small = ck_f32_to_f16(0.001f);
    for (size_t b = 0; b < size / (size_t)block_bytes; b++)
        for (int k = 0; k < n16; k++) memcpy(w + b * (size_t)block_bytes + f16_at[k], &small, 2);
    return w;
}

int main(int argc, char **argv) {
    const int64_t out = argc > 1 ? atoll(argv[1]) : 8192, in = argc > 2 ? atoll(argv[2]) : 2048;
    const int reps = 15;
    struct { int fmt; const char *name; int64_t bb; int f16[2]; int n16; } fmts[] = {
        {CK_Q4_0, "Q4_0", 18, {0}, 1},  {CK_Q4_1, "Q4_1", 20, {0, 2}, 2},  {CK_Q8_0, "Q8_0", 34, {0}, 1},
        {CK_Q5_0, "Q5_0", 22, {0}, 1},  {CK_Q5_1, "Q5_1", 24, {0, 2}, 2},  {CK_Q2_K, "Q2_K", 84, {80, 82}, 2},
        {CK_Q3_K, "Q3_K", 110, {108}, 1}, {CK_Q4_K, "Q4_K", 144, {0, 2}, 2}, {CK_Q5_K, "Q5_K", 176, {0, 2}, 2},
        {CK_Q6_K, "Q6_K", 210, {208}, 1},
    };
    const int64_t rows_list[] = {1, 4, 16};
    const int64_t max_rows = 16, ldq = in, ldb = in / 32;
    int8_t *q = malloc((size_t)(max_rows * ldq));
    float *d = malloc((size_t)(max_rows * ldb) * 4), *s = malloc((size_t)(max_rows * ldb) * 4);
    float *h = malloc((size_t)(max_rows * 2 * ldb) * 4), *x = malloc((size_t)(max_rows * in) * 4);
    int32_t *c = malloc((size_t)(max_rows * ldb) * 4);
    for (int64_t i = 0; i < max_rows * in; i++) x[i] = (float)((int)(rnd() % 2001) - 1000) / 1000.0f;
    float *y = malloc((size_t)(max_rows * out) * 4);
    printf("matmul %lld x %lld, one thread, best of %d; ms (GMAC/s)\n", (long long)out, (long long)in, reps);
    printf("%-7s %-6s %10s %7s", "set", "format", "MiB", "");
    for (int ri = 0; ri < 3; ri++) printf("  rows %-2lld           ", (long long)rows_list[ri]);
    printf("\n");
    const int sets[] = {CK_SET_AVX512, CK_SET_AVX2, CK_SET_NEON};
    for (int si = 0; si < 3; si++) {
        if (!ck_kernels_supported(sets[si])) continue;
        const ck_kernels *k = ck_kernels_get(sets[si]);
        for (size_t fi = 0; fi < sizeof fmts / sizeof fmts[0]; fi++) {
            void *raw = weights(fmts[fi].fmt, out, in, fmts[fi].bb, fmts[fi].f16, fmts[fi].n16);
            const size_t psize = ck_packed_size(fmts[fi].fmt, out, in);
            void *packed = aligned_alloc(64, (psize + 63) / 64 * 64);
            ck_pack(fmts[fi].fmt, raw, out, in, packed);
            printf("%-7s %-6s %10.1f %7s", ck_kernels_name(sets[si]), fmts[fi].name, (double)psize / 1048576.0, "");
            for (int ri = 0; ri < 3; ri++) {
                const int64_t rows = rows_list[ri];
                ck_acts a = {q, d, s, c, x, ldq, ldb, in, rows, in, h};
                ck_quantize_rows(k, x, in, 0, rows, in, &a);
                double best = 1e30;
                for (int r = 0; r < reps; r++) {
                    const double t0 = now();
                    ck_matmul(k, fmts[fi].fmt, packed, out, in, &a, 0, out, y, out);
                    const double t = now() - t0;
                    if (t < best) best = t;
                }
                printf("  %7.3f (%7.1f)", best * 1e3, (double)rows * (double)out * (double)in / best * 1e-9);
            }
            printf("\n");
            free(packed);
            free(raw);
        }
    }
    return 0;
}
