// Batchnorm, spatial batchnorm and layernorm (groupnorm: group_norm.h, on the same loops) on
// the arrays' own layout, with no transposes: every one of them normalizes the slices of an
// array viewed as (outer, K, inner), one mean and variance per k over its outer x inner
// entries.
//
//   batchnorm (N, D)              outer N, K = D,     inner 1
//   spatial batchnorm (N, C, H, W) outer N, K = C,     inner H * W
//   layernorm (N, D)              outer 1, K = N,     inner D
//
// Statistics take one pass over the data: blocks of about 2k entries (in L1) give their
// mean and centred sum of squares in float64, merged with Chan's formula, so a mean far
// from zero costs no precision (unlike sum of squares minus squared mean). Backward: one
// reduction (sum of dout and of dout * (x - mean), in float64; the gamma and beta
// gradients are those sums) and the writing of dx. The (N, D) layout and layernorm write
// the outputs of a slice right after its statistics or sums, while it is in cache; the
// spatial layout, whose channels are N planes K planes apart, writes them (and sums dout)
// plane by plane in memory order, each pass a stream. Each slice or plane is reduced by
// one thread in a fixed order, and the planes' sums added per channel in order, so
// results are bitwise the same for any number of threads.
#pragma once

#include <cstdint>

#include "pointwise.h"

namespace graphnet {

struct NormShape {
    int64_t outer, K, inner;
    int64_t count() const { return outer * inner; }  // entries per k (sizes checked by caller)
};

// What a channel norm's forward does to each normalized entry y in the same pass: nothing;
// a relu (a norm -> relu chain, passes/norm_relu.py); the add of `skip`, an array of x's
// shape, and then a relu (a residual block's norm -> add(skip) -> relu), the operands in
// the add gate's order (skip_first: skip + y; they differ only in a NaN's payload); or,
// without a relu, `act`, a leaky relu (a norm -> leaky relu chain,
// passes/norm_activation.py), its gate's expression (pointwise.h, plain_forward). Then
// perhaps a max pool of that relu's or leaky relu's output (`pool`, below).
template <typename T>
struct NormPool;

template <typename T>
struct NormTail {
    bool relu = false;
    const T* skip = nullptr;  // with relu only
    bool skip_first = false;
    const NormPool<T>* pool = nullptr;  // with relu or act (below)
    PointwiseAct<T> act{false, Pointwise::gelu, T(0)};  // without relu only
};

// A max pool of the relu's or act's output (a residual block's end followed by a max pool,
// a VGG unit's end, passes/norm_relu.py): each (H, W) plane of it pooled by pool.h's kernel
// right after it is written, while it is in cache, into pooled and winners (N, C, Ho, Wo):
// pool.h's windows, tie rule and winners. Where that output is not kept (out null), each
// block of planes goes through `scratch`, the least of norm_pool_block(H * W) and N * C planes
// of H * W entries for each of num_threads() threads.
template <typename T>
struct NormPool {
    int64_t H, W, height, width, stride, Ho, Wo;
    T* pooled;
    int32_t* winners;
    T* scratch;
};

// Planes of `inner` entries a block that the channel norms' passes over planes take one after
// another (norm_loops.h), and that the norm writes and then pools in one call: the
// pool's kernels take several small planes at a time (stacks of planes, no setup per plane),
// so pooling each plane alone took 3-5x the pool's time on small images (16 x 6 planes of
// 11 x 8, 2x2 stride-1 windows: norm -> relu -> pool 18.3 us, the norm -> relu alone 3.6,
// the pool of the batch alone 4.6); a block within kNormPoolEntries stays in L1 for it.
constexpr int64_t kNormPoolEntries = 4096;
constexpr int64_t norm_pool_block(int64_t inner) {
    return inner >= kNormPoolEntries ? 1 : kNormPoolEntries / inner;
}

// Pools planes `first` to first + count - 1 (of N * C) of the relu's output, their H * W
// entries each one after another at `planes`, on the calling thread (norm.cpp: norm_loops.h
// and group_norm_loops.h include no library header, pool.h does).
template <typename T>
void max_pool_norm_planes(const NormPool<T>& pool, const T* planes, int64_t first,
                          int64_t count);

// Batchnorm: out = (x - mean[k]) * gamma[k] * inv_std[k] + beta[k], inv_std = 1 / sqrt(var +
// eps) computed in T. train: mean and var (biased) are the batch's and are written; else
// they are read (the running averages). inv_std is written. tail: what follows (above);
// with a pool, out may be null.
template <typename T>
void channel_norm_forward(const NormShape& s, bool train, const NormTail<T>& tail, double eps,
                          const T* x, const T* gamma, const T* beta, T* mean, T* var,
                          T* inv_std, T* out);

// Its gradients. train: mean and inv_std came from this batch (so they depend on x); else
// they were constants. dgamma[k] = sum dout * x_hat, dbeta[k] = sum dout. relu: dout is the
// gradient of the forward's relu output; it passes where the normalized entry, recomputed
// from x, mean, inv_std, gamma and beta exactly as the forward did, is positive (beta is
// read only then and may be null otherwise). masked (not null: relu with a skip added
// before it): out is the forward's output; dout passes where that is positive (where the
// relu's input, norm + skip, was), and that masked dout, the gradient of the norm's output
// and of the skip, is written to `masked` in the same pass (beta is not read). act (active:
// the forward's leaky relu): dout is the gradient of its output; it passes where the
// recomputed normalized entry is positive and is scaled by the slope elsewhere, the leaky
// relu gate's expression (plain_backward; beta read).
template <typename T>
void channel_norm_backward(const NormShape& s, bool train, bool relu, const PointwiseAct<T>& act,
                           const T* dout, const T* x, const T* mean, const T* inv_std,
                           const T* gamma, const T* beta, const T* out, T* masked, T* dx,
                           T* dgamma, T* dbeta);

// Layernorm of the rows of x (N, D): out = (x - mean[n]) * inv_std[n] * gamma[d] + beta[d];
// writes mean and inv_std (N,). relu: as in channel_norm_forward.
template <typename T>
void layer_norm_forward(int64_t N, int64_t D, bool relu, double eps, const T* x,
                        const T* gamma, const T* beta, T* mean, T* inv_std, T* out);

// Its gradients; dgamma and dbeta (D,) are summed over rows in fixed blocks of rows, in
// order, whatever the number of threads. relu: as in channel_norm_backward.
template <typename T>
void layer_norm_backward(int64_t N, int64_t D, bool relu, const T* dout, const T* x,
                         const T* mean, const T* inv_std, const T* gamma, const T* beta,
                         T* dx, T* dgamma, T* dbeta);

}  // namespace graphnet
