// The multiclass hinge (SVM) loss over rows of scores: the svm_loss gate's kernel, one pass
// over each row where numpy takes a dozen calls (each a microsecond at the batches a
// course's classifier trains on).
#pragma once

#include <cstdint>

namespace graphnet {

// For each row r < rows of x (rows x C) with label y = label[r], the margins
// m[k] = (x[k] - x[y]) + 1 for k != y, each rounded in T as numpy rounds them. Returns the
// sum over the rows of the margins above 0 (a NaN margin counts too), added in double row
// by row, divided by `divisor`; dx[r][k] = (m[k] > 0) / divisor for k != y and
// dx[r][y] = -(the count of m[k] > 0) / divisor, divided in T (numpy's `dx /= N`). Labels
// must lie in [0, C) (std::invalid_argument otherwise). Scalar loops: the work per score is
// a subtraction and a compare, less than the call that brings the scores.
template <typename T>
double svm_loss_rows(int64_t rows, int64_t C, const T* x, const int64_t* label, T divisor,
                     T* dx);

}  // namespace graphnet
