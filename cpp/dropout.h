// Inverted dropout's train-mode forward without a seed (graphnet/gates/norm.py, Dropout):
// the mask and the output in one threaded pass, where numpy drew the uniforms, compared
// them, built the mask and multiplied in four passes with temporaries.
//
// Unit i (x's C order) is kept where the top 53 bits of the SplitMix64 generator's output
// number i + 1 from state `key` (dropout_loops.h), read as a uniform u in [0, 1), are
// below `keep`: each unit with probability keep, to within 2^-53. The caller draws a new
// key per call from its own random stream. A unit's draw depends on the key and its index
// only, so every thread count and every build (AVX-512, AVX2, portable) gives the same
// mask, and float32 and float64 give the same units.
#pragma once

#include <cstdint>

namespace graphnet {

// mask[i] = T(1 / keep) where unit i is kept, else 0 (the course's mask: what
// dropout_backward multiplies by); out[i] = x[i] * mask[i], as numpy's x * mask (so a NaN
// or an infinity that is dropped gives NaN). keep: the probability of keeping a unit, in
// (0, 1]; std::invalid_argument otherwise.
template <typename T>
void dropout_forward(int64_t n, const T* x, uint64_t key, double keep, T* out, T* mask);

// The backward of a gradient that is one number per row of `cols` units (a mean's over
// the trailing axes, which spreads dout / n over each row: graphnet/passes/dropout_mean.py):
// dx[r * cols + j] = dout[r] * mask[r * cols + j], the products numpy's dout * mask takes
// of the spread gradient, without that gradient's array. Threaded by whole rows.
template <typename T>
void dropout_backward_rows(int64_t rows, int64_t cols, const T* dout, const T* mask, T* dx);

}  // namespace graphnet
