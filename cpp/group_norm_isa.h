// The groupnorm kernels' entry points for one instruction set (group_norm.h), their loops
// group_norm_loops.h's: included by group_norm_avx2.cpp and group_norm_avx512.cpp after
// their target pragma, with GRAPHNET_GROUP_NORM_ISA the suffix of the names (avx2,
// avx512). Both files are compiled without FMA contraction (CMakeLists.txt): the backward
// recomputes the normalized entries the activation's gradient is taken at, and they must
// be the forward's bit for bit, on either instruction set the same bits. No library header.
#pragma once

#include "group_norm_loops.h"

#define GRAPHNET_GROUP_NORM_JOIN2(name, isa) name##isa
#define GRAPHNET_GROUP_NORM_JOIN(name, isa) GRAPHNET_GROUP_NORM_JOIN2(name, isa)
#define GRAPHNET_GROUP_NORM_FORWARD \
    GRAPHNET_GROUP_NORM_JOIN(group_norm_forward_, GRAPHNET_GROUP_NORM_ISA)
#define GRAPHNET_GROUP_NORM_BACKWARD \
    GRAPHNET_GROUP_NORM_JOIN(group_norm_backward_, GRAPHNET_GROUP_NORM_ISA)

namespace graphnet {

template <typename T>
void GRAPHNET_GROUP_NORM_FORWARD(int64_t N, int64_t C, int64_t planes, int64_t G, double eps,
                                 const PointwiseAct<T>& act, const GroupPool<T>& pool, const T* x,
                                 const T* gamma, const T* beta, T* mean, T* inv_std, T* out) {
    group_norm_forward_loops(N, C, planes, G, eps, act, pool, x, gamma, beta, mean, inv_std,
                             out);
}

template <typename T>
void GRAPHNET_GROUP_NORM_BACKWARD(int64_t N, int64_t C, int64_t planes, int64_t G,
                                  const PointwiseAct<T>& act, const GroupPool<T>& pool,
                                  const T* dout, const T* x, const T* mean, const T* inv_std,
                                  const T* gamma, const T* beta, T* dx, T* dgamma, T* dbeta,
                                  double* plane_d, double* plane_dx) {
    group_norm_backward_loops(N, C, planes, G, act, pool, dout, x, mean, inv_std, gamma, beta,
                              dx, dgamma, dbeta, plane_d, plane_dx);
}

#define GRAPHNET_GROUP_NORM_ENTRIES(T)                                                        \
    template void GRAPHNET_GROUP_NORM_FORWARD<T>(int64_t, int64_t, int64_t, int64_t, double,  \
                                                 const PointwiseAct<T>&, const GroupPool<T>&,     \
                                                 const T*, const T*, const T*, T*, T*, T*);   \
    template void GRAPHNET_GROUP_NORM_BACKWARD<T>(int64_t, int64_t, int64_t, int64_t,         \
                                                  const PointwiseAct<T>&, const GroupPool<T>&,    \
                                                  const T*, const T*, const T*, const T*,     \
                                                  const T*, const T*, T*, T*, T*, double*,    \
                                                  double*);
GRAPHNET_GROUP_NORM_ENTRIES(float)
GRAPHNET_GROUP_NORM_ENTRIES(double)
#undef GRAPHNET_GROUP_NORM_ENTRIES

}  // namespace graphnet
