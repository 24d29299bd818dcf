// AVX-512 kernel of lstm_cell_avx512.h. Compiled for AVX-512F: includes only the
// intrinsics.
#pragma GCC target("avx512f")
#include "lstm_cell_avx512.h"

#include <immintrin.h>

namespace graphnet {

void lstm_cell_backward_avx512(int64_t units, int64_t H, const float* up, const float* next,
                               const float* act, const float* tanh_c, const float* prev_c,
                               float* dc, float* da) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t u = 0; u < units; u += 16) {
        const __mmask16 lanes =
            units - u >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (units - u)) - 1);
        const auto load = [lanes, u](const float* p) {
            return _mm512_maskz_loadu_ps(lanes, p + u);
        };
        const auto store = [lanes, u](float* p, __m512 v) {
            _mm512_mask_storeu_ps(p + u, lanes, v);
        };
        const auto slope = [one](__m512 s) {  // the sigmoid's derivative, s (1 - s)
            return _mm512_mul_ps(s, _mm512_sub_ps(one, s));
        };
        const __m512 i = load(act), f = load(act + H), o = load(act + 2 * H);
        const __m512 g = load(act + 3 * H), tc = load(tanh_c);
        const __m512 dht = _mm512_add_ps(load(up), load(next));
        const __m512 dct =
            _mm512_fmadd_ps(_mm512_mul_ps(dht, o), _mm512_fnmadd_ps(tc, tc, one), load(dc));
        store(da, _mm512_mul_ps(_mm512_mul_ps(dct, g), slope(i)));
        store(da + H, _mm512_mul_ps(_mm512_mul_ps(dct, load(prev_c)), slope(f)));
        store(da + 2 * H, _mm512_mul_ps(_mm512_mul_ps(dht, tc), slope(o)));
        store(da + 3 * H, _mm512_mul_ps(_mm512_mul_ps(dct, i), _mm512_fnmadd_ps(g, g, one)));
        store(dc, _mm512_mul_ps(dct, f));
    }
}

}  // namespace graphnet
