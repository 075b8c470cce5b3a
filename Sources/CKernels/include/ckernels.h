#ifndef CKERNELS_H
#define CKERNELS_H
// CKernels: C microkernels behind the Swift `Kernels` target.
//
// Kernels come in sets, one per instruction set: scalar (the plain-C reference every other set is
// tested against; it never serves when a SIMD set runs), avx2 (x86-64-v3: AVX2 + FMA + F16C),
// avx512 (AVX-512 with VNNI) and neon (ARMv8.2-A with the dot-product extension). A set is a table
// of function pointers (`ck_kernels`); every entry point below takes the table to use, so a
// process can run one set while a test compares another against the reference. The process-wide
// default (`ck_kernels_default`) is chosen once at start.
//
// Numerics, per set: every reduction has a fixed order that depends only on the operand values,
// never on how many rows share a call, where a row sits, or how work is split between threads, so a
// row's result never depends on its batch. The quantized matmuls, activation quantization, `dot`,
// `axpy`, `rmsnorm`, RoPE and the f16 conversions are bit-identical across all sets; softmax, SiLU,
// log-sum-exp and attention (which use exp) agree within a few float ulps.
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Weight formats (values match Swift's WeightFormat mapping in Kernels).
enum {
    CK_F32 = 0,
    CK_F16 = 1,
    CK_Q4_0 = 2,
    CK_Q4_1 = 3,
    CK_Q8_0 = 4,
    CK_Q5_0 = 5,
    CK_Q5_1 = 6,
    CK_Q2_K = 7,
    CK_Q3_K = 8,
    CK_Q4_K = 9,
    CK_Q5_K = 10,
    CK_Q6_K = 11,
    /// Stored widened to f32 at pack time (exact); computes as CK_F32.
    CK_BF16 = 12,
    /// IQ4_NL (f16 d + 16 bytes of 4-bit indices into a fixed table of int8 values): stored as Q8_0
    /// at pack time (the table's values, exact); computes as CK_Q8_0.
    CK_IQ4_NL = 13,
};

/// The format whose kernels compute a packed matrix of format `fmt` (BF16 -> F32, IQ4_NL -> Q8_0).
int ck_compute_format(int fmt);

/// Kernel sets.
enum {
    CK_SET_SCALAR = 0,
    CK_SET_AVX2 = 1,
    CK_SET_AVX512 = 2,
    CK_SET_NEON = 3,
    CK_SET_COUNT = 4,
};

/// Storage types of cached keys and values.
enum {
    CK_KV_F32 = 0,
    CK_KV_F16 = 1,
    /// Per row: the int8 values, then one f16 scale per 32 values (value = q * d).
    CK_KV_Q8_0 = 2,
};

/// Rows of a quantized matrix are processed in groups of this many (the packed layout
/// interleaves them; the last group is zero-padded).
#define CK_GROUP 16
/// Values per quantization block (ggml q4_0/q4_1/q8_0 and our int8 activations).
#define CK_QK 32

/// A kernel set: a table of function pointers (opaque here; see internal.h).
typedef struct ck_kernels ck_kernels;

/// The table of `set`, or NULL when this build has no such set (e.g. neon on x86-64).
const ck_kernels *ck_kernels_get(int set);
/// 1 when this CPU can run `set` (and the build has it).
int ck_kernels_supported(int set);
/// Writes the CPU features `set` needs that this CPU lacks (space-separated, NUL-terminated) into
/// buf and returns their count; 0 when the set can run. For a set this build lacks, writes why.
int ck_kernels_missing(int set, char *buf, size_t size);
/// The fastest set this CPU can run.
int ck_kernels_best(void);
/// The set a table belongs to, and its name ("scalar", "avx2", "avx512", "neon").
int ck_kernels_id(const ck_kernels *k);
const char *ck_kernels_name(int set);
/// The process-wide default table (initially the best set), and a way to change it (returns 0, or
/// -1 when the CPU cannot run `set`). Swift's `KernelSet.current`.
const ck_kernels *ck_kernels_default(void);
int ck_kernels_set_default(int set);

// ---------------------------------------------------------------------------------------------
// Half precision

/// Exact IEEE half -> float conversion (scalar).
float ck_f16_to_f32(uint16_t h);
/// IEEE float -> half, round to nearest even (overflow to infinity, subnormals kept, NaN stays NaN).
uint16_t ck_f32_to_f16(float f);
void ck_f16_to_f32_row(const ck_kernels *k, const uint16_t *x, float *y, int64_t n);
void ck_f32_to_f16_row(const ck_kernels *k, const float *x, uint16_t *y, int64_t n);

// ---------------------------------------------------------------------------------------------
// Weights (the packed layout is the same for every set; see matmul_scalar.c)

/// Bytes of a raw ggml matrix of this format and shape (rows of `in` values).
size_t ck_raw_size(int fmt, int64_t out, int64_t in);
/// Bytes of the packed (kernel) layout.
size_t ck_packed_size(int fmt, int64_t out, int64_t in);
/// Repacks raw ggml bytes into `dst` (ck_packed_size bytes, 64-byte aligned).
void ck_pack(int fmt, const void *src, int64_t out, int64_t in, void *dst);
/// Dequantizes output row r of a packed matrix into dst[0..<in].
void ck_dequant_row(int fmt, const void *packed, int64_t out, int64_t in, int64_t r, float *dst);
/// Dequantizes one row of a RAW ggml matrix (scalar reference, straight from the ggml block layout).
void ck_dequant_raw_row(int fmt, const void *raw, int64_t in, int64_t r, float *dst);

// ---------------------------------------------------------------------------------------------
// Activations: per row, int8 values q[k] plus per 32-block: d (scale, f32), s = d * sum(q) (f32),
// and c = 128 * sum(q) (int32, the offset correction of the u8 x s8 trick); and, when h is set, per
// 16-value half block: h = d * sum(q over the half) (f32; the K-quant formats with a scale and a
// minimum per 16 values read it).

typedef struct {
    int8_t *q;        ///< rows x ldq bytes
    float *d;         ///< rows x ldb
    float *s;         ///< rows x ldb
    int32_t *c;       ///< rows x ldb
    const float *x;   ///< rows x ldx f32 originals (for F32/F16 weights)
    int64_t ldq;      ///< bytes between rows of q
    int64_t ldb;      ///< elements between rows of d/s/c
    int64_t ldx;      ///< floats between rows of x
    int64_t rows;
    int64_t k;        ///< inFeatures
    float *h;         ///< rows x 2*ldb (half-block sums, see above); NULL when no weight needs them
} ck_acts;

/// Quantizes rows [r0, r1) of x (row stride ldx) into a: per 32-block d = amax/127,
/// q = round-to-nearest-even(x / d) (q = 0 when amax = 0). Requires k % 32 == 0.
void ck_quantize_rows(const ck_kernels *k, const float *x, int64_t ldx, int64_t r0, int64_t r1, int64_t n,
                      const ck_acts *a);

/// y[r*ldy + (o - out_lo)] = dot(act row r, weight row o) for o in [out_lo, out_hi), all rows of a.
/// Work is done per 16-row group; a caller splits [out_lo, out_hi) between threads on any boundary.
void ck_matmul(const ck_kernels *k, int fmt, const void *packed, int64_t out, int64_t in, const ck_acts *a,
               int64_t out_lo, int64_t out_hi, float *y, int64_t ldy);
typedef struct ck_pool ck_pool;
/// ck_matmul over [out_lo, out_hi) split into `chunks` contiguous runs of whole 16-row groups,
/// claimed by the pool's threads (the result does not depend on the split).
void ck_matmul_parallel(ck_pool *pool, int64_t chunks, const ck_kernels *k, int fmt, const void *packed, int64_t out,
                        int64_t in, const ck_acts *a, int64_t out_lo, int64_t out_hi, float *y, int64_t ldy);
/// Copies rows x n floats of x into a->x and, when `blocks`, quantizes them (rows split over the pool).
void ck_prepare_acts(ck_pool *pool, const ck_kernels *k, const float *x, int64_t ldx, int64_t rows, int64_t n,
                     const ck_acts *a, int blocks);
/// Scalar reference of ck_matmul for ONE (row, output) pair, reading the packed layout.
float ck_matmul_ref1(int fmt, const void *packed, int64_t out, int64_t in, const ck_acts *a,
                     int64_t row, int64_t o);

// ---------------------------------------------------------------------------------------------
// Elementwise / reductions

/// Sum of a[i] * b[i] in a fixed 16-lane order: lane l accumulates i % 16 == l with fused
/// multiply-adds in index order, then a fixed pairwise tree. Bit-identical in every set.
float ck_dot(const ck_kernels *k, const float *a, const float *b, int64_t n);
void ck_axpy(const ck_kernels *k, float alpha, const float *x, float *y, int64_t n);
/// y = x * (1 / sqrt(dot(x, x) / n + eps)) * w. y may alias x.
void ck_rmsnorm(const ck_kernels *k, const float *x, const float *w, int64_t n, float eps, float *y);
void ck_softmax(const ck_kernels *k, float *x, int64_t n);
/// The `top` largest of x[0..n) in descending order into ids/vals (ties: the lower index first;
/// top <= n), and returns log(sum(exp(x))), for turning them into probabilities.
float ck_logits_summary(const ck_kernels *k, const float *x, int64_t n, int top, int32_t *ids, float *vals);
/// g[i] = silu(g[i]) * u[i].
void ck_silu_mul(const ck_kernels *k, float *g, const float *u, int64_t n);
/// g[i] = gelu(g[i]) * u[i], GELU's tanh approximation (PyTorch `gelu_pytorch_tanh`), computed as
/// g / (1 + exp(-2 sqrt(2/pi) (g + 0.044715 g^3))) with the set's vector exp.
void ck_gelu_tanh_mul(const ck_kernels *k, float *g, const float *u, int64_t n);
/// RoPE angles of one position, as ggml's rope cache computes them: t_i = pos * theta^(-2i/head_dim)
/// by repeated multiplication in f32, angle_i = freq_scale * (t_i / factors[i]) (freq_scale: linear
/// scaling, 1 for none; factors: Llama 3's `rope_freqs`, head_dim/2 divisors, or NULL for none; with
/// 1 and NULL, angle_i = t_i exactly); cs/sn get the cos and sin of the head_dim/2 angles. The one
/// implementation of the angles (Swift's Ops.ropeAngles calls it).
void ck_rope_angles(int64_t pos, float theta, int64_t head_dim, float freq_scale, const float *factors, float *cs,
                    float *sn);
/// Rotates `heads` heads of `head_dim` values in place by the angles of ck_rope_angles. `neox`
/// pairs x[i] with x[i + head_dim/2] (GPT-NeoX style); otherwise x[2i] with x[2i+1] (llama).
void ck_rope(const ck_kernels *k, float *x, int64_t heads, int64_t head_dim, const float *cs, const float *sn, int neox);

/// Reads `bytes` bytes (a multiple of 32) as fast as the memory system allows and returns a value
/// that depends on all of them (a wrapping sum of 64-bit words): the benchmark's bandwidth probe.
uint64_t ck_read_sum(const void *p, int64_t bytes);

// ---------------------------------------------------------------------------------------------
// Thread pool: persistent workers that claim work items; see pool.c.

typedef void (*ck_task)(void *ctx, int64_t item, int64_t items);
ck_pool *ck_pool_create(int threads);
void ck_pool_destroy(ck_pool *p);
int ck_pool_threads(const ck_pool *p);
/// Runs fn(ctx, i, n) exactly once for each i in 0..<n, spread over the caller and the workers
/// (at most `threads` at once), and returns when all have finished.
void ck_pool_run(ck_pool *p, ck_task fn, void *ctx, int64_t n);

// ---------------------------------------------------------------------------------------------
// OpenBLAS (declared here so no cblas.h include path is needed).

void ck_sgemm(int transA, int transB, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);
void ck_blas_set_threads(int n);

// ---------------------------------------------------------------------------------------------
// Keys and values
//
// The unit of storage is a head row: the `head_dim` values of one key/value head at one position.
// CK_KV_F32 and CK_KV_F16 store the values; CK_KV_Q8_0 stores head_dim int8 values followed by one
// f16 scale per 32 (value = q * d). A full row (every head of a position, as the forward pass
// writes it) is its head rows one after another.

/// Bytes of one head row of `head_dim` values (head_dim % 32 == 0 for CK_KV_Q8_0).
int64_t ck_kv_row_bytes(int type, int64_t head_dim);
/// Stores n f32 values (n / head_dim heads) as consecutive head rows at dst. Q8_0 blocks use
/// d = amax / 127 (kept as f16) and q = round-to-nearest-even(x / d). Bit-identical in every set.
void ck_kv_store(const ck_kernels *k, int type, const float *x, int64_t n, int64_t head_dim, void *dst);
/// Reads one head row back as head_dim f32 values.
void ck_kv_load(int type, const void *row, int64_t head_dim, float *y);

/// One layer's keys and values of one sequence, for one key/value head. Cached position j
/// (j < n_cached; block_size a power of two) has its head row at
/// base + table[j / block_size] * block_stride + layer_offset
/// + (j % block_size) * row_bytes (keys from k_base, values from v_base: the cache keeps each head's
/// rows of a block together); step row c at k_chain[c] + chain_offset (v_chain likewise). Head rows
/// are `row_bytes` bytes of `type`.
typedef struct {
    int type;
    int64_t row_bytes;
    const uint8_t *k_base;
    const uint8_t *v_base;
    const int32_t *table;
    int64_t block_size;
    int64_t block_stride;
    int64_t layer_offset;
    int64_t n_cached;
    const uint8_t *const *k_chain;
    const uint8_t *const *v_chain;
    int64_t chain_offset;
    int64_t n_chain;
} ck_kv_view;

/// Attention of `group` query heads (q: [group][hd], contiguous) that share one key/value head,
/// over the view's cached rows followed by its chain rows. scores: scratch of
/// group * (n_cached + n_chain) floats. out: [group][hd]. Positions are reduced in order, so a row's
/// result never depends on the rest of the batch. group <= 64, hd <= 1024.
void ck_attend(const ck_kernels *k, const float *q, int64_t group, int64_t hd, float scale, const ck_kv_view *kv,
               float *scores, float *out);
/// The part of ck_attend over positions [begin, end) only, unnormalised: per query head g,
/// max_sum[2g] = m (the largest score), max_sum[2g + 1] = l (the sum of exp(score - m)) and
/// acc[g][*] = the sum of exp(score - m) * value. scores: scratch of group * (end - begin) floats.
/// ck_attend is one part [0, n) divided by l.
void ck_attend_range(const ck_kernels *k, const float *q, int64_t group, int64_t hd, float scale, const ck_kv_view *kv,
                     int64_t begin, int64_t end, float *scores, float *acc, float *max_sum);
/// Combines `parts` results of ck_attend_range over consecutive position ranges, in order:
/// acc: [parts][group][hd], max_sum: [parts][group][2]; out: [group][hd]. The same on every set.
void ck_attend_merge(int64_t group, int64_t hd, int64_t parts, const float *acc, const float *max_sum, float *out);

#ifdef __cplusplus
}
#endif
#endif
