// Layernorm's float32 backward on AVX-512, for norm.cpp: in the AVX2 loops (norm_loops.h)
// each row's float64 sums compile to one scalar add an entry, each waiting on the last,
// and the row's shares of dgamma and dbeta are loaded and stored at every row (perf): on
// (2048, 64) three times PyTorch's float32 backward. (Their forward's sums vectorise: an
// AVX-512 copy of it ran no faster.)
//
// Compiled for AVX-512F, no library headers; call only when cpu_has_avx512f().
#pragma once

#include <cstdint>

namespace graphnet {

// `rows` rows of D entries (dout, x, dx at the first row; mean and inv_std at its entry),
// as norm_loops.h's rows_backward does a block of them: each row's sums of dout * gamma
// and of that times (x - mean) in float64, then its dx, in float32 with no fused
// multiply-add (relu: dout passes where the normalized entry, recomputed as the forward
// did, is positive); and the rows' shares of dgamma (dout * x_hat) and dbeta (dout) added
// to part_g and part_b (D doubles each) in row order, entry by entry as the AVX2 loops do.
void layer_norm_rows_backward_avx512(int64_t rows, int64_t D, bool relu, const float* dout,
                                     const float* x, const float* mean, const float* inv_std,
                                     const float* gamma, const float* beta, float* dx,
                                     double* part_g, double* part_b);

}  // namespace graphnet
