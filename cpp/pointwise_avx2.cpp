// AVX2 + FMA kernels of pointwise_avx2.h: pointwise_lanes.h's functions on eight float32 or
// four float64 lanes. Compiled for AVX2: includes only the intrinsics.
#pragma GCC target("avx2,fma")
// GCC warns that a lambda returning a vector "changes the ABI without AVX": it means the
// lambda's unused conversion to a plain function pointer; every call here is inside this
// file, compiled for AVX2.
#pragma GCC diagnostic ignored "-Wpsabi"
#include "pointwise_avx2.h"

#include "pointwise_lanes.h"

namespace graphnet {
namespace {

template <typename V, typename T>
void forward(Pointwise op, int64_t n, const T* x, T* out) {
    with_forward<V>(op, [&](auto f) { map_all<V>(n, f, out, x); });
}

template <typename V, typename T>
void forward_slope(Pointwise op, int64_t n, const T* x, T* out, T* slope) {
    with_forward_slope<V>(op, [&](auto f) { map_all2<V>(n, f, out, slope, x); });
}

template <typename V, typename T>
void backward(Pointwise op, int64_t n, const T* dout, const T* saved, T* dx) {
    with_backward<V>(op, [&](auto f) { map_all<V>(n, f, dx, dout, saved); });
}

template <typename V, typename T>
T exp_shifted_sum(int64_t n, const T* x, T shift, T* out) {
    using L = Lanes<V>;
    const V s = L::set1(shift);
    V sum = L::zero();
    int64_t k = 0;
    for (; k + L::width <= n; k += L::width) {
        const V e = exp_full(L::sub(L::load(x + k), s));
        if (out) L::store(out + k, e);
        sum = L::add(sum, e);
    }
    if (k < n) {
        const typename L::Tail lanes = L::tail(n - k);
        const V e = L::keep(lanes, exp_full(L::sub(L::load(x + k, lanes), s)));
        if (out) L::store(out + k, lanes, e);
        sum = L::add(sum, e);
    }
    return L::sum(sum);
}

template <typename V, typename T>
void log_softmax_row_backward(int64_t n, const T* dout, const T* out, T total, T* dx) {
    using L = Lanes<V>;
    const V t = L::set1(total);
    map_all<V>(n, [&](V d, V o) { return L::fnmadd(exp_full(o), t, d); }, dx, dout, out);
}

}  // namespace

void pointwise_forward_avx2(Pointwise op, int64_t n, const float* x, float, float* out) {
    forward<__m256>(op, n, x, out);
}

void pointwise_forward_avx2(Pointwise op, int64_t n, const double* x, double, double* out) {
    forward<__m256d>(op, n, x, out);
}

void pointwise_forward_slope_avx2(Pointwise op, int64_t n, const float* x, float* out,
                                  float* slope) {
    forward_slope<__m256>(op, n, x, out, slope);
}

void pointwise_forward_slope_avx2(Pointwise op, int64_t n, const double* x, double* out,
                                  double* slope) {
    forward_slope<__m256d>(op, n, x, out, slope);
}

void pointwise_backward_avx2(Pointwise op, int64_t n, const float* dout, const float* saved,
                             float, float* dx) {
    backward<__m256>(op, n, dout, saved, dx);
}

void pointwise_backward_avx2(Pointwise op, int64_t n, const double* dout, const double* saved,
                             double, double* dx) {
    backward<__m256d>(op, n, dout, saved, dx);
}

void erf_avx2(int64_t n, const float* x, float* out) {
    map_all<__m256>(n, [](__m256 v) { return erf_lanes(v); }, out, x);
}

float exp_shifted_sum_avx2(int64_t n, const float* x, float shift, float* out) {
    return exp_shifted_sum<__m256>(n, x, shift, out);
}

double exp_shifted_sum_avx2(int64_t n, const double* x, double shift, double* out) {
    return exp_shifted_sum<__m256d>(n, x, shift, out);
}

void log_softmax_row_backward_avx2(int64_t n, const float* dout, const float* out, float total,
                                   float* dx) {
    log_softmax_row_backward<__m256>(n, dout, out, total, dx);
}

void log_softmax_row_backward_avx2(int64_t n, const double* dout, const double* out,
                                   double total, double* dx) {
    log_softmax_row_backward<__m256d>(n, dout, out, total, dx);
}

}  // namespace graphnet
