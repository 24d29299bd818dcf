// AVX-512 kernels of pool_avx512.h. Compiled for AVX-512: includes only the intrinsics.
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
// PoolRow<V> specialises a template on a vector type, which drops its may_alias attribute
// (GCC warns): nothing reads memory through a pointer to V.
#pragma GCC diagnostic ignored "-Wignored-attributes"
// GCC warns that a lambda returning a vector "changes the ABI without AVX512F": it means the
// lambda's unused conversion to a plain function pointer; every call here is inside this
// file, compiled for AVX-512.
#pragma GCC diagnostic ignored "-Wpsabi"
#include "pool_avx512.h"

#include "pool_stacks.h"
#include "simd_lanes_avx512.h"

namespace graphnet {
namespace {

// What row_maxima and column_maxima (pool_stacks.h) need of the AVX-512 vectors: a window's
// offsets in integer lanes as wide as V's.
template <>
struct PoolRow<__m512> {
    static __m512 offset(int32_t k) { return _mm512_castsi512_ps(_mm512_set1_epi32(k)); }
    static __m512 add_offset(__m512 offsets, int32_t k) {
        return _mm512_castsi512_ps(
            _mm512_add_epi32(_mm512_castps_si512(offsets), _mm512_set1_epi32(k)));
    }
};

template <>
struct PoolRow<__m512d> {
    static __m512d offset(int32_t k) { return _mm512_castsi512_pd(_mm512_set1_epi64(k)); }
    static __m512d add_offset(__m512d offsets, int32_t k) {
        return _mm512_castsi512_pd(
            _mm512_add_epi64(_mm512_castpd_si512(offsets), _mm512_set1_epi64(k)));
    }
};

// The outputs among a vector of a plane's entries k0 .. k0 + L - 1 (lanes: the windows'
// top left entries), in order, at dst, and their winners k + offsets[k] (an offset's low 32
// bits: x86 is little-endian) at win: compressed to the front of a register (a compress
// to memory is microcoded on Zen 4) and stored under a mask.
inline void store_picked(__mmask16 lanes, int32_t k0, const float* best, const float* offsets,
                         float* dst, int32_t* win) {
    const auto front = static_cast<__mmask16>((1u << __builtin_popcount(lanes)) - 1);
    const __m512i k = _mm512_add_epi32(
        _mm512_set1_epi32(k0),
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    const __m512 values = _mm512_maskz_loadu_ps(lanes, best);
    _mm512_mask_storeu_ps(dst, front, _mm512_maskz_compress_ps(lanes, values));
    const __m512i winners = _mm512_add_epi32(k, _mm512_maskz_loadu_epi32(lanes, offsets));
    _mm512_mask_storeu_epi32(win, front, _mm512_maskz_compress_epi32(lanes, winners));
}

inline void store_picked(__mmask8 lanes, int32_t k0, const double* best, const double* offsets,
                         double* dst, int32_t* win) {
    const auto front = static_cast<__mmask8>((1u << __builtin_popcount(lanes)) - 1);
    const __m256i k =
        _mm256_add_epi32(_mm256_set1_epi32(k0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m512d values = _mm512_maskz_loadu_pd(lanes, best);
    _mm512_mask_storeu_pd(dst, front, _mm512_maskz_compress_pd(lanes, values));
    const __m256i low = _mm512_cvtepi64_epi32(_mm512_maskz_loadu_epi64(lanes, offsets));
    const __m256i winners = _mm256_add_epi32(k, low);
    _mm256_mask_storeu_epi32(win, front, _mm256_maskz_compress_epi32(lanes, winners));
}

// The stacks of planes (pool_avx2.cpp's stacked_planes: each entry's first maximum along
// the window's width, then down its height, in long vectors along the stack) for planes of
// at most kBand entries, in bands of whole planes; then each plane's outputs picked out of
// its entries a vector of entries at a time (store_picked: several rows of a small plane
// in one), under the masks of the windows' top left entries, the same for every plane:
// listed once, the vectors without any left out. A row at a time (as stacked_planes), a
// row of a few outputs had cost more than its maxima.
template <typename V, bool Relu, typename S = typename Lanes<V>::Scalar>
void stacked_small_planes(const AvgPoolPlane& g, int64_t planes, const S* src, S* dst,
                          int32_t* win) {
    using L = Lanes<V>;
    using Mask = typename L::Mask;
    constexpr int64_t lanes = L::width, most = kBand / lanes;
    const int64_t in_plane = g.in_plane(), out_plane = g.out_plane(), s = g.stride;
    const int64_t per_band = kBand / in_plane;
    // The vectors of a plane's entries that hold top left entries: their first entry, their
    // lanes that do, and the outputs before them.
    int32_t vector_at[most], outputs_before[most];
    Mask tops[most] = {};
    for (int64_t oh = 0; oh < g.Ho; ++oh) {
        for (int64_t ow = 0; ow < g.Wo; ++ow) {
            const int64_t k = oh * s * g.W + ow * s;
            tops[k / lanes] = static_cast<Mask>(tops[k / lanes] | (1u << (k % lanes)));
        }
    }
    int64_t vectors = 0, before = 0;
    for (int64_t v = 0; v * lanes < in_plane; ++v) {
        if (!tops[v]) continue;
        vector_at[vectors] = static_cast<int32_t>(v * lanes);
        outputs_before[vectors] = static_cast<int32_t>(before);
        before += __builtin_popcount(tops[v]);
        tops[vectors++] = tops[v];
    }
    S best[kBand], offsets[kBand];
    const int64_t ph = g.pool_height, pw = g.pool_width;
    for (int64_t first = 0; first < planes; first += per_band) {
        const int64_t n = std::min(per_band, planes - first), entries = n * in_plane;
        row_maxima<V, Relu>(src + first * in_plane, pw, entries - pw + 1, best, offsets);
        column_maxima<V>(g.W, ph, entries - (ph - 1) * g.W - pw + 1, best, offsets);
        for (int64_t p = 0; p < n; ++p) {
            const int64_t out = (first + p) * out_plane;
            for (int64_t v = 0; v < vectors; ++v) {
                const int64_t at = p * in_plane + vector_at[v];
                store_picked(tops[v], vector_at[v], best + at, offsets + at,
                             dst + out + outputs_before[v], win + out + outputs_before[v]);
            }
        }
    }
}

}  // namespace

void max_pool_planes_avx512(const AvgPoolPlane& g, int64_t planes, const float* src, float* dst,
                            int32_t* win, bool relu) {
    (relu ? stacked_small_planes<__m512, true>
          : stacked_small_planes<__m512, false>)(g, planes, src, dst, win);
}

void max_pool_planes_avx512(const AvgPoolPlane& g, int64_t planes, const double* src,
                            double* dst, int32_t* win, bool relu) {
    (relu ? stacked_small_planes<__m512d, true>
          : stacked_small_planes<__m512d, false>)(g, planes, src, dst, win);
}

}  // namespace graphnet
