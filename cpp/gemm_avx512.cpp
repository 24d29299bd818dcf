// AVX-512 kernel of gemm_avx512.h. Compiled for AVX-512F: includes only the intrinsics.
#pragma GCC target("avx512f")
#include "gemm_avx512.h"

#include <immintrin.h>

namespace graphnet {
namespace {

// One vector of 16 floats or 8 doubles, and the operations the tile needs on it.
template <typename T>
struct Lanes;

template <>
struct Lanes<float> {
    using Vec = __m512;
    static constexpr int64_t kWidth = 16;
    static Vec zero() { return _mm512_setzero_ps(); }
    static Vec broadcast(const float* p) { return _mm512_set1_ps(*p); }
    static Vec load(const float* p) { return _mm512_loadu_ps(p); }
    static Vec load(const float* p, __mmask16 lanes) { return _mm512_maskz_loadu_ps(lanes, p); }
    static void store_aligned(float* p, Vec v) { _mm512_store_ps(p, v); }
    static void store(float* p, __mmask16 lanes, Vec v) { _mm512_mask_storeu_ps(p, lanes, v); }
    static Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
};

template <>
struct Lanes<double> {
    using Vec = __m512d;
    static constexpr int64_t kWidth = 8;
    static Vec zero() { return _mm512_setzero_pd(); }
    static Vec broadcast(const double* p) { return _mm512_set1_pd(*p); }
    static Vec load(const double* p) { return _mm512_loadu_pd(p); }
    static Vec load(const double* p, __mmask16 lanes) {
        return _mm512_maskz_loadu_pd(static_cast<__mmask8>(lanes), p);
    }
    static void store_aligned(double* p, Vec v) { _mm512_store_pd(p, v); }
    static void store(double* p, __mmask16 lanes, Vec v) {
        _mm512_mask_storeu_pd(p, static_cast<__mmask8>(lanes), v);
    }
    static Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_pd(a, b, c); }
};

// Register tile: up to 8 rows x 3 vectors = 24 accumulators, 3 vectors of B and one
// broadcast element of A per row: per inner index 24 FMAs against 11 loads.
constexpr int kRows = 8;
constexpr int kVectors = 3;
// Inner indices per block: a panel of B (256 x 3 vectors: 48 KB in either dtype).
constexpr int64_t kDepth = 256;
// Rows of A per pass over B's panels: 32 tiles share each panel, and their block of A
// (256 rows x 256 inner indices, 256 KB in float32) stays in L2 from panel to panel.
constexpr int64_t kChunkRows = 32 * kRows;
// A panel is copied side by side first (pack_panel) when B's rows are a multiple of 2 KB
// apart (512 float32 columns): read in place, such a panel's rows fall on a few sets of
// the L1 cache and miss at every tile (the 512-column products ran at 1.3x OpenBLAS's
// time, copied at 0.8x). Otherwise for at least 8 tiles of rows and 128 inner indices:
// for fewer rows the copy costs more than it saves (16 x 3072 x 100: 1.35x the in-place
// time), and a shallower panel (24 KB at most) stays in L1 as it is (the Winograd
// convolution's products, 32 or 64 channels deep).
constexpr int64_t kPackRows = 8 * kRows;
constexpr int64_t kPackDepth = 128;
constexpr int64_t kAliasingBytes = 2048;

struct Block {
    int64_t lda, ldb, depth;
    bool first;  // the first block of k, not accumulating: C is written, not added to
    // With Grouped tiles, A's inner indices in groups (gemm_rows_grouped_avx512), the
    // block starting at index `start` of its first group.
    InnerGroups groups;
    int64_t start;
};

// Rows [0, Rows) of A (a at the block's first row and inner index) times Vectors
// vectors of B's panel (b at its first inner index and column, rows ldb apart; Masked:
// the last vector runs past column n), into the columns of c that `lanes` keeps.
// (Grouped: a at the block's first row and the start of its first group of inner indices.)
template <typename T, int Rows, int Vectors, bool Masked, bool Grouped>
void tile(const Block& blk, const T* a, const T* b, const __mmask16 (&lanes)[kVectors], T* c,
          int64_t ldc) {
    using L = Lanes<T>;
    typename L::Vec acc[Rows][Vectors];
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
#pragma GCC unroll 3
        for (int v = 0; v < Vectors; ++v) {
            acc[r][v] = blk.first ? L::zero() : L::load(c + r * ldc + v * L::kWidth, lanes[v]);
        }
    }
    // Locals, not blk's fields: the compiler cannot tell that the stores to c leave blk
    // alone, and would reload them at every inner index.
    const int64_t lda = blk.lda, ldb = blk.ldb, depth = blk.depth;
    // Only a panel's last vector can run past column n: the others load unmasked, and
    // the one mask stays in a register.
    const __mmask16 last = lanes[Vectors - 1];
    const auto step = [&](const T* column) {  // A's column at `column` times B's row at b
        typename L::Vec bv[Vectors];
#pragma GCC unroll 3
        for (int v = 0; v < Vectors - 1; ++v) bv[v] = L::load(b + v * L::kWidth);
        bv[Vectors - 1] = Masked ? L::load(b + (Vectors - 1) * L::kWidth, last)
                                 : L::load(b + (Vectors - 1) * L::kWidth);
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) {
            const typename L::Vec av = L::broadcast(column + r * lda);
#pragma GCC unroll 3
            for (int v = 0; v < Vectors; ++v) acc[r][v] = L::fma(av, bv[v], acc[r][v]);
        }
    };
    if constexpr (Grouped) {
        const int64_t group = blk.groups.group, outer = blk.groups.outer;
        const int64_t inner = blk.groups.inner;
        int64_t i = blk.start;
        for (int64_t kk = 0; kk < depth; ++kk, b += ldb) {
            step(a + i * inner);
            if (++i == group) {
                i = 0;
                a += outer;
            }
        }
    } else {
        for (int64_t kk = 0; kk < depth; ++kk, ++a, b += ldb) step(a);
    }
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
#pragma GCC unroll 3
        for (int v = 0; v < Vectors; ++v) L::store(c + r * ldc + v * L::kWidth, lanes[v], acc[r][v]);
    }
}

template <typename T>
using Tile = void (*)(const Block&, const T*, const T*, const __mmask16 (&)[kVectors], T*,
                      int64_t);

template <typename T, int Vectors, bool Masked, bool Grouped>
constexpr Tile<T> kTilesOf[kRows + 1] = {
    nullptr,
    tile<T, 1, Vectors, Masked, Grouped>, tile<T, 2, Vectors, Masked, Grouped>,
    tile<T, 3, Vectors, Masked, Grouped>, tile<T, 4, Vectors, Masked, Grouped>,
    tile<T, 5, Vectors, Masked, Grouped>, tile<T, 6, Vectors, Masked, Grouped>,
    tile<T, 7, Vectors, Masked, Grouped>, tile<T, 8, Vectors, Masked, Grouped>};

template <typename T, bool Grouped>
const Tile<T>* tiles_for(int vectors, bool masked) {
    if (vectors == 3) {
        return masked ? kTilesOf<T, 3, true, Grouped> : kTilesOf<T, 3, false, Grouped>;
    }
    if (vectors == 2) {
        return masked ? kTilesOf<T, 2, true, Grouped> : kTilesOf<T, 2, false, Grouped>;
    }
    return masked ? kTilesOf<T, 1, true, Grouped> : kTilesOf<T, 1, false, Grouped>;
}

__mmask16 first_lanes(int64_t valid, int64_t width) {
    return valid >= width ? __mmask16((1u << width) - 1)
                          : valid <= 0 ? __mmask16(0) : __mmask16((1u << valid) - 1);
}

// Copies `depth` rows of `vectors` vectors of B (b at the panel's first row and column,
// rows ldb apart) side by side into `panel`, the lanes past column n as zeros.
template <typename T>
void pack_panel(int64_t depth, int vectors, const T* b, int64_t ldb,
                const __mmask16 (&lanes)[kVectors], T* panel) {
    using L = Lanes<T>;
    for (int64_t kk = 0; kk < depth; ++kk, b += ldb) {
        for (int v = 0; v < vectors; ++v, panel += L::kWidth) {
            L::store_aligned(panel, L::load(b + v * L::kWidth, lanes[v]));
        }
    }
}

// (groups: of A's inner indices, with Grouped tiles)
template <typename T, bool Grouped = false>
void rows(int64_t row_begin, int64_t row_end, int64_t n, int64_t k, const T* a,
          int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc, bool accumulate,
          InnerGroups groups = {1, 1, 0}) {
    constexpr int64_t width = Lanes<T>::kWidth, panel_columns = kVectors * width;
    const bool aliasing = ldb * static_cast<int64_t>(sizeof(T)) % kAliasingBytes == 0;
    alignas(64) T packed[kDepth * panel_columns];
    for (int64_t k0 = 0; k0 < k; k0 += kDepth) {
        const int64_t depth = k - k0 < kDepth ? k - k0 : kDepth;
        for (int64_t i0 = row_begin; i0 < row_end; i0 += kChunkRows) {
            const int64_t i1 = row_end - i0 < kChunkRows ? row_end : i0 + kChunkRows;
            const bool pack = aliasing || (i1 - i0 >= kPackRows && depth >= kPackDepth);
            for (int64_t j = 0; j < n; j += panel_columns) {
                const int64_t left = n - j;
                const __mmask16 lanes[kVectors] = {first_lanes(left, width),
                                                   first_lanes(left - width, width),
                                                   first_lanes(left - 2 * width, width)};
                const int vectors = left > 2 * width ? 3 : left > width ? 2 : 1;
                const T* panel = b + k0 * ldb + j;
                Block blk{lda, ldb, depth, k0 == 0 && !accumulate, groups, k0 % groups.group};
                // A's column k0: its group's start (Grouped), or the column itself
                const T* a_k0 = Grouped ? a + k0 / groups.group * groups.outer : a + k0;
                if (pack) {  // zeros past column n: every load is whole
                    pack_panel(depth, vectors, panel, ldb, lanes, packed);
                    panel = packed;
                    blk.ldb = vectors * width;
                }
                const Tile<T>* tiles =
                    tiles_for<T, Grouped>(vectors, !pack && left < vectors * width);
                for (int64_t i = i0; i < i1; i += kRows) {
                    const int64_t count = i1 - i < kRows ? i1 - i : kRows;
                    tiles[count](blk, a_k0 + i * lda, panel, lanes, c + i * ldc + j, ldc);
                }
            }
        }
    }
}

}  // namespace

void gemm_rows_grouped_avx512(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                              const float* a, int64_t lda, InnerGroups groups, const float* b,
                              int64_t ldb, float* c, int64_t ldc, bool accumulate) {
    rows<float, true>(row_begin, row_end, n, k, a, lda, b, ldb, c, ldc, accumulate, groups);
}

void gemm_rows_grouped_avx512(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                              const double* a, int64_t lda, InnerGroups groups, const double* b,
                              int64_t ldb, double* c, int64_t ldc, bool accumulate) {
    rows<double, true>(row_begin, row_end, n, k, a, lda, b, ldb, c, ldc, accumulate, groups);
}

void gemm_rows_avx512(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                      const float* a, int64_t lda, const float* b,
                      int64_t ldb, float* c, int64_t ldc, bool accumulate) {
    rows(row_begin, row_end, n, k, a, lda, b, ldb, c, ldc, accumulate);
}

void gemm_rows_avx512(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                      const double* a, int64_t lda, const double* b,
                      int64_t ldb, double* c, int64_t ldc, bool accumulate) {
    rows(row_begin, row_end, n, k, a, lda, b, ldb, c, ldc, accumulate);
}

}  // namespace graphnet
