#ifndef ALLOCATION_COUNTER_H
#define ALLOCATION_COUNTER_H
// Counts heap allocations of the whole process: an executable that links this target gets
// malloc, calloc, realloc, posix_memalign, aligned_alloc and memalign of its own (ELF symbol
// interposition), which count and then call glibc's. Only alloc-probe links it.
#include <stdint.h>

/// Allocations (malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign) since start, all threads.
int64_t allocation_count(void);

#endif
