// Max (and average) pooling without padding: x (N, C, H, W) -> out (N, C, Ho, Wo) with
// Ho = 1 + (H - pool_height) // stride, Wo likewise. Windows may overlap.
//
// Tie rule: within a window the FIRST maximum in row-major order wins (strict >), and
// it alone receives the gradient. A NaN counts as the maximum (the first NaN wins), so
// NaNs propagate to the output as in numpy.max and PyTorch.
#pragma once

#include <cstdint>

#include "avg_pool_plane.h"
#include "shapes.h"

namespace graphnet {

struct PoolGeometry {
    int64_t N, C, H, W;
    int64_t pool_height, pool_width, stride;
    int64_t Ho, Wo;

    Shape out_shape() const { return {N, C, Ho, Wo}; }
};

// op names the pooling in the error messages.
PoolGeometry pool_geometry(const Shape& x, int64_t pool_height, int64_t pool_width,
                           int64_t stride, const char* op = "max_pool");

// Writes out and, for every output, the index of its window's winner within the
// (H, W) plane. Backward only needs those indices, so x can be freed after forward.
// relu_first pools relu(x) instead of x (fusing relu -> max_pool), without writing it.
// threaded=false runs on the calling thread alone, for a caller that shares out the work.
template <typename T>
void max_pool_forward(const PoolGeometry& g, const T* x, T* out, int32_t* winners,
                      bool relu_first = false, bool threaded = true);

// Throws, naming the first, unless every index of winners is inside the (H, W) plane.
void check_winners(const int32_t* winners, int64_t count, int64_t H, int64_t W);

// dx (planes x H x W) = zeros with each dout entry (planes x Ho x Wo) added at its window's
// winner. A winner outside its plane is never written; the result is then false (and dx
// unfinished), so an arbitrary winners array cannot write out of bounds.
template <typename T>
bool max_pool_backward(int64_t planes, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                       const T* dout, const int32_t* winners, T* dx);

// max_pool_backward's dx of `planes` planes on the calling thread, on the same kernels
// (pool.cpp's rule, the same bits): the pool gate shares planes out across the threads,
// the groupnorm kernels (group_norm_loops.h) scatter a group's planes while in cache.
template <typename T>
bool max_unpool_planes(int64_t planes, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                       const T* dout, const int32_t* winners, T* dx);

// Average pooling (the same windows): out = each window's mean (its sum / its size), and
// dx = each window's gradient / its size added to each of its entries.
template <typename T>
void avg_pool_forward(const PoolGeometry& g, const T* x, T* out);
template <typename T>
void avg_pool_backward(const PoolGeometry& g, const T* dout, T* dx);

// g's windows over one plane (avg_pool_plane.h).
AvgPoolPlane avg_pool_plane(const PoolGeometry& g);

}  // namespace graphnet
