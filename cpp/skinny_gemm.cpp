// AVX2 + FMA kernel of skinny_gemm.h. Compiled for AVX2: includes only the intrinsics.
#pragma GCC target("avx2,fma")
#include "skinny_gemm.h"

#include "avx2_lanes.h"

namespace graphnet {
namespace {

// Register tile: 4 rows x 3 vectors of 8 columns = 12 accumulators, 3 vectors of B and
// 1 broadcast element of A: per inner index 12 FMAs against 7 loads.
constexpr int kRows = 4;
constexpr int kVectors = 3;
// Inner indices per block: a block of B (256 x 100 floats in the affine gate, 100 KB)
// stays in L2 while every row tile passes over it.
constexpr int64_t kDepth = 256;

// One row tile times columns [j, j + 8*Vectors) of one block of B (b points at its column
// j), `depth` inner indices deep; added to C unless `first`. Rows past the valid ones
// repeat the last valid row of A and are not stored. Masked: the last vector runs past column n; its lanes there load as
// zero and are not stored.
template <int Vectors, bool Masked>
void tile(const float* const (&a)[kRows], const float* b, int64_t ldb,
          float* const (&c_rows)[kRows], int64_t j, int valid_rows, int64_t columns_left,
          int64_t depth, bool first) {
    float* const c[kRows] = {c_rows[0] + j, c_rows[1] + j, c_rows[2] + j, c_rows[3] + j};
    __m256i mask[Vectors];
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) mask[v] = first_lanes(Masked ? columns_left - 8 * v : 8);
    __m256 acc[kRows][Vectors];
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < Vectors; ++v) {
            acc[r][v] = first ? _mm256_setzero_ps()
                              : (Masked ? _mm256_maskload_ps(c[r] + 8 * v, mask[v])
                                        : _mm256_loadu_ps(c[r] + 8 * v));
        }
    }
    for (int64_t kk = 0; kk < depth; ++kk) {
        __m256 bv[Vectors];
#pragma GCC unroll 4
        for (int v = 0; v < Vectors; ++v) {
            const float* p = b + kk * ldb + 8 * v;
            bv[v] = Masked ? _mm256_maskload_ps(p, mask[v]) : _mm256_loadu_ps(p);
        }
#pragma GCC unroll 4
        for (int r = 0; r < kRows; ++r) {
            const __m256 av = _mm256_broadcast_ss(a[r] + kk);
#pragma GCC unroll 4
            for (int v = 0; v < Vectors; ++v) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) {
        if (r >= valid_rows) continue;
#pragma GCC unroll 4
        for (int v = 0; v < Vectors; ++v) {
            if (Masked) {
                _mm256_maskstore_ps(c[r] + 8 * v, mask[v], acc[r][v]);
            } else {
                _mm256_storeu_ps(c[r] + 8 * v, acc[r][v]);
            }
        }
    }
}

// Columns [j, j + 8*Vectors) of one block of B (b_panel points at its column j) against
// every row tile in [row_begin, row_end): the panel (256 x 24 floats, 24 KB) stays in L1
// while the row tiles pass over it. a points at the block's first inner index.
template <int Vectors, bool Masked>
void panel(int64_t row_begin, int64_t row_end, int64_t n, const float* a, int64_t lda,
           const float* b_panel, int64_t ldb, float* c, int64_t j, int64_t columns,
           int64_t depth, bool first) {
    for (int64_t i = row_begin; i < row_end; i += kRows) {
        const int valid = static_cast<int>(row_end - i < kRows ? row_end - i : kRows);
        const float* a_rows[kRows];  // rows past the end repeat the last one, unstored
        float* c_rows[kRows];
        for (int r = 0; r < kRows; ++r) {
            const int64_t row = i + (r < valid ? r : valid - 1);
            a_rows[r] = a + row * lda;
            c_rows[r] = c + row * n;
        }
        tile<Vectors, Masked>(a_rows, b_panel, ldb, c_rows, j, valid, columns, depth, first);
    }
}

}  // namespace

void skinny_gemm_rows(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                      const float* a, int64_t lda, const float* b, int64_t ldb, float* c) {
    constexpr int64_t width = 8 * kVectors;
    for (int64_t k0 = 0; k0 < k; k0 += kDepth) {
        const int64_t depth = k - k0 < kDepth ? k - k0 : kDepth;
        const float *a_block = a + k0, *b_block = b + k0 * ldb;
        const bool first = k0 == 0;
        int64_t j = 0;
        for (; j + width <= n; j += width) {
            panel<kVectors, false>(row_begin, row_end, n, a_block, lda, b_block + j, ldb, c, j,
                                   width, depth, first);
        }
        const int64_t left = n - j;  // the last columns, fewer than a full tile
        if (left > 16) {
            panel<3, true>(row_begin, row_end, n, a_block, lda, b_block + j, ldb, c, j, left, depth, first);
        } else if (left > 8) {
            panel<2, true>(row_begin, row_end, n, a_block, lda, b_block + j, ldb, c, j, left, depth, first);
        } else if (left > 0) {
            panel<1, true>(row_begin, row_end, n, a_block, lda, b_block + j, ldb, c, j, left, depth, first);
        }
    }
}

}  // namespace graphnet
