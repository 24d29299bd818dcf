#include "optim.h"

#include <cmath>

#include "denormals.h"
#include "threads.h"

namespace graphnet {

template <typename T>
void adam_update(const AdamStep& s, int64_t n, T* w, const T* dw, T* m, T* v) {
    // numpy computes these scalars in double and applies them in T (NEP 50: a Python float
    // does not widen a float32 array), so round them to T once, the way numpy does.
    const T beta1 = static_cast<T>(s.beta1), one_minus_beta1 = static_cast<T>(1 - s.beta1);
    const T beta2 = static_cast<T>(s.beta2), one_minus_beta2 = static_cast<T>(1 - s.beta2);
    const T m_scale = static_cast<T>(1 - std::pow(s.beta1, static_cast<double>(s.t)));
    const T v_scale = static_cast<T>(1 - std::pow(s.beta2, static_cast<double>(s.t)));
    const T lr = static_cast<T>(s.learning_rate), eps = static_cast<T>(s.epsilon);
    // Chunks of 16K elements: enough work per chunk to amortise the scheduling. Subnormal
    // moments are flushed (denormals.h: they made a fitted network's step 10x slower).
#pragma omp parallel num_threads(team_size(n / 16384))
    {
        const FlushSubnormals flush;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; ++i) {
            const T g = dw[i];
            m[i] = m[i] * beta1 + one_minus_beta1 * g;
            v[i] = v[i] * beta2 + one_minus_beta2 * (g * g);
            const T m_hat = m[i] / m_scale;
            const T v_hat = v[i] / v_scale;
            w[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
        }
    }
}

template void adam_update<float>(const AdamStep&, int64_t, float*, const float*, float*, float*);
template void adam_update<double>(const AdamStep&, int64_t, double*, const double*, double*,
                                  double*);

}  // namespace graphnet
