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

// exp_sum8 of avx2_math.h, sixteen lanes.
inline __m512 exp_sum16(__m512 a, __m512 b) {
    const __m512 x = _mm512_add_ps(a, b);
    const __m512 clamped =
        _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(clamped, _mm512_set1_ps(kLog2e)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2High), a);
    r = _mm512_add_ps(_mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Low), r), b);
    const __m512i ni = _mm512_cvtps_epi32(n);
    const __m512i half = _mm512_srai_epi32(ni, 1);
    const __m512i bias = _mm512_set1_epi32(127);
    const __m512 scale1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(half, bias), 23));
    const __m512 scale2 = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_sub_epi32(ni, half), bias), 23));
    __m512 out = _mm512_mul_ps(_mm512_mul_ps(horner16(kExpTaylor, r), scale1), scale2);
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

}  // namespace

int64_t gelu_forward_avx512(int64_t n, const float* x, float* out) {
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        const __m512 v = _mm512_loadu_ps(x + k);
        __m512 gauss;
        _mm512_storeu_ps(out + k, _mm512_mul_ps(v, normal_cdf16(v, gauss)));
    }
    return k;
}

int64_t gelu_backward_avx512(int64_t n, const float* dout, const float* x, float* dx) {
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        const __m512 v = _mm512_loadu_ps(x + k);
        __m512 gauss;
        const __m512 cdf = normal_cdf16(v, gauss);
        const __m512 pdf = _mm512_mul_ps(gauss, _mm512_set1_ps(kInvSqrt2Pi));
        _mm512_storeu_ps(dx + k,
                         _mm512_mul_ps(_mm512_loadu_ps(dout + k), _mm512_fmadd_ps(v, pdf, cdf)));
    }
    return k;
}

}  // namespace graphnet
