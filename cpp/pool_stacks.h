// The max pool's loops that its AVX2 and AVX-512 kernels share (pool_avx2.cpp,
// pool_avx512.cpp), on any Lanes<V>: the first maximum of two vectors under pool.h's tie
// rule, and the two passes of the stacks of planes (row_maxima, column_maxima). Each
// includer compiles them for its instruction set and, before it instantiates them, defines
// PoolRow<V> for its vectors with offset(k) and add_offset(v, k): a window's int32 offsets
// kept in integer lanes as wide as V's, so that they blend under V's masks.
// Only files compiled for AVX2 or more include this; everything is internal to each.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "avg_pool_plane.h"
#include "simd_lanes.h"

namespace graphnet {
namespace {

template <typename V>
struct PoolRow;

// ~a & b, of AVX2's masks (all-ones lanes) and AVX-512's (mask registers)
inline __m256 and_not(__m256 a, __m256 b) { return _mm256_andnot_ps(a, b); }
inline __m256d and_not(__m256d a, __m256d b) { return _mm256_andnot_pd(a, b); }
inline __mmask16 and_not(__mmask16 a, __mmask16 b) { return static_cast<__mmask16>(~a & b); }
inline __mmask8 and_not(__mmask8 a, __mmask8 b) { return static_cast<__mmask8>(~a & b); }

// Of u and v (u first), the greater under pool.h's tie rule (greater, or a NaN against a
// number; else u), and its offset.
template <typename V>
V first_max(V u, V v, V u_offset, V v_offset, V& offset) {
    using L = Lanes<V>;
    // u a number and not u >= v: v > u, or v a NaN (one compare fewer than selecting
    // between v > u and v a NaN, and no mask to rebuild from a select)
    const auto v_wins = and_not(L::ge(u, v), L::ordered(u, u));
    offset = L::select(v_wins, v_offset, u_offset);
    return L::select(v_wins, v, u);
}

// ----- stacks of planes: any window, any stride -----------------------------------------

// The first m lanes of top and offset at best and offsets (a whole store where m is L).
template <typename V, typename S = typename Lanes<V>::Scalar>
void store_first_lanes(int64_t m, V top, V offset, S* best, S* offsets) {
    using L = Lanes<V>;
    if (m == L::width) {
        L::store(best, top);
        L::store(offsets, offset);
    } else {
        L::store(best, L::tail(m), top);
        L::store(offsets, L::tail(m), offset);
    }
}

// best[k], offsets[k] = the first maximum of x[k..k+pw) (pool.h's tie rule; with Relu, of
// relu(x)) and its offset in 0..pw, for k < n: one chain of compares a lane, in order.
template <typename V, bool Relu, typename S = typename Lanes<V>::Scalar>
void row_maxima(const S* x, int64_t pw, int64_t n, S* best, S* offsets) {
    using L = Lanes<V>;
    using P = PoolRow<V>;
    for (int64_t k = 0; k < n; k += L::width) {
        const int64_t m = std::min<int64_t>(L::width, n - k);
        const auto entries = [&](int64_t j) {
            const V v = m == L::width ? L::load(x + k + j) : L::load(x + k + j, L::tail(m));
            return Relu ? L::select(L::ge(L::zero(), v), L::zero(), v) : v;
        };
        V top = entries(0), offset = P::offset(0);
        for (int64_t j = 1; j < pw; ++j) {
            top = first_max(top, entries(j), offset, P::offset(static_cast<int32_t>(j)), offset);
        }
        store_first_lanes<V>(m, top, offset, best + k, offsets + k);
    }
}

// The first maximum of best[k], best[k + pitch], ... (ph of them, in order) and its offset
// i pitch + offsets[k + i pitch], for the lanes k of the vector at best + at: load(p) loads
// the vector at p (whole, or some of its lanes).
template <typename V, typename S, typename Load>
V column_maximum(const S* best, const S* offsets, int64_t at, int64_t pitch, int64_t ph,
                 Load load, V& offset) {
    using P = PoolRow<V>;
    V top = load(best + at);
    offset = load(offsets + at);
    for (int64_t i = 1; i < ph; ++i) {
        const int64_t below_at = at + i * pitch;
        const V below = P::add_offset(load(offsets + below_at), static_cast<int32_t>(i * pitch));
        top = first_max(top, load(best + below_at), offset, below, offset);
    }
    return top;
}

// In place: best[k], offsets[k] = column_maximum's, for k < n. Each vector is loaded whole
// before it is stored, and reads only entries at k and after.
template <typename V, typename S = typename Lanes<V>::Scalar>
void column_maxima(int64_t pitch, int64_t ph, int64_t n, S* best, S* offsets) {
    using L = Lanes<V>;
    for (int64_t k = 0; k < n; k += L::width) {
        const int64_t m = std::min<int64_t>(L::width, n - k);
        const auto load = [&](const S* at) {
            return m == L::width ? L::load(at) : L::load(at, L::tail(m));
        };
        V offset;
        const V top = column_maximum<V>(best, offsets, k, pitch, ph, load, offset);
        store_first_lanes<V>(m, top, offset, best + k, offsets + k);
    }
}

}  // namespace
}  // namespace graphnet
