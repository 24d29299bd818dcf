// The norm kernels compiled for AVX2 (norm_avx2.h). Without FMA: a fused multiply-add
// would round the normalized entries differently from where the backward recomputes them
// (the relu's mask must match the forward's bit for bit), and the loops are memory-bound
// anyway. Everything here is compiled for AVX2, so it includes no library header.
#pragma GCC target("avx2")
#include "norm_avx2.h"

#include "norm_loops.h"

namespace graphnet {

template <typename T>
void channel_norm_forward_avx2(const NormShape& s, bool train, const NormTail<T>& tail,
                               double eps, const T* x, const T* gamma, const T* beta, T* mean,
                               T* var, T* inv_std, T* out) {
    channel_norm_forward_loops(s, train, tail, eps, x, gamma, beta, mean, var, inv_std, out);
}

template <typename T>
void channel_norm_backward_avx2(const NormShape& s, bool train, bool relu,
                                const PointwiseAct<T>& act, const T* dout, const T* x,
                                const T* mean, const T* inv_std, const T* gamma, const T* beta,
                                const T* out, T* masked, T* dx, T* dgamma, T* dbeta,
                                double* plane_sums) {
    channel_norm_backward_loops(s, train, relu, act, dout, x, mean, inv_std, gamma, beta, out,
                                masked, dx, dgamma, dbeta, plane_sums);
}

template <typename T>
void layer_norm_forward_avx2(int64_t N, int64_t D, bool relu, double eps, const T* x,
                             const T* gamma, const T* beta, T* mean, T* inv_std, T* out) {
    layer_norm_forward_loops(N, D, relu, eps, x, gamma, beta, mean, inv_std, out);
}

template <typename T>
void layer_norm_backward_avx2(int64_t N, int64_t D, bool relu, const T* dout, const T* x,
                              const T* mean, const T* inv_std, const T* gamma, const T* beta,
                              T* dx, T* dgamma, T* dbeta, double* part_g, double* part_b) {
    layer_norm_backward_loops(N, D, relu, dout, x, mean, inv_std, gamma, beta, dx, dgamma, dbeta,
                              part_g, part_b);
}

#define GRAPHNET_NORM_AVX2(T)                                                                 \
    template void channel_norm_forward_avx2<T>(const NormShape&, bool, const NormTail<T>&,    \
                                               double, const T*, const T*, const T*, T*, T*,  \
                                               T*, T*);                                       \
    template void channel_norm_backward_avx2<T>(const NormShape&, bool, bool,                    \
                                                const PointwiseAct<T>&, const T*, const T*,      \
                                                const T*, const T*, const T*, const T*,          \
                                                const T*, T*, T*, T*, T*, double*);              \
    template void layer_norm_forward_avx2<T>(int64_t, int64_t, bool, double, const T*,        \
                                             const T*, const T*, T*, T*, T*);                 \
    template void layer_norm_backward_avx2<T>(int64_t, int64_t, bool, const T*, const T*,     \
                                              const T*, const T*, const T*, const T*, T*, T*, \
                                              T*, double*, double*);
GRAPHNET_NORM_AVX2(float)
GRAPHNET_NORM_AVX2(double)
#undef GRAPHNET_NORM_AVX2

}  // namespace graphnet
