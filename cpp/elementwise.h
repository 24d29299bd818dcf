// ReLU forward and backward on graphnet's threads: one pass each, where numpy needs two
// for the forward (the max, then the mask backward keeps) and makes a temporary in the
// backward. Training a CNN runs them on every activation, so the passes add up.
#pragma once

#include <cstdint>

namespace graphnet {

// out = max(x, 0) (a NaN stays NaN, as in np.maximum) and keep = x > 0 (a NaN is not).
template <typename T>
void relu_forward(int64_t n, const T* x, T* out, bool* keep);

// dx = dout * keep, exactly as numpy's dout * mask (so a NaN upstream stays NaN).
template <typename T>
void relu_backward(int64_t n, const T* dout, const uint8_t* keep, T* dx);

}  // namespace graphnet
