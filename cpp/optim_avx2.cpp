// The update rules' element loops compiled for AVX2 (optim_avx2.h). Without FMA: a fused
// multiply-add would round the states differently from numpy's two operations. Everything
// here is compiled for AVX2, so it includes no library header.
#pragma GCC target("avx2")
#include "optim_avx2.h"

namespace graphnet {

template <typename Scalars, typename T>
void update_elements_avx2(const Scalars& a, int64_t n, T* w, const T* dw, T* state0, T* state1) {
    update_elements(a, n, w, dw, state0, state1);
}

#define GRAPHNET_UPDATE_AVX2(Scalars)                                                           \
    template void update_elements_avx2(const Scalars<float>&, int64_t, float*, const float*,   \
                                       float*, float*);                                         \
    template void update_elements_avx2(const Scalars<double>&, int64_t, double*, const double*, \
                                       double*, double*);
GRAPHNET_UPDATE_AVX2(SgdScalars)
GRAPHNET_UPDATE_AVX2(MomentumScalars)
GRAPHNET_UPDATE_AVX2(RmspropScalars)
GRAPHNET_UPDATE_AVX2(AdamScalars)
#undef GRAPHNET_UPDATE_AVX2

}  // namespace graphnet
