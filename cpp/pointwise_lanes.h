// pointwise.h's transcendental activations on x86 vectors, forward f(x) and backward
// dout f'(x), written once over simd_lanes.h's Lanes<V> for pointwise_avx2.cpp (AVX2) and
// pointwise_avx512.cpp (AVX-512, which includes simd_lanes_avx512.h first): the same bits
// at every width. Only files compiled for AVX2 include this; everything is internal to each.
#pragma once

#include "pointwise.h"
#include "simd_math.h"

namespace graphnet {
namespace {

template <typename V>
inline V gelu_forward(V x) {
    V gauss;
    return Lanes<V>::mul(x, normal_cdf(x, gauss));
}

// Phi(x) + x phi(x), phi = g / sqrt(2 pi), from normal_tail's tail t and gaussian g. float32:
// g (t + x / sqrt(2 pi)) for x < 0 (Phi = t g), 1 + g (x / sqrt(2 pi) - t) otherwise (Phi =
// 1 - t g): one product on the FMA pipes fewer than Phi's and phi's sum, which bound the
// backward kernel (0.97x its time). float64 keeps the sum: there the form above took 1.02x
// the time (its tail's 28 Horner steps the bulk, the selects not free).
template <typename V>
inline V gelu_slope(V x, V tail, V gauss) {
    using L = Lanes<V>;
    using C = ConstantsOf<V>;
    if constexpr (!kFloat32Lanes<V>) {
        return L::fmadd(x, L::mul(gauss, L::set1(C::inv_sqrt_2pi)),
                        normal_cdf_of_tail(x, tail, gauss));
    }
    const auto negative = L::lt(x, L::zero());
    const V signed_tail = L::select(negative, tail, L::sub(L::zero(), tail));
    const V part = L::mul(gauss, L::fmadd(L::set1(C::inv_sqrt_2pi), x, signed_tail));
    return L::select(negative, part, L::add(part, L::set1(1)));
}

template <typename V>
inline V gelu_backward(V d, V x) {
    V gauss;
    const V tail = normal_tail(x, gauss);
    return Lanes<V>::mul(d, gelu_slope(x, tail, gauss));
}

// gelu_forward(x), and in `slope` the factor gelu_backward multiplies d by: one tail and
// gaussian for both.
template <typename V>
inline V gelu_forward_slope(V x, V& slope) {
    V gauss;
    const V tail = normal_tail(x, gauss);
    slope = gelu_slope(x, tail, gauss);
    return Lanes<V>::mul(x, normal_cdf_of_tail(x, tail, gauss));
}

// tanh(sqrt(2/pi) (x + 0.044715 x^3)): float32 tanh_split, float64 tanh_absolute.
template <typename V>
inline V gelu_tanh_inner(V x) {
    using L = Lanes<V>;
    using C = ConstantsOf<V>;
    const V x2 = L::mul(x, x);
    const V arg =
        L::mul(L::set1(C::sqrt_2_over_pi), L::fmadd(L::mul(L::set1(C::tanh_cubic), x2), x, x));
    if constexpr (kFloat32Lanes<V>) {
        return tanh_split(arg);
    } else {
        return tanh_absolute(arg);
    }
}

// x (1 + t) / 2 from t = gelu_tanh_inner(x).
template <typename V>
inline V gelu_tanh_of_inner(V x, V t) {
    using L = Lanes<V>;
    const V h = L::mul(L::set1(0.5), x);
    return L::fmadd(h, t, h);
}

template <typename V>
inline V gelu_tanh_forward(V x) {
    return gelu_tanh_of_inner(x, gelu_tanh_inner(x));
}

// (1 + t) / 2 + x (1 - t^2) sqrt(2/pi) (1 + 3 0.044715 x^2) / 2 from t = gelu_tanh_inner(x)
template <typename V>
inline V gelu_tanh_slope(V x, V t) {
    using L = Lanes<V>;
    using C = ConstantsOf<V>;
    const V one = L::set1(1);
    const V inner = L::fmadd(L::set1(3 * C::tanh_cubic * C::sqrt_2_over_pi), L::mul(x, x),
                             L::set1(C::sqrt_2_over_pi));
    const V sech2 = L::fnmadd(t, t, one);
    return L::mul(L::set1(0.5), L::fmadd(L::mul(x, sech2), inner, L::add(one, t)));
}

template <typename V>
inline V gelu_tanh_backward(V d, V x) {
    return Lanes<V>::mul(d, gelu_tanh_slope(x, gelu_tanh_inner(x)));
}

template <typename V>
inline V gelu_tanh_forward_slope(V x, V& slope) {
    const V t = gelu_tanh_inner(x);
    slope = gelu_tanh_slope(x, t);
    return gelu_tanh_of_inner(x, t);
}

template <typename V>
inline V softplus_forward(V x) {  // max(x, 0) + ln(1 + e^-|x|): never overflows
    using L = Lanes<V>;
    const V e = exp_full(L::bit_or(x, L::set1(-0.0)));
    return L::add(L::max(L::zero(), x), log1p_unit(e));
}

template <typename V>
inline V softplus_backward(V d, V x) {  // sigmoid(x)
    return Lanes<V>::mul(d, sigmoid_full(x));
}

// Calls map(f) with op's forward f(x) on lanes V (gelu, gelu_tanh, softplus, sigmoid) and
// returns its result; a value-initialised one (nothing done) for another op. (f a lambda,
// not a function pointer: its own type, so map's loop calls it directly and inlines it.)
template <typename V, typename Map>
auto with_forward(Pointwise op, Map map) {
    switch (op) {
        case Pointwise::gelu:
            return map([](V x) { return gelu_forward(x); });
        case Pointwise::gelu_tanh:
            return map([](V x) { return gelu_tanh_forward(x); });
        case Pointwise::softplus:
            return map([](V x) { return softplus_forward(x); });
        case Pointwise::sigmoid:  // float64's (float32's: sigmoid_avx2, elementwise.h)
            return map([](V x) { return sigmoid_full(x); });
        default:
            return decltype(map(gelu_forward<V>))();  // (only its type)
    }
}

// The same with op's forward and slope f(x, slope&) -> f(x), setting slope to f'(x) (gelu,
// gelu_tanh: pointwise_has_slope).
template <typename V, typename Map>
auto with_forward_slope(Pointwise op, Map map) {
    switch (op) {
        case Pointwise::gelu:
            return map([](V x, V& slope) { return gelu_forward_slope(x, slope); });
        case Pointwise::gelu_tanh:
            return map([](V x, V& slope) { return gelu_tanh_forward_slope(x, slope); });
        default:
            return decltype(map(gelu_forward_slope<V>))();
    }
}

// The same with op's backward f(dout, x).
template <typename V, typename Map>
auto with_backward(Pointwise op, Map map) {
    switch (op) {
        case Pointwise::gelu:
            return map([](V d, V x) { return gelu_backward(d, x); });
        case Pointwise::gelu_tanh:
            return map([](V d, V x) { return gelu_tanh_backward(d, x); });
        case Pointwise::softplus:
            return map([](V d, V x) { return softplus_backward(d, x); });
        default:
            return decltype(map(gelu_backward<V>))();
    }
}

}  // namespace
}  // namespace graphnet
