// float32 sigmoid and tanh on AVX-512, sixteen lanes at a time: activations_avx2.h's
// formulas, with each quotient from the reciprocal estimate (14 bits) and one Newton step
// instead of a division, which bounded the eight-lane kernels (a quarter of the LSTM
// forward at H = 128, perf). Within 2.5 units in the last place of the exact values, like
// those (tests/kernels/test_recurrent_kernels.py measures both).
//
// Compiled for AVX-512F, no library headers; call only when cpu_has_avx512f().
#pragma once

#include <cstdint>

namespace graphnet {

// out[k] = f(x[k] + bias[k]) for k < n, f = sigmoid or tanh; bias may be null (then 0);
// out may be x.
void sigmoid_avx512(int64_t n, const float* x, const float* bias, float* out);
void tanh_avx512(int64_t n, const float* x, const float* bias, float* out);

}  // namespace graphnet
