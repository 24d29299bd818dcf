// float32 C = A * B for a small C and a long inner dimension, on AVX2 + FMA: the affine
// gate's forward (batch x 8192 times 8192 x 100 in the CIFAR net).
//
// OpenBLAS's time on that shape depends on the history of its internal buffers: 3.7 ms
// in a fresh process, 1.5 ms after some other products, 4.1 ms inside the training step
// (medians, 2 threads). This kernel takes 1.3 ms whatever ran before: it reads A in
// place, four rows at a time, against one L1-sized panel of B at a time.
//
// Like conv_direct.h: compiled for AVX2, no library headers, call only when
// cpu_has_avx2_fma().
#pragma once

#include <cstdint>

namespace graphnet {

// Rows [row_begin, row_end) of row-major C (m x n, leading dimension n) = A (m x k, lda) *
// B (k x n, ldb). Each element's sum runs over k in the same order whatever the row range,
// so splitting the rows across threads does not change the result.
void skinny_gemm_rows(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                      const float* a, int64_t lda, const float* b, int64_t ldb, float* c);

}  // namespace graphnet
