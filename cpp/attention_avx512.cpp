// attention.h's per-pair product compiled for AVX-512F (attention_loops.h), and the
// softmax's exps sixteen float32 (eight float64) lanes at a time (simd_math.h's e^x, the
// AVX2 one's bits); attention.cpp calls them only where the CPU has it. No library header
// but the intrinsics: see attention_loops.h.
#pragma GCC target("avx512f,avx2,fma")
#include "attention.h"

#include "attention_loops.h"
#include "simd_lanes_avx512.h"
#include "simd_math.h"

namespace graphnet {

template <typename T>
void pair_product_avx512(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
                       bool a_transposed, const T* b, int64_t ldb, T alpha, T* c, int64_t ldc) {
    pair_product_loops<64>(m, n, k, PairOperand<T>{a, lda, a_transposed}, b, ldb, alpha, c,
                           ldc);
}

template <typename V, typename T>
void exp_in_place(int64_t n, T* x) {
    using L = Lanes<V>;
    int64_t i = 0;
    for (; i + L::width <= n; i += L::width) L::store(x + i, exp_full(L::load(x + i)));
    if (i < n) {
        const typename L::Tail lanes = L::tail(n - i);
        L::store(x + i, lanes, exp_full(L::load(x + i, lanes)));
    }
}

void exp_in_place_avx512(int64_t n, float* x) { exp_in_place<__m512>(n, x); }
void exp_in_place_avx512(int64_t n, double* x) { exp_in_place<__m512d>(n, x); }

template void pair_product_avx512<float>(int64_t, int64_t, int64_t, const float*, int64_t, bool,
                                       const float*, int64_t, float, float*, int64_t);
template void pair_product_avx512<double>(int64_t, int64_t, int64_t, const double*, int64_t,
                                        bool, const double*, int64_t, double, double*,
                                        int64_t);

}  // namespace graphnet
