// conv_taps.h with AVX-512 (call only when cpu_has_avx512f()): 24 accumulators of the 32
// registers, as 4 vectors of filters x 6 positions (2 x 12, 1 x 24 for what is left).
#pragma GCC target("avx512f,avx2,fma")
#include <immintrin.h>

#include "conv_taps_kernels.h"

namespace graphnet {
namespace {

struct Lanes512 {
    using V = __m512;
    static constexpr int N = 16;
    static V load(const float* p) { return _mm512_loadu_ps(p); }
    static V broadcast(const float* p) { return _mm512_set1_ps(*p); }
    static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static V zero() { return _mm512_setzero_ps(); }
    static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
};

}  // namespace

void tap_conv_forward_avx512(const TapConv& g, const int64_t* offsets, const float* in,
                             const float* wpack, const float* bias, float* out_t) {
    tap_forward<Lanes512, 4, 24>(g, offsets, in, wpack, bias, out_t);
}

void tap_conv_dw_avx512(const TapConv& g, int64_t rows, int64_t cols, int64_t row,
                        const int64_t* offsets, const float* in, const float* dout_t,
                        float* dw_t) {
    tap_dw<Lanes512, 4>(g, rows, cols, row, offsets, in, dout_t, dw_t);
}

}  // namespace graphnet
