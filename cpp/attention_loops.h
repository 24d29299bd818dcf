// attention.h's per-pair product and softmax of the scores, compiled once per instruction
// set (attention.cpp, attention_avx2.cpp, attention_avx512.cpp), each copy in its own
// anonymous namespace.
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

// V (a vector, or a scalar T) at p, unaligned.
template <typename V, typename T>
inline V load_at(const T* p) {
    V x;
    __builtin_memcpy(&x, p, sizeof(V));
    return x;
}

template <typename V, typename T>
inline void store_at(T* p, V x) {
    __builtin_memcpy(p, &x, sizeof(V));
}

// softmax_columns over the columns of one vector V starting at wt (rows S apart):
// the maximum down them, then e^(x - maximum) written back and summed, then the products by
// the sums' reciprocals. The maximum is a NaN among the entries (so the column is NaN), or 0
// for a column of -inf only (every key masked: its exps, and so its weights, are 0).
template <typename V, typename T, typename Exp>
void softmax_column_block(int64_t S, int64_t L, T* wt, Exp exp_of) {
    const V zero = V{}, minus_inf = zero - static_cast<T>(__builtin_inf());
    V top = minus_inf;
    for (int64_t l = 0; l < L; ++l) {
        const V x = load_at<V>(wt + l * S);
        top = ((x > top) | (x != x)) ? x : top;
    }
    top = top == minus_inf ? zero : top;
    V sum = zero;
    for (int64_t l = 0; l < L; ++l) {
        const V e = exp_of(load_at<V>(wt + l * S) - top);
        store_at(wt + l * S, e);
        sum += e;
    }
    const V inverse = sum > zero ? (zero + T(1)) / sum : zero;  // NaN * 0 stays NaN
    for (int64_t l = 0; l < L; ++l) store_at(wt + l * S, load_at<V>(wt + l * S) * inverse);
}

// The softmax over each column of wt (L x S) in place: wt a pair's scores transposed, a
// query's scores down a column, so that each pass runs down the columns a vector at a
// time, with no sum across a vector's lanes (the (S x L) layout's rows, one query each,
// spent more on those sums at L = 32 than on their exps), and the exps of a vector's rows
// are independent, so that their latency chains overlap. exp_vector: e^x of each lane of
// an ExpVectorType (an x86 vector of the width taken here). The last columns, fewer than a
// vector, are copied into `tail` (attention.h's softmax_tail_entries(L); the lanes past
// them 0) and back. Each column's sums run down it in order, whatever the width.
template <typename ExpVectorType, typename T, typename ExpVector>
void softmax_columns(int64_t S, int64_t L, T* wt, T* tail, ExpVector exp_vector) {
    using V = Vector<T, sizeof(ExpVectorType)>;
    constexpr int64_t kLanes = sizeof(V) / sizeof(T);
    const auto exp_of = [&](V x) { return V(exp_vector(ExpVectorType(x))); };
    int64_t j = 0;
    for (; j + kLanes <= S; j += kLanes) softmax_column_block<V>(S, L, wt + j, exp_of);
    const int64_t width = S - j;
    if (width == 0) return;
    for (int64_t l = 0; l < L; ++l) {
        for (int64_t c = 0; c < kLanes; ++c) {
            tail[l * kLanes + c] = c < width ? wt[l * S + j + c] : T(0);
        }
    }
    softmax_column_block<V>(kLanes, L, tail, exp_of);
    for (int64_t l = 0; l < L; ++l) {
        for (int64_t c = 0; c < width; ++c) wt[l * S + j + c] = tail[l * kLanes + c];
    }
}

}  // namespace
}  // namespace graphnet
