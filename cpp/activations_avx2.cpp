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

}  // namespace graphnet
