// Formats shared by every kernel set: half <-> float conversion (scalar), weight packing and
// dequantization. The packed layout is described in matmul_scalar.c.
#include "ckernels.h"
#include "internal.h"
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
    default: return 0;
    }
}

size_t ck_raw_size(int fmt, int64_t out, int64_t in) {
    switch (fmt) {
    case CK_F32: return (size_t)(out * in * 4);
    case CK_F16: return (size_t)(out * in * 2);
    default: return (size_t)(out * (in / CK_QK) * raw_block_bytes(fmt));
    }
}

size_t ck_packed_size(int fmt, int64_t out, int64_t in) {
    switch (fmt) {
    case CK_F32: return (size_t)(out * in * 4);
    case CK_F16: return (size_t)(out * in * 2);
    default: return (size_t)(ck_ngroups(out) * ck_group_stride(fmt, in));
    }
}

void ck_pack(int fmt, const void *src, int64_t out, int64_t in, void *dst) {
    if (fmt == CK_F32 || fmt == CK_F16) {
        memcpy(dst, src, ck_packed_size(fmt, out, in));
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
    if (fmt == CK_F32) {
        memcpy(dst, (const float *)packed + r * in, (size_t)in * 4);
        return;
    }
    if (fmt == CK_F16) {
        const uint16_t *h = (const uint16_t *)packed + r * in;
        for (int64_t i = 0; i < in; i++) dst[i] = ck_f16_to_f32(h[i]);
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
