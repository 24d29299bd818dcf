#include "pointwise.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "cpu_features.h"
#include "pointwise_avx2.h"
#include "pointwise_avx512.h"
#include "softmax_rows.h"
#include "recurrent.h"
#include "threads.h"

namespace graphnet {
namespace {

// Below this many elements a second thread costs more to wake than it saves.
constexpr int64_t kChunk = 1 << 16;

// f(begin, end) over [0, n) in chunks of kChunk, on the kernels' threads.
template <typename F>
void for_chunks(int64_t n, F f) {
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    parallel_for(team_size(chunks), chunks,
                 [&](int64_t c) { f(c * kChunk, std::min(n, (c + 1) * kChunk)); });
}

// The AVX2 path (pointwise_avx2.h lists its ops), where the CPU has it and the recurrent
// kernels' switch allows.
template <typename T>
bool avx2_path(Pointwise op, bool backward) {
    if (!avx2_activations_active()) return false;
    const bool single = std::is_same<T, float>::value;
    switch (op) {
        case Pointwise::gelu:
        case Pointwise::softplus:
        case Pointwise::gelu_tanh:
            return true;
        case Pointwise::sigmoid:
            return !single && !backward;
        default:
            return false;
    }
}

constexpr double kSqrt2OverPi = 0.79788456080286535588, kTanhCubic = 0.044715;
constexpr double kInvSqrt2 = 0.70710678118654752440, kInvSqrt2Pi = 0.39894228040143267794;

// Phi(x) = erfc(-x / sqrt 2) / 2: no cancellation in the left tail, unlike 1 + erf. In
// double also for float32: a rounded x / sqrt 2 or x^2 would be off by x^2 2^-24 relative
// far in the tail (190 units in the last place at x = -12.9).
inline double normal_cdf(double x) { return 0.5 * std::erfc(-x * kInvSqrt2); }

inline double normal_pdf(double x) { return std::exp(-0.5 * x * x) * kInvSqrt2Pi; }

template <typename T>
inline T gelu_tanh_arg(T x) {
    return T(kSqrt2OverPi) * (x + T(kTanhCubic) * x * x * x);
}

// gelu's f'(x) = Phi(x) + x phi(x), computed in double and rounded once.
template <typename T>
inline T gelu_slope(T x) {
    const double wide = x;
    return static_cast<T>(normal_cdf(wide) + wide * normal_pdf(wide));
}

// gelu_tanh's f'(x) from t = tanh(gelu_tanh_arg(x)).
template <typename T>
inline T gelu_tanh_slope(T x, T t) {
    return T(0.5) * (1 + t) +
           T(0.5) * x * (1 - t * t) * T(kSqrt2OverPi) * (1 + 3 * T(kTanhCubic) * x * x);
}

template <typename T>
inline T sigmoid(T x) {
    const T e = std::exp(-std::abs(x));  // never overflows
    return (x >= 0 ? T(1) : e) / (1 + e);
}

template <typename T>
void forward_portable(Pointwise op, int64_t n, const T* x, T alpha, T* out) {
    switch (op) {
        case Pointwise::gelu:
            for (int64_t k = 0; k < n; ++k) out[k] = static_cast<T>(x[k] * normal_cdf(x[k]));
            return;
        case Pointwise::gelu_tanh:
            for (int64_t k = 0; k < n; ++k) {
                out[k] = T(0.5) * x[k] * (1 + std::tanh(gelu_tanh_arg(x[k])));
            }
            return;
        case Pointwise::leaky_relu:
#pragma omp simd
            for (int64_t k = 0; k < n; ++k) out[k] = plain_forward<false>(x[k], alpha);
            return;
        case Pointwise::relu:
#pragma omp simd
            for (int64_t k = 0; k < n; ++k) out[k] = plain_forward<true>(x[k], alpha);
            return;
        case Pointwise::softplus:  // max(x, 0) + ln(1 + e^-|x|), as np.logaddexp(0, x)
            for (int64_t k = 0; k < n; ++k) {
                out[k] = (x[k] > 0 ? x[k] : T(0)) + std::log1p(std::exp(-std::abs(x[k])));
            }
            return;
        case Pointwise::sigmoid:
            for (int64_t k = 0; k < n; ++k) out[k] = sigmoid(x[k]);
            return;
        case Pointwise::tanh:
            for (int64_t k = 0; k < n; ++k) out[k] = std::tanh(x[k]);
            return;
    }
}

template <typename T>
void backward_portable(Pointwise op, int64_t n, const T* dout, const T* s, T alpha, T* dx) {
    switch (op) {
        case Pointwise::gelu:
            for (int64_t k = 0; k < n; ++k) dx[k] = dout[k] * gelu_slope(s[k]);
            return;
        case Pointwise::gelu_tanh:
            for (int64_t k = 0; k < n; ++k) {
                dx[k] = dout[k] * gelu_tanh_slope(s[k], std::tanh(gelu_tanh_arg(s[k])));
            }
            return;
        case Pointwise::leaky_relu:
#pragma omp simd
            for (int64_t k = 0; k < n; ++k) dx[k] = plain_backward<false>(dout[k], s[k], alpha);
            return;
        case Pointwise::relu:
#pragma omp simd
            for (int64_t k = 0; k < n; ++k) dx[k] = plain_backward<true>(dout[k], s[k], alpha);
            return;
        case Pointwise::softplus:
            for (int64_t k = 0; k < n; ++k) dx[k] = dout[k] * sigmoid(s[k]);
            return;
        case Pointwise::sigmoid:
#pragma omp simd
            for (int64_t k = 0; k < n; ++k) dx[k] = dout[k] * s[k] * (1 - s[k]);
            return;
        case Pointwise::tanh:
#pragma omp simd
            for (int64_t k = 0; k < n; ++k) dx[k] = dout[k] * (1 - s[k] * s[k]);
            return;
    }
}

template <typename T>
void forward_slope_portable(Pointwise op, int64_t n, const T* x, T* out, T* slope) {
    if (op == Pointwise::gelu) {
        for (int64_t k = 0; k < n; ++k) slope[k] = gelu_slope(x[k]);
    } else {
        for (int64_t k = 0; k < n; ++k) {
            slope[k] = gelu_tanh_slope(x[k], std::tanh(gelu_tanh_arg(x[k])));
        }
    }
    forward_portable(op, n, x, T(0), out);
}

}  // namespace

bool pointwise_saves_input(Pointwise op) {
    return op == Pointwise::gelu || op == Pointwise::gelu_tanh || pointwise_is_plain(op) ||
           op == Pointwise::softplus;
}

// The whole blocks of 64 bytes on AVX-512 where it is active and has the op (the same
// bits as AVX2's, twice the lanes: gelu 1.6x faster measured in float32), then the rest
// (all of it elsewhere) on AVX2.
template <typename T>
void pointwise_forward_serial(Pointwise op, int64_t n, const T* x, T alpha, T* out) {
    if (!avx2_path<T>(op, false)) return forward_portable(op, n, x, alpha, out);
    if (avx512_activations_active()) {
        const int64_t done = pointwise_forward_avx512(op, n, x, out);
        n -= done, x += done, out += done;
    }
    pointwise_forward_avx2(op, n, x, alpha, out);
}

template <typename T>
void pointwise_backward_serial(Pointwise op, int64_t n, const T* dout, const T* saved, T alpha,
                               T* dx) {
    if (!avx2_path<T>(op, true)) return backward_portable(op, n, dout, saved, alpha, dx);
    if (avx512_activations_active()) {
        const int64_t done = pointwise_backward_avx512(op, n, dout, saved, dx);
        n -= done, dout += done, saved += done, dx += done;
    }
    pointwise_backward_avx2(op, n, dout, saved, alpha, dx);
}

template <typename T>
void pointwise_forward(Pointwise op, int64_t n, const T* x, T alpha, T* out) {
    for_chunks(n, [&](int64_t begin, int64_t end) {
        pointwise_forward_serial(op, end - begin, x + begin, alpha, out + begin);
    });
}

template <typename T>
void pointwise_backward(Pointwise op, int64_t n, const T* dout, const T* saved, T alpha, T* dx) {
    for_chunks(n, [&](int64_t begin, int64_t end) {
        pointwise_backward_serial(op, end - begin, dout + begin, saved + begin, alpha, dx + begin);
    });
}

bool pointwise_has_slope(Pointwise op) {
    return op == Pointwise::gelu || op == Pointwise::gelu_tanh;
}

// As pointwise_forward_serial: AVX-512's whole vectors, then AVX2, or all of it portable.
template <typename T>
void pointwise_forward_slope(Pointwise op, int64_t n, const T* x, T* out, T* slope) {
    for_chunks(n, [&](int64_t begin, int64_t end) {
        int64_t count = end - begin;
        const T* xs = x + begin;
        T *outs = out + begin, *slopes = slope + begin;
        if (!avx2_path<T>(op, false)) return forward_slope_portable(op, count, xs, outs, slopes);
        if (avx512_activations_active()) {
            const int64_t done = pointwise_forward_slope_avx512(op, count, xs, outs, slopes);
            count -= done, xs += done, outs += done, slopes += done;
        }
        pointwise_forward_slope_avx2(op, count, xs, outs, slopes);
    });
}

template <typename T>
void erf_forward(int64_t n, const T* x, T* out) {
    const bool avx2 = std::is_same<T, float>::value && avx2_activations_active();
    for_chunks(n, [&](int64_t begin, int64_t end) {
        if constexpr (std::is_same<T, float>::value) {
            if (avx2) return erf_avx2(end - begin, x + begin, out + begin);
        }
        for (int64_t k = begin; k < end; ++k) out[k] = std::erf(x[k]);
    });
}

namespace {

// The rows [begin, end) of a softmax, each on one thread: the same bits for any count.
template <typename F>
void for_rows(int64_t rows, int64_t cols, F f) {
    const int64_t per_chunk = std::max<int64_t>(1, kChunk / std::max<int64_t>(cols, 1));
    const int64_t chunks = (rows + per_chunk - 1) / per_chunk;
    parallel_for(team_size(chunks), chunks, [&](int64_t c) {
        for (int64_t r = c * per_chunk; r < std::min(rows, (c + 1) * per_chunk); ++r) f(r);
    });
}

// The row's maximum, NaN if it holds one (as np.max). The loop is a plain max the compiler
// vectorises; x * 0 summed is NaN only if some entry is NaN or infinite, and only then is
// the row searched for a NaN.
}  // namespace

template <typename T>
void softmax_rows_forward(int64_t rows, int64_t cols, const T* x, T* out, bool log) {
    const bool avx2 = avx2_activations_active();
    for_rows(rows, cols, [&](int64_t r) {
        const T* row = x + r * cols;
        T* o = out + r * cols;
        const T shift = row_max(cols, row);
        const T sum = exp_shifted_sum(cols, row, shift, log ? nullptr : o, avx2);
        if (log) {
            const T log_sum = std::log(sum);
#pragma omp simd
            for (int64_t k = 0; k < cols; ++k) o[k] = (row[k] - shift) - log_sum;
        } else {  // times the reciprocal: a division per entry would cost more than the exps
            const T scale = T(1) / sum;
#pragma omp simd
            for (int64_t k = 0; k < cols; ++k) o[k] *= scale;
        }
    });
}

template <typename T>
void softmax_rows_backward(int64_t rows, int64_t cols, const T* dout, const T* out, T* dx,
                           bool log) {
    const bool avx2 = avx2_activations_active();
    for_rows(rows, cols, [&](int64_t r) {
        const T *d = dout + r * cols, *o = out + r * cols;
        T* g = dx + r * cols;
        T total = 0;  // log: sum(dout); else sum(dout s)
        if (log) {
#pragma omp simd reduction(+ : total)
            for (int64_t k = 0; k < cols; ++k) total += d[k];
            if (avx2) return log_softmax_row_backward_avx2(cols, d, o, total, g);
            for (int64_t k = 0; k < cols; ++k) g[k] = d[k] - std::exp(o[k]) * total;
        } else {
#pragma omp simd reduction(+ : total)
            for (int64_t k = 0; k < cols; ++k) total += d[k] * o[k];
#pragma omp simd
            for (int64_t k = 0; k < cols; ++k) g[k] = o[k] * (d[k] - total);
        }
    });
}

template void pointwise_forward<float>(Pointwise, int64_t, const float*, float, float*);
template void pointwise_forward<double>(Pointwise, int64_t, const double*, double, double*);
template void pointwise_backward<float>(Pointwise, int64_t, const float*, const float*, float,
                                        float*);
template void pointwise_backward<double>(Pointwise, int64_t, const double*, const double*, double,
                                         double*);
#define GRAPHNET_POINTWISE_SERIAL(T)                                                     \
    template void pointwise_forward_serial<T>(Pointwise, int64_t, const T*, T, T*);       \
    template void pointwise_backward_serial<T>(Pointwise, int64_t, const T*, const T*, T, T*);
GRAPHNET_POINTWISE_SERIAL(float)
GRAPHNET_POINTWISE_SERIAL(double)
#undef GRAPHNET_POINTWISE_SERIAL
template void pointwise_forward_slope<float>(Pointwise, int64_t, const float*, float*, float*);
template void pointwise_forward_slope<double>(Pointwise, int64_t, const double*, double*,
                                              double*);
template void erf_forward<float>(int64_t, const float*, float*);
template void erf_forward<double>(int64_t, const double*, double*);
template void softmax_rows_forward<float>(int64_t, int64_t, const float*, float*, bool);
template void softmax_rows_forward<double>(int64_t, int64_t, const double*, double*, bool);
template void softmax_rows_backward<float>(int64_t, int64_t, const float*, const float*, float*,
                                           bool);
template void softmax_rows_backward<double>(int64_t, int64_t, const double*, const double*,
                                            double*, bool);

}  // namespace graphnet
