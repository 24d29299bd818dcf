// The float32 AVX2 + FMA parts of pointwise.h's kernels. Compiled for AVX2, no library
// headers; call only when cpu_has_avx2_fma() (pointwise.cpp checks
// avx2_activations_active()).
#pragma once

#include <cstdint>

#include "pointwise.h"

namespace graphnet {

// float32 forward: gelu, gelu_tanh, softplus; backward: gelu, gelu_tanh, softplus.
// float64 forward: gelu, gelu_tanh, softplus, sigmoid; backward: gelu, gelu_tanh, softplus.
// (The others are plain arithmetic that the compiler vectorises in pointwise.cpp.)
void pointwise_forward_avx2(Pointwise op, int64_t n, const float* x, float alpha, float* out);
void pointwise_backward_avx2(Pointwise op, int64_t n, const float* dout, const float* saved,
                             float alpha, float* dx);
void pointwise_forward_avx2(Pointwise op, int64_t n, const double* x, double alpha, double* out);
void pointwise_backward_avx2(Pointwise op, int64_t n, const double* dout, const double* saved,
                             double alpha, double* dx);
void pointwise_forward_slope_avx2(Pointwise op, int64_t n, const float* x, float* out,
                                  float* slope);
void pointwise_forward_slope_avx2(Pointwise op, int64_t n, const double* x, double* out,
                                  double* slope);
void erf_avx2(int64_t n, const float* x, float* out);

// out[k] = e^(x[k] - shift) (out may be null: only the sum), returns the sum of those,
// added in a fixed order.
float exp_shifted_sum_avx2(int64_t n, const float* x, float shift, float* out);
double exp_shifted_sum_avx2(int64_t n, const double* x, double shift, double* out);

// dx[k] = dout[k] - e^out[k] * total (the log softmax backward of a row).
void log_softmax_row_backward_avx2(int64_t n, const float* dout, const float* out, float total,
                                   float* dx);
void log_softmax_row_backward_avx2(int64_t n, const double* dout, const double* out,
                                   double total, double* dx);

}  // namespace graphnet
