// The matrix multiply under the convolution: OpenBLAS from the scipy-openblas32 wheel
// (its symbols carry a scipy_ prefix so it never clashes with numpy's own copy).
//
// OpenBLAS is kept single-threaded (blas_init): the conv kernels already run one GEMM
// per image on every core, and a second pool of BLAS threads on top would oversubscribe.
#pragma once

#include <cblas.h>

namespace graphnet {

inline void blas_init() { scipy_openblas_set_num_threads(1); }

// Called (with the GIL held) before a kernel runs: a tool such as threadpoolctl may have
// raised the count since import, which would oversubscribe the cores and change which
// BLAS kernels compute a block, and with them the last bits of the result.
inline void keep_blas_single_threaded() {
    if (scipy_openblas_get_num_threads() != 1) scipy_openblas_set_num_threads(1);
}

// Row-major C = A(^T) * B(^T) + beta * C, with C of shape (m, n) and inner size k.
inline void gemm(bool trans_a, bool trans_b, int m, int n, int k, const float* a, int lda,
                 const float* b, int ldb, float beta, float* c, int ldc) {
    scipy_cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                      trans_b ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a, lda, b, ldb,
                      beta, c, ldc);
}

inline void gemm(bool trans_a, bool trans_b, int m, int n, int k, const double* a, int lda,
                 const double* b, int ldb, double beta, double* c, int ldc) {
    scipy_cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                      trans_b ? CblasTrans : CblasNoTrans, m, n, k, 1.0, a, lda, b, ldb, beta,
                      c, ldc);
}

// Row-major y = op(A) * x, A stored rows x cols (op(A) is cols x rows when transposed).
inline void gemv(bool trans, int rows, int cols, const float* a, int lda, const float* x,
                 float* y) {
    scipy_cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, rows, cols, 1.0f, a,
                      lda, x, 1, 0.0f, y, 1);
}

inline void gemv(bool trans, int rows, int cols, const double* a, int lda, const double* x,
                 double* y) {
    scipy_cblas_dgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, rows, cols, 1.0, a,
                      lda, x, 1, 0.0, y, 1);
}

}  // namespace graphnet
