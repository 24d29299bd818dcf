// The two passes of every softmax row (the softmax and log_softmax gates, attention's
// weights, the softmax losses): the row's maximum, then e^(x - maximum) and its sum.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "pointwise_avx2.h"

namespace graphnet {

// The largest of x[0..n), or a NaN among them (so the row's results are NaN); -inf when
// n is 0.
template <typename T>
T row_max(int64_t n, const T* x) {
    T m = -std::numeric_limits<T>::infinity(), probe = 0;
#pragma omp simd reduction(max : m) reduction(+ : probe)
    for (int64_t k = 0; k < n; ++k) {
        m = x[k] > m ? x[k] : m;
        probe += x[k] * T(0);
    }
    if (probe != probe) {
        for (int64_t k = 0; k < n; ++k) {
            if (x[k] != x[k]) return x[k];
        }
    }
    return m;
}

// out[k] = e^(x[k] - shift) for k < n (out may be null: only the sum); returns their sum,
// added in a fixed order for a given n. On AVX2 where `avx2`.
template <typename T>
T exp_shifted_sum(int64_t n, const T* x, T shift, T* out, bool avx2) {
    if (avx2) return exp_shifted_sum_avx2(n, x, shift, out);
    T sum = 0;
    for (int64_t k = 0; k < n; ++k) {
        const T e = std::exp(x[k] - shift);
        if (out) out[k] = e;
        sum += e;
    }
    return sum;
}

}  // namespace graphnet
