// conv_taps.h with AVX2 + FMA (call only when cpu_has_avx2_fma()): 12 accumulators of the
// 16 registers, as 2 vectors of filters x 6 positions (1 x 12 for what is left).
#pragma GCC target("avx2,fma")
#include <immintrin.h>

#include "conv_taps_kernels.h"

namespace graphnet {
namespace {

struct Lanes256 {
    using V = __m256;
    static constexpr int N = 8;
    static V load(const float* p) { return _mm256_loadu_ps(p); }
    static V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
    static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    static V zero() { return _mm256_setzero_ps(); }
    static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
};

}  // namespace

void tap_conv_forward_avx2(const TapConv& g, const int64_t* offsets, const float* in,
                           const float* wpack, const float* bias, float* out_t) {
    tap_forward<Lanes256, 2, 12>(g, offsets, in, wpack, bias, out_t);
}

void tap_conv_dw_avx2(const TapConv& g, int64_t rows, int64_t cols, int64_t row,
                      const int64_t* offsets, const float* in, const float* dout_t, float* dw_t) {
    tap_dw<Lanes256, 2>(g, rows, cols, row, offsets, in, dout_t, dw_t);
}

}  // namespace graphnet
