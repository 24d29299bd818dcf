// The gelu kernels on AVX-512, sixteen float32 or eight float64 lanes at a time:
// avx2_math.h's normal_cdf8 and normal_cdf4d operation for operation (2^n in one scalef,
// which rounds at the same product), so the same bits as the AVX2 kernels
// (pointwise_avx2.h). They take the whole blocks of 64 bytes and return how many entries
// they did; the caller (pointwise.cpp) gives the rest to the AVX2 kernels. Call them only
// when cpu_has_avx512f() and the AVX2 activations are active.
#pragma once

#include <cstdint>

namespace graphnet {

int64_t gelu_forward_avx512(int64_t n, const float* x, float* out);
int64_t gelu_forward_avx512(int64_t n, const double* x, double* out);
int64_t gelu_backward_avx512(int64_t n, const float* dout, const float* x, float* dx);
int64_t gelu_backward_avx512(int64_t n, const double* dout, const double* x, double* dx);

}  // namespace graphnet
