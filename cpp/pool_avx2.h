// The 2x2, stride-2 max pooling on AVX2, eight float32 or four float64 outputs at a time:
// the scalar row (pool.cpp) blends bits without jumps but still takes about 1.4 ns a
// float32 output (one image of 32 x 32 x 32: 11.8 us), most of a CNN's pooling at batch 1,
// and 11 ns a float64 one.
//
// Like activations_avx2.h: compiled for AVX2, no library headers; call only when
// cpu_has_avx2_fma().
#pragma once

#include <cstdint>

#include "avg_pool_plane.h"

namespace graphnet {

// The first Wo / 8 * 8 outputs of one output row of max_pool_forward's 2x2, stride-2
// pooling (pool.h's tie rule: the first maximum in row-major order, a NaN beating any
// number; with relu, of relu(x) as relu_forward computes it), from input rows r0 and r1
// of a plane W wide whose row r0 starts at index row_start. Returns how many it wrote.
int64_t max_pool_row_2x2_avx2(int64_t Wo, int32_t row_start, int32_t W, const float* r0,
                              const float* r1, float* dst, int32_t* win, bool relu);
int64_t max_pool_row_2x2_avx2(int64_t Wo, int32_t row_start, int32_t W, const double* r0,
                              const double* r1, double* dst, int32_t* win, bool relu);

// One (H, W) plane of max_pool_forward with any window at stride 1 or 2 (g: AvgPoolPlane's
// windows, which are max_pool's too): its outputs and their winners under pool.h's tie
// rule, of relu(x) with relu, as the scalar planes of pool.cpp compute them.
void max_pool_plane_avx2(const AvgPoolPlane& g, const float* src, float* dst, int32_t* win,
                         bool relu);
void max_pool_plane_avx2(const AvgPoolPlane& g, const double* src, double* dst, int32_t* win,
                         bool relu);

// `planes` (H, W) planes one after another of max_pool_forward with any window and stride
// (as max_pool_plane_avx2), where stacks(g, g.W) (avg_pool_plane.h: a band holds a window's
// rows).
void max_pool_planes_avx2(const AvgPoolPlane& g, int64_t planes, const float* src, float* dst,
                          int32_t* win, bool relu);
void max_pool_planes_avx2(const AvgPoolPlane& g, int64_t planes, const double* src, double* dst,
                          int32_t* win, bool relu);

// avg_pool_planes_forward and avg_pool_planes_backward (avg_pool_plane.h) compiled for
// AVX2: the same operations in the same order (sums and divisions, no products to fuse),
// on vectors twice as wide as the baseline's.
void avg_pool_planes_forward_avx2(const AvgPoolPlane& g, int64_t planes, const float* src,
                                  float* out);
void avg_pool_planes_forward_avx2(const AvgPoolPlane& g, int64_t planes, const double* src,
                                  double* out);
void avg_pool_planes_backward_avx2(const AvgPoolPlane& g, int64_t planes, const float* grad,
                                   float* dx);
void avg_pool_planes_backward_avx2(const AvgPoolPlane& g, int64_t planes, const double* grad,
                                   double* dx);

}  // namespace graphnet
