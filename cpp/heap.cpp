#include "heap.h"

#include <cstdlib>  // defines __GLIBC__ where glibc is the C library
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace graphnet {

bool keep_freed_memory() {
#if defined(__GLIBC__)
    const char* opt_out = std::getenv("GRAPHNET_RETURN_FREED_MEMORY");
    if (opt_out != nullptr && *opt_out != '\0' && *opt_out != '0') return false;
    constexpr int kKeptBytes = 1 << 30;
    const bool mapped = mallopt(M_MMAP_THRESHOLD, kKeptBytes) == 1;
    const bool trimmed = mallopt(M_TRIM_THRESHOLD, kKeptBytes) == 1;
    return mapped && trimmed;
#else
    return false;
#endif
}

}  // namespace graphnet
