// The update rules' element loops (optim.h), compiled twice: for any x86-64 (or other) CPU
// in optim.cpp, and for AVX2 in optim_avx2.cpp, where the compiler vectorises them 8 floats
// or 4 doubles wide (Adam's and RMSProp's divisions and square roots bound them: 2x faster
// than the SSE2 copy, docs/performance/kernels.md). Each file gets its own copy (an
// anonymous namespace), and this header includes no library header, so nothing compiled
// for AVX2 can be shared with the portable code. Neither copy has fused multiply-adds
// (optim_avx2.cpp is compiled for AVX2 without FMA, and both with -ffp-contract=off, for
// CPUs whose baseline has FMA): both round each operation as numpy does, so they give the
// same bits as graphnet.optim's numpy expressions.
#pragma once

#include <cstdint>

namespace graphnet {

// Each rule's scalars, in T: numpy computes them in double and applies them in T (NEP 50: a
// Python float does not widen a float32 array), so they are rounded to T once, as numpy does.
template <typename T>
struct SgdScalars {
    T lr;
};

template <typename T>
struct MomentumScalars {
    T momentum, lr;
};

template <typename T>
struct RmspropScalars {
    T decay_rate, one_minus_decay_rate, lr, eps;
};

template <typename T>
struct AdamScalars {
    T beta1, one_minus_beta1, beta2, one_minus_beta2, m_scale, v_scale, lr, eps;
};

namespace {

inline float update_root(float v) { return __builtin_sqrtf(v); }
inline double update_root(double v) { return __builtin_sqrt(v); }

// Elements [0, n) of the arrays (the pointers passed as values: the loops are vectorised).
// Each line is one numpy statement of graphnet.optim, in its order.

// w -= lr * dw
template <typename T>
void update_elements(const SgdScalars<T>& a, int64_t n, T* w, const T* dw, T*, T*) {
    for (int64_t i = 0; i < n; ++i) w[i] -= a.lr * dw[i];
}

// v *= momentum; v -= lr * dw; w += v
template <typename T>
void update_elements(const MomentumScalars<T>& a, int64_t n, T* w, const T* dw, T* velocity,
                     T*) {
    for (int64_t i = 0; i < n; ++i) {
        velocity[i] = velocity[i] * a.momentum - a.lr * dw[i];
        w[i] += velocity[i];
    }
}

// cache *= decay_rate; cache += (1 - decay_rate) * dw**2; w -= lr * dw / (sqrt(cache) + eps)
template <typename T>
void update_elements(const RmspropScalars<T>& a, int64_t n, T* w, const T* dw, T* cache, T*) {
    for (int64_t i = 0; i < n; ++i) {
        const T g = dw[i];
        cache[i] = cache[i] * a.decay_rate + a.one_minus_decay_rate * (g * g);
        w[i] -= a.lr * g / (update_root(cache[i]) + a.eps);
    }
}

// m = beta1 * m + (1 - beta1) * dw; v likewise with dw**2; w -= lr * m_hat / (sqrt(v_hat) + eps)
template <typename T>
void update_elements(const AdamScalars<T>& a, int64_t n, T* w, const T* dw, T* m, T* v) {
    for (int64_t i = 0; i < n; ++i) {
        const T g = dw[i];
        m[i] = m[i] * a.beta1 + a.one_minus_beta1 * g;
        v[i] = v[i] * a.beta2 + a.one_minus_beta2 * (g * g);
        const T m_hat = m[i] / a.m_scale;
        const T v_hat = v[i] / a.v_scale;
        w[i] -= a.lr * m_hat / (update_root(v_hat) + a.eps);
    }
}

}  // namespace
}  // namespace graphnet
