// pointwise.h's transcendental kernels on AVX-512, sixteen float32 or eight float64 lanes
// at a time: gelu, gelu_tanh and softplus, each forward and backward, and float64's
// sigmoid forward (pointwise.cpp sends float32's elsewhere). The code is the AVX2
// kernels' (pointwise_lanes.h; e^x's 2^n in one scalef, which rounds at the same product),
// so the same bits as theirs (pointwise_avx2.h).
// They take the whole blocks of 64 bytes and return how many entries they did (0 for
// another op); the caller (pointwise.cpp) gives the rest to the AVX2 kernels. Call them
// only when the AVX-512 activations are active (avx512_activations_active(), recurrent.h).
#pragma once

#include <cstdint>

#include "pointwise.h"

namespace graphnet {

int64_t pointwise_forward_avx512(Pointwise op, int64_t n, const float* x, float* out);
int64_t pointwise_forward_avx512(Pointwise op, int64_t n, const double* x, double* out);
int64_t pointwise_backward_avx512(Pointwise op, int64_t n, const float* dout, const float* x,
                                  float* dx);
int64_t pointwise_forward_slope_avx512(Pointwise op, int64_t n, const float* x, float* out,
                                       float* slope);
int64_t pointwise_forward_slope_avx512(Pointwise op, int64_t n, const double* x, double* out,
                                       double* slope);
int64_t pointwise_backward_avx512(Pointwise op, int64_t n, const double* dout, const double* x,
                                  double* dx);

}  // namespace graphnet
