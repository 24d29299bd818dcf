// The max pool's stacks of small planes on AVX-512 (sixteen float32 or eight float64
// lanes), whose outputs are compressed out of vectors of a plane's entries: rows shorter
// than a vector cost no more per output than long ones.
//
// Like pool_avx2.h: compiled for AVX-512, no library headers; call only when
// avx512_activations_active() (recurrent.h).
#pragma once

#include <cstdint>

#include "avg_pool_plane.h"

namespace graphnet {

// max_pool_planes_avx2 (pool_avx2.h: the same outputs and winners) for planes of at most
// kBand entries (avg_pool_plane.h).
void max_pool_planes_avx512(const AvgPoolPlane& g, int64_t planes, const float* src, float* dst,
                            int32_t* win, bool relu);
void max_pool_planes_avx512(const AvgPoolPlane& g, int64_t planes, const double* src,
                            double* dst, int32_t* win, bool relu);

// `planes` planes of max_pool_forward's pooling at stride 2 (any window and plane size; the
// outputs and winners of pool_avx2.h's kernels and pool.cpp's loops).
void max_pool_planes_stride2_avx512(const AvgPoolPlane& g, int64_t planes, const float* src,
                                    float* dst, int32_t* win, bool relu);
void max_pool_planes_stride2_avx512(const AvgPoolPlane& g, int64_t planes, const double* src,
                                    double* dst, int32_t* win, bool relu);

// max_pool_backward's dx of `planes` planes of 2x2 stride-2 windows (2 Ho <= H, 2 Wo <= W;
// g's windows are not read) as max_unpool_plane writes it where every winner lies in its
// window's 2x2 block (unpool_plane_2x2: each gradient's bits at its winner, +0 elsewhere).
// Returns how many planes it finished: fewer than `planes` where a winner lies elsewhere,
// the rest then left to max_unpool_plane.
int64_t max_unpool_planes_2x2_avx512(const AvgPoolPlane& g, int64_t planes, const float* grad,
                                     const int32_t* win, float* dx);
int64_t max_unpool_planes_2x2_avx512(const AvgPoolPlane& g, int64_t planes, const double* grad,
                                     const int32_t* win, double* dx);

// max_pool_backward's dx of `planes` planes of g's 2x2 or 3x3 windows at stride 1 as
// max_unpool_plane scatters it (+0, then each window's gradient added at its winner, in
// order), gathered. Returns how many planes it finished: fewer than `planes` at the first plane with a winner
// outside its window, that plane and the rest then left to max_unpool_plane.
int64_t max_unpool_planes_stride1_avx512(const AvgPoolPlane& g, int64_t planes,
                                         const float* grad, const int32_t* win, float* dx);
int64_t max_unpool_planes_stride1_avx512(const AvgPoolPlane& g, int64_t planes,
                                         const double* grad, const int32_t* win, double* dx);

// avg_pool_planes_forward (avg_pool_plane.h: the same bits) of `planes` planes of at most
// kBand entries where it takes the stacked loops' sums (stacked_sums_forward, windows at
// most 17 float32 or 9 float64 wide) or the 2x2 stride-2 loops'.
void avg_pool_planes_forward_avx512(const AvgPoolPlane& g, int64_t planes, const float* src,
                                    float* dst);
void avg_pool_planes_forward_avx512(const AvgPoolPlane& g, int64_t planes, const double* src,
                                    double* dst);

// avg_pool_planes_backward (avg_pool_plane.h: the same bits but for which of two NaNs a
// sum keeps) of `planes` planes of windows at stride 1 or 2, of two entries or more, at
// most 8 wide and not wider than the output row.
void avg_pool_planes_backward_avx512(const AvgPoolPlane& g, int64_t planes, const float* grad,
                                     float* dx);
void avg_pool_planes_backward_avx512(const AvgPoolPlane& g, int64_t planes, const double* grad,
                                     double* dx);

// The planes avg_pool_tiny_planes_backward_avx512 takes, of entries of `bytes` bytes:
// gradients of up to two vectors, dx of up to kTinyVectors, windows of up to kTinyTaps
// entries.
constexpr int64_t kTinyVectors = 8, kTinyTaps = 9;
inline bool avg_pool_tiny_planes(const AvgPoolPlane& g, int64_t bytes) {
    const int64_t lanes = 64 / bytes;
    return g.out_plane() <= 2 * lanes && g.in_plane() <= kTinyVectors * lanes &&
           g.pool_height * g.pool_width <= kTinyTaps;
}

// avg_pool_planes_backward (avg_pool_plane.h: the same bits but for which of two NaNs a
// sum keeps) of `planes` tiny planes (avg_pool_tiny_planes_avx512) where it takes the
// stacked loops (windows that do not tile the plane, not wider than the output row).
void avg_pool_tiny_planes_backward_avx512(const AvgPoolPlane& g, int64_t planes,
                                          const float* grad, float* dx);
void avg_pool_tiny_planes_backward_avx512(const AvgPoolPlane& g, int64_t planes,
                                          const double* grad, double* dx);

}  // namespace graphnet
