// ReLU forward and backward, and the float32 sigmoid, on graphnet's threads: one pass each, where numpy needs two
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

// out = 1 / (1 + e^-x) for float32, in one threaded pass: on AVX2 (within 3 units in the
// last place; below 1.2e-38 it saturates at 4.5e-39) where avx2_activations_active()
// (recurrent.h) says so, else with the C library's exp.
void sigmoid_forward(int64_t n, const float* x, float* out);

// Whether none of x[0..n) is NaN or infinite, read from the exponent bits (no floating
// point operation, so no status flag is raised), stopping at the first block that holds
// one. The feed check of every batch (graphnet/core/feeds.py): np.isfinite(x).all() took
// 1.3 us on one 3072-float image, most of it making and reducing its temporary.
template <typename T>
bool all_finite(int64_t n, const T* x);

// out (rows x width) = the sum, for each row r, of values[p] (p < count, each a row of
// width) over the positions p whose index[p] is r, added in position order: a word
// embedding's weight gradient (np.add.at's order, one pass where numpy sorts, gathers and
// reduces). Indices must lie in [0, rows) (checked first: std::invalid_argument otherwise).
template <typename T>
void scatter_add_rows(int64_t count, int64_t width, const int64_t* index, const T* values,
                      int64_t rows, T* out);

// out[p] (a row of width) = table[index[p]] for each position p < count: a word embedding's
// lookup, its gradient's counterpart. Indices must lie in [0, rows) (checked first:
// std::invalid_argument otherwise).
template <typename T>
void gather_rows(int64_t count, int64_t width, const int64_t* index, const T* table,
                 int64_t rows, T* out);

}  // namespace graphnet
