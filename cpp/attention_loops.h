// attention.h's per-pair product, compiled once per instruction set (attention.cpp,
// attention_avx2.cpp, attention_avx512.cpp), each copy in its own anonymous namespace.
// It includes no library header, so nothing compiled for AVX2 or AVX-512 is shared with
// the portable code.
//
// C is computed in register tiles of kTileRows rows x two vectors of columns (12
// accumulators: two FMA ports of 4-cycle latency kept busy, and room left in 16
// registers), the narrower columns at the right edge in one vector, a half and a quarter
// of one, the last few one at a time. The tiles are GCC vector types, which the compiler
// keeps in registers of whatever width the file is compiled for (an array of scalars with
// a run-time width went through the stack, 3x slower).
#pragma once

#include <cstdint>

namespace graphnet {
namespace {

template <typename T, int Bytes>
using Vector [[gnu::vector_size(Bytes)]] = T;

constexpr int kTileRows = 6;

// A (m x k) as the product reads it: row-major with leading dimension ld, or (transposed)
// stored k x m, so that A(i, p) = a[p * ld + i].
template <typename T>
struct PairOperand {
    const T* a;
    int64_t ld;
    bool transposed;
};

// Rows [i, i + R) x the columns of Cols vectors V of C, summed over p in order. The
// transposed A reads R neighbours per p from one pointer; the plain one R rows, each from
// its own.
template <typename V, int R, int Cols, typename T>
inline void pair_tile(int64_t i, int64_t k, PairOperand<T> A, const T* b, int64_t ldb,
                      T alpha, T* c, int64_t ldc) {
    constexpr int kLanes = sizeof(V) / sizeof(T);
    V acc[R][Cols] = {};
    const auto step = [&](int64_t p, const T* a_of_row, int64_t row_step) {
        V bp[Cols];
#pragma GCC unroll 2
        for (int j = 0; j < Cols; ++j) {
            __builtin_memcpy(&bp[j], b + p * ldb + j * kLanes, sizeof(V));
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            const T ar = a_of_row[r * row_step];
#pragma GCC unroll 2
            for (int j = 0; j < Cols; ++j) acc[r][j] += ar * bp[j];
        }
    };
    if (A.transposed) {
        const T* ap = A.a + i;
        for (int64_t p = 0; p < k; ++p, ap += A.ld) step(p, ap, 1);
    } else {
        const T* ap = A.a + i * A.ld;
        for (int64_t p = 0; p < k; ++p) step(p, ap + p, A.ld);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
        for (int j = 0; j < Cols; ++j) {
            const V out = alpha * acc[r][j];
            __builtin_memcpy(c + (i + r) * ldc + j * kLanes, &out, sizeof(V));
        }
    }
}

// The columns of Cols vectors V of C (starting at b and c), all m rows.
template <typename V, int Cols, typename T>
void pair_columns(int64_t m, int64_t k, PairOperand<T> A, const T* b, int64_t ldb, T alpha,
                  T* c, int64_t ldc) {
    int64_t i = 0;
    for (; i + kTileRows <= m; i += kTileRows) {
        pair_tile<V, kTileRows, Cols>(i, k, A, b, ldb, alpha, c, ldc);
    }
    switch (m - i) {
        case 5: pair_tile<V, 5, Cols>(i, k, A, b, ldb, alpha, c, ldc); break;
        case 4: pair_tile<V, 4, Cols>(i, k, A, b, ldb, alpha, c, ldc); break;
        case 3: pair_tile<V, 3, Cols>(i, k, A, b, ldb, alpha, c, ldc); break;
        case 2: pair_tile<V, 2, Cols>(i, k, A, b, ldb, alpha, c, ldc); break;
        case 1: pair_tile<V, 1, Cols>(i, k, A, b, ldb, alpha, c, ldc); break;
        default: break;
    }
}

// C (m x n, ldc) = alpha A B, B (k x n) row-major with leading dimension ldb; vectors of
// VectorBytes (64: AVX-512, 32: AVX2, 16: SSE2).
template <int VectorBytes, typename T>
void pair_product_loops(int64_t m, int64_t n, int64_t k, PairOperand<T> A, const T* b,
                        int64_t ldb, T alpha, T* c, int64_t ldc) {
    constexpr int64_t kLanes = VectorBytes / sizeof(T);
    int64_t j = 0;
    for (; j + 2 * kLanes <= n; j += 2 * kLanes) {
        pair_columns<Vector<T, VectorBytes>, 2>(m, k, A, b + j, ldb, alpha, c + j, ldc);
    }
    if (j + kLanes <= n) {
        pair_columns<Vector<T, VectorBytes>, 1>(m, k, A, b + j, ldb, alpha, c + j, ldc);
        j += kLanes;
    }
    if constexpr (VectorBytes >= 32) {
        if (j + kLanes / 2 <= n) {
            pair_columns<Vector<T, VectorBytes / 2>, 1>(m, k, A, b + j, ldb, alpha, c + j, ldc);
            j += kLanes / 2;
        }
    }
    if constexpr (VectorBytes >= 64) {
        if (j + kLanes / 4 <= n) {
            pair_columns<Vector<T, VectorBytes / 4>, 1>(m, k, A, b + j, ldb, alpha, c + j, ldc);
            j += kLanes / 4;
        }
    }
    for (; j < n; ++j) {  // the last columns, fewer than 16 bytes
        for (int64_t i = 0; i < m; ++i) {
            T sum = 0;
            for (int64_t p = 0; p < k; ++p) {
                sum += (A.transposed ? A.a[p * A.ld + i] : A.a[i * A.ld + p]) * b[p * ldb + j];
            }
            c[i * ldc + j] = alpha * sum;
        }
    }
}

}  // namespace
}  // namespace graphnet
