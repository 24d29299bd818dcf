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

// relu_forward (elementwise.h) for float64, four lanes at a time: GCC vectorises the
// portable loop for float32 but not for float64 on SSE2 (a byte of keep per two-lane
// vector has no vector type there), which left it 7x slower than np.maximum.
void relu_forward_avx2(int64_t n, const double* x, double* out, bool* keep);
// The same for float32, eight lanes at a time and the masks of 32 packed into one store of
// bytes: SSE2's vectorisation of the portable loop (four lanes, the bytes of keep built
// one by one) took 13.8 us on 64 x 32 x 32 floats, about np.maximum's time.
void relu_forward_avx2(int64_t n, const float* x, float* out, bool* keep);

}  // namespace graphnet
