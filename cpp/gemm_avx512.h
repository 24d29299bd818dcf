// C = A * B on AVX-512 for the affine layer's forward, float32 and float64: a batch of
// rows times a weight matrix of a few hundred columns or less over a long inner dimension
// (the course nets' 3072 features times 100 hidden units).
//
// OpenBLAS reaches about 105 GFLOP/s in float32 (55 in float64) on 256 x 3072 x 100 on
// this machine's AVX-512 core, PyTorch's BLAS 165 (92); this kernel 130 (70). It packs
// nothing: it reads B's rows in place, in column panels (128 inner indices x 48 floats or
// 24 doubles) that stay in L1 while every row tile of A passes over them. Measured and
// dropped: copying each panel to an aligned block first (B's rows are 400 bytes apart, so
// most loads straddle two cache lines), no faster at batch 256 and 1.4x slower at 16;
// deeper panels (512, 4096) slower; the weight gradient A^T * dout through the same kernel
// (broadcasts from A's columns) 1.5x slower than OpenBLAS (docs/performance/zoo.md).
//
// Like panel_gemm_avx512.h: compiled for AVX-512F, no library headers, call only when
// cpu_has_avx512f().
#pragma once

#include <cstdint>

namespace graphnet {

// Rows [row_begin, row_end) of C (leading dimension ldc) = A (m x k, lda) * B (k x n,
// ldb), all row-major, k > 0. Each element's sum runs over k in order whatever the rows
// asked for, so splitting the rows across threads does not change the result.
void gemm_rows_avx512(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                      const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                      int64_t ldc);
void gemm_rows_avx512(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                      const double* a, int64_t lda, const double* b, int64_t ldb, double* c,
                      int64_t ldc);

}  // namespace graphnet
