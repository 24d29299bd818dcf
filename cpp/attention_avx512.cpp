// attention.h's per-pair product and softmax compiled for AVX-512F (attention_loops.h),
// the exps sixteen float32 (eight float64) lanes at a time (simd_math.h's e^x, the AVX2
// one's bits); attention.cpp calls them only where the CPU has it. No library header
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

// The exps by a lambda, inlined into the loop (a function pointer was called per vector,
// the column's sum spilled around each call: the forward 1.05-1.1x the time).
void softmax_columns_avx512(int64_t S, int64_t L, float* wt, float* tail) {
    softmax_columns<__m512>(S, L, wt, tail, [](__m512 x) { return exp_full(x); });
}
void softmax_columns_avx512(int64_t S, int64_t L, double* wt, double* tail) {
    softmax_columns<__m512d>(S, L, wt, tail, [](__m512d x) { return exp_full(x); });
}

template void pair_product_avx512<float>(int64_t, int64_t, int64_t, const float*, int64_t, bool,
                                       const float*, int64_t, float, float*, int64_t);
template void pair_product_avx512<double>(int64_t, int64_t, int64_t, const double*, int64_t,
                                        bool, const double*, int64_t, double, double*,
                                        int64_t);

}  // namespace graphnet
