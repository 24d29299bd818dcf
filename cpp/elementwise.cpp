#include "elementwise.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "activations_avx2.h"
#include "recurrent.h"
#include "threads.h"

namespace graphnet {

// Below this many elements a second thread costs more to wake than it saves.
constexpr int64_t kElementsPerThread = 1 << 16;

template <typename T>
void relu_forward(int64_t n, const T* x, T* out, bool* keep) {
    if constexpr (std::is_same_v<T, double>) {
        if (avx2_activations_active()) {  // the float64 loop below is scalar code (see the kernel)
            const int64_t chunks = (n + kElementsPerThread - 1) / kElementsPerThread;
#pragma omp parallel for schedule(static) num_threads(team_size(chunks))
            for (int64_t c = 0; c < chunks; ++c) {
                const int64_t begin = c * kElementsPerThread;
                relu_forward_avx2(std::min(n, begin + kElementsPerThread) - begin, x + begin,
                                  out + begin, keep + begin);
            }
            return;
        }
    }
#pragma omp parallel for simd schedule(static) num_threads(team_size(n / kElementsPerThread))
    for (int64_t i = 0; i < n; ++i) {
        const bool k = x[i] > T(0);
        keep[i] = k;
        out[i] = (k || x[i] != x[i]) ? x[i] : T(0);  // a NaN passes, as in np.maximum
    }
}

template <typename T>
void relu_backward(int64_t n, const T* dout, const uint8_t* keep, T* dx) {
#pragma omp parallel for simd schedule(static) num_threads(team_size(n / kElementsPerThread))
    for (int64_t i = 0; i < n; ++i) dx[i] = dout[i] * static_cast<T>(keep[i]);
}

void sigmoid_forward(int64_t n, const float* x, float* out) {
    const bool avx2 = avx2_activations_active();
    const int64_t chunks = (n + kElementsPerThread - 1) / kElementsPerThread;
#pragma omp parallel for schedule(static) num_threads(team_size(chunks))
    for (int64_t c = 0; c < chunks; ++c) {
        const int64_t begin = c * kElementsPerThread, end = std::min(n, begin + kElementsPerThread);
        if (avx2) {
            sigmoid_avx2(end - begin, x + begin, nullptr, out + begin);
            continue;
        }
        // exp(-v) = inf for v << 0 gives 0, not nan
        for (int64_t k = begin; k < end; ++k) out[k] = 1.0f / (1.0f + std::exp(-x[k]));
    }
}

template void relu_forward<float>(int64_t, const float*, float*, bool*);
template void relu_forward<double>(int64_t, const double*, double*, bool*);
template void relu_backward<float>(int64_t, const float*, const uint8_t*, float*);
template void relu_backward<double>(int64_t, const double*, const uint8_t*, double*);

}  // namespace graphnet
