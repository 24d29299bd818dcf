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

template <>
struct Lanes<__m256> {
    using Scalar = float;
    using Mask = __m256;
    using Tail = __m256i;
    static constexpr int64_t width = 8;

    static __m256 set1(float c) { return _mm256_set1_ps(c); }
    static __m256 zero() { return _mm256_setzero_ps(); }
    static __m256 load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
    static Tail tail(int64_t valid) { return first_lanes(valid); }
    static __m256 load(const float* p, Tail t) { return _mm256_maskload_ps(p, t); }
    static void store(float* p, Tail t, __m256 v) { _mm256_maskstore_ps(p, t, v); }
    static __m256 keep(Tail t, __m256 v) { return _mm256_and_ps(v, _mm256_castsi256_ps(t)); }

    static __m256 add(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
    static __m256 sub(__m256 a, __m256 b) { return _mm256_sub_ps(a, b); }
    static __m256 mul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
    static __m256 div(__m256 a, __m256 b) { return _mm256_div_ps(a, b); }
    static __m256 fmadd(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
    static __m256 fnmadd(__m256 a, __m256 b, __m256 c) { return _mm256_fnmadd_ps(a, b, c); }
    static __m256 fmsub(__m256 a, __m256 b, __m256 c) { return _mm256_fmsub_ps(a, b, c); }
    // min and max return their second operand where one is NaN.
    static __m256 min(__m256 a, __m256 b) { return _mm256_min_ps(a, b); }
    static __m256 max(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }
    static __m256 round(__m256 v) {
        return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    static __m256 bit_or(__m256 a, __m256 b) { return _mm256_or_ps(a, b); }
    static __m256 bit_and(__m256 a, __m256 b) { return _mm256_and_ps(a, b); }
    static __m256 abs(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

    static Mask lt(__m256 a, __m256 b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
    static Mask gt(__m256 a, __m256 b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
    static Mask ge(__m256 a, __m256 b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
    static Mask ordered(__m256 a, __m256 b) { return _mm256_cmp_ps(a, b, _CMP_ORD_Q); }
    static __m256 select(Mask m, __m256 yes, __m256 no) { return _mm256_blendv_ps(no, yes, m); }
    static __m256 keep(Mask m, __m256 v) { return _mm256_and_ps(v, m); }

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
    using Scalar = double;
    using Mask = __m256d;
    using Tail = __m256i;
    static constexpr int64_t width = 4;

    static __m256d set1(double c) { return _mm256_set1_pd(c); }
    static __m256d zero() { return _mm256_setzero_pd(); }
    static __m256d load(const double* p) { return _mm256_loadu_pd(p); }
    static void store(double* p, __m256d v) { _mm256_storeu_pd(p, v); }
    static Tail tail(int64_t valid) {
        const int64_t clipped = valid < 0 ? 0 : (valid > 4 ? 4 : valid);
        return _mm256_cmpgt_epi64(_mm256_set1_epi64x(clipped), _mm256_setr_epi64x(0, 1, 2, 3));
    }
    static __m256d load(const double* p, Tail t) { return _mm256_maskload_pd(p, t); }
    static void store(double* p, Tail t, __m256d v) { _mm256_maskstore_pd(p, t, v); }
    static __m256d keep(Tail t, __m256d v) { return _mm256_and_pd(v, _mm256_castsi256_pd(t)); }

    static __m256d add(__m256d a, __m256d b) { return _mm256_add_pd(a, b); }
    static __m256d sub(__m256d a, __m256d b) { return _mm256_sub_pd(a, b); }
    static __m256d mul(__m256d a, __m256d b) { return _mm256_mul_pd(a, b); }
    static __m256d div(__m256d a, __m256d b) { return _mm256_div_pd(a, b); }
    static __m256d fmadd(__m256d a, __m256d b, __m256d c) { return _mm256_fmadd_pd(a, b, c); }
    static __m256d fnmadd(__m256d a, __m256d b, __m256d c) { return _mm256_fnmadd_pd(a, b, c); }
    static __m256d fmsub(__m256d a, __m256d b, __m256d c) { return _mm256_fmsub_pd(a, b, c); }
    static __m256d min(__m256d a, __m256d b) { return _mm256_min_pd(a, b); }
    static __m256d max(__m256d a, __m256d b) { return _mm256_max_pd(a, b); }
    static __m256d round(__m256d v) {
        return _mm256_round_pd(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    static __m256d bit_or(__m256d a, __m256d b) { return _mm256_or_pd(a, b); }
    static __m256d bit_and(__m256d a, __m256d b) { return _mm256_and_pd(a, b); }
    static __m256d abs(__m256d v) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), v); }

    static Mask lt(__m256d a, __m256d b) { return _mm256_cmp_pd(a, b, _CMP_LT_OQ); }
    static Mask gt(__m256d a, __m256d b) { return _mm256_cmp_pd(a, b, _CMP_GT_OQ); }
    static Mask ge(__m256d a, __m256d b) { return _mm256_cmp_pd(a, b, _CMP_GE_OQ); }
    static Mask ordered(__m256d a, __m256d b) { return _mm256_cmp_pd(a, b, _CMP_ORD_Q); }
    static __m256d select(Mask m, __m256d yes, __m256d no) {
        return _mm256_blendv_pd(no, yes, m);
    }
    static __m256d keep(Mask m, __m256d v) { return _mm256_and_pd(v, m); }

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
