#include "dropout.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "cpu_features.h"
#include "dropout_isa.h"
#include "dropout_loops.h"
#include "recurrent.h"
#include "threads.h"

namespace graphnet {
namespace {

// Below this many units a second thread costs more to wake than it saves.
constexpr int64_t kChunk = 1 << 16;

}  // namespace

template <typename T>
void dropout_forward(int64_t n, const T* x, uint64_t key, double keep, T* out, T* mask) {
    if (!(keep > 0 && keep <= 1)) {  // also refuses NaN
        throw std::invalid_argument("dropout keep (the probability of keeping a unit) must be "
                                    "in (0, 1], got " + std::to_string(keep));
    }
    // u = top53 / 2^53 < keep exactly where top53 < keep 2^53 (exact: a power of two).
    const auto threshold = static_cast<uint64_t>(std::ceil(std::ldexp(keep, 53)));
    const T scale = static_cast<T>(1 / keep);  // numpy's x.dtype.type(1 / keep)
    // The switches of the vectorised activations (recurrent.h) choose the copy, so the
    // tests can run all three in one process.
    using Loop = void (*)(int64_t, int64_t, uint64_t, uint64_t, T, const T*, T*, T*);
    const Loop loop = avx512_activations_active() && cpu_has_avx512dq()
                          ? Loop(dropout_elements_avx512)
                      : avx2_activations_active() ? Loop(dropout_elements_avx2)
                                                  : Loop(dropout_elements<T>);
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    parallel_for(team_size(chunks), chunks, [&](int64_t c) {
        loop(c * kChunk, std::min(n, (c + 1) * kChunk), key, threshold, scale, x, out, mask);
    });
}

template <typename T>
void dropout_backward_rows(int64_t rows, int64_t cols, const T* dout, const T* mask, T* dx) {
    if (rows <= 0 || cols <= 0) return;
    const int64_t per_chunk = std::max<int64_t>(1, kChunk / cols);
    const int64_t chunks = (rows + per_chunk - 1) / per_chunk;
    parallel_for(team_size(chunks), chunks, [&](int64_t c) {
        const int64_t last = std::min(rows, (c + 1) * per_chunk);
        for (int64_t r = c * per_chunk; r < last; ++r) {
            const T spread = dout[r];
            const T* m = mask + r * cols;
            T* d = dx + r * cols;
            for (int64_t j = 0; j < cols; ++j) d[j] = spread * m[j];
        }
    });
}

template void dropout_forward<float>(int64_t, const float*, uint64_t, double, float*, float*);
template void dropout_forward<double>(int64_t, const double*, uint64_t, double, double*,
                                      double*);
template void dropout_backward_rows<float>(int64_t, int64_t, const float*, const float*,
                                          float*);
template void dropout_backward_rows<double>(int64_t, int64_t, const double*, const double*,
                                           double*);

}  // namespace graphnet
