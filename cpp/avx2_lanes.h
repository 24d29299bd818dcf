// Small helpers for the AVX2 translation units (conv_direct.cpp, skinny_gemm.cpp). Only
// files compiled with AVX2 code generation include this; everything is internal to each.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace graphnet {
namespace {

// Lanes 0 .. valid-1 set (valid may be anything; <= 0 sets none, >= 8 sets all).
inline __m256i first_lanes(int64_t valid) {
    const int64_t clipped = valid < 0 ? 0 : (valid > 8 ? 8 : valid);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(clipped)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

}  // namespace
}  // namespace graphnet
