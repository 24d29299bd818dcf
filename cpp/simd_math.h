// Vector math for the x86 translation units, each function written once over simd_lanes.h's
// Lanes<V> (AVX2: activations_avx2.cpp, pointwise_avx2.cpp; AVX-512, which includes
// simd_lanes_avx512.h first: activations_avx512.cpp, pointwise_avx512.cpp): the same
// operations in the same order at every width, so the same bits. float32 and float64: e^x,
// the sigmoid, tanh, ln(1 + e) on [0, 1], the normal CDF; float32 also erf and a clamped e^x.
// NaN passes through every function.
//
// The float32 polynomial coefficients were fitted (least squares, reweighted to minimax) in
// float64 against math.erf / math.erfc (e^r: exp) and rounded to float32; tests/kernels/
// test_pointwise_kernels.py measures the resulting errors in units in the last place.
#pragma once

#include <cstddef>
#include <type_traits>

#include "simd_lanes.h"

namespace graphnet {
namespace {

template <typename V>
constexpr bool kFloat32Lanes = std::is_same_v<typename Lanes<V>::Scalar, float>;

template <typename V, size_t N>
inline V horner(const typename Lanes<V>::Scalar (&c)[N], V x) {
    using L = Lanes<V>;
    V p = L::set1(c[0]);
    for (size_t i = 1; i < N; ++i) p = L::fmadd(p, x, L::set1(c[i]));
    return p;
}

// The same for a polynomial whose leading coefficient, left out of c, is 1.
template <typename V, size_t N>
inline V horner_monic(const typename Lanes<V>::Scalar (&c)[N], V x) {
    using L = Lanes<V>;
    V p = L::add(x, L::set1(c[0]));
    for (size_t i = 1; i < N; ++i) p = L::fmadd(p, x, L::set1(c[i]));
    return p;
}

// The constants of one precision.
template <typename T>
struct MathConstants;

template <>
struct MathConstants<float> {
    // e^r for |r| <= ln2 / 2: 1 + r + r^2 P(r), P of degree 4 fitted for the least relative
    // error (0.05 of 2^-24; 0.64 units in the last place evaluated in float32, as the
    // Taylor series to r^7 is, with one step fewer); ln2 in two parts (n ln2_high exact for
    // |n| < 2^15); exp_sum's range.
    static constexpr float exp_poly[] = {1.381442649e-03f, 8.368719369e-03f, 4.166838899e-02f,
                                         1.666652113e-01f, 4.999999404e-01f, 1.0f,
                                         1.0f};
    static constexpr float log2e = 1.44269504f, ln2_high = 0.693359375f,
                           ln2_low = -2.12194440e-4f, exp_low = -104.0f, exp_high = 89.0f;
    // erfc(t) e^(t^2) for t >= 0 as v G(v), v = 1 / (1 + t/2): G fitted for the least
    // relative error (0.61 of 2^-24) up to t = 10.5, past which erfc is 0 in float32. Stored
    // as H(w) = G(2w), w = v / 2 = 1 / (2 + t): G's coefficient of v^k times 2^k, so that
    // each step of H's Horner scheme is G's times a power of 2 (the same bits), and w H(w)
    // is half of v G(v) with no multiplication by 1/2.
    static constexpr float erfc_scaled[] = {5.537534237e+00f,  -2.955995750e+01f,
                                            5.262371826e+01f,  -4.141047668e+01f,
                                            1.289200783e+01f,  -1.422001839e+00f,
                                            1.779561162e+00f,  9.570748806e-01f,
                                            5.655743480e-01f,  2.820678055e-01f};
    static constexpr float erfc_limit = 10.5f;
    // Phi(-s) e^(s^2 / 2) for 0 <= s <= 15 (past which Phi(-s) is 0 in float32) as P(s) / Q(s),
    // P of degree 4 and Q of degree 5 with leading coefficient 1, fitted for the least
    // relative error (0.11 of 2^-24; 0.32 with the coefficients rounded to float32). Every
    // coefficient is positive, so neither Horner scheme cancels. Highest power first.
    static constexpr float cdf_tail_numerator[] = {3.989465535e-01f, 3.926826000e+00f,
                                                   1.767078590e+01f, 4.219383240e+01f,
                                                   4.802478027e+01f};
    static constexpr float cdf_tail_denominator[] = {9.843680382e+00f, 4.528026199e+01f,
                                                     1.157950058e+02f, 1.610241699e+02f,
                                                     9.604956055e+01f};
    static constexpr float cdf_tail_limit = 15.0f;
    // normal_cdf's inputs below this in magnitude need none of the clamps (x^2 / 2 < 104,
    // |x| < cdf_tail_limit).
    static constexpr float cdf_unclamped = 14.0f;
    // 2 atanh z = 2 z + z^3 (2/3 + 2/5 s + ...), s = z^2, to z^9; ln 2; sqrt 2.
    static constexpr float atanh[] = {2.0f / 9, 2.0f / 7, 2.0f / 5, 2.0f / 3};
    static constexpr float ln2 = 0.693147181f, sqrt2 = 1.41421356f;
    // gelu: 1 / sqrt(2 pi); gelu_tanh: sqrt(2/pi) and the cubic coefficient.
    static constexpr float inv_sqrt_2pi = 0.398942280f, sqrt_2_over_pi = 0.797884561f,
                           tanh_cubic = 0.044715f;
};

template <>
struct MathConstants<double> {
    // e^r's Taylor series to r^13 (the next term is below 5e-18 relative).
    static constexpr double exp_poly[] = {
        1.0 / 6227020800, 1.0 / 479001600, 1.0 / 39916800, 1.0 / 3628800, 1.0 / 362880,
        1.0 / 40320,      1.0 / 5040,      1.0 / 720,      1.0 / 120,     1.0 / 24,
        1.0 / 6,          0.5,             1.0,            1.0};
    static constexpr double log2e = 1.4426950408889634, ln2_high = 0.6931471803691238,
                            ln2_low = 1.9082149292705877e-10, exp_low = -746.0,
                            exp_high = 710.0;
    // erfc(t) e^(t^2) for 0 <= t <= 27.5 (past which e^(-t^2) is 0 in float64) as v G(v),
    // G a polynomial of degree 28 in u = 2.145 v - 1.145 (v's range mapped to [-1, 1]): the
    // Chebyshev interpolant of G in 40-digit arithmetic (the next coefficient is 2e-19),
    // converted to powers of u and rounded to float64. About 5 units in the last place at
    // most (against mpmath; near t = 0.01 v's two roundings are amplified 2.3x). Evaluated
    // from w = v / 2 as float32's is: u = 4.29 w - 1.145 (the same bits).
    static constexpr double erfc_map_scale = 4.290909090909091,
                            erfc_map_shift = -1.1454545454545455;
    static constexpr double erfc_scaled[] = {
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
    static constexpr double erfc_limit = 27.5, inv_sqrt2 = 0.70710678118654752,
                            cdf_unclamped = 38.0;  // (x^2 / 2 < 746, x / sqrt 2 < 27.5)
    // The atanh series to z^21 (the rest is below 1e-18 relative); ln2 = ln2_high_part +
    // ln2_low_part (the float64 ln2 and what it lacks).
    static constexpr double atanh[] = {2.0 / 21, 2.0 / 19, 2.0 / 17, 2.0 / 15, 2.0 / 13, 2.0 / 11,
                                       2.0 / 9,  2.0 / 7,  2.0 / 5,  2.0 / 3};
    static constexpr double ln2_high_part = 0.69314718055994529,
                            ln2_low_part = 2.3190468138462996e-17, sqrt2 = 1.4142135623730951;
    static constexpr double inv_sqrt_2pi = 0.39894228040143267794,
                            sqrt_2_over_pi = 0.79788456080286535588, tanh_cubic = 0.044715;
};

template <typename V>
using ConstantsOf = MathConstants<typename Lanes<V>::Scalar>;

// A polynomial's coefficients (highest power first) for its values at u / k: the
// coefficient of u^j divided by k^j. For k a power of 2 each Horner step in u is the one
// in u / k times a power of 2 (the same bits).
template <typename T, size_t N>
struct Coefficients {
    T c[N];
};

template <int k, typename T, size_t N>
constexpr Coefficients<T, N> at_fraction(const T (&c)[N]) {
    Coefficients<T, N> out{};
    T scale = 1;
    for (size_t i = N; i-- > 0; scale /= k) out.c[i] = c[i] * scale;
    return out;
}

// e^((a + b) / k), k = 1 or -2 (e^(-x^2 / 2) from x^2 = a + b with no halving of its own),
// over the whole range (0 below about -103.98 / -745.1, subnormal like the C library's,
// +inf above about 88.72 / 709.78), for b small against a (at most half a unit in a's last
// place): (a + b) / k = n ln2 + r, n and r reduced from a alone (so a large a, the -t^2 of
// erfc, loses none of b's bits to a rounded a + b; |r| <= ln2 / 2 plus b) with b added
// after, e^r by exp_poly, times 2^n. The steps run on k r (a - k n ln2 + b, the polynomial
// at_fraction<k>): for k = -2 the same bits as for k = 1 on a / k and b / k, one product
// fewer. kInRange: the caller knows (a + b) / k is within [exp_low, exp_high], where the
// clamp and the limits change nothing, and they are left out (the same bits, fewer steps).
template <bool kInRange = false, int k = 1, typename V>
inline V exp_sum(V a, V b) {
    using L = Lanes<V>;
    using C = ConstantsOf<V>;
    using S = typename L::Scalar;
    static_assert(k == 1 || k == -2);
    static constexpr auto poly = at_fraction<k>(C::exp_poly);
    constexpr S low = k * C::exp_low, high = k * C::exp_high;  // a's bounds, swapped for k < 0
    const V clamped = kInRange  ? a
                      : k > 0 ? L::min(L::set1(high), L::max(L::set1(low), a))
                              : L::max(L::set1(high), L::min(L::set1(low), a));
    const V n = L::round(L::mul(clamped, L::set1(C::log2e / k)));
    V r = L::fnmadd(n, L::set1(k * C::ln2_high), a);
    r = L::add(L::fnmadd(n, L::set1(k * C::ln2_low), r), b);
    V out = L::scale(horner(poly.c, r), n);
    if constexpr (kInRange) return out;
    // Outside the clamp r is meaningless: the limits instead. (a NaN compares false.)
    const V x = L::add(a, b);
    const auto below = k > 0 ? L::lt(x, L::set1(low)) : L::gt(x, L::set1(low));
    const auto above = k > 0 ? L::gt(x, L::set1(high)) : L::lt(x, L::set1(high));
    out = L::select(below, L::zero(), out);
    return L::select(above, L::set1(__builtin_inf()), out);
}

template <typename V>
inline V exp_full(V x) {
    return exp_sum(x, Lanes<V>::zero());
}

// float32 e^x clamped to where 2^n is a normal float: it saturates at about 2.4e38 and
// 1.2e-38 instead of inf and 0 (the recurrent kernels' sigmoid and tanh, where that is
// harmless), and is cheaper than exp_full.
template <typename V>
inline V exp_clamped(V x) {
    using L = Lanes<V>;
    using C = ConstantsOf<V>;
    static_assert(kFloat32Lanes<V>);
    // The constant first: max and min return their second operand for a NaN, which so passes.
    x = L::min(L::set1(88.3f), L::max(L::set1(-87.3f), x));
    const V n = L::round(L::mul(x, L::set1(C::log2e)));
    V r = L::fnmadd(n, L::set1(C::ln2_high), x);
    r = L::fnmadd(n, L::set1(C::ln2_low), r);
    return L::mul(horner(C::exp_poly, r), L::pow2(n));
}

template <typename V>
struct ExactDivide {
    V operator()(V top, V d) const { return Lanes<V>::div(top, d); }
};

// float32 1 / (1 + e^-v) with exp_clamped's saturation, the quotient by divide.
template <typename V, typename Divide = ExactDivide<V>>
inline V sigmoid_clamped(V v, Divide divide = {}) {
    using L = Lanes<V>;
    const V one = L::set1(1.0f);
    return divide(one, L::add(one, exp_clamped(L::sub(L::zero(), v))));
}

// 1 / (1 + e^-v) over the whole range (exactly 0 far below, no saturation): e^-|v| never
// overflows, and for v < 0 the quotient is e^v / (1 + e^v).
template <typename V>
inline V sigmoid_full(V v) {
    using L = Lanes<V>;
    const V one = L::set1(1);
    const V e = exp_full(L::bit_or(v, L::set1(-0.0)));  // e^-|v|
    const V top = L::select(L::ge(v, L::zero()), one, e);
    return L::div(top, L::add(one, e));
}

// sign(v) (1 - 2 / (e + 1)), the quotient by divide: tanh v for e = e^2|v|.
template <typename V, typename Divide>
inline V tanh_from_exp(V v, V e, Divide divide) {
    using L = Lanes<V>;
    const V one = L::set1(1);
    const V t = L::sub(one, divide(L::set1(2), L::add(e, one)));
    return L::bit_or(t, L::bit_and(v, L::set1(-0.0)));
}

// float32 tanh: |v| < 0.5625: v + v^3 Q(v^2), Q fitted for the least relative error
// (< 1 ulp), where tanh_from_exp would lose the low bits of small v; above, tanh_from_exp
// with exp_clamped.
template <typename V, typename Divide = ExactDivide<V>>
inline V tanh_split(V v, Divide divide = {}) {
    using L = Lanes<V>;
    static constexpr float kSmall[] = {-6.179890130e-03f, 2.100752480e-02f, -5.383744836e-02f,
                                       1.333245188e-01f, -3.333331347e-01f};
    const V a = L::abs(v);
    const V s = L::mul(v, v);
    const V small = L::fmadd(L::mul(v, s), horner(kSmall, s), v);
    const V large = tanh_from_exp(v, exp_clamped(L::add(a, a)), divide);
    return L::select(L::lt(a, L::set1(0.5625f)), small, large);
}

// float64 tanh: within a few 1e-16 absolute (not relative for tiny v, which is all
// gelu_tanh's 1 + tanh needs).
template <typename V>
inline V tanh_absolute(V v) {
    using L = Lanes<V>;
    const V a = L::abs(v);
    return tanh_from_exp(v, exp_full(L::add(a, a)), ExactDivide<V>());
}

// a b = hi + lo exactly (lo is the FMA's remainder; 0 where a b is infinite, not NaN: a
// step left out where kFinite, a b known finite).
template <bool kFinite = false, typename V>
inline void product_exact(V a, V b, V& hi, V& lo) {
    using L = Lanes<V>;
    hi = L::mul(a, b);
    lo = L::fmsub(a, b, hi);
    if constexpr (!kFinite) lo = L::keep(L::ordered(lo, lo), lo);
}

// erfc(t) e^(t^2) / 2 for t >= 0 from w = 1 / (2 + t) (MathConstants' erfc_scaled; t at
// most erfc_limit). The e^(-t^2) it is multiplied with comes from exp_sum of -t^2 carried
// exactly as hi + lo.
template <typename V>
inline V half_erfc_scaled(V w) {
    using L = Lanes<V>;
    using C = ConstantsOf<V>;
    if constexpr (kFloat32Lanes<V>) {
        return L::mul(w, horner(C::erfc_scaled, w));
    } else {
        const V u = L::fmadd(L::set1(C::erfc_map_scale), w, L::set1(C::erfc_map_shift));
        return L::mul(w, horner(C::erfc_scaled, u));
    }
}

// float32 erf(a): below 0.921875 a + a P(a^2) (fitted error 0.11 of 2^-24 relative to
// erf(a)/a), above 1 - erfc with erfc from erfc_scaled.
template <typename V>
inline V erf_lanes(V a) {
    using L = Lanes<V>;
    static constexpr float kP[] = {8.398126374e-05f, -8.149896748e-04f, 5.201725755e-03f,
                                   -2.685970627e-02f, 1.128370166e-01f, -3.761263490e-01f,
                                   1.283791661e-01f};
    const V small = L::fmadd(a, horner(kP, L::mul(a, a)), a);
    const V t = L::min(L::set1(ConstantsOf<V>::erfc_limit), L::abs(a));
    V hi, lo;  // -t^2
    product_exact(L::sub(L::zero(), t), t, hi, lo);
    const V one = L::set1(1.0f);
    const V w = L::div(one, L::add(L::set1(2.0f), t));
    const V half_erfc = L::mul(half_erfc_scaled(w), exp_sum(hi, lo));
    const V sign = L::bit_and(L::set1(-0.0f), a);
    const V tail = L::bit_or(L::fnmadd(L::set1(2.0f), half_erfc, one), sign);
    return L::select(L::lt(t, L::set1(0.921875f)), small, tail);
}

// Phi(-s) e^(s^2 / 2) for s >= 0 (or NaN), clamped to s <= cdf_tail_limit where !kInRange:
// float32 by MathConstants' rational function (one division, as erfc_scaled's w = 1 / (2 + t)
// takes, and eight steps on the FMA pipes where that takes eleven); float64 by erfc_scaled at
// t = s / sqrt 2.
template <bool kInRange, typename V>
inline V scaled_normal_tail(V s) {
    using L = Lanes<V>;
    using C = ConstantsOf<V>;
    if constexpr (kFloat32Lanes<V>) {
        if constexpr (!kInRange) s = L::min(L::set1(C::cdf_tail_limit), s);
        return L::div(horner(C::cdf_tail_numerator, s), horner_monic(C::cdf_tail_denominator, s));
    } else {
        // w = 1 / (2 + t), its denominator at most 2 + erfc_limit.
        V denominator = L::fmadd(L::set1(C::inv_sqrt2), s, L::set1(2));
        if constexpr (!kInRange) denominator = L::min(L::set1(2 + C::erfc_limit), denominator);
        return half_erfc_scaled(L::div(L::set1(1), denominator));
    }
}

// The standard normal CDF Phi(x) = erfc(-x / sqrt 2) / 2 in two factors, accurate relative
// to itself also far into the left tail (where 1 + erf(x / sqrt 2) would cancel): returns
// the tail Phi(-|x|) e^(x^2 / 2) and sets `gauss` to e^(-x^2 / 2), so that Phi(x) is their
// product for x < 0 and 1 less it otherwise (the density is gauss / sqrt(2 pi)). x^2 is
// carried exactly as hi + lo, not from the rounded x / sqrt 2, whose error would grow to
// x^2 2^-24 relative in e^(-x^2 / 2). kInRange: |x| < cdf_unclamped known.
template <bool kInRange, typename V>
inline V normal_tail_of(V x, V& gauss) {
    V hi, lo;  // x^2
    product_exact<kInRange>(x, x, hi, lo);
    gauss = exp_sum<kInRange, -2>(hi, lo);
    return scaled_normal_tail<kInRange>(Lanes<V>::abs(x));
}

// The clamps cost a sixth of gelu's steps and matter only for |x| >= cdf_unclamped (or NaN):
// a vector without such a lane goes without them. Each lane's bits are the same either way
// (the clamps change nothing in range), so they do not depend on its neighbours.
template <typename V>
inline V normal_tail(V x, V& gauss) {
    using L = Lanes<V>;
    if (L::all(L::lt(L::abs(x), L::set1(ConstantsOf<V>::cdf_unclamped)))) {
        return normal_tail_of<true>(x, gauss);
    }
    return normal_tail_of<false>(x, gauss);
}

// Phi(x) from normal_tail's tail and gaussian.
template <typename V>
inline V normal_cdf_of_tail(V x, V tail, V gauss) {
    using L = Lanes<V>;
    const V half_erfc = L::mul(tail, gauss);
    return L::select(L::lt(x, L::zero()), half_erfc, L::sub(L::set1(1), half_erfc));
}

// Phi(x), and e^(-x^2 / 2) in `gauss` (normal_tail).
template <typename V>
inline V normal_cdf(V x, V& gauss) {
    const V tail = normal_tail(x, gauss);  // sets gauss first
    return normal_cdf_of_tail(x, tail, gauss);
}

// ln(1 + e) for 0 <= e <= 1 (or NaN): 1 + e = m + c exactly (c the rounding error), m
// scaled into [sqrt(1/2), sqrt 2] by k = 0 or 1, ln m = 2 atanh z with z = (m - 1) / (m + 1)
// (exact numerator, |z| <= 0.172; its series: below 2^-29 relative in float32, 1e-18 in
// float64), plus c / m and k ln2 (in float64 in two parts, the low one added to the small
// terms first).
template <typename V>
inline V log1p_unit(V e) {
    using L = Lanes<V>;
    using C = ConstantsOf<V>;
    const V one = L::set1(1);
    V m = L::add(one, e);
    V c = L::sub(e, L::sub(m, one));
    const auto big = L::gt(m, L::set1(C::sqrt2));
    const V scale = L::select(big, L::set1(0.5), one);
    m = L::mul(m, scale);  // exact: a power of 2
    c = L::mul(c, scale);
    const V z = L::div(L::sub(m, one), L::add(m, one));
    const V s = L::mul(z, z);
    const V p = horner(C::atanh, s);
    if constexpr (kFloat32Lanes<V>) {
        const V series = L::fmadd(L::mul(z, s), p, L::add(z, z));
        return L::add(L::keep(big, L::set1(C::ln2)), L::add(series, L::div(c, m)));
    } else {
        const V small = L::add(L::fmadd(L::mul(z, s), p, L::div(c, m)),
                               L::keep(big, L::set1(C::ln2_low_part)));
        return L::add(L::keep(big, L::set1(C::ln2_high_part)), L::add(L::add(z, z), small));
    }
}

}  // namespace
}  // namespace graphnet
