// Adam's element loop compiled for AVX2 (optim_avx2.h). Without FMA: a fused multiply-add
// would round m and v differently from numpy's two operations. Everything here is compiled
// for AVX2, so it includes no library header.
#pragma GCC target("avx2")
#include "optim_avx2.h"

namespace graphnet {

template <typename T>
void adam_elements_avx2(const AdamScalars<T>& a, int64_t n, T* w, const T* dw, T* m, T* v) {
    adam_elements(a, n, w, dw, m, v);
}

template void adam_elements_avx2<float>(const AdamScalars<float>&, int64_t, float*,
                                        const float*, float*, float*);
template void adam_elements_avx2<double>(const AdamScalars<double>&, int64_t, double*,
                                         const double*, double*, double*);

}  // namespace graphnet
