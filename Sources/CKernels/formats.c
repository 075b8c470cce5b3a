// Formats shared by every kernel set: half <-> float conversion (scalar), weight packing and
// dequantization. The packed layout is described in matmul_scalar.c.
#include "ckernels.h"
#include "internal.h"
#include <stdlib.h>
#include <string.h>

float ck_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F;
    uint32_t man = h & 0x3FF;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  // subnormal: normalise
            int e = -1;
            do { man <<= 1; e++; } while ((man & 0x400) == 0);
            man &= 0x3FF;
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t ck_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    const uint32_t a = x & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return sign | 0x7E00 | (uint16_t)((a >> 13) & 0x3FF);  // NaN stays (quiet) NaN
    if (a >= 0x47800000u) return sign | 0x7C00;                                // >= 65536: infinity
    if (a < 0x38800000u) {                                                     // below 2^-14: subnormal
        if (a <= 0x33000000u) return sign;                                     // <= 2^-25 rounds to 0
        const uint32_t e = a >> 23, m = (a & 0x7FFFFFu) | 0x800000u;
        const uint32_t shift = 126 - e, u = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        return sign | (uint16_t)(u + (rem > half || (rem == half && (u & 1))));
    }
    uint32_t h = (a - 0x38000000u) >> 13;  // rebias the exponent (127 -> 15), keep 10 mantissa bits
    const uint32_t rem = a & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;  // may carry into the exponent: still right
    return sign | (uint16_t)h;
}

static int64_t raw_block_bytes(int fmt) {
    switch (fmt) {
    case CK_Q4_0: return 18;
    case CK_Q4_1: return 20;
    case CK_Q8_0: return 34;
    case CK_Q5_0: return 22;
    case CK_Q5_1: return 24;
    case CK_Q2_K: return 84;
    case CK_Q3_K: return 110;
    case CK_Q4_K: return 144;
    case CK_Q5_K: return 176;
    case CK_Q6_K: return 210;
    case CK_IQ4_NL: return 18;
    default: return 0;
    }
}

/// Values per raw ggml block.
static int64_t raw_block_values(int fmt) { return fmt >= CK_Q2_K && fmt <= CK_Q6_K ? 256 : 32; }

size_t ck_raw_size(int fmt, int64_t out, int64_t in) {
    switch (fmt) {
    case CK_F32: return (size_t)(out * in * 4);
    case CK_F16: case CK_BF16: return (size_t)(out * in * 2);
    default: return (size_t)(out * (in / raw_block_values(fmt)) * raw_block_bytes(fmt));
    }
}

int ck_compute_format(int fmt) { return fmt == CK_BF16 ? CK_F32 : fmt == CK_IQ4_NL ? CK_Q8_0 : fmt; }

/// IQ4_NL's table of values (ggml's kvalues_iq4nl).
static const int8_t iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

size_t ck_packed_size(int fmt, int64_t out, int64_t in) {
    fmt = ck_compute_format(fmt);  // BF16 is packed as F32, IQ4_NL as Q8_0
    switch (fmt) {
    case CK_F32: return (size_t)(out * in * 4);
    case CK_F16: return (size_t)(out * in * 2);
    default: return (size_t)(ck_ngroups(out) * ck_group_stride(fmt, in));
    }
}

// ------------------------------------------------------------------ kq formats: raw ggml blocks
//
// kq_decode turns one raw ggml block (32 values for Q5_0/Q5_1, 256 for the K-quants) into unsigned
// values u[i] and one (scale, min) per 16 values, with value[i] = u[i] * scale + min computed in f32
// exactly as gguf's dequantize computes it (the products are exact in f32 and the one rounding is
// the same; where min = -K scale, dequantization computes (u - K) * scale, gguf's own expression,
// so even the sign of a zero agrees), so dequantization matches gguf bit for bit:
//   Q5_0: u = 5-bit q,       scale = d,            min = -16 d           (d (q - 16))
//   Q5_1: u = 5-bit q,       scale = d,            min = m
//   Q2_K: u = 2-bit q,       scale = d sc,         min = -(dmin m)       (4-bit sc, m per 16)
//   Q3_K: u = q + 4 (0..7),  scale = d (sc - 32),  min = -4 scale        (6-bit sc per 16)
//   Q4_K: u = 4-bit q,       scale = d sc,         min = -(dmin m)       (6-bit sc, m per 32)
//   Q5_K: u = 5-bit q,       scale = d sc,         min = -(dmin m)       (6-bit sc, m per 32)
//   Q6_K: u = 6-bit q,       scale = d sc,         min = -32 scale       (int8 sc per 16)

/// One dequantized kq value: (u - K) * scale where the format's minimum is -K * scale (gguf's own
/// expression, so even a zero's sign agrees), else u * scale + min.
static inline float kq_dequant(int off, int u, float scale, float min) {
    if (off) return (float)(u - off) * scale;
    const float v = (float)u * scale;
    return v + min;
}

/// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block's 12 scale bytes.
static void k4_scale_min(const uint8_t *q, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/// For the compact formats (ck_kq_compact) also the integer scales sc[16] and the raw f16 d, where
/// `isc` is not NULL (scale[j] = d * sc[j]).
static void kq_decode(int fmt, const uint8_t *blk, uint8_t *u, float *scale, float *min, int8_t *isc, uint16_t *dbits) {
    switch (fmt) {
    case CK_Q5_0:
    case CK_Q5_1: {
        const float d = ck_f16_to_f32(ck_rd16(blk));
        const int off = fmt == CK_Q5_1 ? 4 : 2;
        const uint32_t qh = ck_rd32_u(blk + off);
        const uint8_t *qs = blk + off + 4;
        for (int i = 0; i < 16; i++) {
            u[i] = (uint8_t)((qs[i] & 0xF) | (((qh >> i) & 1u) << 4));
            u[i + 16] = (uint8_t)((qs[i] >> 4) | (((qh >> (i + 16)) & 1u) << 4));
        }
        const float m = fmt == CK_Q5_1 ? ck_f16_to_f32(ck_rd16(blk + 2)) : -16.0f * d;
        for (int h = 0; h < 2; h++) {
            scale[h] = d;
            min[h] = m;
        }
        break;
    }
    case CK_Q2_K: {
        const uint8_t *sc = blk, *qs = blk + 16;
        const float d = ck_f16_to_f32(ck_rd16(blk + 80)), dmin = ck_f16_to_f32(ck_rd16(blk + 82));
        for (int i = 0; i < 256; i++) {
            const int h = i / 128, s = (i % 128) / 32, l = i % 32;
            u[i] = (uint8_t)((qs[h * 32 + l] >> (2 * s)) & 3);
        }
        for (int j = 0; j < 16; j++) {
            scale[j] = d * (float)(sc[j] & 0xF);
            min[j] = -(dmin * (float)(sc[j] >> 4));
        }
        break;
    }
    case CK_Q3_K: {
        const uint8_t *hm = blk, *qs = blk + 32, *sc = blk + 96;
        const float d = ck_f16_to_f32(ck_rd16(blk + 108));
        for (int i = 0; i < 256; i++) {
            const int h = i / 128, s = (i % 128) / 32, l = i % 32;
            const int low = (qs[h * 32 + l] >> (2 * s)) & 3;
            const int high = (hm[l] >> (i / 32)) & 1;  // set: q = low; clear: q = low - 4
            u[i] = (uint8_t)(low + 4 * high);
        }
        for (int j = 0; j < 16; j++) {
            const int lo = j < 8 ? sc[j] & 0xF : sc[j - 8] >> 4;
            const int hi = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
            scale[j] = d * (float)((lo | (hi << 4)) - 32);
            min[j] = -4.0f * scale[j];
            if (isc) isc[j] = (int8_t)((lo | (hi << 4)) - 32);
        }
        if (dbits) *dbits = ck_rd16(blk + 108);
        break;
    }
    case CK_Q4_K:
    case CK_Q5_K: {
        const float d = ck_f16_to_f32(ck_rd16(blk)), dmin = ck_f16_to_f32(ck_rd16(blk + 2));
        const uint8_t *scb = blk + 4;
        const uint8_t *qh = blk + 16, *qs = blk + (fmt == CK_Q5_K ? 48 : 16);
        for (int i = 0; i < 256; i++) {
            const int c = i / 64, s = (i % 64) / 32, l = i % 32;
            int v = (qs[c * 32 + l] >> (4 * s)) & 0xF;
            if (fmt == CK_Q5_K) v |= ((qh[l] >> (i / 32)) & 1) << 4;
            u[i] = (uint8_t)v;
        }
        for (int j = 0; j < 8; j++) {
            int sc, m;
            k4_scale_min(scb, j, &sc, &m);
            for (int h = 0; h < 2; h++) {
                scale[2 * j + h] = d * (float)sc;
                min[2 * j + h] = -(dmin * (float)m);
            }
        }
        break;
    }
    case CK_Q6_K: {
        const uint8_t *ql = blk, *qh = blk + 128;
        const int8_t *sc = (const int8_t *)(blk + 192);
        const float d = ck_f16_to_f32(ck_rd16(blk + 208));
        for (int i = 0; i < 256; i++) {
            const int h = i / 128, r = i % 128;
            const int low = (ql[h * 64 + r % 64] >> (4 * (r / 64))) & 0xF;
            const int high = (qh[h * 32 + r % 32] >> (2 * (r / 32))) & 3;
            u[i] = (uint8_t)(low | (high << 4));
        }
        for (int j = 0; j < 16; j++) {
            scale[j] = d * (float)sc[j];
            min[j] = -32.0f * scale[j];
            if (isc) isc[j] = sc[j];
        }
        if (dbits) *dbits = ck_rd16(blk + 208);
        break;
    }
    }
}

/// Writes one 32-value block (values u[0..31], per-half scale/min, or for the compact formats the
/// per-half integer scales isc) into lane l of a packed kq block.
static void kq_put(int fmt, uint8_t *w, int l, const uint8_t *u, const float *scale, const float *min, const int8_t *isc) {
    const int bits = ck_kq_bits(fmt), halves = ck_kq_halves(fmt);
    uint32_t plane[2] = {0, 0};
    for (int i = 0; i < 32; i++) {
        const int half = i >> 4, j = (i & 15) >> 2, t = i & 3;
        uint8_t *nib = w + j * 64 + l * 4 + t;
        *nib = half ? (uint8_t)((*nib & 0x0F) | ((u[i] & 0xF) << 4)) : (uint8_t)((*nib & 0xF0) | (u[i] & 0xF));
        const int bit = 8 * t + 4 * half + j;
        plane[0] |= (uint32_t)((u[i] >> 4) & 1) << bit;
        plane[1] |= (uint32_t)((u[i] >> 5) & 1) << bit;
    }
    for (int p = 0; p < bits - 4; p++) memcpy(w + 256 + 64 * p + l * 4, &plane[p], 4);
    if (ck_kq_compact(fmt)) {  // int8 sc [2][16]; d goes after the group's blocks (kq_pack)
        int8_t *sc = (int8_t *)(w + ck_kq_wbytes(fmt));
        sc[l] = isc[0];
        sc[16 + l] = isc[1];
        return;
    }
    float *sc = (float *)(w + ck_kq_wbytes(fmt));
    float *mn = sc + (halves ? 32 : 16);
    for (int h = 0; h < (halves ? 2 : 1); h++) {
        sc[h * 16 + l] = scale[h];
        if (!ck_kq_offset(fmt)) mn[h * 16 + l] = min[h];  // else min = -K * scale, computed by the kernels
    }
}

static void kq_pack(int fmt, const uint8_t *s, int64_t out, int64_t in, uint8_t *d) {
    const int64_t nb = in / CK_QK, rb = raw_block_bytes(fmt), rv = raw_block_values(fmt);
    const int64_t bb = ck_kq_block_bytes(fmt), gs = ck_group_stride(fmt, in);
    uint8_t u[256];
    float scale[16], min[16];
    int8_t isc[16];
    uint16_t dbits = 0;
    for (int64_t o = 0; o < out; o++) {
        const int64_t g = o / CK_GROUP, l = o % CK_GROUP;
        for (int64_t r = 0; r < in / rv; r++) {
            kq_decode(fmt, s + (o * (in / rv) + r) * rb, u, scale, min, isc, &dbits);
            if (ck_kq_compact(fmt)) memcpy(d + g * gs + nb * bb + 2 * (r * 16 + l), &dbits, 2);
            for (int64_t k = 0; k < rv / CK_QK; k++) {
                const int64_t b = r * (rv / CK_QK) + k;
                kq_put(fmt, d + g * gs + b * bb, (int)l, u + 32 * k, scale + 2 * k, min + 2 * k, isc + 2 * k);
            }
        }
    }
}

void ck_pack(int fmt, const void *src, int64_t out, int64_t in, void *dst) {
    if (fmt == CK_F32 || fmt == CK_F16) {
        memcpy(dst, src, ck_packed_size(fmt, out, in));
        return;
    }
    if (fmt == CK_BF16) {  // widened to f32: the top 16 bits of a float (exact)
        const uint16_t *h = (const uint16_t *)src;
        uint32_t *f = (uint32_t *)dst;
        for (int64_t i = 0; i < out * in; i++) f[i] = (uint32_t)h[i] << 16;
        return;
    }
    if (ck_is_kq(fmt)) {
        memset(dst, 0, ck_packed_size(fmt, out, in));
        kq_pack(fmt, (const uint8_t *)src, out, in, (uint8_t *)dst);
        return;
    }
    if (fmt == CK_IQ4_NL) {  // the table's int8 values as Q8_0 blocks (same d), then packed as Q8_0
        const int64_t blocks = out * (in / CK_QK);
        uint8_t *q8 = (uint8_t *)malloc((size_t)(blocks * 34));
        for (int64_t b = 0; b < blocks; b++) {
            const uint8_t *blk = (const uint8_t *)src + b * 18;
            uint8_t *o = q8 + b * 34;
            memcpy(o, blk, 2);
            for (int i = 0; i < 16; i++) {
                o[2 + i] = (uint8_t)iq4nl_values[blk[2 + i] & 0xF];
                o[18 + i] = (uint8_t)iq4nl_values[blk[2 + i] >> 4];
            }
        }
        ck_pack(CK_Q8_0, q8, out, in, dst);
        free(q8);
        return;
    }
    const uint8_t *s = (const uint8_t *)src;
    uint8_t *d = (uint8_t *)dst;
    const int64_t nb = in / CK_QK, rb = raw_block_bytes(fmt), wb = ck_wbytes(fmt);
    const int64_t gs = ck_group_stride(fmt, in);
    memset(d, 0, ck_packed_size(fmt, out, in));
    for (int64_t o = 0; o < out; o++) {
        const int64_t g = o / CK_GROUP, l = o % CK_GROUP;
        uint8_t *base = d + g * gs;
        uint16_t *dd = (uint16_t *)(base + nb * wb);
        uint16_t *mm = dd + nb * CK_GROUP;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = s + (o * nb + b) * rb;
            uint8_t *w = base + b * wb;
            dd[b * CK_GROUP + l] = ck_rd16(blk);
            if (fmt == CK_Q8_0) {
                const int8_t *q = (const int8_t *)(blk + 2);
                for (int j = 0; j < 8; j++)
                    for (int t = 0; t < 4; t++)
                        w[j * 64 + l * 4 + t] = (uint8_t)(q[4 * j + t] ^ 0x80);
            } else {
                const uint8_t *q = blk + (fmt == CK_Q4_1 ? 4 : 2);
                if (fmt == CK_Q4_1) mm[b * CK_GROUP + l] = ck_rd16(blk + 2);
                for (int j = 0; j < 4; j++)
                    for (int t = 0; t < 4; t++)
                        w[j * 64 + l * 4 + t] = q[4 * j + t];
            }
        }
    }
}

void ck_dequant_row(int fmt, const void *packed, int64_t out, int64_t in, int64_t r, float *dst) {
    (void)out;
    fmt = ck_compute_format(fmt);
    if (fmt == CK_F32 || fmt == CK_BF16) {
        memcpy(dst, (const float *)packed + r * in, (size_t)in * 4);
        return;
    }
    if (fmt == CK_F16) {
        const uint16_t *h = (const uint16_t *)packed + r * in;
        for (int64_t i = 0; i < in; i++) dst[i] = ck_f16_to_f32(h[i]);
        return;
    }
    if (ck_is_kq(fmt)) {
        const int64_t bb = ck_kq_block_bytes(fmt), nb = in / CK_QK;
        const int bits = ck_kq_bits(fmt), halves = ck_kq_halves(fmt), off = ck_kq_offset(fmt);
        const int l = (int)(r % CK_GROUP);
        const uint8_t *base = (const uint8_t *)packed + (r / CK_GROUP) * ck_group_stride(fmt, in);
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *w = base + b * bb;
            for (int i = 0; i < 32; i++) {
                const int h = halves ? i >> 4 : 0;
                dst[b * CK_QK + i] = kq_dequant(off, ck_kq_value(w, bits, l, i), ck_kq_scale(fmt, base, nb, b, h, l),
                                                off ? 0.0f : ck_kq_stored_min(fmt, base, b, h, l));
            }
        }
        return;
    }
    const int64_t nb = in / CK_QK, wb = ck_wbytes(fmt);
    const int64_t g = r / CK_GROUP, l = r % CK_GROUP;
    const uint8_t *base = (const uint8_t *)packed + g * ck_group_stride(fmt, in);
    const uint16_t *dd = (const uint16_t *)(base + nb * wb);
    const uint16_t *mm = dd + nb * CK_GROUP;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *w = base + b * wb;
        const float d = ck_f16_to_f32(dd[b * CK_GROUP + l]);
        float *y = dst + b * CK_QK;
        if (fmt == CK_Q8_0) {
            for (int j = 0; j < 8; j++)
                for (int t = 0; t < 4; t++)
                    y[4 * j + t] = (float)(int8_t)(w[j * 64 + l * 4 + t] ^ 0x80) * d;
        } else {
            for (int j = 0; j < 4; j++)
                for (int t = 0; t < 4; t++) {
                    const uint8_t q = w[j * 64 + l * 4 + t];
                    if (fmt == CK_Q4_1) {
                        const float m = ck_f16_to_f32(mm[b * CK_GROUP + l]);
                        y[4 * j + t] = (float)(q & 0x0F) * d + m;
                        y[16 + 4 * j + t] = (float)(q >> 4) * d + m;
                    } else {
                        y[4 * j + t] = (float)((q & 0x0F) - 8) * d;
                        y[16 + 4 * j + t] = (float)((q >> 4) - 8) * d;
                    }
                }
        }
    }
}

void ck_dequant_raw_row(int fmt, const void *raw, int64_t in, int64_t r, float *dst) {
    if (fmt == CK_F32 || fmt == CK_F16) {
        ck_dequant_row(fmt, raw, 0, in, r, dst);
        return;
    }
    if (fmt == CK_BF16) {
        const uint16_t *h = (const uint16_t *)raw + r * in;
        for (int64_t i = 0; i < in; i++) {
            const uint32_t bits = (uint32_t)h[i] << 16;
            memcpy(dst + i, &bits, 4);
        }
        return;
    }
    if (fmt == CK_IQ4_NL) {
        for (int64_t b = 0; b < in / CK_QK; b++) {
            const uint8_t *blk = (const uint8_t *)raw + (r * (in / CK_QK) + b) * 18;
            const float d = ck_f16_to_f32(ck_rd16(blk));
            for (int i = 0; i < 16; i++) {
                dst[b * CK_QK + i] = (float)iq4nl_values[blk[2 + i] & 0xF] * d;
                dst[b * CK_QK + 16 + i] = (float)iq4nl_values[blk[2 + i] >> 4] * d;
            }
        }
        return;
    }
    if (ck_is_kq(fmt)) {
        const int64_t rb = raw_block_bytes(fmt), rv = raw_block_values(fmt);
        uint8_t u[256];
        float scale[16], min[16];
        for (int64_t k = 0; k < in / rv; k++) {
            kq_decode(fmt, (const uint8_t *)raw + (r * (in / rv) + k) * rb, u, scale, min, NULL, NULL);
            for (int64_t i = 0; i < rv; i++) dst[k * rv + i] = kq_dequant(ck_kq_offset(fmt), u[i], scale[i / 16], min[i / 16]);
        }
        return;
    }
    const int64_t nb = in / CK_QK, rb = raw_block_bytes(fmt);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = (const uint8_t *)raw + (r * nb + b) * rb;
        const float d = ck_f16_to_f32(ck_rd16(blk));
        float *y = dst + b * CK_QK;
        if (fmt == CK_Q8_0) {
            for (int i = 0; i < 32; i++) y[i] = (float)((const int8_t *)(blk + 2))[i] * d;
        } else if (fmt == CK_Q4_0) {
            for (int i = 0; i < 16; i++) {
                y[i] = (float)((blk[2 + i] & 0x0F) - 8) * d;
                y[i + 16] = (float)((blk[2 + i] >> 4) - 8) * d;
            }
        } else {
            const float m = ck_f16_to_f32(ck_rd16(blk + 2));
            for (int i = 0; i < 16; i++) {
                y[i] = (float)(blk[4 + i] & 0x0F) * d + m;
                y[i + 16] = (float)(blk[4 + i] >> 4) * d + m;
            }
        }
    }
}
