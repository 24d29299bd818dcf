// AVX-512 kernel of lstm_cell_avx512.h. Compiled for AVX-512F: includes only the
// intrinsics.
#pragma GCC target("avx512f")
#include "lstm_cell_avx512.h"

#include <immintrin.h>

#include <cstdint>

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

namespace {

constexpr int64_t kBlock = 128;  // columns per block of eight vectors, eight FMA chains

// acc[v] sums the columns [16 v, 16 v + 16) of W, those lanes[v] keeps (Masked; else all
// of them), over its k rows in order from zero; then c's columns get it, added or not.
template <int Vectors, bool Masked>
void row_block(int64_t k, const float* a, const float* W, int64_t ldw,
               const __mmask16* lanes, bool accumulate, float* c) {
    __m512 acc[Vectors];
#pragma GCC unroll 9
    for (int v = 0; v < Vectors; ++v) acc[v] = _mm512_setzero_ps();
    for (int64_t kk = 0; kk < k; ++kk) {
        const __m512 av = _mm512_set1_ps(a[kk]);
        const float* row = W + kk * ldw;
#pragma GCC unroll 9
        for (int v = 0; v < Vectors; ++v) {
            const __m512 w = Masked ? _mm512_maskz_loadu_ps(lanes[v], row + 16 * v)
                                    : _mm512_loadu_ps(row + 16 * v);
            acc[v] = _mm512_fmadd_ps(av, w, acc[v]);
        }
    }
#pragma GCC unroll 9
    for (int v = 0; v < Vectors; ++v) {
        float* out = c + 16 * v;
        const __m512 sum =
            accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(lanes[v], out), acc[v]) : acc[v];
        _mm512_mask_storeu_ps(out, lanes[v], sum);
    }
}

// The lanes of the 16 columns from `from` that lie in [begin, end).
__mmask16 lanes_within(int64_t from, int64_t begin, int64_t end) {
    const int64_t low = begin > from ? begin - from : 0;
    const int64_t high = end - from < 16 ? end - from : 16;
    if (high <= low) return 0;
    return static_cast<__mmask16>(((1u << high) - 1) & ~((1u << low) - 1));
}

}  // namespace

void row_product_avx512(int64_t k, int64_t c0, int64_t c1, const float* a, const float* W,
                        int64_t ldw, bool accumulate, float* c, bool backwards) {
    if (c1 <= c0) return;
    // The vectors start on the cache lines of W's first row (of every row when ldw is a
    // multiple of 16), the first one's lanes before c0 and the last's from c1 on masked:
    // vectors that each straddle two lines (numpy's arrays start 16 bytes from a line as
    // often as not) took 1.5x as long at H = 256. Blocks of eight vectors, the last of up
    // to nine (a block of one would be a chain of k dependent FMAs).
    const int64_t first = c0 - static_cast<int64_t>(
                                   reinterpret_cast<std::uintptr_t>(W + c0) % 64 / sizeof(float));
    const int64_t vectors = (c1 - first + 15) / 16;
    const int64_t blocks = vectors < 2 ? 1 : (vectors + 6) / 8;
    for (int64_t i = 0; i < blocks; ++i) {
        const int64_t b = backwards ? blocks - 1 - i : i;
        const int64_t from = first + b * kBlock;
        const int64_t count = b == blocks - 1 ? vectors - 8 * b : 8;  // 1 to 9
        __mmask16 lanes[9];
        for (int v = 0; v < 9; ++v) {
            lanes[v] = v < count ? lanes_within(from + 16 * v, c0, c1) : __mmask16(0);
        }
        // W + from and c + from lie before the arrays for c0 = 0 on a skewed W: masked lanes.
        if (count == 8 && lanes[0] == 0xFFFF && lanes[7] == 0xFFFF) {
            row_block<8, false>(k, a, W + from, ldw, lanes, accumulate, c + from);
        } else {
            row_block<9, true>(k, a, W + from, ldw, lanes, accumulate, c + from);
        }
    }
}

}  // namespace graphnet
