// AVX2 + FMA kernels of pointwise_avx2.h. Compiled for AVX2: includes only the intrinsics.
#pragma GCC target("avx2,fma")
// GCC warns that a lambda returning a vector "changes the ABI without AVX": it means the
// lambda's unused conversion to a plain function pointer; every call here is inside this
// file, compiled for AVX2.
#pragma GCC diagnostic ignored "-Wpsabi"
#include "pointwise_avx2.h"

#include "avx2_lanes.h"
#include "avx2_math.h"

namespace graphnet {
namespace {

// out[k] = f(x[k]) (unary) or f(a[k], b[k]) for k < n, the tail in masked lanes.
template <typename F>
void map1(int64_t n, const float* x, float* out, F f) {
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) _mm256_storeu_ps(out + k, f(_mm256_loadu_ps(x + k)));
    if (k < n) {
        const __m256i lanes = first_lanes(n - k);
        _mm256_maskstore_ps(out + k, lanes, f(_mm256_maskload_ps(x + k, lanes)));
    }
}

template <typename F>
void map2(int64_t n, const float* a, const float* b, float* out, F f) {
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        _mm256_storeu_ps(out + k, f(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k)));
    }
    if (k < n) {
        const __m256i lanes = first_lanes(n - k);
        _mm256_maskstore_ps(out + k, lanes,
                            f(_mm256_maskload_ps(a + k, lanes), _mm256_maskload_ps(b + k, lanes)));
    }
}

// sqrt(2/pi) (x + 0.044715 x^3), the argument of gelu_tanh's tanh.
inline __m256 gelu_tanh_arg8(__m256 x) {
    const __m256 x2 = _mm256_mul_ps(x, x);
    return _mm256_mul_ps(_mm256_set1_ps(kSqrt2OverPi),
                         _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(kTanhCubic), x2), x, x));
}

template <typename F>
void map1(int64_t n, const double* x, double* out, F f) {
    int64_t k = 0;
    for (; k + 4 <= n; k += 4) _mm256_storeu_pd(out + k, f(_mm256_loadu_pd(x + k)));
    if (k < n) {
        const __m256i lanes = first_lanes_pd(n - k);
        _mm256_maskstore_pd(out + k, lanes, f(_mm256_maskload_pd(x + k, lanes)));
    }
}

template <typename F>
void map2(int64_t n, const double* a, const double* b, double* out, F f) {
    int64_t k = 0;
    for (; k + 4 <= n; k += 4) {
        _mm256_storeu_pd(out + k, f(_mm256_loadu_pd(a + k), _mm256_loadu_pd(b + k)));
    }
    if (k < n) {
        const __m256i lanes = first_lanes_pd(n - k);
        _mm256_maskstore_pd(out + k, lanes,
                            f(_mm256_maskload_pd(a + k, lanes), _mm256_maskload_pd(b + k, lanes)));
    }
}

inline __m256d gelu_tanh_arg4d(__m256d x) {
    const __m256d x2 = _mm256_mul_pd(x, x);
    return _mm256_mul_pd(_mm256_set1_pd(kSqrt2OverPiD),
                         _mm256_fmadd_pd(_mm256_mul_pd(_mm256_set1_pd(kTanhCubicD), x2), x, x));
}

}  // namespace

void pointwise_forward_avx2(Pointwise op, int64_t n, const double* x, double, double* out) {
    switch (op) {
        case Pointwise::gelu:
            return map1(n, x, out, [](__m256d v) {
                __m256d gauss;
                return _mm256_mul_pd(v, normal_cdf4d(v, gauss));
            });
        case Pointwise::gelu_tanh:
            return map1(n, x, out, [](__m256d v) {
                const __m256d h = _mm256_mul_pd(_mm256_set1_pd(0.5), v);
                return _mm256_fmadd_pd(h, tanh4d(gelu_tanh_arg4d(v)), h);
            });
        case Pointwise::softplus:  // max(x, 0) + ln(1 + e^-|x|): never overflows
            return map1(n, x, out, [](__m256d v) {
                const __m256d e = exp4d(_mm256_or_pd(v, _mm256_set1_pd(-0.0)));
                return _mm256_add_pd(_mm256_max_pd(_mm256_setzero_pd(), v), log1p_unit4d(e));
            });
        case Pointwise::sigmoid:
            return map1(n, x, out, sigmoid4d);
        default:
            return;  // not an AVX2 op (pointwise_avx2.h)
    }
}

void pointwise_backward_avx2(Pointwise op, int64_t n, const double* dout, const double* saved,
                             double, double* dx) {
    const __m256d half = _mm256_set1_pd(0.5), one = _mm256_set1_pd(1.0);
    switch (op) {
        case Pointwise::gelu:  // Phi(x) + x phi(x)
            return map2(n, dout, saved, dx, [](__m256d d, __m256d x) {
                __m256d gauss;
                const __m256d cdf = normal_cdf4d(x, gauss);
                const __m256d pdf = _mm256_mul_pd(gauss, _mm256_set1_pd(kInvSqrt2PiD));
                return _mm256_mul_pd(d, _mm256_fmadd_pd(x, pdf, cdf));
            });
        case Pointwise::gelu_tanh:
            return map2(n, dout, saved, dx, [&](__m256d d, __m256d x) {
                const __m256d t = tanh4d(gelu_tanh_arg4d(x));
                const __m256d inner = _mm256_fmadd_pd(
                    _mm256_set1_pd(3 * kTanhCubicD * kSqrt2OverPiD), _mm256_mul_pd(x, x),
                    _mm256_set1_pd(kSqrt2OverPiD));
                const __m256d sech2 = _mm256_fnmadd_pd(t, t, one);
                const __m256d slope = _mm256_mul_pd(
                    half, _mm256_fmadd_pd(_mm256_mul_pd(x, sech2), inner, _mm256_add_pd(one, t)));
                return _mm256_mul_pd(d, slope);
            });
        case Pointwise::softplus:
            return map2(n, dout, saved, dx, [](__m256d d, __m256d x) {
                return _mm256_mul_pd(d, sigmoid4d(x));
            });
        default:
            return;  // not an AVX2 op (pointwise_avx2.h)
    }
}

double exp_shifted_sum_avx2(int64_t n, const double* x, double shift, double* out) {
    const __m256d s = _mm256_set1_pd(shift);
    __m256d sum = _mm256_setzero_pd();
    int64_t k = 0;
    for (; k + 4 <= n; k += 4) {
        const __m256d e = exp4d(_mm256_sub_pd(_mm256_loadu_pd(x + k), s));
        if (out) _mm256_storeu_pd(out + k, e);
        sum = _mm256_add_pd(sum, e);
    }
    if (k < n) {
        const __m256i lanes = first_lanes_pd(n - k);
        const __m256d e = _mm256_and_pd(exp4d(_mm256_sub_pd(_mm256_maskload_pd(x + k, lanes), s)),
                                        _mm256_castsi256_pd(lanes));
        if (out) _mm256_maskstore_pd(out + k, lanes, e);
        sum = _mm256_add_pd(sum, e);
    }
    const __m128d two = _mm_add_pd(_mm256_castpd256_pd128(sum), _mm256_extractf128_pd(sum, 1));
    return _mm_cvtsd_f64(_mm_add_sd(two, _mm_unpackhi_pd(two, two)));
}

void log_softmax_row_backward_avx2(int64_t n, const double* dout, const double* out,
                                   double total, double* dx) {
    const __m256d t = _mm256_set1_pd(total);
    map2(n, dout, out, dx,
         [&](__m256d d, __m256d o) { return _mm256_fnmadd_pd(exp4d(o), t, d); });
}

void pointwise_forward_avx2(Pointwise op, int64_t n, const float* x, float, float* out) {
    const __m256 half = _mm256_set1_ps(0.5f);
    switch (op) {
        case Pointwise::gelu:
            return map1(n, x, out, [](__m256 v) {
                __m256 gauss;
                return _mm256_mul_ps(v, normal_cdf8(v, gauss));
            });
        case Pointwise::gelu_tanh:
            return map1(n, x, out, [&](__m256 v) {
                const __m256 h = _mm256_mul_ps(half, v);
                return _mm256_fmadd_ps(h, tanh8(gelu_tanh_arg8(v)), h);
            });
        case Pointwise::softplus:  // max(x, 0) + ln(1 + e^-|x|): never overflows
            return map1(n, x, out, [](__m256 v) {
                const __m256 e = exp_full8(_mm256_or_ps(v, _mm256_set1_ps(-0.0f)));
                return _mm256_add_ps(_mm256_max_ps(_mm256_setzero_ps(), v), log1p_unit8(e));
            });
        default:
            return;  // not an AVX2 op (pointwise_avx2.h)
    }
}

void pointwise_backward_avx2(Pointwise op, int64_t n, const float* dout, const float* saved,
                             float, float* dx) {
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    switch (op) {
        case Pointwise::gelu:  // Phi(x) + x phi(x)
            return map2(n, dout, saved, dx, [](__m256 d, __m256 x) {
                __m256 gauss;
                const __m256 cdf = normal_cdf8(x, gauss);
                const __m256 pdf = _mm256_mul_ps(gauss, _mm256_set1_ps(kInvSqrt2Pi));
                return _mm256_mul_ps(d, _mm256_fmadd_ps(x, pdf, cdf));
            });
        case Pointwise::gelu_tanh:  // (1 + t) / 2 + x (1 - t^2) sqrt(2/pi) (1 + 3 0.044715 x^2) / 2
            return map2(n, dout, saved, dx, [&](__m256 d, __m256 x) {
                const __m256 t = tanh8(gelu_tanh_arg8(x));
                const __m256 inner = _mm256_fmadd_ps(
                    _mm256_set1_ps(3 * kTanhCubic * kSqrt2OverPi), _mm256_mul_ps(x, x),
                    _mm256_set1_ps(kSqrt2OverPi));
                const __m256 sech2 = _mm256_fnmadd_ps(t, t, one);
                const __m256 slope = _mm256_mul_ps(
                    half, _mm256_fmadd_ps(_mm256_mul_ps(x, sech2), inner, _mm256_add_ps(one, t)));
                return _mm256_mul_ps(d, slope);
            });
        case Pointwise::softplus:  // sigmoid(x)
            return map2(n, dout, saved, dx, [](__m256 d, __m256 x) {
                return _mm256_mul_ps(d, sigmoid_full8(x));
            });
        default:
            return;  // not an AVX2 op (pointwise_avx2.h)
    }
}

void erf_avx2(int64_t n, const float* x, float* out) { map1(n, x, out, erf8); }

float exp_shifted_sum_avx2(int64_t n, const float* x, float shift, float* out) {
    const __m256 s = _mm256_set1_ps(shift);
    __m256 sum = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        const __m256 e = exp_full8(_mm256_sub_ps(_mm256_loadu_ps(x + k), s));
        if (out) _mm256_storeu_ps(out + k, e);
        sum = _mm256_add_ps(sum, e);
    }
    if (k < n) {
        const __m256i lanes = first_lanes(n - k);
        const __m256 e = _mm256_and_ps(
            exp_full8(_mm256_sub_ps(_mm256_maskload_ps(x + k, lanes), s)),
            _mm256_castsi256_ps(lanes));
        if (out) _mm256_maskstore_ps(out + k, lanes, e);
        sum = _mm256_add_ps(sum, e);
    }
    // The eight lanes in a fixed tree: the same bits every time.
    const __m128 four = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
    const __m128 two = _mm_add_ps(four, _mm_movehl_ps(four, four));
    return _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)));
}

void log_softmax_row_backward_avx2(int64_t n, const float* dout, const float* out, float total,
                                   float* dx) {
    const __m256 t = _mm256_set1_ps(total);
    map2(n, dout, out, dx, [&](__m256 d, __m256 o) { return _mm256_fnmadd_ps(exp_full8(o), t, d); });
}

}  // namespace graphnet
