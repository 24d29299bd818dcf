// Max pooling without padding: x (N, C, H, W) -> out (N, C, Ho, Wo) with
// Ho = 1 + (H - pool_height) // stride, Wo likewise. Windows may overlap.
//
// Tie rule: within a window the FIRST maximum in row-major order wins (strict >), and
// it alone receives the gradient. A NaN counts as the maximum (the first NaN wins), so
// NaNs propagate to the output as in numpy.max and PyTorch.
#pragma once

#include "shapes.h"

namespace graphnet {

struct PoolGeometry {
    int64_t N, C, H, W;
    int64_t pool_height, pool_width, stride;
    int64_t Ho, Wo;

    Shape out_shape() const { return {N, C, Ho, Wo}; }
};

PoolGeometry pool_geometry(const Shape& x, int64_t pool_height, int64_t pool_width,
                           int64_t stride);

template <typename T>
void max_pool_forward(const PoolGeometry& g, const T* x, T* out);

// Recomputes each window's winner from x (no index cache to trust or validate).
template <typename T>
void max_pool_backward(const PoolGeometry& g, const T* dout, const T* x, T* dx);

}  // namespace graphnet
