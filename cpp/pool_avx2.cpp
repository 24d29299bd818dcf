// AVX2 kernel of pool_avx2.h. Compiled for AVX2: includes only the intrinsics.
#pragma GCC target("avx2,fma")
#include "pool_avx2.h"

#include <immintrin.h>

#include "simd_lanes.h"

namespace graphnet {
namespace {

// What the 2x2 row needs of a vector type beyond Lanes<V>: splitting pairs and the winners'
// int32 offsets, kept in the integer lanes as wide as V's so they blend with V's masks.
template <typename V>
struct PoolRow;

template <>
struct PoolRow<__m256> {
    // The even and the odd elements of x[0..16), each in order.
    static void split_pairs(const float* x, __m256& even, __m256& odd) {
        const __m256 lo = _mm256_loadu_ps(x), hi = _mm256_loadu_ps(x + 8);
        // shuffle_ps works within 128-bit halves: elements 0 2 8 10 | 4 6 12 14, put in
        // order by swapping the middle 64-bit quarters
        const auto in_order = [](__m256 v) {
            return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xD8));
        };
        even = in_order(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0)));
        odd = in_order(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1)));
    }
    static __m256 offset(int32_t k) { return _mm256_castsi256_ps(_mm256_set1_epi32(k)); }
    // win[i] = first + 2 i + offsets[i] for the eight lanes.
    static void store_winners(int32_t* win, int32_t first, __m256 offsets) {
        const __m256i at = _mm256_add_epi32(_mm256_set1_epi32(first),
                                            _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(win),
                            _mm256_add_epi32(at, _mm256_castps_si256(offsets)));
    }
};

template <>
struct PoolRow<__m256d> {
    // The even and the odd elements of x[0..8), each in order.
    static void split_pairs(const double* x, __m256d& even, __m256d& odd) {
        const __m256d lo = _mm256_loadu_pd(x), hi = _mm256_loadu_pd(x + 4);
        // unpack works within 128-bit halves: elements 0 4 2 6 and 1 5 3 7
        even = _mm256_permute4x64_pd(_mm256_unpacklo_pd(lo, hi), 0xD8);
        odd = _mm256_permute4x64_pd(_mm256_unpackhi_pd(lo, hi), 0xD8);
    }
    static __m256d offset(int32_t k) { return _mm256_castsi256_pd(_mm256_set1_epi64x(k)); }
    // win[i] = first + 2 i + offsets[i] for the four lanes: the 64-bit offsets' low halves.
    static void store_winners(int32_t* win, int32_t first, __m256d offsets) {
        const __m256i low_halves = _mm256_permutevar8x32_epi32(
            _mm256_castpd_si256(offsets), _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6));
        const __m128i at = _mm_add_epi32(_mm_set1_epi32(first), _mm_setr_epi32(0, 2, 4, 6));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(win),
                         _mm_add_epi32(at, _mm256_castsi256_si128(low_halves)));
    }
};

// Of u and v (u first), the greater under pool.h's tie rule (greater, or a NaN against a
// number; else u), and its offset.
template <typename V>
V first_max(V u, V v, V u_offset, V v_offset, V& offset) {
    using L = Lanes<V>;
    const V v_wins = L::select(L::ordered(v, v), L::gt(v, u), L::ordered(u, u));
    offset = L::select(v_wins, v_offset, u_offset);
    return L::select(v_wins, v, u);
}

template <typename V, typename S = typename Lanes<V>::Scalar>
int64_t row_2x2(int64_t Wo, int32_t row_start, int32_t W, const S* r0, const S* r1, S* dst,
                int32_t* win, bool relu) {
    using L = Lanes<V>;
    using P = PoolRow<V>;
    const auto seen = [relu](V v) {  // relu_forward's numbers: x <= 0 (not a NaN) becomes +0
        return relu ? L::select(L::ge(L::zero(), v), L::zero(), v) : v;
    };
    const V left = P::offset(0), right = P::offset(1);
    const V down = P::offset(W), down_right = P::offset(W + 1);
    int64_t ow = 0;
    for (; ow + L::width <= Wo; ow += L::width) {
        V a, b, c, d;
        P::split_pairs(r0 + 2 * ow, a, b);
        P::split_pairs(r1 + 2 * ow, c, d);
        // The first maximum of a window is the first maximum of the first maxima of its
        // two rows: the rows are compared side by side, then their winners.
        V top_offset, bottom_offset, offset;
        const V top = first_max(seen(a), seen(b), left, right, top_offset);
        const V bottom = first_max(seen(c), seen(d), down, down_right, bottom_offset);
        L::store(dst + ow, first_max(top, bottom, top_offset, bottom_offset, offset));
        P::store_winners(win + ow, row_start + 2 * static_cast<int32_t>(ow), offset);
    }
    return ow;
}

}  // namespace

int64_t max_pool_row_2x2_avx2(int64_t Wo, int32_t row_start, int32_t W, const float* r0,
                              const float* r1, float* dst, int32_t* win, bool relu) {
    return row_2x2<__m256>(Wo, row_start, W, r0, r1, dst, win, relu);
}

int64_t max_pool_row_2x2_avx2(int64_t Wo, int32_t row_start, int32_t W, const double* r0,
                              const double* r1, double* dst, int32_t* win, bool relu) {
    return row_2x2<__m256d>(Wo, row_start, W, r0, r1, dst, win, relu);
}

}  // namespace graphnet
