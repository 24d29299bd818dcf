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

}  // namespace graphnet
