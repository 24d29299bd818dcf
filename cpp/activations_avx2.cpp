// AVX2 + FMA kernels of activations_avx2.h. Compiled for AVX2: includes only the intrinsics.
#pragma GCC target("avx2,fma")
#include "activations_avx2.h"

#include "avx2_lanes.h"

namespace graphnet {
namespace {

// e^x: x = n ln2 + r with |r| <= ln2 / 2, e^r by its Taylor series to r^7 (the next term
// is below 6e-9 relative), 2^n put into the exponent bits. x is clamped to where 2^n is a
// normal float: e^x saturates at about 2.4e38 and 1.2e-38 instead of inf and 0.
inline __m256 exp8(__m256 x) {
    // The constant first: max and min return their second operand for a NaN, which so passes.
    x = _mm256_min_ps(_mm256_set1_ps(88.3f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    // ln2 in two parts: n * 0.693359375 is exact, so r keeps its low bits.
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    static constexpr float kTaylor[] = {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f,
                                        1.0f, 1.0f};
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    for (float c : kTaylor) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    const __m256i bits = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

inline __m256 sigmoid8(__m256 v) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), v))));
}

// |v| < 0.5625: v + v^3 Q(v^2), Q fitted for the least relative error (< 1 ulp); there
// 1 - 2 / (e^2|v| + 1) would lose the low bits of small v. Above, that formula, signed.
inline __m256 tanh8(__m256 v) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 a = _mm256_andnot_ps(sign, v);
    const __m256 s = _mm256_mul_ps(v, v);
    static constexpr float kQ[] = {2.100752480e-02f, -5.383744836e-02f, 1.333245188e-01f,
                                   -3.333331347e-01f};
    __m256 q = _mm256_set1_ps(-6.179890130e-03f);
    for (float c : kQ) q = _mm256_fmadd_ps(q, s, _mm256_set1_ps(c));
    const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(v, s), q, v);
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 e = exp8(_mm256_add_ps(a, a));
    const __m256 large = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f),
                                                          _mm256_add_ps(e, one)));
    const __m256 signed_large = _mm256_or_ps(large, _mm256_and_ps(sign, v));
    return _mm256_blendv_ps(signed_large, small,
                            _mm256_cmp_ps(a, _mm256_set1_ps(0.5625f), _CMP_LT_OQ));
}

template <typename F>
void apply(int64_t n, const float* x, const float* bias, float* out, F f) {
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 v = _mm256_loadu_ps(x + k);
        if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + k));
        _mm256_storeu_ps(out + k, f(v));
    }
    if (k < n) {  // the tail, in masked lanes
        const __m256i lanes = first_lanes(n - k);
        __m256 v = _mm256_maskload_ps(x + k, lanes);
        if (bias) v = _mm256_add_ps(v, _mm256_maskload_ps(bias + k, lanes));
        _mm256_maskstore_ps(out + k, lanes, f(v));
    }
}

}  // namespace

void sigmoid_avx2(int64_t n, const float* x, const float* bias, float* out) {
    apply(n, x, bias, out, sigmoid8);
}

void tanh_avx2(int64_t n, const float* x, const float* bias, float* out) {
    apply(n, x, bias, out, tanh8);
}

float max_avx2(int64_t n, const float* x) {
    __m256 best = _mm256_set1_ps(x[0]);
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) best = _mm256_max_ps(best, _mm256_loadu_ps(x + k));
    if (k < n) {  // the tail, in masked lanes; the others hold x[0]
        const __m256i lanes = first_lanes(n - k);
        best = _mm256_max_ps(best, _mm256_blendv_ps(_mm256_set1_ps(x[0]),
                                                    _mm256_maskload_ps(x + k, lanes),
                                                    _mm256_castsi256_ps(lanes)));
    }
    alignas(32) float lane[8];
    _mm256_store_ps(lane, best);
    float m = lane[0];
    for (float v : lane) m = v > m ? v : m;
    return m;
}

float exp_sum_avx2(int64_t n, const float* x, float shift, float* out) {
    const __m256 s = _mm256_set1_ps(shift);
    __m256 sum = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + k), s));
        _mm256_storeu_ps(out + k, e);
        sum = _mm256_add_ps(sum, e);
    }
    if (k < n) {  // the tail, in masked lanes; the others add 0
        const __m256i lanes = first_lanes(n - k);
        const __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(_mm256_maskload_ps(x + k, lanes), s)),
                                       _mm256_castsi256_ps(lanes));
        _mm256_maskstore_ps(out + k, lanes, e);
        sum = _mm256_add_ps(sum, e);
    }
    alignas(32) float lane[8];
    _mm256_store_ps(lane, sum);
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

}  // namespace graphnet
