// AVX2 + FMA kernels of activations_avx2.h. Compiled for AVX2: includes only the intrinsics.
#pragma GCC target("avx2,fma")
// GCC warns that a lambda returning a vector "changes the ABI without AVX": it means the
// lambda's unused conversion to a plain function pointer; every call here is inside this
// file, compiled for AVX2.
#pragma GCC diagnostic ignored "-Wpsabi"
#include "activations_avx2.h"

#include "simd_math.h"

namespace graphnet {

void sigmoid_avx2(int64_t n, const float* x, const float* bias, float* out) {
    map_with_bias<__m256>(n, x, bias, out, [](__m256 v) { return sigmoid_clamped(v); });
}

void tanh_avx2(int64_t n, const float* x, const float* bias, float* out) {
    map_with_bias<__m256>(n, x, bias, out, [](__m256 v) { return tanh_split(v); });
}

void relu_forward_avx2(int64_t n, const double* x, double* out, bool* keep) {
    const __m256d zero = _mm256_setzero_pd();
    int64_t k = 0;
    for (; k + 4 <= n; k += 4) {
        const __m256d v = _mm256_loadu_pd(x + k);
        // x <= 0 is false for a NaN, so the NaN passes, as in np.maximum
        _mm256_storeu_pd(out + k, _mm256_andnot_pd(_mm256_cmp_pd(v, zero, _CMP_LE_OQ), v));
        // the four sign bits of x > 0 spread to the low bit of four bytes (no carries:
        // the shifted copies occupy bits 0-3, 7-10, 14-17, 21-24)
        const auto bits = static_cast<uint32_t>(_mm256_movemask_pd(_mm256_cmp_pd(v, zero, _CMP_GT_OQ)));
        const uint32_t bytes = (bits * 0x00204081u) & 0x01010101u;
        _mm_storeu_si32(keep + k, _mm_cvtsi32_si128(static_cast<int>(bytes)));
    }
    for (; k < n; ++k) {
        keep[k] = x[k] > 0.0;
        out[k] = x[k] <= 0.0 ? 0.0 : x[k];
    }
}

void relu_forward_avx2(int64_t n, const float* x, float* out, bool* keep) {
    const __m256 zero = _mm256_setzero_ps();
    const __m256i one = _mm256_set1_epi8(1);
    // packs work within 128-bit halves: after packing four vectors a, b, c, d of masks to
    // bytes, the groups of four bytes stand a0-3 b0-3 c0-3 d0-3 a4-7 b4-7 c4-7 d4-7
    const __m256i in_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    int64_t k = 0;
    for (; k + 32 <= n; k += 32) {
        __m256i passes[4];
        for (int q = 0; q < 4; ++q) {
            const __m256 v = _mm256_loadu_ps(x + k + 8 * q);
            // x <= 0 is false for a NaN, so the NaN passes, as in np.maximum
            _mm256_storeu_ps(out + k + 8 * q, _mm256_andnot_ps(_mm256_cmp_ps(v, zero, _CMP_LE_OQ), v));
            passes[q] = _mm256_castps_si256(_mm256_cmp_ps(v, zero, _CMP_GT_OQ));
        }
        const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(passes[0], passes[1]),
                                                 _mm256_packs_epi32(passes[2], passes[3]));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(keep + k),
                            _mm256_and_si256(_mm256_permutevar8x32_epi32(bytes, in_order), one));
    }
    for (; k < n; ++k) {
        keep[k] = x[k] > 0.0f;
        out[k] = x[k] <= 0.0f ? 0.0f : x[k];
    }
}

}  // namespace graphnet
