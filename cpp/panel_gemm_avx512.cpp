// AVX-512 kernel of panel_gemm_avx512.h. Compiled for AVX-512F: includes only the
// intrinsics.
#pragma GCC target("avx512f")
#include "panel_gemm_avx512.h"

#include <immintrin.h>

namespace graphnet {
namespace {

// Register tile: up to 8 rows x 2 vectors of 16 columns = 16 accumulators; per inner index
// 2 loads of the panel and one broadcast element of A per row.
constexpr int kRows = 8;

// Rows [0, Rows) of a (row stride lda) times one panel (k x 32, contiguous), into the
// columns of c (row stride ldc) that `lanes` keeps.
template <int Rows>
void tile(int64_t k, const float* a, int64_t lda, const float* panel,
          const __mmask16 (&lanes)[2], bool accumulate, float* c, int64_t ldc) {
    __m512 acc[Rows][2];
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t kk = 0; kk < k; ++kk) {
        const __m512 b0 = _mm512_loadu_ps(panel + kk * kPanelColumns);
        const __m512 b1 = _mm512_loadu_ps(panel + kk * kPanelColumns + 16);
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) {
            const __m512 av = _mm512_set1_ps(a[r * lda + kk]);
            acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
        for (int v = 0; v < 2; ++v) {
            float* out = c + r * ldc + 16 * v;
            const __m512 sum = accumulate
                ? _mm512_add_ps(_mm512_maskz_loadu_ps(lanes[v], out), acc[r][v]) : acc[r][v];
            _mm512_mask_storeu_ps(out, lanes[v], sum);
        }
    }
}

// One row of a (m = 1) times four panels side by side, into the 128 columns of c from the
// first panel's on (those `lanes` keeps): eight sums, each over k in order as in tile<1>,
// where each of its two sums waits for its own last FMA. One sequence's LSTM forward (T =
// 50, float32, one thread): H = 256 639 -> 555 us, H = 128 145 -> 131.
void row_tile(int64_t k, const float* a, const float* panels, const __mmask16 (&lanes)[8],
              bool accumulate, float* c) {
    constexpr int kPanels = 4;
    __m512 acc[2 * kPanels];
#pragma GCC unroll 8
    for (int v = 0; v < 2 * kPanels; ++v) acc[v] = _mm512_setzero_ps();
    for (int64_t kk = 0; kk < k; ++kk) {
        const __m512 av = _mm512_set1_ps(a[kk]);
#pragma GCC unroll 4
        for (int q = 0; q < kPanels; ++q) {
            const float* row = panels + q * kPanelColumns * k + kk * kPanelColumns;
            acc[2 * q] = _mm512_fmadd_ps(av, _mm512_loadu_ps(row), acc[2 * q]);
            acc[2 * q + 1] = _mm512_fmadd_ps(av, _mm512_loadu_ps(row + 16), acc[2 * q + 1]);
        }
    }
#pragma GCC unroll 8
    for (int v = 0; v < 2 * kPanels; ++v) {
        float* out = c + 16 * v;
        const __m512 sum = accumulate
            ? _mm512_add_ps(_mm512_maskz_loadu_ps(lanes[v], out), acc[v]) : acc[v];
        _mm512_mask_storeu_ps(out, lanes[v], sum);
    }
}

using Tile = void (*)(int64_t, const float*, int64_t, const float*, const __mmask16 (&)[2],
                      bool, float*, int64_t);
constexpr Tile kTiles[kRows + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>,
                                    tile<5>, tile<6>, tile<7>, tile<8>};

__mmask16 first_lanes(int64_t valid) {
    return valid >= 16 ? __mmask16(0xFFFF) : valid <= 0 ? __mmask16(0)
                                                        : __mmask16((1u << valid) - 1);
}

// C[0:Rows, 0:32] (the columns `lanes` keeps) += A^T B[:, 0:32] for A (k x Rows) packed
// kRows apart: as transposed_gemm_accumulate_avx512 says.
template <int Rows>
void transposed_tile(int64_t k, const float* a, const float* b, int64_t ldb,
                     const __mmask16 (&lanes)[2], float* c, int64_t ldc) {
    __m512 acc[Rows][2];
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
        for (int v = 0; v < 2; ++v) {
            acc[r][v] = _mm512_maskz_loadu_ps(lanes[v], c + r * ldc + 16 * v);
        }
    }
    for (int64_t kk = 0; kk < k; ++kk) {
        const __m512 b0 = _mm512_maskz_loadu_ps(lanes[0], b + kk * ldb);
        const __m512 b1 = _mm512_maskz_loadu_ps(lanes[1], b + kk * ldb + 16);
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) {
            const __m512 av = _mm512_set1_ps(a[kk * kRows + r]);
            acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
        for (int v = 0; v < 2; ++v) {
            _mm512_mask_storeu_ps(c + r * ldc + 16 * v, lanes[v], acc[r][v]);
        }
    }
}

using TransposedTile = void (*)(int64_t, const float*, const float*, int64_t,
                                const __mmask16 (&)[2], float*, int64_t);
constexpr TransposedTile kTransposedTiles[kRows + 1] = {
    nullptr,           transposed_tile<1>, transposed_tile<2>, transposed_tile<3>,
    transposed_tile<4>, transposed_tile<5>, transposed_tile<6>, transposed_tile<7>,
    transposed_tile<8>};

// The inner indices of A packed at once: a tile's A in 8 KB.
constexpr int64_t kPackedDepth = 256;

}  // namespace

void transposed_gemm_accumulate_avx512(int64_t m, int64_t c0, int64_t c1, int64_t k,
                                       const float* a, int64_t lda, const float* b,
                                       int64_t ldb, float* c, int64_t ldc) {
    // A's rows are far apart (one sequence's rows of x or h, T steps apart) and map to a
    // few sets of the L1 cache: a tile's 8 columns of them are copied side by side first.
    alignas(64) float packed[kPackedDepth * kRows];
    for (int64_t i = 0; i < m; i += kRows) {
        const int64_t rows = m - i < kRows ? m - i : kRows;
        for (int64_t k0 = 0; k0 < k; k0 += kPackedDepth) {
            const int64_t depth = k - k0 < kPackedDepth ? k - k0 : kPackedDepth;
            for (int64_t kk = 0; kk < depth; ++kk) {
                for (int64_t r = 0; r < rows; ++r) {
                    packed[kk * kRows + r] = a[(k0 + kk) * lda + i + r];
                }
            }
            for (int64_t j = c0; j < c1; j += kPanelColumns) {
                const __mmask16 lanes[2] = {first_lanes(c1 - j), first_lanes(c1 - j - 16)};
                kTransposedTiles[rows](depth, packed, b + k0 * ldb + j, ldb, lanes,
                                       c + i * ldc + j, ldc);
            }
        }
    }
}

void panel_gemm_avx512(int64_t m, int64_t c0, int64_t c1, int64_t k, const float* a,
                       int64_t lda, const float* packed, bool accumulate, float* c,
                       int64_t ldc) {
    int64_t j = c0;
    if (m == 1) {  // four panels at a time while all four hold columns before c1
        for (; c1 - j > 3 * kPanelColumns; j += 4 * kPanelColumns) {
            __mmask16 lanes[8];
            for (int v = 0; v < 8; ++v) lanes[v] = first_lanes(c1 - j - 16 * v);
            row_tile(k, a, packed + j * k, lanes, accumulate, c + j);
        }
    }
    for (; j < c1; j += kPanelColumns) {
        const __mmask16 lanes[2] = {first_lanes(c1 - j), first_lanes(c1 - j - 16)};
        const float* panel = packed + j * k;  // the panels before j hold j / 32 * 32 * k
        for (int64_t i = 0; i < m; i += kRows) {
            const int64_t rows = m - i < kRows ? m - i : kRows;
            kTiles[rows](k, a + i * lda, lda, panel, lanes, accumulate, c + i * ldc + j, ldc);
        }
    }
}

}  // namespace graphnet
