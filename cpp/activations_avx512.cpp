// AVX-512 kernels of activations_avx512.h. Compiled for AVX-512: includes only the
// intrinsics (and avx512_math.h).
#pragma GCC target("avx512f,avx2,fma")
#include "activations_avx512.h"

#include "avx512_math.h"

namespace graphnet {
namespace {

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

// tanh8 of avx2_math.h with divide16's quotient.
inline __m512 tanh_estimated16(__m512 v) { return tanh16(v, divide16); }

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
    apply(n, x, bias, out, tanh_estimated16);
}

}  // namespace graphnet
