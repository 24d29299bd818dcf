// Scaled dot-product attention over many (batch, head) pairs in one call: per pair,
// weights = softmax(q kᵀ · scale, masked), out = weights v, and the backward from the
// weights the forward kept. The gate's numpy version made one library call per product
// and per softmax over the whole stack of pairs, so each step went out to memory and back
// (0.5 ms for 128 pairs of 32 x 16 matrices whose products are 0.05 ms of arithmetic);
// here each pair's scores, softmax and products run while its matrices are in L1.
//
// The operands are numpy views as they come: matrix `b` of an operand starts at
// base + offset[b] (in elements, any sign), its rows row_stride apart and its last axis
// contiguous. So the heads' transposes (N, T, H, d) -> (N, H, T, d) and broadcast batch
// axes (offset repeats) are read in place, and the outputs can be written in the layout of
// the inputs (the heads' transpose back is then free). Outputs must not overlap.
//
// Threads split the pairs; each pair's sums run in an order fixed by the shapes alone, so
// the result is the same bits for any thread count (the AVX-512, AVX2 and portable copies
// of the products may differ from each other in the last bits).
#pragma once

#include <cstdint>

namespace graphnet {

template <typename T>
struct PairMatrices {
    T* base;
    const int64_t* offset;  // one per pair
    int64_t row_stride;
};

struct AttentionShape {
    int64_t pairs, S, L, d, dv;  // q (S, d), k (L, d), v (L, dv) per pair
};

// Where query s of pair b may attend to key l: base[offset[b] + s * row_stride + l *
// col_stride] != 0 (strides may be 0: a mask broadcast over queries or keys). A null base:
// every key. A query that may attend to no key gets zero weights and a zero output.
struct AttentionMask {
    const uint8_t* base = nullptr;
    const int64_t* offset = nullptr;
    int64_t row_stride = 0, col_stride = 0;
};

// weights: pairs x L x S, contiguous: each pair's weights transposed, a query's down a
// column (the softmax then runs along rows: attention_loops.h); out: pairs x (S, dv).
template <typename T>
void attention_forward(const AttentionShape& s, T scale, PairMatrices<const T> q,
                       PairMatrices<const T> k, PairMatrices<const T> v,
                       const AttentionMask& mask, T* weights, PairMatrices<T> out);

// dq, dk, dv: one matrix per pair (the caller sums those of broadcast inputs).
template <typename T>
void attention_backward(const AttentionShape& s, T scale, PairMatrices<const T> q,
                        PairMatrices<const T> k, PairMatrices<const T> v, const T* weights,
                        PairMatrices<const T> dout, PairMatrices<T> dq, PairMatrices<T> dk,
                        PairMatrices<T> dv);

// The products of one pair: C (m x n, ldc) = alpha A B, A (m x k) row-major with leading
// dimension lda, or stored transposed (k x m: A(i, p) = a[p * lda + i]) so that a
// transposed operand costs no copy; B (k x n) row-major with leading dimension ldb. In
// register tiles (attention_loops.h) compiled for AVX-512 (attention_avx512.cpp), AVX2 +
// FMA (attention_avx2.cpp) and any CPU (attention.cpp); call the x86 ones only where
// cpu_features.h says the CPU has them.
#define GRAPHNET_PAIR_PRODUCT(NAME)                                                         \
    template <typename T>                                                                   \
    void NAME(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, bool a_transposed,  \
              const T* b, int64_t ldb, T alpha, T* c, int64_t ldc);
GRAPHNET_PAIR_PRODUCT(pair_product_avx512)
GRAPHNET_PAIR_PRODUCT(pair_product_avx2)
#undef GRAPHNET_PAIR_PRODUCT

// The softmax over each column of wt (L x S) in place, `tail` scratch of
// softmax_tail_entries(L) (attention_loops.h's softmax_columns), compiled for AVX-512F and
// for AVX2 + FMA.
constexpr int64_t softmax_tail_entries(int64_t L) { return 16 * L; }  // L x a vector's lanes
void softmax_columns_avx512(int64_t S, int64_t L, float* wt, float* tail);
void softmax_columns_avx512(int64_t S, int64_t L, double* wt, double* tail);
void softmax_columns_avx2(int64_t S, int64_t L, float* wt, float* tail);
void softmax_columns_avx2(int64_t S, int64_t L, double* wt, double* tail);

}  // namespace graphnet
