// Fused update rules: one pass over the arrays instead of numpy's three to ten.
#pragma once

#include <cstdint>

namespace graphnet {

enum class UpdateRule { sgd, sgd_momentum, rmsprop, adam };

// A rule's hyperparameters, as graphnet.optim's config holds them, in the order of
// `hyperparameter_names` (sgd: learning_rate; sgd_momentum: + momentum; rmsprop: +
// decay_rate, epsilon; adam: + beta1, beta2, epsilon), and adam's step count.
struct UpdateStep {
    UpdateRule rule;
    double hyper[4];
    int64_t t;  // adam's, already incremented: the first step is t = 1
};

// In place: w and the rule's state arrays (sgd: none; sgd_momentum: velocity; rmsprop:
// cache; adam: m, v) updated for one step. Same arithmetic, in the same order and
// precision, as graphnet.optim's numpy expressions, so the results are identical.
template <typename T>
void apply_update(const UpdateStep& step, int64_t n, T* w, const T* dw, T* state0, T* state1);

// A batchnorm's running average as graphnet's numpy expression computes it,
// out = momentum * running + (1 - momentum) * batch: both scalars rounded to T once, each
// product and the sum rounded to T (no fused multiply-add), so the same bits.
template <typename T>
void running_average(int64_t n, double momentum, const T* running, const T* batch, T* out);

}  // namespace graphnet
