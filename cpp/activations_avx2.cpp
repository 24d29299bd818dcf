// AVX2 + FMA kernels of activations_avx2.h. Compiled for AVX2: includes only the intrinsics.
#pragma GCC target("avx2,fma")
#include "activations_avx2.h"

#include "avx2_lanes.h"
#include "avx2_math.h"

namespace graphnet {
namespace {

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
