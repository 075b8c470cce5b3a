// zlib for the HTTP target's gzip coding. The inline wrappers expose deflateInit2/inflateInit2,
// which zlib defines as macros (Swift imports functions, not function-like macros).
#ifndef CASTSERVE_CZLIB_SHIM_H
#define CASTSERVE_CZLIB_SHIM_H

#include <zlib.h>

/// A gzip-wrapped deflate stream (window bits 15 + 16), memory level 8, default strategy.
static inline int castserve_deflate_init_gzip(z_streamp stream, int level) {
    return deflateInit2(stream, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
}

/// An inflate stream that accepts only the gzip wrapper (window bits 15 + 16).
static inline int castserve_inflate_init_gzip(z_streamp stream) {
    return inflateInit2(stream, 15 + 16);
}

#endif
