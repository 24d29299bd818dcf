// The mean of each row of a contiguous (rows, n) array with numpy's own summation, so that a
// mean over an array's trailing axes (a global average pool, a mean over features) gives
// np.mean's numbers bit for bit without numpy's iterator, which costs 25-30 ns a row and
// makes the mean of a (16, 100, 7, 7) batch 3x PyTorch's time.
#pragma once

#include <cstdint>

namespace graphnet {

// out[r] = (0 + pairwise_sum(x[r])) / T(n) for each row r < rows of x (rows x n), where
// pairwise_sum is numpy's (numpy/_core/src/umath/loops_utils.h.src): below 8 values a
// plain left-to-right sum from 0; up to 128, eight running sums of every eighth value,
// added as ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)), then the tail left to right;
// above 128, the sum of the two halves (the first a multiple of 8 long), each the same way.
// Each addition is one rounding in T, so the result is the same on any thread and any CPU.
template <typename T>
void row_means(int64_t rows, int64_t n, const T* x, T* out);

// out[a, c] = (0 + x[a, 0, c] + x[a, 1, c] + ... + x[a, n - 1, c]) / T(n) for each a < outer,
// c < inner of x (outer, n, inner): np.mean over a middle axis (a transformer's mean over
// the steps), which numpy sums in order, adding the reduced axis's slices one after the
// other (its iterator keeps the contiguous inner axis as the inner loop: no pairwise
// summation). Each output its own chain of roundings in T: the same on any thread and CPU.
template <typename T>
void middle_means(int64_t outer, int64_t n, int64_t inner, const T* x, T* out);

// dx[a, j, c] = dout[a, c] / T(n) for each j < n, dout (outer, inner), dx (outer, n, inner):
// a mean's gradient, spread to each averaged entry (numpy's true_divide, then a copy).
template <typename T>
void spread_means(int64_t outer, int64_t n, int64_t inner, const T* dout, T* dx);

// 0 + pairwise_sum(x) of n contiguous values, as above: np.sum's bits on a contiguous run
// (a one-column affine's bias gradient, which numpy sums so, where column_sums adds the
// rows in order).
template <typename T>
T numpy_sum(const T* x, int64_t n);

}  // namespace graphnet
