// The norm kernels (norm.h) compiled for AVX2 (norm_avx2.cpp: norm_loops.h vectorised 8
// floats or 4 doubles wide). Call them only when cpu_has_avx2_fma() (cpu_features.h); the
// arguments are those of norm.h, plus the scratch the portable caller allocates (this
// code includes no library header): layernorm's backward 2 * row_blocks(N) * D zeroed
// doubles, the channel norms' backward channel_scratch(s) doubles.
#pragma once

#include <cstdint>

#include "norm.h"

namespace graphnet {

template <typename T>
void channel_norm_forward_avx2(const NormShape& s, bool train, const NormTail<T>& tail,
                               double eps, const T* x, const T* gamma, const T* beta, T* mean,
                               T* var, T* inv_std, T* out);
template <typename T>
void channel_norm_backward_avx2(const NormShape& s, bool train, bool relu,
                                const PointwiseAct<T>& act, const T* dout, const T* x,
                                const T* mean, const T* inv_std, const T* gamma, const T* beta,
                                const T* out, T* masked, T* dx, T* dgamma, T* dbeta,
                                double* plane_sums);
template <typename T>
void layer_norm_forward_avx2(int64_t N, int64_t D, bool relu, double eps, const T* x,
                             const T* gamma, const T* beta, T* mean, T* inv_std, T* out);
template <typename T>
void layer_norm_backward_avx2(int64_t N, int64_t D, bool relu, const T* dout, const T* x,
                              const T* mean, const T* inv_std, const T* gamma, const T* beta,
                              T* dx, T* dgamma, T* dbeta, double* part_g, double* part_b);
}  // namespace graphnet
