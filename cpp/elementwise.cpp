#include "elementwise.h"

#include "threads.h"

namespace graphnet {

// Below this many elements a second thread costs more to wake than it saves.
constexpr int64_t kElementsPerThread = 1 << 16;

template <typename T>
void relu_forward(int64_t n, const T* x, T* out, bool* keep) {
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

template void relu_forward<float>(int64_t, const float*, float*, bool*);
template void relu_forward<double>(int64_t, const double*, double*, bool*);
template void relu_backward<float>(int64_t, const float*, const uint8_t*, float*);
template void relu_backward<double>(int64_t, const double*, const uint8_t*, double*);

}  // namespace graphnet
