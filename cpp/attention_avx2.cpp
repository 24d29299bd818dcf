// attention.h's per-pair product compiled for AVX2 + FMA (attention_loops.h); attention.cpp
// calls it only where the CPU has it. No library header: see attention_loops.h.
#pragma GCC target("avx2,fma")
#include "attention.h"
#include "attention_loops.h"

namespace graphnet {

template <typename T>
void pair_product_avx2(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
                       bool a_transposed, const T* b, int64_t ldb, T alpha, T* c, int64_t ldc) {
    pair_product_loops<32>(m, n, k, PairOperand<T>{a, lda, a_transposed}, b, ldb, alpha, c,
                           ldc);
}

template void pair_product_avx2<float>(int64_t, int64_t, int64_t, const float*, int64_t, bool,
                                       const float*, int64_t, float, float*, int64_t);
template void pair_product_avx2<double>(int64_t, int64_t, int64_t, const double*, int64_t,
                                        bool, const double*, int64_t, double, double*,
                                        int64_t);

}  // namespace graphnet
