// Fused optimizer updates: one pass over the arrays instead of numpy's ten.
#pragma once

#include <cstdint>

namespace graphnet {

struct AdamStep {
    double learning_rate, beta1, beta2, epsilon;
    int64_t t;  // already incremented: the first step is t = 1
};

// In place: m, v and w updated for one step. Same arithmetic, in the same order and
// precision, as graphnet.optim.adam's numpy expressions, so the results are identical.
template <typename T>
void adam_update(const AdamStep& s, int64_t n, T* w, const T* dw, T* m, T* v);

}  // namespace graphnet
