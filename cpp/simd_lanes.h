// Lanes<V>: the operations on one x86 vector V of float32 or float64 lanes under one name
// for every width, so that simd_math.h writes each algorithm once. This header has the
// AVX2 + FMA widths (__m256: eight float32, __m256d: four float64); simd_lanes_avx512.h adds
// the AVX-512 ones. Only files compiled for AVX2 include this; everything is internal to each.
//
// Masks: compare results, as all-ones lanes here and as mask registers on AVX-512.
// Tails: the first `valid` lanes of a vector, for the last, partial one of an array.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "avx2_lanes.h"

namespace graphnet {
namespace {

// A vector type as a template argument loses its may_alias attribute (GCC warns): nothing
// here reads memory through a pointer to V, so it does not matter.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"

template <typename V>
struct Lanes;

// The operations whose intrinsics' names differ between the widths only by their prefix
// (_mm256, _mm512) and suffix (ps, pd), and by those of the compare and the rounding: one
// list for every Lanes<V> (here and in simd_lanes_avx512.h). V the vector, S its scalar.
#define GRAPHNET_LANES_COMMON(V, S, prefix, suffix, compare, round_by)                     \
    using Scalar = S;                                                                     \
    static V set1(S c) { return prefix##_set1_##suffix(c); }                              \
    static V zero() { return prefix##_setzero_##suffix(); }                               \
    static V load(const S* p) { return prefix##_loadu_##suffix(p); }                      \
    static void store(S* p, V v) { prefix##_storeu_##suffix(p, v); }                      \
    static V add(V a, V b) { return prefix##_add_##suffix(a, b); }                        \
    static V sub(V a, V b) { return prefix##_sub_##suffix(a, b); }                        \
    static V mul(V a, V b) { return prefix##_mul_##suffix(a, b); }                        \
    static V div(V a, V b) { return prefix##_div_##suffix(a, b); }                        \
    static V fmadd(V a, V b, V c) { return prefix##_fmadd_##suffix(a, b, c); }            \
    static V fnmadd(V a, V b, V c) { return prefix##_fnmadd_##suffix(a, b, c); }          \
    static V fmsub(V a, V b, V c) { return prefix##_fmsub_##suffix(a, b, c); }            \
    /* min and max return their second operand where one is NaN. */                       \
    static V min(V a, V b) { return prefix##_min_##suffix(a, b); }                        \
    static V max(V a, V b) { return prefix##_max_##suffix(a, b); }                        \
    static V round(V v) { return round_by(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); } \
    static Mask lt(V a, V b) { return compare(a, b, _CMP_LT_OQ); }                        \
    static Mask gt(V a, V b) { return compare(a, b, _CMP_GT_OQ); }                        \
    static Mask ge(V a, V b) { return compare(a, b, _CMP_GE_OQ); }                        \
    static Mask ordered(V a, V b) { return compare(a, b, _CMP_ORD_Q); }

// The rest that is alike for __m256 and __m256d: masks are all-ones lanes (Mask = V), tails
// the 32-bit or 64-bit integer lanes of maskload / maskstore.
#define GRAPHNET_LANES_AVX2(V, S, suffix)                                                  \
    using Mask = V;                                                                       \
    using Tail = __m256i;                                                                 \
    GRAPHNET_LANES_COMMON(V, S, _mm256, suffix, _mm256_cmp_##suffix, _mm256_round_##suffix) \
    static V load(const S* p, Tail t) { return _mm256_maskload_##suffix(p, t); }          \
    static void store(S* p, Tail t, V v) { _mm256_maskstore_##suffix(p, t, v); }          \
    static V keep(Tail t, V v) { return _mm256_and_##suffix(v, _mm256_castsi256_##suffix(t)); } \
    static V keep(Mask m, V v) { return _mm256_and_##suffix(v, m); }                      \
    static V select(Mask m, V yes, V no) { return _mm256_blendv_##suffix(no, yes, m); }   \
    static V bit_or(V a, V b) { return _mm256_or_##suffix(a, b); }                        \
    static V bit_and(V a, V b) { return _mm256_and_##suffix(a, b); }                      \
    static V abs(V v) { return _mm256_andnot_##suffix(set1(-0.0), v); }                   \
    static bool all(Mask m) { return _mm256_movemask_##suffix(m) == (1 << width) - 1; }

template <>
struct Lanes<__m256> {
    GRAPHNET_LANES_AVX2(__m256, float, ps)
    static constexpr int64_t width = 8;
    static Tail tail(int64_t valid) { return first_lanes(valid); }

    // 2^n for integral n with 2^n a normal float, built in the exponent bits.
    static __m256 pow2(__m256 n) {
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
    }
    // p 2^n for integral n in [-150, 129], rounded once: 2^n in two normal factors, the
    // one rounding the last product (which makes the subnormals).
    static __m256 scale(__m256 p, __m256 n) {
        const __m256i ni = _mm256_cvtps_epi32(n);
        const __m256i half = _mm256_srai_epi32(ni, 1);
        const __m256i bias = _mm256_set1_epi32(127);
        const __m256 scale1 =
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, bias), 23));
        const __m256 scale2 = _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), bias), 23));
        return _mm256_mul_ps(_mm256_mul_ps(p, scale1), scale2);
    }
    // The lanes' sum in a fixed tree: the same bits every time.
    static float sum(__m256 v) {
        const __m128 four = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        const __m128 two = _mm_add_ps(four, _mm_movehl_ps(four, four));
        return _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)));
    }
};

template <>
struct Lanes<__m256d> {
    GRAPHNET_LANES_AVX2(__m256d, double, pd)
    static constexpr int64_t width = 4;
    static Tail tail(int64_t valid) {
        const int64_t clipped = valid < 0 ? 0 : (valid > 4 ? 4 : valid);
        return _mm256_cmpgt_epi64(_mm256_set1_epi64x(clipped), _mm256_setr_epi64x(0, 1, 2, 3));
    }

    // 2^k for integral k in [-1022, 1023], built in the exponent bits (0x1.8p52 added puts
    // k's two's complement in the low bits).
    static __m256d pow2(__m256d k) {
        const __m256d magic = _mm256_set1_pd(6755399441055744.0);
        const __m256i bits = _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(k, magic)),
                                              _mm256_castpd_si256(magic));
        return _mm256_castsi256_pd(
            _mm256_slli_epi64(_mm256_add_epi64(bits, _mm256_set1_epi64x(1023)), 52));
    }
    // p 2^n for integral n in [-1076, 1025], rounded once (two normal factors).
    static __m256d scale(__m256d p, __m256d n) {
        const __m256d half = _mm256_round_pd(_mm256_mul_pd(n, _mm256_set1_pd(0.5)),
                                             _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        return _mm256_mul_pd(_mm256_mul_pd(p, pow2(half)), pow2(_mm256_sub_pd(n, half)));
    }
    // The lanes' sum in a fixed tree.
    static double sum(__m256d v) {
        const __m128d two = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
        return _mm_cvtsd_f64(_mm_add_sd(two, _mm_unpackhi_pd(two, two)));
    }
};

// out[k] = f(in[k]...) over the whole vectors of the arrays `in` (one or more, n entries
// each); returns how many entries that was.
template <typename V, typename F, typename... In>
int64_t map_whole(int64_t n, F f, typename Lanes<V>::Scalar* out, const In*... in) {
    using L = Lanes<V>;
    int64_t k = 0;
    for (; k + L::width <= n; k += L::width) L::store(out + k, f(L::load(in + k)...));
    return k;
}

// The same over all n entries, the last ones in masked lanes.
template <typename V, typename F, typename... In>
void map_all(int64_t n, F f, typename Lanes<V>::Scalar* out, const In*... in) {
    using L = Lanes<V>;
    const int64_t k = map_whole<V>(n, f, out, in...);
    if (k < n) {
        const typename L::Tail lanes = L::tail(n - k);
        L::store(out + k, lanes, f(L::load(in + k, lanes)...));
    }
}

// The same with two outputs: out[k] = f(in[k]..., out2[k]), f setting its last argument.
template <typename V, typename F, typename... In>
int64_t map_whole2(int64_t n, F f, typename Lanes<V>::Scalar* out,
                   typename Lanes<V>::Scalar* out2, const In*... in) {
    using L = Lanes<V>;
    int64_t k = 0;
    for (; k + L::width <= n; k += L::width) {
        V second;
        L::store(out + k, f(L::load(in + k)..., second));
        L::store(out2 + k, second);
    }
    return k;
}

template <typename V, typename F, typename... In>
void map_all2(int64_t n, F f, typename Lanes<V>::Scalar* out, typename Lanes<V>::Scalar* out2,
              const In*... in) {
    using L = Lanes<V>;
    const int64_t k = map_whole2<V>(n, f, out, out2, in...);
    if (k < n) {
        const typename L::Tail lanes = L::tail(n - k);
        V second;
        L::store(out + k, lanes, f(L::load(in + k, lanes)..., second));
        L::store(out2 + k, lanes, second);
    }
}

// out[k] = f(x[k] + bias[k]) (bias may be null) over all n entries.
template <typename V, typename F>
void map_with_bias(int64_t n, const float* x, const float* bias, float* out, F f) {
    if (bias) {
        map_all<V>(n, [&](V v, V b) { return f(Lanes<V>::add(v, b)); }, out, x, bias);
    } else {
        map_all<V>(n, f, out, x);
    }
}

#pragma GCC diagnostic pop

}  // namespace
}  // namespace graphnet
