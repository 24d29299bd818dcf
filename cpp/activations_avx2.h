// float32 sigmoid and tanh on AVX2 + FMA, eight lanes at a time: the nonlinearities of
// the recurrent kernels (cpp/recurrent.cpp), where the C library's scalar tanhf took more
// time than the matrix products. Both are within 2.5 units in the last place of the exact
// values (tests/kernels/test_recurrent_kernels.py measures it: 2.1 at most).
//
// Like conv_direct.h: compiled for AVX2, no library headers; call only when
// cpu_has_avx2_fma().
#pragma once

#include <cstdint>

namespace graphnet {

// out[k] = f(x[k] + bias[k]) for k < n, f = sigmoid or tanh; bias may be null (then 0);
// out may be x.
void sigmoid_avx2(int64_t n, const float* x, const float* bias, float* out);
void tanh_avx2(int64_t n, const float* x, const float* bias, float* out);

// out[k] = e^(x[k] - shift) for k < n (below 1.2e-38 it saturates there); returns their
// sum, in a fixed order for a given n.
float exp_sum_avx2(int64_t n, const float* x, float shift, float* out);

// The largest of x[0..n) (n >= 1); with a NaN among them, any of them.
float max_avx2(int64_t n, const float* x);

}  // namespace graphnet
