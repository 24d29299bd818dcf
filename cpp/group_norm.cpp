// The groupnorm kernels of group_norm.h: their loops (group_norm_loops.h) on AVX-512 where
// the AVX-512 kernels are active (group_norm_avx512.cpp), else on AVX2 where the CPU has it
// (group_norm_avx2.cpp), else the portable copy compiled here; the same bits on each.
#include "group_norm.h"

#include <cstddef>
#include <vector>

#include "cpu_features.h"
#include "group_norm_loops.h"
#include "recurrent.h"

namespace graphnet {

template <typename T>
void group_norm_forward(int64_t N, int64_t C, int64_t planes, int64_t G, double eps,
                        const PointwiseAct<T>& act, const AvgPoolPlane* pool, int32_t* winners,
                        const T* x, const T* gamma, const T* beta, T* mean, T* inv_std, T* out) {
    const int threads = team_for(N * G, N * C * planes);
    std::vector<T> scratch(pool ? static_cast<std::size_t>(threads * (C / G) * planes) : 0);
    const auto loops = avx512_activations_active() ? group_norm_forward_avx512<T>
                       : cpu_has_avx2_fma()          ? group_norm_forward_avx2<T>
                                                     : group_norm_forward_loops<T>;
    loops(
        N, C, planes, G, eps, act, GroupPool<T>{pool, winners, threads, scratch.data()}, x, gamma,
        beta, mean, inv_std, out);
}

template <typename T>
void group_norm_backward(int64_t N, int64_t C, int64_t planes, int64_t G,
                         const PointwiseAct<T>& act, const AvgPoolPlane* pool,
                         const int32_t* winners, const T* dout, const T* x, const T* mean,
                         const T* inv_std, const T* gamma, const T* beta, T* dx, T* dgamma,
                         T* dbeta) {
    const int threads = team_for(N * G, N * C * planes);
    std::vector<T> scratch(pool ? static_cast<std::size_t>(threads * (C / G) * planes) : 0);
    std::vector<double> planes_sums(static_cast<std::size_t>(2 * N * C));
    double *plane_d = planes_sums.data(), *plane_dx = plane_d + N * C;
    const auto loops = avx512_activations_active() ? group_norm_backward_avx512<T>
                       : cpu_has_avx2_fma()          ? group_norm_backward_avx2<T>
                                                     : group_norm_backward_loops<T>;
    loops(
        // (The backward only reads the winners.)
        N, C, planes, G, act, GroupPool<T>{pool, const_cast<int32_t*>(winners), threads,
                                           scratch.data()},
        dout, x, mean, inv_std, gamma, beta, dx, dgamma, dbeta, plane_d, plane_dx);
}

#define GRAPHNET_GROUP_NORM(T)                                                                \
    template void group_norm_forward<T>(int64_t, int64_t, int64_t, int64_t, double,           \
                                        const PointwiseAct<T>&, const AvgPoolPlane*, int32_t*, \
                                        const T*, const T*, const T*, T*, T*, T*);            \
    template void group_norm_backward<T>(int64_t, int64_t, int64_t, int64_t,                  \
                                         const PointwiseAct<T>&, const AvgPoolPlane*,         \
                                         const int32_t*, const T*, const T*, const T*,        \
                                         const T*, const T*, const T*, T*, T*, T*);
GRAPHNET_GROUP_NORM(float)
GRAPHNET_GROUP_NORM(double)
#undef GRAPHNET_GROUP_NORM

}  // namespace graphnet
