// AVX2 kernel of pool_avx2.h. Compiled for AVX2: includes only the intrinsics.
#pragma GCC target("avx2,fma")
#include "pool_avx2.h"

#include <immintrin.h>

namespace graphnet {
namespace {

// The even and the odd elements of x[0..16), each in order.
inline void split_pairs(const float* x, bool relu, __m256& even, __m256& odd) {
    __m256 lo = _mm256_loadu_ps(x), hi = _mm256_loadu_ps(x + 8);
    if (relu) {  // relu_forward's numbers: x <= 0 (false for a NaN) becomes +0
        const __m256 zero = _mm256_setzero_ps();
        lo = _mm256_andnot_ps(_mm256_cmp_ps(lo, zero, _CMP_LE_OQ), lo);
        hi = _mm256_andnot_ps(_mm256_cmp_ps(hi, zero, _CMP_LE_OQ), hi);
    }
    // shuffle_ps works within 128-bit halves: elements 0 2 8 10 | 4 6 12 14, put in order
    // by swapping the middle 64-bit quarters
    const auto in_order = [](__m256 v) {
        return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xD8));
    };
    even = in_order(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0)));
    odd = in_order(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1)));
}

// Of u and v (u first), the greater under pool.h's tie rule (greater, or a NaN against a
// number; else u), and its offset.
inline __m256 first_max(__m256 u, __m256 v, __m256i u_offset, __m256i v_offset,
                        __m256i& offset) {
    const __m256 v_wins = _mm256_or_ps(
        _mm256_cmp_ps(v, u, _CMP_GT_OQ),
        _mm256_and_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q), _mm256_cmp_ps(u, u, _CMP_ORD_Q)));
    offset = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(u_offset),
                                                  _mm256_castsi256_ps(v_offset), v_wins));
    return _mm256_blendv_ps(u, v, v_wins);
}

}  // namespace

int64_t max_pool_row_2x2_avx2(int64_t Wo, int32_t row_start, int32_t W, const float* r0,
                              const float* r1, float* dst, int32_t* win, bool relu) {
    const __m256i lanes = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const __m256i right = _mm256_set1_epi32(1), down = _mm256_set1_epi32(W);
    const __m256i down_right = _mm256_set1_epi32(W + 1);
    int64_t ow = 0;
    for (; ow + 8 <= Wo; ow += 8) {
        __m256 a, b, c, d;
        split_pairs(r0 + 2 * ow, relu, a, b);
        split_pairs(r1 + 2 * ow, relu, c, d);
        // The first maximum of a window is the first maximum of the first maxima of its
        // two rows: the rows are compared side by side, then their winners.
        __m256i top_offset, bottom_offset, offset;
        const __m256 top = first_max(a, b, _mm256_setzero_si256(), right, top_offset);
        const __m256 bottom = first_max(c, d, down, down_right, bottom_offset);
        const __m256 best = first_max(top, bottom, top_offset, bottom_offset, offset);
        _mm256_storeu_ps(dst + ow, best);
        const __m256i first = _mm256_set1_epi32(row_start + 2 * static_cast<int32_t>(ow));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(win + ow),
                            _mm256_add_epi32(_mm256_add_epi32(first, lanes), offset));
    }
    return ow;
}

}  // namespace graphnet
