#include "elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "activations_avx2.h"
#include "recurrent.h"
#include "threads.h"

namespace graphnet {

// Below this many elements a second thread costs more to wake than it saves.
constexpr int64_t kElementsPerThread = 1 << 16;

// f(begin, end) over [0, n) in blocks of kElementsPerThread, on the kernels' threads.
template <typename F>
void for_blocks(int64_t n, F f) {
    const int64_t blocks = (n + kElementsPerThread - 1) / kElementsPerThread;
    parallel_for(team_size(blocks), blocks, [&](int64_t b) {
        const int64_t begin = b * kElementsPerThread;
        f(begin, std::min(n, begin + kElementsPerThread));
    });
}

template <typename T>
void relu_forward(int64_t n, const T* x, T* out, bool* keep) {
    if (avx2_activations_active()) {  // the loop below is SSE2 or scalar code (see the kernels)
        for_blocks(n, [&](int64_t begin, int64_t end) {
            relu_forward_avx2(end - begin, x + begin, out + begin, keep + begin);
        });
        return;
    }
    for_blocks(n, [&](int64_t begin, int64_t end) {
#pragma omp simd
        for (int64_t i = begin; i < end; ++i) {
            const bool k = x[i] > T(0);
            keep[i] = k;
            out[i] = (k || x[i] != x[i]) ? x[i] : T(0);  // a NaN passes, as in np.maximum
        }
    });
}

template <typename T>
void relu_backward(int64_t n, const T* dout, const uint8_t* keep, T* dx) {
    for_blocks(n, [&](int64_t begin, int64_t end) {
#pragma omp simd
        for (int64_t i = begin; i < end; ++i) dx[i] = dout[i] * static_cast<T>(keep[i]);
    });
}

void sigmoid_forward(int64_t n, const float* x, float* out) {
    const bool avx2 = avx2_activations_active();
    for_blocks(n, [&](int64_t begin, int64_t end) {
        if (avx2) return sigmoid_avx2(end - begin, x + begin, nullptr, out + begin);
        // exp(-v) = inf for v << 0 gives 0, not nan
        for (int64_t k = begin; k < end; ++k) out[k] = 1.0f / (1.0f + std::exp(-x[k]));
    });
}

template <typename T>
bool all_finite(int64_t n, const T* x) {
    using U = std::conditional_t<std::is_same_v<T, float>, uint32_t, uint64_t>;
    constexpr U kExponent = std::is_same_v<T, float> ? U(0x7f800000u) : U(0x7ff0000000000000u);
    constexpr U kExponentOne = kExponent & (~kExponent + 1);  // the exponent's lowest bit
    constexpr U kSign = ~(~U(0) >> 1);
    constexpr int64_t kBlock = 1024;  // a vectorised pass without exits, then one test
    for (int64_t begin = 0; begin < n; begin += kBlock) {
        const int64_t end = std::min(n, begin + kBlock);
        // An exponent of all ones (inf, NaN) plus its lowest bit carries into the sign bit;
        // every other exponent stays below it. Adds and ors, not a compare: SSE2 has no
        // 64-bit integer compare, so a compare left the float64 loop scalar (4x slower).
        U carries = 0;
        for (int64_t i = begin; i < end; ++i) {
            U bits;
            std::memcpy(&bits, x + i, sizeof bits);
            carries |= (bits & kExponent) + kExponentOne;
        }
        if (carries & kSign) return false;
    }
    return true;
}

namespace {

// Every index[p] in [0, rows), else std::invalid_argument naming `what` and the `rows`'.
void require_row_indices(const char* what, const char* rows_of, int64_t count,
                         const int64_t* index, int64_t rows) {
    for (int64_t p = 0; p < count; ++p) {
        if (index[p] < 0 || index[p] >= rows) {
            throw std::invalid_argument(std::string(what) + ": index " + std::to_string(index[p]) +
                                        " at position " + std::to_string(p) + " is outside [0, " +
                                        std::to_string(rows) + "), " + rows_of);
        }
    }
}

}  // namespace

template <typename T>
void gather_rows(int64_t count, int64_t width, const int64_t* index, const T* table,
                 int64_t rows, T* out) {
    require_row_indices("gather_rows", "the table's rows", count, index, rows);
    for (int64_t p = 0; p < count; ++p) {
        std::copy(table + index[p] * width, table + (index[p] + 1) * width, out + p * width);
    }
}

template <typename T>
void scatter_add_rows(int64_t count, int64_t width, const int64_t* index, const T* values,
                      int64_t rows, T* out) {
    require_row_indices("scatter_add_rows", "the output's rows", count, index, rows);
    std::fill(out, out + rows * width, T(0));
    for (int64_t p = 0; p < count; ++p) {
        T* row = out + index[p] * width;
        const T* add = values + p * width;
        for (int64_t j = 0; j < width; ++j) row[j] += add[j];
    }
}

template void gather_rows<float>(int64_t, int64_t, const int64_t*, const float*, int64_t, float*);
template void gather_rows<double>(int64_t, int64_t, const int64_t*, const double*, int64_t,
                                  double*);
template void scatter_add_rows<float>(int64_t, int64_t, const int64_t*, const float*, int64_t,
                                      float*);
template void scatter_add_rows<double>(int64_t, int64_t, const int64_t*, const double*, int64_t,
                                       double*);
template bool all_finite<float>(int64_t, const float*);
template bool all_finite<double>(int64_t, const double*);
template void relu_forward<float>(int64_t, const float*, float*, bool*);
template void relu_forward<double>(int64_t, const double*, double*, bool*);
template void relu_backward<float>(int64_t, const float*, const uint8_t*, float*);
template void relu_backward<double>(int64_t, const double*, const uint8_t*, double*);

}  // namespace graphnet
