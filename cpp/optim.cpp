#include "optim.h"

#include <cmath>

#include "denormals.h"
#include "threads.h"

namespace graphnet {

namespace {

// The step's scalars, in T: numpy computes them in double and applies them in T (NEP 50: a
// Python float does not widen a float32 array), so they are rounded to T once, as numpy does.
template <typename T>
struct AdamScalars {
    T beta1, one_minus_beta1, beta2, one_minus_beta2, m_scale, v_scale, lr, eps;

    explicit AdamScalars(const AdamStep& s)
        : beta1(static_cast<T>(s.beta1)),
          one_minus_beta1(static_cast<T>(1 - s.beta1)),
          beta2(static_cast<T>(s.beta2)),
          one_minus_beta2(static_cast<T>(1 - s.beta2)),
          m_scale(static_cast<T>(1 - std::pow(s.beta1, static_cast<double>(s.t)))),
          v_scale(static_cast<T>(1 - std::pow(s.beta2, static_cast<double>(s.t)))),
          lr(static_cast<T>(s.learning_rate)),
          eps(static_cast<T>(s.epsilon)) {}
};

// Elements [0, n) of the arrays (the pointers passed as values: the loop is vectorised).
template <typename T>
void adam_elements(const AdamScalars<T>& a, int64_t n, T* w, const T* dw, T* m, T* v) {
    for (int64_t i = 0; i < n; ++i) {
        const T g = dw[i];
        m[i] = m[i] * a.beta1 + a.one_minus_beta1 * g;
        v[i] = v[i] * a.beta2 + a.one_minus_beta2 * (g * g);
        const T m_hat = m[i] / a.m_scale;
        const T v_hat = v[i] / a.v_scale;
        w[i] -= a.lr * m_hat / (std::sqrt(v_hat) + a.eps);
    }
}

}  // namespace

template <typename T>
void adam_update(const AdamStep& s, int64_t n, T* w, const T* dw, T* m, T* v) {
    const AdamScalars<T> a(s);
    // Chunks of 16K elements: enough work per chunk to amortise the scheduling. Below two
    // chunks no team is started (at batch 1 most of a network's parameters are smaller
    // than that, and the team's start costs more than their update). Subnormal moments are
    // flushed (denormals.h: they made a fitted network's step 10x slower).
    on_team(team_size(n / 16384), [&](int64_t thread, int64_t threads) {
        const FlushSubnormals flush;
        const int64_t begin = n * thread / threads, end = n * (thread + 1) / threads;
        adam_elements(a, end - begin, w + begin, dw + begin, m + begin, v + begin);
    });
}

template void adam_update<float>(const AdamStep&, int64_t, float*, const float*, float*, float*);
template void adam_update<double>(const AdamStep&, int64_t, double*, const double*, double*,
                                  double*);

}  // namespace graphnet
