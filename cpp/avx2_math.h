// Eight-lane float32 math for the AVX2 + FMA translation units (activations_avx2.cpp,
// pointwise_avx2.cpp): exp, sigmoid, tanh, erf / erfc, log1p; and four-lane float64 exp,
// sigmoid, tanh, log1p on [0, 1] and the normal CDF. Only files compiled for
// AVX2 include this; everything is internal to each. NaN passes through every function.
//
// The polynomial coefficients below were fitted (least squares, reweighted to minimax) in
// float64 against math.erf / math.erfc and rounded to float32; tests/kernels/
// test_pointwise_kernels.py measures the resulting errors in units in the last place.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace graphnet {
namespace {

// e^r for |r| <= ln2 / 2 by its Taylor series to r^7 (the next term is below 6e-9 relative).
// (The coefficients are shared with the sixteen-lane copy, pointwise_avx512.cpp.)
constexpr float kExpTaylor[] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24,
                                1.0f / 6,    0.5f,       1.0f,       1.0f};

template <size_t N>
inline __m256 horner8(const float (&c)[N], __m256 x) {
    __m256 p = _mm256_set1_ps(c[0]);
    for (size_t i = 1; i < N; ++i) p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(c[i]));
    return p;
}

inline __m256 exp_taylor8(__m256 r) { return horner8(kExpTaylor, r); }

// ln2 in two parts: n * kLn2High is exact for |n| < 2^15, so a - n ln2 keeps its low bits.
constexpr float kLn2High = 0.693359375f, kLn2Low = -2.12194440e-4f, kLog2e = 1.44269504f;

// e^x: x = n ln2 + r with |r| <= ln2 / 2, e^r by exp_taylor8, 2^n put into the exponent bits.
// x is clamped to where 2^n is a normal float: e^x saturates at about 2.4e38 and 1.2e-38
// instead of inf and 0 (the recurrent kernels' sigmoid and tanh, where that is harmless).
inline __m256 exp8(__m256 x) {
    // The constant first: max and min return their second operand for a NaN, which so passes.
    x = _mm256_min_ps(_mm256_set1_ps(88.3f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2High), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Low), r);
    const __m256i bits = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(exp_taylor8(r), _mm256_castsi256_ps(bits));
}

// e^(a + b) over the whole float range (0 below about -103.98, subnormal like the C
// library's, +inf above about 88.72), for b small against a: the reduction subtracts n ln2
// from a alone, so a large a (the -t^2 of erfc) loses none of b's bits to a rounded a + b.
inline __m256 exp_sum8(__m256 a, __m256 b) {
    const __m256 x = _mm256_add_ps(a, b);
    const __m256 clamped =
        _mm256_min_ps(_mm256_set1_ps(89.0f), _mm256_max_ps(_mm256_set1_ps(-104.0f), x));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(clamped, _mm256_set1_ps(kLog2e)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2High), a);
    r = _mm256_add_ps(_mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Low), r), b);
    // 2^n in two normal factors (n is in [-150, 129]): the one rounding is the last product,
    // which makes the subnormals.
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i half = _mm256_srai_epi32(ni, 1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 scale1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, bias), 23));
    const __m256 scale2 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), bias), 23));
    __m256 out = _mm256_mul_ps(_mm256_mul_ps(exp_taylor8(r), scale1), scale2);
    // Outside the clamp r is meaningless: the limits instead.
    out = _mm256_blendv_ps(out, _mm256_setzero_ps(),
                           _mm256_cmp_ps(x, _mm256_set1_ps(-104.0f), _CMP_LT_OQ));
    return _mm256_blendv_ps(out, _mm256_set1_ps(__builtin_inff()),
                            _mm256_cmp_ps(x, _mm256_set1_ps(89.0f), _CMP_GT_OQ));
}

inline __m256 exp_full8(__m256 x) { return exp_sum8(x, _mm256_setzero_ps()); }

inline __m256 sigmoid8(__m256 v) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), v))));
}

// 1 / (1 + e^-v) over the whole range (exactly 0 far below, no saturation): e^-|v| never
// overflows, and for v < 0 the quotient is e^v / (1 + e^v).
inline __m256 sigmoid_full8(__m256 v) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 e = exp_full8(_mm256_or_ps(v, sign));  // e^-|v|
    const __m256 top = _mm256_blendv_ps(e, one, _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GE_OQ));
    return _mm256_div_ps(top, _mm256_add_ps(one, e));
}

// |v| < 0.5625: v + v^3 Q(v^2), Q fitted for the least relative error (< 1 ulp); there
// 1 - 2 / (e^2|v| + 1) would lose the low bits of small v. Above, that formula, signed.
// (The split and Q are shared with the sixteen-lane copy, activations_avx512.cpp.)
constexpr float kTanhSplit = 0.5625f;
constexpr float kTanhSmall[] = {-6.179890130e-03f, 2.100752480e-02f, -5.383744836e-02f,
                                1.333245188e-01f, -3.333331347e-01f};

inline __m256 tanh8(__m256 v) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 a = _mm256_andnot_ps(sign, v);
    const __m256 s = _mm256_mul_ps(v, v);
    const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(v, s), horner8(kTanhSmall, s), v);
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 e = exp8(_mm256_add_ps(a, a));
    const __m256 large = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f),
                                                          _mm256_add_ps(e, one)));
    const __m256 signed_large = _mm256_or_ps(large, _mm256_and_ps(sign, v));
    return _mm256_blendv_ps(signed_large, small,
                            _mm256_cmp_ps(a, _mm256_set1_ps(kTanhSplit), _CMP_LT_OQ));
}

// x^2 = hi + lo exactly (lo is the FMA's remainder; 0 where x^2 is infinite, not NaN).
inline void square8(__m256 x, __m256& hi, __m256& lo) {
    hi = _mm256_mul_ps(x, x);
    lo = _mm256_fmsub_ps(x, x, hi);
    lo = _mm256_and_ps(lo, _mm256_cmp_ps(lo, lo, _CMP_ORD_Q));
}

// erfc(t) e^(t^2) for t >= 0 as v G(v), v = 1 / (1 + t/2): G fitted for the least relative
// error (0.61 of 2^-24) up to t = 10.5, past which erfc is 0 in float32. The e^(-t^2) it
// is multiplied with comes from exp_sum8 of -t^2 carried exactly as hi + lo.
constexpr float kErfcScaled[] = {1.081549656e-02f,  -1.154685840e-01f, 4.111227989e-01f,
                                 -6.470386982e-01f, 4.028752446e-01f,  -8.887511492e-02f,
                                 2.224451452e-01f,  2.392687201e-01f,  2.827871740e-01f,
                                 2.820678055e-01f};

inline __m256 erfc_scaled8(__m256 t) {
    const __m256 one = _mm256_set1_ps(1.0f);
    t = _mm256_min_ps(_mm256_set1_ps(10.5f), t);
    const __m256 v = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.5f), t, one));
    return _mm256_mul_ps(v, horner8(kErfcScaled, v));
}

inline __m256 abs8(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// erf(a): below kErfSplit a + a P(a^2) (fitted error 0.11 of 2^-24 relative to erf(a)/a),
// above 1 - erfc with erfc from erfc_scaled8.
constexpr float kErfSplit = 0.921875f;

inline __m256 erf8(__m256 a) {
    static constexpr float kP[] = {8.398126374e-05f, -8.149896748e-04f, 5.201725755e-03f,
                                   -2.685970627e-02f, 1.128370166e-01f, -3.761263490e-01f,
                                   1.283791661e-01f};
    const __m256 small = _mm256_fmadd_ps(a, horner8(kP, _mm256_mul_ps(a, a)), a);
    const __m256 t = _mm256_min_ps(_mm256_set1_ps(10.5f), abs8(a));
    __m256 hi, lo;
    square8(t, hi, lo);
    const __m256 zero = _mm256_setzero_ps();
    const __m256 erfc = _mm256_mul_ps(erfc_scaled8(t),
                                      exp_sum8(_mm256_sub_ps(zero, hi), _mm256_sub_ps(zero, lo)));
    const __m256 sign = _mm256_and_ps(_mm256_set1_ps(-0.0f), a);
    const __m256 tail = _mm256_or_ps(_mm256_sub_ps(_mm256_set1_ps(1.0f), erfc), sign);
    return _mm256_blendv_ps(tail, small,
                            _mm256_cmp_ps(t, _mm256_set1_ps(kErfSplit), _CMP_LT_OQ));
}

// The standard normal CDF Phi(x) = erfc(-x / sqrt 2) / 2, accurate relative to itself also
// far into the left tail (where 1 + erf(x / sqrt 2) would cancel), and in `gauss` e^(-x^2/2)
// (which it needs anyway; the density is that / sqrt(2 pi)). x^2 / 2 is carried exactly
// (halving is exact), not from the rounded x / sqrt 2, whose error would grow to
// x^2 2^-24 relative in e^(-x^2 / 2).
inline __m256 normal_cdf8(__m256 x, __m256& gauss) {
    const __m256 half = _mm256_set1_ps(0.5f), zero = _mm256_setzero_ps();
    __m256 hi, lo;
    square8(x, hi, lo);
    gauss = exp_sum8(_mm256_mul_ps(half, _mm256_sub_ps(zero, hi)),
                     _mm256_mul_ps(half, _mm256_sub_ps(zero, lo)));
    const __m256 t = abs8(_mm256_mul_ps(x, _mm256_set1_ps(0.707106781f)));
    const __m256 half_erfc = _mm256_mul_ps(_mm256_mul_ps(half, erfc_scaled8(t)), gauss);
    return _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(1.0f), half_erfc), half_erfc,
                            _mm256_cmp_ps(x, zero, _CMP_LT_OQ));
}

constexpr float kInvSqrt2Pi = 0.398942280f;
// gelu_tanh's sqrt(2/pi) and cubic coefficient (pointwise_avx2.cpp, pointwise_avx512.cpp).
constexpr float kSqrt2OverPi = 0.797884561f, kTanhCubic = 0.044715f;
constexpr double kSqrt2OverPiD = 0.79788456080286535588, kTanhCubicD = 0.044715;
constexpr double kInvSqrt2PiD = 0.39894228040143267794;

// (The atanh series and ln 2 are shared with the sixteen-lane copy, avx512_math.h.)
constexpr float kAtanh[] = {2.0f / 9, 2.0f / 7, 2.0f / 5, 2.0f / 3};
constexpr float kLn2 = 0.693147181f;

// ln(1 + e) for 0 <= e <= 1 (or NaN): 1 + e = m + c exactly (c the rounding error), m
// scaled into [sqrt(1/2), sqrt 2] by k = 0 or 1, ln m = 2 atanh z with z = (m - 1) / (m + 1)
// (|z| <= 0.172, its series to z^9: below 2^-29 relative), plus c / m.
inline __m256 log1p_unit8(__m256 e) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 m = _mm256_add_ps(one, e);
    __m256 c = _mm256_sub_ps(e, _mm256_sub_ps(m, one));
    const __m256 big = _mm256_cmp_ps(m, _mm256_set1_ps(1.41421356f), _CMP_GT_OQ);
    const __m256 scale = _mm256_blendv_ps(one, _mm256_set1_ps(0.5f), big);
    m = _mm256_mul_ps(m, scale);  // exact: a power of 2
    c = _mm256_mul_ps(c, scale);
    const __m256 z = _mm256_div_ps(_mm256_sub_ps(m, one), _mm256_add_ps(m, one));
    const __m256 s = _mm256_mul_ps(z, z);
    const __m256 series = _mm256_fmadd_ps(_mm256_mul_ps(z, s), horner8(kAtanh, s),
                                          _mm256_add_ps(z, z));
    const __m256 k_ln2 = _mm256_and_ps(big, _mm256_set1_ps(kLn2));
    return _mm256_add_ps(k_ln2, _mm256_add_ps(series, _mm256_div_ps(c, m)));
}

// ---- four-lane float64 ----

// Lanes 0 .. valid-1 of four 64-bit lanes set.
inline __m256i first_lanes_pd(int64_t valid) {
    const int64_t clipped = valid < 0 ? 0 : (valid > 4 ? 4 : valid);
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(clipped), _mm256_setr_epi64x(0, 1, 2, 3));
}

// 2^k for integral doubles k in [-1022, 1023], built in the exponent bits (0x1.8p52 added
// puts k's two's complement in the low bits).
inline __m256d pow2_4d(__m256d k) {
    const __m256d magic = _mm256_set1_pd(6755399441055744.0);
    const __m256i bits = _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(k, magic)),
                                          _mm256_castpd_si256(magic));
    return _mm256_castsi256_pd(
        _mm256_slli_epi64(_mm256_add_epi64(bits, _mm256_set1_epi64x(1023)), 52));
}

// exp_sum4d's constants (shared with the eight-lane copy, pointwise_avx512.cpp): log2 e,
// ln2 in two parts (n kLn2HighD exact), e^r's Taylor series to r^13.
constexpr double kLog2eD = 1.4426950408889634, kLn2HighD = 0.6931471803691238,
                 kLn2LowD = 1.9082149292705877e-10;
constexpr double kExpTaylorD[] = {
    1.0 / 6227020800, 1.0 / 479001600, 1.0 / 39916800, 1.0 / 3628800, 1.0 / 362880,
    1.0 / 40320,      1.0 / 5040,      1.0 / 720,      1.0 / 120,     1.0 / 24,
    1.0 / 6,          0.5,             1.0,            1.0};

// e^(a + b) in float64 over the whole range (subnormals, 0 below about -745.1, inf above
// about 709.78; NaN passes), for b small against a (as exp_sum8): a + b = n ln2 + r,
// |r| <= ln2 / 2, r reduced from a alone (ln2 in two parts, n ln2_high exact) with b added
// after, e^r by its Taylor series to r^13 (the next term is below 5e-18 relative), 2^n in
// two normal factors.
inline __m256d exp_sum4d(__m256d a, __m256d b) {
    const __m256d x = _mm256_add_pd(a, b);
    const __m256d clamped =
        _mm256_min_pd(_mm256_set1_pd(710.0), _mm256_max_pd(_mm256_set1_pd(-746.0), x));
    const __m256d n = _mm256_round_pd(_mm256_mul_pd(clamped, _mm256_set1_pd(kLog2eD)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = _mm256_fnmadd_pd(n, _mm256_set1_pd(kLn2HighD), a);
    r = _mm256_add_pd(_mm256_fnmadd_pd(n, _mm256_set1_pd(kLn2LowD), r), b);
    __m256d p = _mm256_set1_pd(kExpTaylorD[0]);
    for (size_t i = 1; i < sizeof kExpTaylorD / sizeof kExpTaylorD[0]; ++i) {
        p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(kExpTaylorD[i]));
    }
    const __m256d half = _mm256_round_pd(_mm256_mul_pd(n, _mm256_set1_pd(0.5)),
                                         _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m256d out = _mm256_mul_pd(_mm256_mul_pd(p, pow2_4d(half)), pow2_4d(_mm256_sub_pd(n, half)));
    // Outside the clamp r is meaningless: the limits instead.
    out = _mm256_blendv_pd(out, _mm256_setzero_pd(),
                           _mm256_cmp_pd(x, _mm256_set1_pd(-746.0), _CMP_LT_OQ));
    return _mm256_blendv_pd(out, _mm256_set1_pd(__builtin_inf()),
                            _mm256_cmp_pd(x, _mm256_set1_pd(710.0), _CMP_GT_OQ));
}

inline __m256d exp4d(__m256d x) { return exp_sum4d(x, _mm256_setzero_pd()); }

// erfc(t) e^(t^2) for 0 <= t <= 27.5 (past which e^(-t^2) is 0 in float64) as v G(v),
// v = 1 / (1 + t/2), G a polynomial of degree 28 in u = 2.145 v - 1.145 (v's range mapped to
// [-1, 1]): the Chebyshev interpolant of G in 40-digit arithmetic (the next coefficient is
// 2e-19), converted to powers of u and rounded to float64. About 5 units in the last place
// at most (against mpmath; near t = 0.01 v's two roundings are amplified 2.3x).
// (The coefficients are shared with the eight-lane copy, pointwise_avx512.cpp.)
constexpr double kErfcMapScaleD = 2.1454545454545455, kErfcMapShiftD = -1.1454545454545455;
constexpr double kErfcScaledD[] = {
    2.6061420915914856e-11,  -7.392029820281197e-11,  -1.2161417962052367e-10,
    6.442803656230665e-10,   -3.535609689434493e-10,  -1.8765285518634955e-09,
    4.2409677286979835e-09,  -1.98837968400502e-09,   -1.0273096809956913e-08,
    3.0953839946353727e-08,  -2.875407626642582e-08,  -6.844013285050581e-08,
    2.7621482580782537e-07,  -2.783412694936699e-07,  -7.03824274583298e-07,
    2.7375459637880443e-06,  -1.8084644202632788e-06, -1.0681056442051968e-05,
    2.820317366663673e-05,   1.4272028837556166e-05,  -0.00018708416377967332,
    0.00014593868976706519,  0.0011163836258708528,   -0.001813698029325714,
    -0.008867830708847075,   0.01228532466583273,     0.12438548734918603,
    0.3381708758159431,      0.5347326614946255};

inline __m256d erfc_scaled4d(__m256d t) {
    const __m256d one = _mm256_set1_pd(1.0);
    t = _mm256_min_pd(_mm256_set1_pd(27.5), t);
    const __m256d v = _mm256_div_pd(one, _mm256_fmadd_pd(_mm256_set1_pd(0.5), t, one));
    const __m256d u =
        _mm256_fmadd_pd(_mm256_set1_pd(kErfcMapScaleD), v, _mm256_set1_pd(kErfcMapShiftD));
    __m256d p = _mm256_set1_pd(kErfcScaledD[0]);
    for (size_t i = 1; i < sizeof kErfcScaledD / sizeof kErfcScaledD[0]; ++i) {
        p = _mm256_fmadd_pd(p, u, _mm256_set1_pd(kErfcScaledD[i]));
    }
    return _mm256_mul_pd(v, p);
}

// Phi(x) = erfc(-x / sqrt 2) / 2 in float64, as normal_cdf8: relative to itself also in
// the left tail, x^2 / 2 carried exactly as hi + lo into e^(-x^2/2) (returned in gauss).
inline __m256d normal_cdf4d(__m256d x, __m256d& gauss) {
    const __m256d half = _mm256_set1_pd(0.5), zero = _mm256_setzero_pd();
    const __m256d hi = _mm256_mul_pd(x, x);
    __m256d lo = _mm256_fmsub_pd(x, x, hi);
    lo = _mm256_and_pd(lo, _mm256_cmp_pd(lo, lo, _CMP_ORD_Q));  // 0, not NaN, where x^2 = inf
    gauss = exp_sum4d(_mm256_mul_pd(half, _mm256_sub_pd(zero, hi)),
                      _mm256_mul_pd(half, _mm256_sub_pd(zero, lo)));
    const __m256d t =
        _mm256_andnot_pd(_mm256_set1_pd(-0.0), _mm256_mul_pd(x, _mm256_set1_pd(0.70710678118654752)));
    const __m256d half_erfc = _mm256_mul_pd(_mm256_mul_pd(half, erfc_scaled4d(t)), gauss);
    return _mm256_blendv_pd(_mm256_sub_pd(_mm256_set1_pd(1.0), half_erfc), half_erfc,
                            _mm256_cmp_pd(x, zero, _CMP_LT_OQ));
}

// 1 / (1 + e^-v) over the whole range, as sigmoid_full8.
inline __m256d sigmoid4d(__m256d v) {
    const __m256d one = _mm256_set1_pd(1.0);
    const __m256d e = exp4d(_mm256_or_pd(v, _mm256_set1_pd(-0.0)));  // e^-|v|
    const __m256d top =
        _mm256_blendv_pd(e, one, _mm256_cmp_pd(v, _mm256_setzero_pd(), _CMP_GE_OQ));
    return _mm256_div_pd(top, _mm256_add_pd(one, e));
}

// ln(1 + e) for 0 <= e <= 1 (or NaN), as log1p_unit8: 1 + e = m + c exactly, m scaled into
// [sqrt(1/2), sqrt 2] by k = 0 or 1, ln m = 2 atanh z, z = (m - 1) / (m + 1) (exact
// numerator, |z| <= 0.172), its series to z^21 (the rest is below 1e-18 relative), plus
// c / m and k ln2 (in two parts, the low one added to the small terms first).
// ln2 = kLn2HighPartD + kLn2LowPartD (the float64 ln2 and what it lacks).
constexpr double kLn2HighPartD = 0.69314718055994529, kLn2LowPartD = 2.3190468138462996e-17;

inline __m256d log1p_unit4d(__m256d e) {
    const __m256d one = _mm256_set1_pd(1.0);
    __m256d m = _mm256_add_pd(one, e);
    __m256d c = _mm256_sub_pd(e, _mm256_sub_pd(m, one));
    const __m256d big = _mm256_cmp_pd(m, _mm256_set1_pd(1.4142135623730951), _CMP_GT_OQ);
    const __m256d scale = _mm256_blendv_pd(one, _mm256_set1_pd(0.5), big);
    m = _mm256_mul_pd(m, scale);  // exact: a power of 2
    c = _mm256_mul_pd(c, scale);
    const __m256d z = _mm256_div_pd(_mm256_sub_pd(m, one), _mm256_add_pd(m, one));
    const __m256d s = _mm256_mul_pd(z, z);
    __m256d p = _mm256_set1_pd(2.0 / 21);
    for (int j = 19; j >= 3; j -= 2) p = _mm256_fmadd_pd(p, s, _mm256_set1_pd(2.0 / j));
    const __m256d small = _mm256_add_pd(
        _mm256_fmadd_pd(_mm256_mul_pd(z, s), p, _mm256_div_pd(c, m)),
        _mm256_and_pd(big, _mm256_set1_pd(kLn2LowPartD)));
    return _mm256_add_pd(_mm256_and_pd(big, _mm256_set1_pd(kLn2HighPartD)),
                         _mm256_add_pd(_mm256_add_pd(z, z), small));
}

// tanh v = sign(v) (1 - 2 / (e^2|v| + 1)): within a few 1e-16 absolute (not relative for
// tiny v, which is all gelu_tanh's 1 + tanh needs).
inline __m256d tanh4d(__m256d v) {
    const __m256d sign = _mm256_set1_pd(-0.0), one = _mm256_set1_pd(1.0);
    const __m256d a = _mm256_andnot_pd(sign, v);
    const __m256d e = exp4d(_mm256_add_pd(a, a));
    const __m256d t = _mm256_sub_pd(one, _mm256_div_pd(_mm256_set1_pd(2.0), _mm256_add_pd(e, one)));
    return _mm256_or_pd(t, _mm256_and_pd(sign, v));
}

}  // namespace
}  // namespace graphnet
