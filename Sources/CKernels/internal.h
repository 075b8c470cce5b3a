// Private helpers shared by the CKernels translation units.
#ifndef CK_INTERNAL_H
#define CK_INTERNAL_H
#include <stdint.h>

#define CK_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,f16c,fma")))

int ck_cpu_has_vnni(void);

/// Bytes of packed quant values per block of a 16-row group (low/high nibbles or u8 values).
static inline int64_t ck_wbytes(int fmt) { return fmt == 4 /* CK_Q8_0 */ ? 512 : 256; }
/// Bytes of per-block scale data per 16-row group: f16 d (and f16 m for Q4_1).
static inline int64_t ck_sbytes(int fmt) { return fmt == 3 /* CK_Q4_1 */ ? 64 : 32; }
static inline int64_t ck_group_stride(int fmt, int64_t in) {
    return (in / 32) * (ck_wbytes(fmt) + ck_sbytes(fmt));
}
static inline int64_t ck_ngroups(int64_t out) { return (out + 15) / 16; }

#endif
