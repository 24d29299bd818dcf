// Sixteen-lane float32 and eight-lane float64 copies of avx2_math.h's functions, for the
// translation units compiled for AVX-512 (activations_avx512.cpp, pointwise_avx512.cpp):
// the same operations in the same order, so the same bits as the AVX2 ones, except where
// a comment says otherwise. Only files compiled for AVX-512 include this; everything is
// internal to each.
#pragma once

#include <immintrin.h>

#include "avx2_math.h"

namespace graphnet {
namespace {

// v | bits and v & bits as floats (AVX-512F has them for integers only).
inline __m512 or16(__m512 v, __m512 bits) {
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(v), _mm512_castps_si512(bits)));
}
inline __m512 and16(__m512 v, __m512 bits) {
    return _mm512_castsi512_ps(
        _mm512_and_si512(_mm512_castps_si512(v), _mm512_castps_si512(bits)));
}

inline __m512d or8d(__m512d v, __m512d bits) {
    return _mm512_castsi512_pd(_mm512_or_si512(_mm512_castpd_si512(v), _mm512_castpd_si512(bits)));
}
inline __m512d and8d(__m512d v, __m512d bits) {
    return _mm512_castsi512_pd(
        _mm512_and_si512(_mm512_castpd_si512(v), _mm512_castpd_si512(bits)));
}

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

// exp8 (saturating at about 2.4e38 and 1.2e-38).
inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(88.3f), _mm512_max_ps(_mm512_set1_ps(-87.3f), x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2High), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Low), r);
    const __m512i bits = _mm512_slli_epi32(
        _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(horner16(kExpTaylor, r), _mm512_castsi512_ps(bits));
}

// exp_sum8. Its 2^n in two normal factors is one scalef here: p 2^(n/2) is exact, so both
// round once, at the same product (the same bits, 15% faster measured in gelu).
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

inline __m512 exp_full16(__m512 x) { return exp_sum16(x, _mm512_setzero_ps()); }

// sigmoid_full8.
inline __m512 sigmoid_full16(__m512 v) {
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 e = exp_full16(or16(v, _mm512_set1_ps(-0.0f)));  // e^-|v|
    const __m512 top =
        _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GE_OQ), e, one);
    return _mm512_div_ps(top, _mm512_add_ps(one, e));
}

// tanh8, its quotient 2 / (e + 1) from divide(2, e + 1): an exact division gives tanh8's
// bits.
template <typename Divide>
inline __m512 tanh16(__m512 v, Divide divide) {
    const __m512 a = _mm512_abs_ps(v);
    const __m512 s = _mm512_mul_ps(v, v);
    const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(v, s), horner16(kTanhSmall, s), v);
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 e = exp16(_mm512_add_ps(a, a));
    const __m512 large = _mm512_sub_ps(one, divide(_mm512_set1_ps(2.0f), _mm512_add_ps(e, one)));
    const __m512 signed_large = or16(large, and16(v, _mm512_set1_ps(-0.0f)));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, _mm512_set1_ps(kTanhSplit), _CMP_LT_OQ),
                                signed_large, small);
}

// log1p_unit8.
inline __m512 log1p_unit16(__m512 e) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 m = _mm512_add_ps(one, e);
    __m512 c = _mm512_sub_ps(e, _mm512_sub_ps(m, one));
    const __mmask16 big = _mm512_cmp_ps_mask(m, _mm512_set1_ps(1.41421356f), _CMP_GT_OQ);
    const __m512 scale = _mm512_mask_blend_ps(big, one, _mm512_set1_ps(0.5f));
    m = _mm512_mul_ps(m, scale);  // exact: a power of 2
    c = _mm512_mul_ps(c, scale);
    const __m512 z = _mm512_div_ps(_mm512_sub_ps(m, one), _mm512_add_ps(m, one));
    const __m512 s = _mm512_mul_ps(z, z);
    const __m512 series =
        _mm512_fmadd_ps(_mm512_mul_ps(z, s), horner16(kAtanh, s), _mm512_add_ps(z, z));
    const __m512 k_ln2 = _mm512_maskz_mov_ps(big, _mm512_set1_ps(kLn2));
    return _mm512_add_ps(k_ln2, _mm512_add_ps(series, _mm512_div_ps(c, m)));
}

// normal_cdf8; e^(-x^2/2) in gauss.
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

// exp_sum4d, its 2^n in one scalef as exp_sum16's.
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

// normal_cdf4d (its erfc_scaled4d inlined).
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

inline __m512d exp8d(__m512d x) { return exp_sum8d(x, _mm512_setzero_pd()); }

// sigmoid4d.
inline __m512d sigmoid8d(__m512d v) {
    const __m512d one = _mm512_set1_pd(1.0);
    const __m512d e = exp8d(or8d(v, _mm512_set1_pd(-0.0)));  // e^-|v|
    const __m512d top =
        _mm512_mask_blend_pd(_mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_GE_OQ), e, one);
    return _mm512_div_pd(top, _mm512_add_pd(one, e));
}

// log1p_unit4d.
inline __m512d log1p_unit8d(__m512d e) {
    const __m512d one = _mm512_set1_pd(1.0);
    __m512d m = _mm512_add_pd(one, e);
    __m512d c = _mm512_sub_pd(e, _mm512_sub_pd(m, one));
    const __mmask8 big = _mm512_cmp_pd_mask(m, _mm512_set1_pd(1.4142135623730951), _CMP_GT_OQ);
    const __m512d scale = _mm512_mask_blend_pd(big, one, _mm512_set1_pd(0.5));
    m = _mm512_mul_pd(m, scale);  // exact: a power of 2
    c = _mm512_mul_pd(c, scale);
    const __m512d z = _mm512_div_pd(_mm512_sub_pd(m, one), _mm512_add_pd(m, one));
    const __m512d s = _mm512_mul_pd(z, z);
    __m512d p = _mm512_set1_pd(2.0 / 21);
    for (int j = 19; j >= 3; j -= 2) p = _mm512_fmadd_pd(p, s, _mm512_set1_pd(2.0 / j));
    const __m512d small =
        _mm512_add_pd(_mm512_fmadd_pd(_mm512_mul_pd(z, s), p, _mm512_div_pd(c, m)),
                      _mm512_maskz_mov_pd(big, _mm512_set1_pd(kLn2LowPartD)));
    return _mm512_add_pd(_mm512_maskz_mov_pd(big, _mm512_set1_pd(kLn2HighPartD)),
                         _mm512_add_pd(_mm512_add_pd(z, z), small));
}

// tanh4d.
inline __m512d tanh8d(__m512d v) {
    const __m512d one = _mm512_set1_pd(1.0);
    const __m512d a = _mm512_abs_pd(v);
    const __m512d e = exp8d(_mm512_add_pd(a, a));
    const __m512d t =
        _mm512_sub_pd(one, _mm512_div_pd(_mm512_set1_pd(2.0), _mm512_add_pd(e, one)));
    return or8d(t, and8d(v, _mm512_set1_pd(-0.0)));
}

}  // namespace
}  // namespace graphnet
