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

using Tile = void (*)(int64_t, const float*, int64_t, const float*, const __mmask16 (&)[2],
                      bool, float*, int64_t);
constexpr Tile kTiles[kRows + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>,
                                    tile<5>, tile<6>, tile<7>, tile<8>};

__mmask16 first_lanes(int64_t valid) {
    return valid >= 16 ? __mmask16(0xFFFF) : valid <= 0 ? __mmask16(0)
                                                        : __mmask16((1u << valid) - 1);
}

}  // namespace

void panel_gemm_avx512(int64_t m, int64_t c0, int64_t c1, int64_t k, const float* a,
                       int64_t lda, const float* packed, bool accumulate, float* c,
                       int64_t ldc) {
    for (int64_t j = c0; j < c1; j += kPanelColumns) {
        const __mmask16 lanes[2] = {first_lanes(c1 - j), first_lanes(c1 - j - 16)};
        const float* panel = packed + j * k;  // the panels before j hold j / 32 * 32 * k
        for (int64_t i = 0; i < m; i += kRows) {
            const int64_t rows = m - i < kRows ? m - i : kRows;
            kTiles[rows](k, a + i * lda, lda, panel, lanes, accumulate, c + i * ldc + j, ldc);
        }
    }
}

}  // namespace graphnet
