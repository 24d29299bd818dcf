#include "optim.h"

#include <cmath>

#include "cpu_features.h"
#include "denormals.h"
#include "optim_avx2.h"
#include "optim_loops.h"
#include "threads.h"

namespace graphnet {

namespace {

template <typename T>
AdamScalars<T> scalars_of(const AdamStep& s) {
    return {static_cast<T>(s.beta1),
            static_cast<T>(1 - s.beta1),
            static_cast<T>(s.beta2),
            static_cast<T>(1 - s.beta2),
            static_cast<T>(1 - std::pow(s.beta1, static_cast<double>(s.t))),
            static_cast<T>(1 - std::pow(s.beta2, static_cast<double>(s.t))),
            static_cast<T>(s.learning_rate),
            static_cast<T>(s.epsilon)};
}

// Elements [0, n): the AVX2 copy of the loop where the CPU has it, the portable one else.
template <typename T>
void adam_span(const AdamScalars<T>& a, int64_t n, T* w, const T* dw, T* m, T* v) {
    (cpu_has_avx2_fma() ? adam_elements_avx2<T> : adam_elements<T>)(a, n, w, dw, m, v);
}

}  // namespace

template <typename T>
void adam_update(const AdamStep& s, int64_t n, T* w, const T* dw, T* m, T* v) {
    const AdamScalars<T> a = scalars_of<T>(s);
    // Chunks of 16K elements: enough work per chunk to amortise the scheduling. Below two
    // chunks no team is started (at batch 1 most of a network's parameters are smaller
    // than that, and the team's start costs more than their update). Subnormal moments are
    // flushed (denormals.h: they made a fitted network's step 10x slower).
    on_team(team_size(n / 16384), [&](int64_t thread, int64_t threads) {
        const FlushSubnormals flush;
        const int64_t begin = n * thread / threads, end = n * (thread + 1) / threads;
        adam_span(a, end - begin, w + begin, dw + begin, m + begin, v + begin);
    });
}

template void adam_update<float>(const AdamStep&, int64_t, float*, const float*, float*, float*);
template void adam_update<double>(const AdamStep&, int64_t, double*, const double*, double*,
                                  double*);

}  // namespace graphnet
