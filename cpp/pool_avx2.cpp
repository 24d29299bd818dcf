// AVX2 kernel of pool_avx2.h. Compiled for AVX2: includes only the intrinsics.
#pragma GCC target("avx2,fma")
// PoolRow<V> specialises a template on a vector type, which drops its may_alias attribute
// (GCC warns): nothing reads memory through a pointer to V.
#pragma GCC diagnostic ignored "-Wignored-attributes"
#include "pool_avx2.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "pool_stacks.h"

namespace graphnet {
namespace {

// What the rows and the stacks (pool_stacks.h) need of a vector type beyond Lanes<V>:
// splitting pairs and the winners' int32 offsets, kept in the integer lanes as wide as V's
// so they blend with V's masks.
template <>
struct PoolRow<__m256> {
    // shuffle_ps works within 128-bit halves: its results' 64-bit quarters 0 2 1 3 in order
    static __m256 in_order(__m256 v) {
        return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xD8));
    }
    // The even and the odd elements of x[0..16), each in order.
    static void split_pairs(const float* x, __m256& even, __m256& odd) {
        const __m256 lo = _mm256_loadu_ps(x), hi = _mm256_loadu_ps(x + 8);
        even = in_order(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0)));  // 0 2 8 10 | 4 6 12 14
        odd = in_order(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1)));
    }
    // The even elements of lo, then the odd ones of hi: x[0, 2, .., 14] from x[0..8), x[7..15).
    static __m256 evens_then_odds(__m256 lo, __m256 hi) {
        return in_order(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 2, 0)));
    }
    static __m256 offset(int32_t k) { return _mm256_castsi256_ps(_mm256_set1_epi32(k)); }
    static __m256 add_offset(__m256 offsets, int32_t k) {
        return _mm256_castsi256_ps(
            _mm256_add_epi32(_mm256_castps_si256(offsets), _mm256_set1_epi32(k)));
    }
    // win[i] = first + step i + offsets[i] for the eight lanes.
    static void store_winners(int32_t* win, int32_t first, __m256 offsets, int32_t step = 2) {
        const __m256i at = _mm256_add_epi32(
            _mm256_set1_epi32(first),
            _mm256_mullo_epi32(_mm256_set1_epi32(step), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
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
    // The even elements of lo, then the odd ones of hi: x[0, 2, 4, 6] from x[0..4), x[3..7)
    // (shuffle_pd picks within 128-bit halves: 0 4 | 2 6).
    static __m256d evens_then_odds(__m256d lo, __m256d hi) {
        return _mm256_permute4x64_pd(_mm256_shuffle_pd(lo, hi, 0xA), 0xD8);
    }
    static __m256d offset(int32_t k) { return _mm256_castsi256_pd(_mm256_set1_epi64x(k)); }
    static __m256d add_offset(__m256d offsets, int32_t k) {
        return _mm256_castsi256_pd(
            _mm256_add_epi64(_mm256_castpd_si256(offsets), _mm256_set1_epi64x(k)));
    }
    // win[i] = first + step i + offsets[i] for the four lanes: the 64-bit offsets' low halves.
    static void store_winners(int32_t* win, int32_t first, __m256d offsets, int32_t step = 2) {
        const __m256i low_halves = _mm256_permutevar8x32_epi32(
            _mm256_castpd_si256(offsets), _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6));
        const __m128i at = _mm_add_epi32(
            _mm_set1_epi32(first), _mm_mullo_epi32(_mm_set1_epi32(step), _mm_setr_epi32(0, 1, 2, 3)));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(win),
                         _mm_add_epi32(at, _mm256_castsi256_si128(low_halves)));
    }
};

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

// ----- any window, stride 1 or 2 -------------------------------------------------------

// x[0], x[s], ..., x[(L - 1) s] for s = 1 or 2 as the lanes of a V. Whole reads x[0..L) or
// x[0..2L-1), whatever lies there; else only the first n (< L) lanes' entries are read (the
// rest zero), for a row's last windows at the end of the plane.
template <typename V, int64_t s, bool Whole, typename S = typename Lanes<V>::Scalar>
V strided(const S* x, int64_t n) {
    using L = Lanes<V>;
    constexpr int64_t lanes = L::width;
    const auto load = [n](const S* at, int64_t entries) {
        return Whole ? L::load(at) : L::load(at, L::tail(entries));
    };
    if constexpr (s == 1) {
        return load(x, n);
    } else {  // the even entries of x[0..L), the odd ones of x[L-1..2L-1)
        // (x + L - 1 is not formed where none of its entries is read: it could point past x)
        const V odd_half = Whole || 2 * n > lanes ? load(x + lanes - 1, 2 * n - lanes) : L::zero();
        return PoolRow<V>::evens_then_odds(load(x, 2 * n - 1), odd_half);
    }
}

// The maxima of the first n (<= L) of the L windows of one output row from ow on (pool.h's
// tie rule; with Relu, of relu(x) as relu_forward computes it), stored at dst and their
// winners at win; their entries read as strided<V, s, Whole> reads them. The L windows of a
// vector run side by side, one window's entries in row-major order in each lane. The first
// maximum of a window is the first maximum of its rows' first maxima: each row of the
// window has a chain of compares of its own (one chain through the whole window took 1.1x
// the time).
template <typename V, int64_t s, bool Whole, bool Relu, typename S = typename Lanes<V>::Scalar>
void row_windows(const AvgPoolPlane& g, const S* src, int64_t oh, int64_t ow, int64_t n, S* dst,
                 int32_t* win) {
    using L = Lanes<V>;
    using P = PoolRow<V>;
    constexpr int64_t lanes = L::width;
    const auto entries = [n](const S* at) {
        const V v = strided<V, s, Whole>(at, n);
        // relu_forward's numbers: x <= 0 (not a NaN) becomes +0
        return Relu ? L::select(L::ge(L::zero(), v), L::zero(), v) : v;
    };
    const int64_t top = oh * s * g.W + ow * s;  // the first window's top left entry
    V best, offset;
    for (int64_t i = 0; i < g.pool_height; ++i) {
        const S* row = src + top + i * g.W;
        V row_best = entries(row), row_offset = P::offset(static_cast<int32_t>(i * g.W));
        for (int64_t j = 1; j < g.pool_width; ++j) {
            const V v_offset = P::offset(static_cast<int32_t>(i * g.W + j));
            row_best = first_max(row_best, entries(row + j), row_offset, v_offset, row_offset);
        }
        if (i == 0) {
            best = row_best;
            offset = row_offset;
        } else {
            best = first_max(best, row_best, offset, row_offset, offset);
        }
    }
    const auto first = static_cast<int32_t>(top);
    if (n == lanes) {
        L::store(dst + oh * g.Wo + ow, best);
        P::store_winners(win + oh * g.Wo + ow, first, offset, s);
        return;
    }
    S values[lanes];
    int32_t winners[lanes];
    L::store(values, best);
    P::store_winners(winners, first, offset, s);
    std::copy(values, values + n, dst + oh * g.Wo + ow);
    std::copy(winners, winners + n, win + oh * g.Wo + ow);
}

// The rows' windows L at a time; the last few of a row as a partial vector, whose loads are
// whole where they end inside the plane (masked loads took 1.3x the time of 3x3 windows
// on 15 x 15 planes, float32).
template <typename V, int64_t s, bool Relu, typename S = typename Lanes<V>::Scalar>
void plane(const AvgPoolPlane& g, const S* src, S* dst, int32_t* win) {
    constexpr int64_t lanes = Lanes<V>::width;
    const int64_t last_entry = (g.pool_height - 1) * g.W + g.pool_width - 1;  // of a window
    const int64_t read = s == 1 ? lanes : 2 * lanes - 1;  // from each entry by whole loads
    for (int64_t oh = 0; oh < g.Ho; ++oh) {
        for (int64_t ow = 0; ow < g.Wo; ow += lanes) {
            const int64_t n = std::min(lanes, g.Wo - ow);
            if (n == lanes || oh * s * g.W + ow * s + last_entry + read <= g.H * g.W) {
                row_windows<V, s, true, Relu>(g, src, oh, ow, n, dst, win);
            } else {
                row_windows<V, s, false, Relu>(g, src, oh, ow, n, dst, win);
            }
        }
    }
}

template <typename V, typename S = typename Lanes<V>::Scalar>
void plane(const AvgPoolPlane& g, const S* src, S* dst, int32_t* win, bool relu) {
    if (g.stride == 1) {
        (relu ? plane<V, 1, true> : plane<V, 1, false>)(g, src, dst, win);
    } else {
        (relu ? plane<V, 2, true> : plane<V, 2, false>)(g, src, dst, win);
    }
}

// ----- stacks of planes: any window, any stride (pool_stacks.h) ------------------------

// Output row oh's windows (its outputs at dst, their winners at win) from the maxima of
// the band's row of the stack where they start (stacked_planes).
template <typename V, typename S = typename Lanes<V>::Scalar>
void pick_row(const AvgPoolPlane& g, const S* row_best, const S* row_offsets, int64_t oh, S* dst,
              int32_t* win) {
    using L = Lanes<V>;
    const int64_t s = g.stride;
    const auto first = static_cast<int32_t>(oh * s * g.W);
    if (s == 1 && g.Wo >= L::width) {
        // The last vector ends at the row's end, over some of the one before: no scalar tail.
        for (int64_t ow = 0; ow < g.Wo; ow += L::width) {
            const int64_t at = std::min(ow, g.Wo - L::width);
            L::store(dst + at, L::load(row_best + at));
            PoolRow<V>::store_winners(win + at, first + static_cast<int32_t>(at),
                                      L::load(row_offsets + at), 1);
        }
    } else {
        for (int64_t ow = 0; ow < g.Wo; ++ow) {
            int32_t offset;  // the low 32 bits of the lane: x86 is little-endian
            std::memcpy(&offset, row_offsets + ow * s, sizeof offset);
            dst[ow] = row_best[ow * s];
            win[ow] = first + static_cast<int32_t>(ow * s) + offset;
        }
    }
}

// The windows of `planes` planes one after another (a stack of rows: row t is row t % H of
// plane t / H), a band of rows at a time: each entry's row maximum over the window's
// width, then each entry's maximum of those over the window's height (the first maximum
// in row-major order: the first of its rows' first maxima), at every entry of the band,
// long vectors along the stack. Then each output row's windows picked out: at stride 1
// a row of the band, at stride s every s-th entry of every s-th row. The windows across
// two planes are computed and not read.
template <typename V, bool Relu, typename S = typename Lanes<V>::Scalar>
void stacked_planes(const AvgPoolPlane& g, int64_t planes, const S* src, S* dst, int32_t* win) {
    const int64_t ph = g.pool_height, pw = g.pool_width, s = g.stride;
    const int64_t rows = planes * g.H - ph + 1;  // the top rows of windows
    const int64_t band = kBand / g.W - ph + 1;
    S best[kBand], offsets[kBand];
    for (int64_t t0 = 0; t0 < rows; t0 += band) {
        const int64_t n = std::min(band, rows - t0);
        row_maxima<V, Relu>(src + t0 * g.W, pw, (n + ph - 1) * g.W - pw + 1, best, offsets);
        column_maxima<V>(g.W, ph, n * g.W - pw + 1, best, offsets);
        for (int64_t plane = t0 / g.H; plane * g.H < t0 + n; ++plane) {
            for (int64_t oh = 0; oh < g.Ho; ++oh) {
                const int64_t t = plane * g.H + oh * s;  // a row of the stack
                if (t < t0 || t >= t0 + n) continue;
                pick_row<V>(g, best + (t - t0) * g.W, offsets + (t - t0) * g.W, oh,
                            dst + (plane * g.Ho + oh) * g.Wo, win + (plane * g.Ho + oh) * g.Wo);
            }
        }
    }
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

void max_pool_plane_avx2(const AvgPoolPlane& g, const float* src, float* dst, int32_t* win,
                         bool relu) {
    plane<__m256>(g, src, dst, win, relu);
}

void max_pool_plane_avx2(const AvgPoolPlane& g, const double* src, double* dst, int32_t* win,
                         bool relu) {
    plane<__m256d>(g, src, dst, win, relu);
}

void max_pool_planes_avx2(const AvgPoolPlane& g, int64_t planes, const float* src, float* dst,
                          int32_t* win, bool relu) {
    (relu ? stacked_planes<__m256, true> : stacked_planes<__m256, false>)(g, planes, src, dst, win);
}

void max_pool_planes_avx2(const AvgPoolPlane& g, int64_t planes, const double* src, double* dst,
                          int32_t* win, bool relu) {
    (relu ? stacked_planes<__m256d, true> : stacked_planes<__m256d, false>)(g, planes, src, dst,
                                                                             win);
}

void avg_pool_planes_forward_avx2(const AvgPoolPlane& g, int64_t planes, const float* src,
                                    float* out) {
    avg_pool_planes_forward(g, planes, src, out);
}

void avg_pool_planes_forward_avx2(const AvgPoolPlane& g, int64_t planes, const double* src,
                                    double* out) {
    avg_pool_planes_forward(g, planes, src, out);
}

void avg_pool_planes_backward_avx2(const AvgPoolPlane& g, int64_t planes, const float* grad,
                                     float* dx) {
    avg_pool_planes_backward(g, planes, grad, dx);
}

void avg_pool_planes_backward_avx2(const AvgPoolPlane& g, int64_t planes, const double* grad,
                                     double* dx) {
    avg_pool_planes_backward(g, planes, grad, dx);
}

}  // namespace graphnet
