// The norm kernels of norm.h: their loops (norm_loops.h) on AVX2 where the CPU has it
// (norm_avx2.cpp), else the portable copy compiled here.
#include "norm.h"

#include <cstddef>
#include <type_traits>
#include <vector>

#include "cpu_features.h"
#include "norm_avx2.h"
#include "norm_avx512.h"
#include "norm_loops.h"
#include "pool.h"

namespace graphnet {
namespace {

// Spatial batchnorm of planes smaller than this (4x4, 3x3) runs the portable loops: AVX2's
// 8-wide loops then spend more on their ends than they gain (measured: 3x3 forward 1.8x,
// 4x4 backward 1.2x slower; 8x8 1.35x faster).
constexpr int64_t kSmallestAvx2Plane = 32;

bool avx2_for(const NormShape& s) {
    return cpu_has_avx2_fma() && (s.inner == 1 || s.inner >= kSmallestAvx2Plane);
}

}  // namespace

template <typename T>
void max_pool_norm_planes(const NormPool<T>& pool, const T* planes, int64_t first,
                          int64_t count) {
    const PoolGeometry these{1,         count,     pool.H,  pool.W, pool.height,
                             pool.width, pool.stride, pool.Ho, pool.Wo};
    const int64_t at = first * pool.Ho * pool.Wo;
    max_pool_forward(these, planes, pool.pooled + at, pool.winners + at, false, false);
}

template <typename T>
void channel_norm_forward(const NormShape& s, bool train, const NormTail<T>& tail, double eps,
                          const T* x, const T* gamma, const T* beta, T* mean, T* var,
                          T* inv_std, T* out) {
    const auto run = avx2_for(s) ? channel_norm_forward_avx2<T> : channel_norm_forward_loops<T>;
    if (tail.pool && s.inner == 1) {  // 1x1 planes (the column loops): pooled afterwards
        NormTail<T> unpooled = tail;
        unpooled.pool = nullptr;
        const NormPool<T>& p = *tail.pool;
        T* relu_out = out ? out : p.scratch;
        run(s, train, unpooled, eps, x, gamma, beta, mean, var, inv_std, relu_out);
        const PoolGeometry g{s.outer, s.K, 1, 1, p.height, p.width, p.stride, p.Ho, p.Wo};
        max_pool_forward(g, static_cast<const T*>(relu_out), p.pooled, p.winners);
        return;
    }
    run(s, train, tail, eps, x, gamma, beta, mean, var, inv_std, out);
}

template <typename T>
void channel_norm_backward(const NormShape& s, bool train, bool relu, const PointwiseAct<T>& act,
                           const T* dout, const T* x, const T* mean, const T* inv_std,
                           const T* gamma, const T* beta, const T* out, T* masked, T* dx,
                           T* dgamma, T* dbeta) {
    std::vector<double> scratch(static_cast<std::size_t>(channel_scratch(s)));
    (avx2_for(s) ? channel_norm_backward_avx2<T> : channel_norm_backward_loops<T>)(
        s, train, relu, act, dout, x, mean, inv_std, gamma, beta, out, masked, dx, dgamma,
        dbeta, scratch.data());
}

template <typename T>
void layer_norm_forward(int64_t N, int64_t D, bool relu, double eps, const T* x,
                        const T* gamma, const T* beta, T* mean, T* inv_std, T* out) {
    (cpu_has_avx2_fma() ? layer_norm_forward_avx2<T> : layer_norm_forward_loops<T>)(
        N, D, relu, eps, x, gamma, beta, mean, inv_std, out);
}

template <typename T>
void layer_norm_backward(int64_t N, int64_t D, bool relu, const T* dout, const T* x,
                         const T* mean, const T* inv_std, const T* gamma, const T* beta,
                         T* dx, T* dgamma, T* dbeta) {
    std::vector<double> parts(static_cast<std::size_t>(2 * row_blocks(N) * D), 0.0);
    double *part_g = parts.data(), *part_b = part_g + row_blocks(N) * D;
    if constexpr (std::is_same_v<T, float>) {
        if (cpu_has_avx512f()) {
            const auto block = [&](int64_t first, int64_t rows, double* pg, double* pb) {
                layer_norm_rows_backward_avx512(rows, D, relu, dout + first * D, x + first * D,
                                                mean + first, inv_std + first, gamma, beta,
                                                dx + first * D, pg, pb);
            };
            layer_norm_backward_in_blocks(N, D, dgamma, dbeta, part_g, part_b, block);
            return;
        }
    }
    (cpu_has_avx2_fma() ? layer_norm_backward_avx2<T> : layer_norm_backward_loops<T>)(
        N, D, relu, dout, x, mean, inv_std, gamma, beta, dx, dgamma, dbeta, part_g, part_b);
}

#define GRAPHNET_NORM(T)                                                                      \
    template void max_pool_norm_planes<T>(const NormPool<T>&, const T*, int64_t, int64_t); \
    template void channel_norm_forward<T>(const NormShape&, bool, const NormTail<T>&, double, \
                                          const T*, const T*, const T*, T*, T*, T*, T*);      \
    template void channel_norm_backward<T>(const NormShape&, bool, bool, const PointwiseAct<T>&, \
                                           const T*, const T*, const T*, const T*, const T*,     \
                                           const T*, const T*, T*, T*, T*, T*);                  \
    template void layer_norm_forward<T>(int64_t, int64_t, bool, double, const T*, const T*,   \
                                        const T*, T*, T*, T*);                                \
    template void layer_norm_backward<T>(int64_t, int64_t, bool, const T*, const T*,          \
                                         const T*, const T*, const T*, const T*, T*, T*, T*);
GRAPHNET_NORM(float)
GRAPHNET_NORM(double)
#undef GRAPHNET_NORM

}  // namespace graphnet
