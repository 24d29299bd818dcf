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

}  // namespace graphnet
