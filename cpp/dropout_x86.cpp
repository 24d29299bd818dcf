// dropout_loops.h's loop compiled for AVX2 (four 64-bit lanes; their 64-bit multiply is made
// of 32-bit ones) and for AVX-512 with AVX512DQ (eight lanes and their multiply, vpmullq):
// the loop is inlined into each function below, which the compiler vectorises for that
// function's target. (Plain functions: GCC 12 vectorises a function template with a target
// attribute for the default target.) The portable code calls them only where the CPU has
// the instructions (dropout.cpp).
#include "dropout_isa.h"
#include "dropout_loops.h"

namespace graphnet {

#define GRAPHNET_DROPOUT_ELEMENTS(name, isa, T)                                               \
    __attribute__((target(isa))) void name(int64_t begin, int64_t end, uint64_t key,          \
                                           uint64_t threshold, T scale, const T* x, T* out,   \
                                           T* mask) {                                         \
        dropout_elements(begin, end, key, threshold, scale, x, out, mask);                    \
    }
GRAPHNET_DROPOUT_ELEMENTS(dropout_elements_avx2, "avx2", float)
GRAPHNET_DROPOUT_ELEMENTS(dropout_elements_avx2, "avx2", double)
GRAPHNET_DROPOUT_ELEMENTS(dropout_elements_avx512, "avx512f,avx512dq", float)
GRAPHNET_DROPOUT_ELEMENTS(dropout_elements_avx512, "avx512f,avx512dq", double)
#undef GRAPHNET_DROPOUT_ELEMENTS

}  // namespace graphnet
