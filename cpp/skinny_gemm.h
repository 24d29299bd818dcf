// float32 C = A * B for a small C and a long inner dimension, on AVX2 + FMA: the affine
// gate's forward (batch x 8192 times 8192 x 100 in the CIFAR net).
//
// OpenBLAS runs that shape at a third of its usual rate here (about 16 GFLOP/s a core
// against 43 for a 2048-square product): the rows of A lie a power of two of bytes apart
// (8192 floats), so the panel it packs from them keeps evicting itself from the cache.
// This kernel reads A in place, four rows at a time, and B one cache-sized block of its
// rows at a time.
//
// Like conv_direct.h: compiled for AVX2, no library headers, call only when
// skinny_gemm_available().
#pragma once

#include <cstdint>

namespace graphnet {

bool skinny_gemm_available();  // the CPU has AVX2 and FMA

// Rows [row_begin, row_end) of row-major C (m x n, leading dimension n) = A (m x k, lda) *
// B (k x n, ldb). Each element's sum runs over k in the same order whatever the row range,
// so splitting the rows across threads does not change the result.
void skinny_gemm_rows(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                      const float* a, int64_t lda, const float* b, int64_t ldb, float* c);

}  // namespace graphnet
