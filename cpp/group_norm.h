// Groupnorm of x (N, C, H, W) in G groups of C / G channels, on the layout of x: group
// (n, g) is the C / G * H * W contiguous entries of its channels, one mean and variance
// each (summed in float32 blocks, then float64: group_norm_loops.h). Optionally followed
// by an elementwise activation (pointwise.h) in the same pass each way: a groupnorm ->
// gelu / leaky relu / softplus chain (passes/norm_activation.py) then reads x and writes
// the activation's output forward, and reads x and the activation's gradient and writes
// dx backward, recomputing each group's normalized entries in cache, exactly as the
// forward computed them: no pass over the normalized tensor either way, and the same bits
// as the two kernels one after the other. Bitwise the same for any number of threads.
//
// Optionally an average pool after that (a groupnorm -> activation -> avg_pool chain):
// out is then the pooled planes (N, C, Ho, Wo), pooled while each group is in cache, and
// the backward's dout their gradient, spread back over each group in cache: neither the
// activation's output nor its gradient is written out. Or a max pool (a groupnorm ->
// activation -> max_pool chain), with `winners` (N, C, Ho, Wo): the forward runs pool.h's
// kernel on each group in cache (its windows, tie rule and winners, which it writes), the
// backward scatters dout to the winners over each group in cache with the pool gate's
// kernels (pool.h: max_unpool_planes). Each group's values before the pooling go through a
// scratch of the caller's, a group's worth per thread.
#pragma once

#include <cstdint>

#include "avg_pool_plane.h"
#include "norm.h"
#include "pointwise.h"

namespace graphnet {

// The AVX2 and portable loops' pooling: one plane's windows (any pool.h geometry), none
// where null; a max pool's winners (written forward, read backward), an average pool
// where null; the threads of the team, and the scratch, C / G * H * W values for each.
template <typename T>
struct GroupPool {
    const AvgPoolPlane* plane;
    int32_t* winners;
    int threads;
    T* scratch;
};

// Writes mean and inv_std [n * G + g] and out = act((x - mean) * inv_std * gamma[c] +
// beta[c]) (act the identity when inactive, else an op whose backward reads its input:
// pointwise_saves_input), pooled over `pool`'s windows unless it is null: averaged, or
// with `winners` their maxima. planes = H * W.
template <typename T>
void group_norm_forward(int64_t N, int64_t C, int64_t planes, int64_t G, double eps,
                        const PointwiseAct<T>& act, const AvgPoolPlane* pool, int32_t* winners,
                        const T* x, const T* gamma, const T* beta, T* mean, T* inv_std, T* out);

// Its gradients; dout is the gradient of the forward's out (after its activation and its
// pooling; with winners, every one of them inside its plane: checked by the caller). beta
// is read only with an active act (it may be null otherwise).
template <typename T>
void group_norm_backward(int64_t N, int64_t C, int64_t planes, int64_t G,
                         const PointwiseAct<T>& act, const AvgPoolPlane* pool,
                         const int32_t* winners, const T* dout, const T* x, const T* mean,
                         const T* inv_std, const T* gamma, const T* beta, T* dx, T* dgamma,
                         T* dbeta);

// The same loops compiled for AVX2 (group_norm_avx2.cpp): call them only when
// cpu_has_avx2_fma(); for AVX-512 (group_norm_avx512.cpp): only when
// avx512_activations_active() (recurrent.h). The backward takes the 2 * N * C doubles of
// scratch its portable caller allocates (that code includes no library header).
template <typename T>
void group_norm_forward_avx2(int64_t N, int64_t C, int64_t planes, int64_t G, double eps,
                             const PointwiseAct<T>& act, const GroupPool<T>& pool, const T* x,
                             const T* gamma, const T* beta, T* mean, T* inv_std, T* out);
template <typename T>
void group_norm_backward_avx2(int64_t N, int64_t C, int64_t planes, int64_t G,
                              const PointwiseAct<T>& act, const GroupPool<T>& pool, const T* dout,
                              const T* x, const T* mean, const T* inv_std, const T* gamma,
                              const T* beta, T* dx, T* dgamma, T* dbeta, double* plane_d,
                              double* plane_dx);
template <typename T>
void group_norm_forward_avx512(int64_t N, int64_t C, int64_t planes, int64_t G, double eps,
                               const PointwiseAct<T>& act, const GroupPool<T>& pool, const T* x,
                               const T* gamma, const T* beta, T* mean, T* inv_std, T* out);
template <typename T>
void group_norm_backward_avx512(int64_t N, int64_t C, int64_t planes, int64_t G,
                                const PointwiseAct<T>& act, const GroupPool<T>& pool,
                                const T* dout, const T* x, const T* mean, const T* inv_std,
                                const T* gamma, const T* beta, T* dx, T* dgamma, T* dbeta,
                                double* plane_d, double* plane_dx);

}  // namespace graphnet
