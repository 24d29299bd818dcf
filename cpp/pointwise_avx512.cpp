// The AVX-512 kernels of pointwise_avx512.h: pointwise_lanes.h's functions on sixteen
// float32 or eight float64 lanes. Compiled for AVX-512: includes only the intrinsics.
#pragma GCC target("avx512f,avx2,fma")
// GCC warns that a lambda returning a vector "changes the ABI without AVX512F": it means the
// lambda's unused conversion to a plain function pointer; every call here is inside this
// file, compiled for AVX-512.
#pragma GCC diagnostic ignored "-Wpsabi"
#include "pointwise_avx512.h"

#include "simd_lanes_avx512.h"
#include "pointwise_lanes.h"

namespace graphnet {
namespace {

template <typename V, typename T>
int64_t forward(Pointwise op, int64_t n, const T* x, T* out) {
    return with_forward<V>(op, [&](auto f) { return map_whole<V>(n, f, out, x); });
}

template <typename V, typename T>
int64_t backward(Pointwise op, int64_t n, const T* dout, const T* x, T* dx) {
    return with_backward<V>(op, [&](auto f) { return map_whole<V>(n, f, dx, dout, x); });
}

template <typename V, typename T>
int64_t forward_slope(Pointwise op, int64_t n, const T* x, T* out, T* slope) {
    return with_forward_slope<V>(op, [&](auto f) { return map_whole2<V>(n, f, out, slope, x); });
}

}  // namespace

int64_t pointwise_forward_slope_avx512(Pointwise op, int64_t n, const float* x, float* out,
                                       float* slope) {
    return forward_slope<__m512>(op, n, x, out, slope);
}

int64_t pointwise_forward_slope_avx512(Pointwise op, int64_t n, const double* x, double* out,
                                       double* slope) {
    return forward_slope<__m512d>(op, n, x, out, slope);
}

int64_t pointwise_forward_avx512(Pointwise op, int64_t n, const float* x, float* out) {
    return forward<__m512>(op, n, x, out);
}

int64_t pointwise_forward_avx512(Pointwise op, int64_t n, const double* x, double* out) {
    return forward<__m512d>(op, n, x, out);
}

int64_t pointwise_backward_avx512(Pointwise op, int64_t n, const float* dout, const float* x,
                                  float* dx) {
    return backward<__m512>(op, n, dout, x, dx);
}

int64_t pointwise_backward_avx512(Pointwise op, int64_t n, const double* dout, const double* x,
                                  double* dx) {
    return backward<__m512d>(op, n, dout, x, dx);
}

}  // namespace graphnet
