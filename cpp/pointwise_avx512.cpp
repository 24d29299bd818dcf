// The AVX-512 kernels of pointwise_avx512.h. Compiled for AVX-512: includes only the
// intrinsics (and avx512_math.h).
#pragma GCC target("avx512f,avx2,fma")
#include "pointwise_avx512.h"

#include "avx512_math.h"

namespace graphnet {
namespace {

inline __m512 load(const float* p) { return _mm512_loadu_ps(p); }
inline __m512d load(const double* p) { return _mm512_loadu_pd(p); }
inline void store(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
inline void store(double* p, __m512d v) { _mm512_storeu_pd(p, v); }

// out[k] = f(x[k]), or dx[k] = f(dout[k], x[k]), over the whole blocks of 64 bytes;
// returns how many entries that was.
template <typename T, typename F>
int64_t map1(int64_t n, const T* x, T* out, F f) {
    constexpr int64_t lanes = 64 / sizeof(T);
    int64_t k = 0;
    for (; k + lanes <= n; k += lanes) store(out + k, f(load(x + k)));
    return k;
}

template <typename T, typename F>
int64_t map2(int64_t n, const T* dout, const T* x, T* dx, F f) {
    constexpr int64_t lanes = 64 / sizeof(T);
    int64_t k = 0;
    for (; k + lanes <= n; k += lanes) store(dx + k, f(load(dout + k), load(x + k)));
    return k;
}

inline __m512 exact_divide(__m512 top, __m512 d) { return _mm512_div_ps(top, d); }

// sqrt(2/pi) (x + 0.044715 x^3), the argument of gelu_tanh's tanh (gelu_tanh_arg8).
inline __m512 gelu_tanh_arg16(__m512 x) {
    const __m512 x2 = _mm512_mul_ps(x, x);
    return _mm512_mul_ps(_mm512_set1_ps(kSqrt2OverPi),
                         _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(kTanhCubic), x2), x, x));
}

inline __m512d gelu_tanh_arg8d(__m512d x) {
    const __m512d x2 = _mm512_mul_pd(x, x);
    return _mm512_mul_pd(_mm512_set1_pd(kSqrt2OverPiD),
                         _mm512_fmadd_pd(_mm512_mul_pd(_mm512_set1_pd(kTanhCubicD), x2), x, x));
}

}  // namespace

// The lambdas are pointwise_avx2.cpp's, operation for operation.
int64_t pointwise_forward_avx512(Pointwise op, int64_t n, const float* x, float* out) {
    switch (op) {
        case Pointwise::gelu:
            return map1(n, x, out, [](__m512 v) {
                __m512 gauss;
                return _mm512_mul_ps(v, normal_cdf16(v, gauss));
            });
        case Pointwise::gelu_tanh:
            return map1(n, x, out, [](__m512 v) {
                const __m512 h = _mm512_mul_ps(_mm512_set1_ps(0.5f), v);
                return _mm512_fmadd_ps(h, tanh16(gelu_tanh_arg16(v), exact_divide), h);
            });
        case Pointwise::softplus:  // max(x, 0) + ln(1 + e^-|x|): never overflows
            return map1(n, x, out, [](__m512 v) {
                const __m512 e = exp_full16(or16(v, _mm512_set1_ps(-0.0f)));
                return _mm512_add_ps(_mm512_max_ps(_mm512_setzero_ps(), v), log1p_unit16(e));
            });
        default:
            return 0;
    }
}

int64_t pointwise_backward_avx512(Pointwise op, int64_t n, const float* dout, const float* x,
                                  float* dx) {
    switch (op) {
        case Pointwise::gelu:  // Phi(x) + x phi(x)
            return map2(n, dout, x, dx, [](__m512 d, __m512 v) {
                __m512 gauss;
                const __m512 cdf = normal_cdf16(v, gauss);
                const __m512 pdf = _mm512_mul_ps(gauss, _mm512_set1_ps(kInvSqrt2Pi));
                return _mm512_mul_ps(d, _mm512_fmadd_ps(v, pdf, cdf));
            });
        case Pointwise::gelu_tanh:
            return map2(n, dout, x, dx, [](__m512 d, __m512 v) {
                const __m512 one = _mm512_set1_ps(1.0f);
                const __m512 t = tanh16(gelu_tanh_arg16(v), exact_divide);
                const __m512 inner = _mm512_fmadd_ps(
                    _mm512_set1_ps(3 * kTanhCubic * kSqrt2OverPi), _mm512_mul_ps(v, v),
                    _mm512_set1_ps(kSqrt2OverPi));
                const __m512 sech2 = _mm512_fnmadd_ps(t, t, one);
                const __m512 slope = _mm512_mul_ps(
                    _mm512_set1_ps(0.5f),
                    _mm512_fmadd_ps(_mm512_mul_ps(v, sech2), inner, _mm512_add_ps(one, t)));
                return _mm512_mul_ps(d, slope);
            });
        case Pointwise::softplus:  // sigmoid(x)
            return map2(n, dout, x, dx,
                        [](__m512 d, __m512 v) { return _mm512_mul_ps(d, sigmoid_full16(v)); });
        default:
            return 0;
    }
}

int64_t pointwise_forward_avx512(Pointwise op, int64_t n, const double* x, double* out) {
    switch (op) {
        case Pointwise::gelu:
            return map1(n, x, out, [](__m512d v) {
                __m512d gauss;
                return _mm512_mul_pd(v, normal_cdf8d(v, gauss));
            });
        case Pointwise::gelu_tanh:
            return map1(n, x, out, [](__m512d v) {
                const __m512d h = _mm512_mul_pd(_mm512_set1_pd(0.5), v);
                return _mm512_fmadd_pd(h, tanh8d(gelu_tanh_arg8d(v)), h);
            });
        case Pointwise::softplus:
            return map1(n, x, out, [](__m512d v) {
                const __m512d e = exp8d(or8d(v, _mm512_set1_pd(-0.0)));
                return _mm512_add_pd(_mm512_max_pd(_mm512_setzero_pd(), v), log1p_unit8d(e));
            });
        default:
            return 0;
    }
}

int64_t pointwise_backward_avx512(Pointwise op, int64_t n, const double* dout, const double* x,
                                  double* dx) {
    switch (op) {
        case Pointwise::gelu:
            return map2(n, dout, x, dx, [](__m512d d, __m512d v) {
                __m512d gauss;
                const __m512d cdf = normal_cdf8d(v, gauss);
                const __m512d pdf = _mm512_mul_pd(gauss, _mm512_set1_pd(kInvSqrt2PiD));
                return _mm512_mul_pd(d, _mm512_fmadd_pd(v, pdf, cdf));
            });
        case Pointwise::gelu_tanh:
            return map2(n, dout, x, dx, [](__m512d d, __m512d v) {
                const __m512d one = _mm512_set1_pd(1.0);
                const __m512d t = tanh8d(gelu_tanh_arg8d(v));
                const __m512d inner = _mm512_fmadd_pd(
                    _mm512_set1_pd(3 * kTanhCubicD * kSqrt2OverPiD), _mm512_mul_pd(v, v),
                    _mm512_set1_pd(kSqrt2OverPiD));
                const __m512d sech2 = _mm512_fnmadd_pd(t, t, one);
                const __m512d slope = _mm512_mul_pd(
                    _mm512_set1_pd(0.5),
                    _mm512_fmadd_pd(_mm512_mul_pd(v, sech2), inner, _mm512_add_pd(one, t)));
                return _mm512_mul_pd(d, slope);
            });
        case Pointwise::softplus:
            return map2(n, dout, x, dx,
                        [](__m512d d, __m512d v) { return _mm512_mul_pd(d, sigmoid8d(v)); });
        default:
            return 0;
    }
}

}  // namespace graphnet
