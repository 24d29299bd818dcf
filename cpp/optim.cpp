#include "optim.h"

#include <cmath>

#include "cpu_features.h"
#include "denormals.h"
#include "optim_avx2.h"
#include "optim_loops.h"
#include "threads.h"

namespace graphnet {

namespace {

// Elements [0, n) in chunks of 16K: enough work per chunk to amortise the scheduling. Below
// two chunks no team is started (at batch 1 most of a network's parameters are smaller than
// that, and the team's start costs more than their update). Subnormal states are flushed
// (denormals.h: decaying moments made a fitted network's step 10x slower). The AVX2 copy of
// the loop runs where the CPU has it, the portable one else.
template <typename Scalars, typename T>
void update_in_chunks(const Scalars& a, int64_t n, T* w, const T* dw, T* state0, T* state1) {
    on_team(team_size(n / 16384), [&](int64_t thread, int64_t threads) {
        const FlushSubnormals flush;
        const int64_t begin = n * thread / threads, end = n * (thread + 1) / threads;
        using Loop = void (*)(const Scalars&, int64_t, T*, const T*, T*, T*);
        const Loop elements = cpu_has_avx2_fma() ? Loop(update_elements_avx2<Scalars, T>)
                                                 : Loop(update_elements<T>);
        elements(a, end - begin, w + begin, dw + begin, state0 ? state0 + begin : nullptr,
                 state1 ? state1 + begin : nullptr);
    });
}

}  // namespace

template <typename T>
void apply_update(const UpdateStep& s, int64_t n, T* w, const T* dw, T* state0, T* state1) {
    const double* h = s.hyper;
    const T lr = static_cast<T>(h[0]);
    switch (s.rule) {
        case UpdateRule::sgd:
            return update_in_chunks(SgdScalars<T>{lr}, n, w, dw, state0, state1);
        case UpdateRule::sgd_momentum:
            return update_in_chunks(MomentumScalars<T>{static_cast<T>(h[1]), lr}, n, w, dw,
                                    state0, state1);
        case UpdateRule::rmsprop:
            return update_in_chunks(RmspropScalars<T>{static_cast<T>(h[1]),
                                                      static_cast<T>(1 - h[1]), lr,
                                                      static_cast<T>(h[2])},
                                    n, w, dw, state0, state1);
        case UpdateRule::adam: {
            const double t = static_cast<double>(s.t);
            return update_in_chunks(
                AdamScalars<T>{static_cast<T>(h[1]), static_cast<T>(1 - h[1]),
                               static_cast<T>(h[2]), static_cast<T>(1 - h[2]),
                               static_cast<T>(1 - std::pow(h[1], t)),
                               static_cast<T>(1 - std::pow(h[2], t)), lr, static_cast<T>(h[3])},
                n, w, dw, state0, state1);
        }
    }
}

template <typename T>
void running_average(int64_t n, double momentum, const T* running, const T* batch, T* out) {
    const T keep = static_cast<T>(momentum), take = static_cast<T>(1 - momentum);
    for (int64_t i = 0; i < n; ++i) out[i] = keep * running[i] + take * batch[i];
}

template void running_average<float>(int64_t, double, const float*, const float*, float*);
template void running_average<double>(int64_t, double, const double*, const double*, double*);

template void apply_update<float>(const UpdateStep&, int64_t, float*, const float*, float*,
                                  float*);
template void apply_update<double>(const UpdateStep&, int64_t, double*, const double*, double*,
                                   double*);

}  // namespace graphnet
