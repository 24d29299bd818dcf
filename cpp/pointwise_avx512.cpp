// The AVX-512 gelu kernels of pointwise_avx512.h. Compiled for AVX-512: includes only the
// intrinsics (and avx2_math.h, for its coefficients).
#pragma GCC target("avx512f,avx2,fma")
#include "pointwise_avx512.h"

#include "avx2_math.h"

namespace graphnet {
namespace {

template <size_t N>
inline __m512 horner16(const float (&c)[N], __m512 x) {
    __m512 p = _mm512_set1_ps(c[0]);
    for (size_t i = 1; i < N; ++i) p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(c[i]));
    return p;
}

template <size_t N>
inline __m512d horner8d(const double (&c)[N], __m512d x) {
    __m512d p = _mm512_set1_pd(c[0]);
    for (size_t i = 1; i < N; ++i) p = _mm512_fmadd_pd(p, x, _mm512_set1_pd(c[i]));
    return p;
}

// exp_sum8 of avx2_math.h, sixteen lanes. Its 2^n in two normal factors is one scalef
// here: p 2^(n/2) is exact, so both round once, at the same product (the same bits, 15%
// faster measured).
inline __m512 exp_sum16(__m512 a, __m512 b) {
    const __m512 x = _mm512_add_ps(a, b);
    const __m512 clamped =
        _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(clamped, _mm512_set1_ps(kLog2e)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2High), a);
    r = _mm512_add_ps(_mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Low), r), b);
    __m512 out = _mm512_scalef_ps(horner16(kExpTaylor, r), n);
    out = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-104.0f), _CMP_LT_OQ), out,
                               _mm512_setzero_ps());
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(89.0f), _CMP_GT_OQ), out,
                                _mm512_set1_ps(__builtin_inff()));
}

// normal_cdf8 of avx2_math.h, sixteen lanes; e^(-x^2/2) in gauss.
inline __m512 normal_cdf16(__m512 x, __m512& gauss) {
    const __m512 half = _mm512_set1_ps(0.5f), zero = _mm512_setzero_ps();
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 hi = _mm512_mul_ps(x, x);
    __m512 lo = _mm512_fmsub_ps(x, x, hi);  // x^2 = hi + lo exactly; 0, not NaN, where inf
    lo = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(lo, lo, _CMP_ORD_Q), lo);
    gauss = exp_sum16(_mm512_mul_ps(half, _mm512_sub_ps(zero, hi)),
                      _mm512_mul_ps(half, _mm512_sub_ps(zero, lo)));
    __m512 t = _mm512_abs_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.707106781f)));
    t = _mm512_min_ps(_mm512_set1_ps(10.5f), t);
    const __m512 v = _mm512_div_ps(one, _mm512_fmadd_ps(half, t, one));
    const __m512 erfc_scaled = _mm512_mul_ps(v, horner16(kErfcScaled, v));
    const __m512 half_erfc = _mm512_mul_ps(_mm512_mul_ps(half, erfc_scaled), gauss);
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ),
                                _mm512_sub_ps(one, half_erfc), half_erfc);
}

// exp_sum4d of avx2_math.h, eight lanes, its 2^n in one scalef as exp_sum16's.
inline __m512d exp_sum8d(__m512d a, __m512d b) {
    const __m512d x = _mm512_add_pd(a, b);
    const __m512d clamped =
        _mm512_min_pd(_mm512_set1_pd(710.0), _mm512_max_pd(_mm512_set1_pd(-746.0), x));
    const __m512d n = _mm512_roundscale_pd(_mm512_mul_pd(clamped, _mm512_set1_pd(kLog2eD)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_fnmadd_pd(n, _mm512_set1_pd(kLn2HighD), a);
    r = _mm512_add_pd(_mm512_fnmadd_pd(n, _mm512_set1_pd(kLn2LowD), r), b);
    __m512d out = _mm512_scalef_pd(horner8d(kExpTaylorD, r), n);
    out = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(x, _mm512_set1_pd(-746.0), _CMP_LT_OQ), out,
                               _mm512_setzero_pd());
    return _mm512_mask_blend_pd(_mm512_cmp_pd_mask(x, _mm512_set1_pd(710.0), _CMP_GT_OQ), out,
                                _mm512_set1_pd(__builtin_inf()));
}

// normal_cdf4d of avx2_math.h (its erfc_scaled4d inlined), eight lanes.
inline __m512d normal_cdf8d(__m512d x, __m512d& gauss) {
    const __m512d half = _mm512_set1_pd(0.5), zero = _mm512_setzero_pd();
    const __m512d one = _mm512_set1_pd(1.0);
    const __m512d hi = _mm512_mul_pd(x, x);
    __m512d lo = _mm512_fmsub_pd(x, x, hi);
    lo = _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(lo, lo, _CMP_ORD_Q), lo);
    gauss = exp_sum8d(_mm512_mul_pd(half, _mm512_sub_pd(zero, hi)),
                      _mm512_mul_pd(half, _mm512_sub_pd(zero, lo)));
    __m512d t = _mm512_abs_pd(_mm512_mul_pd(x, _mm512_set1_pd(0.70710678118654752)));
    t = _mm512_min_pd(_mm512_set1_pd(27.5), t);
    const __m512d v = _mm512_div_pd(one, _mm512_fmadd_pd(half, t, one));
    const __m512d u = _mm512_fmadd_pd(_mm512_set1_pd(kErfcMapScaleD), v,
                                      _mm512_set1_pd(kErfcMapShiftD));
    const __m512d erfc_scaled = _mm512_mul_pd(v, horner8d(kErfcScaledD, u));
    const __m512d half_erfc = _mm512_mul_pd(_mm512_mul_pd(half, erfc_scaled), gauss);
    return _mm512_mask_blend_pd(_mm512_cmp_pd_mask(x, zero, _CMP_LT_OQ),
                                _mm512_sub_pd(one, half_erfc), half_erfc);
}

inline __m512 load(const float* p) { return _mm512_loadu_ps(p); }
inline __m512d load(const double* p) { return _mm512_loadu_pd(p); }
inline void store(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
inline void store(double* p, __m512d v) { _mm512_storeu_pd(p, v); }
inline __m512 cdf(__m512 x, __m512& gauss) { return normal_cdf16(x, gauss); }
inline __m512d cdf(__m512d x, __m512d& gauss) { return normal_cdf8d(x, gauss); }
inline __m512 mul(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
inline __m512d mul(__m512d a, __m512d b) { return _mm512_mul_pd(a, b); }
inline __m512 fmadd(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
inline __m512d fmadd(__m512d a, __m512d b, __m512d c) { return _mm512_fmadd_pd(a, b, c); }
inline __m512 inv_sqrt_2pi(__m512) { return _mm512_set1_ps(kInvSqrt2Pi); }
inline __m512d inv_sqrt_2pi(__m512d) { return _mm512_set1_pd(kInvSqrt2PiD); }

// x Phi(x) and dout (Phi(x) + x phi(x)) over the whole blocks of 64 bytes.
template <typename T>
int64_t gelu_forward_blocks(int64_t n, const T* x, T* out) {
    constexpr int64_t lanes = 64 / sizeof(T);
    int64_t k = 0;
    for (; k + lanes <= n; k += lanes) {
        const auto v = load(x + k);
        auto gauss = v;  // (written by cdf)
        store(out + k, mul(v, cdf(v, gauss)));
    }
    return k;
}

template <typename T>
int64_t gelu_backward_blocks(int64_t n, const T* dout, const T* x, T* dx) {
    constexpr int64_t lanes = 64 / sizeof(T);
    int64_t k = 0;
    for (; k + lanes <= n; k += lanes) {
        const auto v = load(x + k);
        auto gauss = v;  // (written by cdf)
        const auto c = cdf(v, gauss);
        const auto pdf = mul(gauss, inv_sqrt_2pi(v));
        store(dx + k, mul(load(dout + k), fmadd(v, pdf, c)));
    }
    return k;
}

}  // namespace

int64_t gelu_forward_avx512(int64_t n, const float* x, float* out) {
    return gelu_forward_blocks(n, x, out);
}
int64_t gelu_forward_avx512(int64_t n, const double* x, double* out) {
    return gelu_forward_blocks(n, x, out);
}
int64_t gelu_backward_avx512(int64_t n, const float* dout, const float* x, float* dx) {
    return gelu_backward_blocks(n, dout, x, dx);
}
int64_t gelu_backward_avx512(int64_t n, const double* dout, const double* x, double* dx) {
    return gelu_backward_blocks(n, dout, x, dx);
}

}  // namespace graphnet
