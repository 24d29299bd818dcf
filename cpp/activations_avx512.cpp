// AVX-512 kernels of activations_avx512.h. Compiled for AVX-512: includes only the
// intrinsics (and avx2_math.h, for its coefficients).
#pragma GCC target("avx512f,avx2,fma")
#include "activations_avx512.h"

#include "avx2_math.h"

namespace graphnet {
namespace {

template <size_t N>
inline __m512 horner16(const float (&c)[N], __m512 x) {
    __m512 p = _mm512_set1_ps(c[0]);
    for (size_t i = 1; i < N; ++i) p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(c[i]));
    return p;
}

// exp8 of avx2_math.h (saturating at about 2.4e38 and 1.2e-38), sixteen lanes.
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

// top / d for d in [1, 2.5e38]: the estimate r of 1 / d (relative error below 2^-14), one
// Newton step r + r (1 - d r) (then below 2^-27), times top. A NaN d gives NaN.
inline __m512 divide16(__m512 top, __m512 d) {
    const __m512 r = _mm512_rcp14_ps(d);
    const __m512 q = _mm512_mul_ps(top, r);
    return _mm512_fmadd_ps(q, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(1.0f)), q);
}

inline __m512 sigmoid16(__m512 v) {
    const __m512 one = _mm512_set1_ps(1.0f);
    return divide16(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), v))));
}

// tanh8 of avx2_math.h, sixteen lanes.
inline __m512 tanh16(__m512 v) {
    const __m512 a = _mm512_abs_ps(v);
    const __m512 s = _mm512_mul_ps(v, v);
    const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(v, s), horner16(kTanhSmall, s), v);
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 e = exp16(_mm512_add_ps(a, a));
    const __m512 large =
        _mm512_sub_ps(one, divide16(_mm512_set1_ps(2.0f), _mm512_add_ps(e, one)));
    const __m512i sign = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(INT32_MIN));
    const __m512 signed_large =
        _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(large), sign));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, _mm512_set1_ps(kTanhSplit), _CMP_LT_OQ),
                                signed_large, small);
}

template <typename F>
void apply(int64_t n, const float* x, const float* bias, float* out, F f) {
    for (int64_t k = 0; k < n; k += 16) {
        const __mmask16 lanes =
            n - k >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - k)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(lanes, x + k);
        if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(lanes, bias + k));
        _mm512_mask_storeu_ps(out + k, lanes, f(v));
    }
}

}  // namespace

void sigmoid_avx512(int64_t n, const float* x, const float* bias, float* out) {
    apply(n, x, bias, out, sigmoid16);
}

void tanh_avx512(int64_t n, const float* x, const float* bias, float* out) {
    apply(n, x, bias, out, tanh16);
}

}  // namespace graphnet
