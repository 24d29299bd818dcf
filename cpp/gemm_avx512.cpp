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
    static void store(double* p, __mmask16 lanes, Vec v) {
        _mm512_mask_storeu_pd(p, static_cast<__mmask8>(lanes), v);
    }
    static Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_pd(a, b, c); }
};

// Register tile: up to 8 rows x 3 vectors = 24 accumulators, 3 vectors of B and one
// broadcast element of A per row: per inner index 24 FMAs against 11 loads.
constexpr int kRows = 8;
constexpr int kVectors = 3;
// Inner indices per block: a panel of B (128 x 3 vectors: 24 KB in either dtype) stays in
// L1 while the row tiles pass over it.
constexpr int64_t kDepth = 128;

struct Block {
    int64_t lda, ldb, ldc, depth;
    bool first;  // the first block of k: C is written, not added to
};

// Rows [0, Rows) of A (a at the block's first row and inner index) times Vectors
// vectors of B's panel (b at its first inner index and column), into c.
template <typename T, int Rows, int Vectors, bool Masked>
void tile(const Block& blk, const T* a, const T* b, const __mmask16 (&lanes)[kVectors],
          T* c) {
    using L = Lanes<T>;
    typename L::Vec acc[Rows][Vectors];
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
#pragma GCC unroll 3
        for (int v = 0; v < Vectors; ++v) {
            acc[r][v] = blk.first ? L::zero()
                                  : L::load(c + r * blk.ldc + v * L::kWidth, lanes[v]);
        }
    }
    // Locals, not blk's fields: the compiler cannot tell that the stores to c leave blk
    // alone, and would reload them at every inner index.
    const int64_t lda = blk.lda, ldb = blk.ldb, depth = blk.depth;
    // Only a panel's last vector can run past column n: the others load unmasked, and
    // the one mask stays in a register.
    const __mmask16 last = lanes[Vectors - 1];
    for (int64_t kk = 0; kk < depth; ++kk, ++a, b += ldb) {
        typename L::Vec bv[Vectors];
#pragma GCC unroll 3
        for (int v = 0; v < Vectors - 1; ++v) bv[v] = L::load(b + v * L::kWidth);
        bv[Vectors - 1] = Masked ? L::load(b + (Vectors - 1) * L::kWidth, last)
                                 : L::load(b + (Vectors - 1) * L::kWidth);
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) {
            const typename L::Vec av = L::broadcast(a + r * lda);
#pragma GCC unroll 3
            for (int v = 0; v < Vectors; ++v) acc[r][v] = L::fma(av, bv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
#pragma GCC unroll 3
        for (int v = 0; v < Vectors; ++v) L::store(c + r * blk.ldc + v * L::kWidth, lanes[v], acc[r][v]);
    }
}

template <typename T>
using Tile = void (*)(const Block&, const T*, const T*, const __mmask16 (&)[kVectors], T*);

template <typename T, int Vectors, bool Masked>
constexpr Tile<T> kTilesOf[kRows + 1] = {
    nullptr,
    tile<T, 1, Vectors, Masked>, tile<T, 2, Vectors, Masked>, tile<T, 3, Vectors, Masked>,
    tile<T, 4, Vectors, Masked>, tile<T, 5, Vectors, Masked>, tile<T, 6, Vectors, Masked>,
    tile<T, 7, Vectors, Masked>, tile<T, 8, Vectors, Masked>};

__mmask16 first_lanes(int64_t valid, int64_t width) {
    return valid >= width ? __mmask16((1u << width) - 1)
                          : valid <= 0 ? __mmask16(0) : __mmask16((1u << valid) - 1);
}

template <typename T>
void rows(int64_t row_begin, int64_t row_end, int64_t n, int64_t k, const T* a,
          int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc) {
    constexpr int64_t width = Lanes<T>::kWidth, panel = kVectors * width;
    for (int64_t k0 = 0; k0 < k; k0 += kDepth) {
        const Block blk{lda, ldb, ldc, k - k0 < kDepth ? k - k0 : kDepth, k0 == 0};
        for (int64_t j = 0; j < n; j += panel) {
            const int64_t left = n - j;
            const __mmask16 lanes[kVectors] = {first_lanes(left, width),
                                               first_lanes(left - width, width),
                                               first_lanes(left - 2 * width, width)};
            const int vectors = left > 2 * width ? 3 : left > width ? 2 : 1;
            const bool masked = left < vectors * width;
            const Tile<T>* tiles =
                vectors == 3 ? (masked ? kTilesOf<T, 3, true> : kTilesOf<T, 3, false>)
                : vectors == 2 ? (masked ? kTilesOf<T, 2, true> : kTilesOf<T, 2, false>)
                               : (masked ? kTilesOf<T, 1, true> : kTilesOf<T, 1, false>);
            for (int64_t i = row_begin; i < row_end; i += kRows) {
                const int64_t count = row_end - i < kRows ? row_end - i : kRows;
                tiles[count](blk, a + i * lda + k0, b + k0 * ldb + j, lanes,
                             c + i * ldc + j);
            }
        }
    }
}

}  // namespace

void gemm_rows_avx512(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                      const float* a, int64_t lda, const float* b,
                      int64_t ldb, float* c, int64_t ldc) {
    rows(row_begin, row_end, n, k, a, lda, b, ldb, c, ldc);
}

void gemm_rows_avx512(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                      const double* a, int64_t lda, const double* b,
                      int64_t ldb, double* c, int64_t ldc) {
    rows(row_begin, row_end, n, k, a, lda, b, ldb, c, ldc);
}

}  // namespace graphnet
