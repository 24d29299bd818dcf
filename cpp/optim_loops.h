// Adam's element loop (optim.h), compiled twice: for any x86-64 (or other) CPU in
// optim.cpp, and for AVX2 in optim_avx2.cpp, where the compiler vectorises it 8 floats or
// 4 doubles wide (its three divisions and square root bound it: 2x faster than the SSE2
// copy, docs/performance/kernels.md). Each file gets its own copy (an anonymous
// namespace), and this header includes no library header, so nothing compiled for AVX2
// can be shared with the portable code. Neither copy has fused multiply-adds (optim_avx2.cpp
// is compiled for AVX2 without FMA): both round each operation as numpy does, so they give
// the same bits.
#pragma once

#include <cstdint>

namespace graphnet {

// The step's scalars, in T: numpy computes them in double and applies them in T (NEP 50: a
// Python float does not widen a float32 array), so they are rounded to T once, as numpy does.
template <typename T>
struct AdamScalars {
    T beta1, one_minus_beta1, beta2, one_minus_beta2, m_scale, v_scale, lr, eps;
};

namespace {

inline float adam_root(float v) { return __builtin_sqrtf(v); }
inline double adam_root(double v) { return __builtin_sqrt(v); }

// Elements [0, n) of the arrays (the pointers passed as values: the loop is vectorised).
template <typename T>
void adam_elements(const AdamScalars<T>& a, int64_t n, T* w, const T* dw, T* m, T* v) {
    for (int64_t i = 0; i < n; ++i) {
        const T g = dw[i];
        m[i] = m[i] * a.beta1 + a.one_minus_beta1 * g;
        v[i] = v[i] * a.beta2 + a.one_minus_beta2 * (g * g);
        const T m_hat = m[i] / a.m_scale;
        const T v_hat = v[i] / a.v_scale;
        w[i] -= a.lr * m_hat / (adam_root(v_hat) + a.eps);
    }
}

}  // namespace
}  // namespace graphnet
