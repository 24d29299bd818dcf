// The groupnorm kernels compiled for AVX2 (group_norm.h). Without FMA, as norm_avx2.cpp:
// the backward recomputes the normalized entries the activation's gradient is taken at,
// and they must be the forward's bit for bit. Compiled for AVX2: no library header.
#pragma GCC target("avx2")
#include "group_norm_loops.h"

namespace graphnet {

template <typename T>
void group_norm_forward_avx2(int64_t N, int64_t C, int64_t planes, int64_t G, double eps,
                             const GroupAct<T>& act, const GroupPool<T>& pool, const T* x,
                             const T* gamma, const T* beta, T* mean, T* inv_std, T* out) {
    group_norm_forward_loops(N, C, planes, G, eps, act, pool, x, gamma, beta, mean, inv_std,
                             out);
}

template <typename T>
void group_norm_backward_avx2(int64_t N, int64_t C, int64_t planes, int64_t G,
                              const GroupAct<T>& act, const GroupPool<T>& pool, const T* dout,
                              const T* x, const T* mean, const T* inv_std, const T* gamma,
                              const T* beta, T* dx, T* dgamma, T* dbeta, double* plane_d,
                              double* plane_dx) {
    group_norm_backward_loops(N, C, planes, G, act, pool, dout, x, mean, inv_std, gamma, beta,
                              dx, dgamma, dbeta, plane_d, plane_dx);
}

#define GRAPHNET_GROUP_NORM_AVX2(T)                                                           \
    template void group_norm_forward_avx2<T>(int64_t, int64_t, int64_t, int64_t, double,      \
                                             const GroupAct<T>&, const GroupPool<T>&,         \
                                             const T*, const T*, const T*, T*, T*, T*);       \
    template void group_norm_backward_avx2<T>(int64_t, int64_t, int64_t, int64_t,             \
                                              const GroupAct<T>&, const GroupPool<T>&,        \
                                              const T*, const T*, const T*, const T*,         \
                                              const T*, const T*, T*, T*, T*, double*,        \
                                              double*);
GRAPHNET_GROUP_NORM_AVX2(float)
GRAPHNET_GROUP_NORM_AVX2(double)
#undef GRAPHNET_GROUP_NORM_AVX2

}  // namespace graphnet
