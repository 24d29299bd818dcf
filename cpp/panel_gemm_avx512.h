// float32 C (m x n) (+)= A (m x k) * B on AVX-512, for the recurrent kernels' per-step
// products: x_t (N x D) times Wx (D x 4H) and prev_h (N x H) times Wh (H x 4H) forward,
// da (N x 4H) times Wh^T and Wx^T backward.
//
// OpenBLAS packs B into its own buffer on every call; B is the same weight matrix at every
// one of the T steps, so the kernels pack it once (pack_panels) and this multiplies from
// the packed copy (measured: 64 x 512 x 2048 in docs/performance/kernels.md, LSTM language
// model).
//
// Like skinny_gemm.h: compiled for AVX-512F, no library headers, call only when
// cpu_has_avx512f().
#pragma once

#include <cstdint>

namespace graphnet {

// Columns per panel of the packed B.
constexpr int64_t kPanelColumns = 32;

// Columns [c0, c1) of C (leading dimension ldc; c0 a multiple of kPanelColumns) = or +=
// (accumulate) A (m x k, leading dimension lda) * B, B packed by pack_panels. Each
// element's sum runs over k in order, whatever the block of columns or rows, so splitting
// the columns across threads does not change the result.
void panel_gemm_avx512(int64_t m, int64_t c0, int64_t c1, int64_t k, const float* a,
                       int64_t lda, const float* packed, bool accumulate, float* c,
                       int64_t ldc);

// Columns [c0, c1) of C (m x n, leading dimension ldc) += A^T B, A (k x m, leading dimension
// lda) and B (k x n, leading dimension ldb) as they are, unpacked: the per-step sums of
// the weights' gradients, x_t^T da_t and prev_h_t^T da_t over the N rows of one step
// (k = N), while da_t is in cache. C's tiles are loaded, added to over k in order (in
// chunks of 256) and stored: each element's sum runs in the same order whatever the block
// of columns.
void transposed_gemm_accumulate_avx512(int64_t m, int64_t c0, int64_t c1, int64_t k,
                                       const float* a, int64_t lda, const float* b,
                                       int64_t ldb, float* c, int64_t ldc);

}  // namespace graphnet
