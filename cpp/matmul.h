// A matrix multiply on graphnet's own threads.
//
// The affine gate multiplies through this instead of numpy so that a training step runs
// all its arithmetic on one thread team: numpy's BLAS keeps a second team of threads that
// spin after each call, and on a 2-core machine the two teams steal the cores from each
// other (measured: a 50 x 8192 x 100 product going from 2 ms to 200 ms).
#pragma once

#include <cstdint>

#include "shapes.h"

namespace graphnet {

// Row-major C (m x n) = op(A) * op(B), op(A) m x k, op(B) k x n, op = transpose when the
// flag says so (A is then stored k x m, B n x k). The larger of m and n is split across
// the threads, each calling the single-threaded BLAS on its block. With a `bias` (n), C =
// op(A) op(B) + bias: each element's product rounded first, then the bias added (numpy's
// `c += bias`); the AVX-512 kernel adds it to its register tiles as it stores them.
template <typename T>
void matmul(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a,
            const T* b, T* c, const T* bias = nullptr);

// One operand of batched_matmul: a stack of stored matrices of rows x columns, matrix
// (i0, i1, ...) of the batch at data + i0 * batch_strides[0] + i1 * batch_strides[1] + ...,
// its element (r, c) at r * row_stride + c * column_stride from there (all in elements, any
// sign; a batch stride is 0 along an axis the operand is broadcast over).
template <typename T>
struct MatrixStack {
    const T* data;
    int64_t rows, columns;
    int64_t row_stride, column_stride;
    Shape batch_strides;  // one per axis of the product's batch
};

// C[j] (m x n) = the sum of the products op(A[i]) op(B[i]) of the indices i of `batch` that
// fall on index j of `summed_to` (C: the matrices one after another, row-major). summed_to
// has batch's rank, each axis batch's size or 1 (summed over): the gradient of an operand
// broadcast along those axes, without the stack of all the products. Each product has the
// bits matmul gives for A[i] and B[i] stored row-major (a matrix stored otherwise is first
// copied so); a sum adds them in the order of i (row-major over the batch) from +0, as
// numpy's sum over those axes of the whole stack does (the same bits, but for 1 x 1
// matrices, which numpy sums pairwise). With at least as many results C[j] as threads the
// threads split them (whole sums, each on one thread), else each product splits across
// them as matmul does; either way every C[j] is the same on any thread count. Sizes are
// the caller's to check: m * k, k * n and m * n within the 32-bit BLAS.
template <typename T>
void batched_matmul(bool trans_a, bool trans_b, const Shape& batch, const MatrixStack<T>& a,
                    const MatrixStack<T>& b, const Shape& summed_to, T* c);

// out (n) = the sum of A's m rows (m x n, row-major): an affine's bias gradient. Each
// column's sum runs from 0 over the rows in order, as numpy's a.sum(axis=0) adds them
// (the same bits), on any thread count; the threads split the columns. numpy took 0.04
// ms for 2048 x 64 float32 (a temporal affine's rows at batch 64), 0.08 for 2048 x 256.
template <typename T>
void column_sums(int64_t m, int64_t n, const T* a, T* out);

// C (m x n, leading dimension ldc) = or += (accumulate) A (m x k, lda) * B (k x n, ldb), on
// the calling thread: the AVX-512 kernel where matmul would take it for large k, else
// OpenBLAS. For products over blocks of the inner indices (the conv forward's blocks of
// channels, conv.cpp); each element's sum runs in the same order on any thread count.
template <typename T>
void gemm_block(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
                int64_t ldb, bool accumulate, T* c, int64_t ldc);

// C (m x n, leading dimension ldc) += A (m x k) * B^T, B stored n x k (lda and ldb as
// stored), on the calling thread: a conv weight gradient's dw^T += cols * dout^T over a
// chunk's positions (conv.cpp). On the AVX-512 kernel (B^T copied panel by panel) where it
// pays, 32 or more rows and inner indices, else OpenBLAS; each element's sum runs in the
// same order on any thread count.
template <typename T>
void gemm_add_transposed_b(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
                           int64_t ldb, T* c, int64_t ldc);

// A batch times a narrow weight matrix over a long inner dimension runs on the AVX-512
// kernel (gemm_avx512.h) where the CPU has it, unless switched off here (tests compare it
// with the OpenBLAS and AVX2 paths).
void set_avx512_matmul(bool enabled);
bool avx512_matmul_active();

}  // namespace graphnet
