// C = op(A) * op(B) on AVX-512 for the affine layers' products each way, float32 and
// float64: a batch of rows times a weight matrix of any width over 32 or more inner
// indices (the course nets' 3072 features times 100 hidden units, fc_dropout's 512, the
// temporal affine's 128 x 65), its gradients dout w^T and x^T dout, and the Winograd
// convolution's per-point products.
//
// One thread, 256 x 3072 x 100: OpenBLAS about 130 GFLOP/s in float32 (70 in float64),
// PyTorch's MKL 150 (80), this kernel 147 (77); 256 x 3072 x 512: OpenBLAS 138 (65), MKL
// 165-177 (79-84), this kernel 169 (78). B is read in column panels (256 inner indices x
// 48 floats or 24 doubles) that stay in L1 while the row tiles of A pass over them. A
// panel is copied side by side first when B's rows are a multiple of 2 KB apart (read in
// place, its rows share a few L1 sets), or for 64 rows or more of A and 128 inner indices
// (the copy is then cheap against the tiles that read it); otherwise it is read in place.
// A transposed B (dout w^T) is copied panel by panel, in 16 x 16 (8 x 8) blocks
// transposed in registers; a transposed A (x^T dout) is read in place where one or two
// panels read it, and copied tile by tile, side by side, for more (read in place, its
// rows are m apart and share a few L1 sets, read again from L2 for every panel).
// The last panel's few columns past its whole vectors (65 = 4 vectors + 1) are summed a
// vector of rows at a time instead, A's column read in place when A is transposed (x^T
// dout) or from its rows transposed first (one float32 column), in the same order of
// each sum: the same bits as in a vector of columns.
// Measured and dropped: copying A's tiles of an untransposed A (slower), a 12-row x
// 2-vector tile (slower), 128-deep panels (a few percent slower).
//
// Like panel_gemm_avx512.h: compiled for AVX-512F, no library headers, call only when
// cpu_has_avx512f().
#pragma once

#include <cstdint>

namespace graphnet {

// Which operands of a product are stored transposed: A as k x m (op(A) = A^T), B as
// n x k (op(B) = B^T), the weight gradient's x^T dout and the input gradient's dout w^T.
struct GemmTransposes {
    bool a = false;
    bool b = false;
};

// Elements of the scratch a product with a transposed A packs A's rows into.
constexpr int64_t kGemmTransposedAScratch = 256 * 256;

// Rows [row_begin, row_end) of C (leading dimension ldc) = op(A) (m x k) * op(B) (k x n),
// all row-major with leading dimensions lda and ldb as stored, k > 0; with `accumulate`,
// C += op(A) * op(B) (a product over a block of the inner indices added to the blocks
// before it). A transposed A needs `a_scratch` of kGemmTransposedAScratch elements. With a
// `bias` (n entries), each element of C is its whole sum rounded plus the bias (numpy's
// `c += bias` after the product), added as the tile is stored, while it is in registers.
// Each element's sum runs over k in order (after C's value, when accumulating) whatever the
// rows asked for, whether its panel was copied and whether an operand was transposed, so
// splitting the rows (or, through b and c, the columns) across threads does not change
// the result.
void gemm_rows_avx512(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                      const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                      int64_t ldc, bool accumulate = false, GemmTransposes transposes = {},
                      float* a_scratch = nullptr, const float* bias = nullptr);
void gemm_rows_avx512(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                      const double* a, int64_t lda, const double* b, int64_t ldb, double* c,
                      int64_t ldc, bool accumulate = false, GemmTransposes transposes = {},
                      double* a_scratch = nullptr, const double* bias = nullptr);

// Columns [col_begin, col_end) of C (m x n, leading dimension ldc) = A (m x k) * B^T, B
// stored n x k (lda and ldb as stored), for C much wider than tall (dout w^T of a layer
// with more outputs than the batch has rows): computed as C^T = B A^T, B's rows read in
// place by the tiles (8 of them at a time, where C = A B^T would copy and transpose 48
// of them per panel), A^T copied once per panel, a block of C^T at a time into `scratch`
// (kGemmTransposedAScratch elements; m <= kGemmTransposedAScratch / 16) and then
// transposed into C's columns. Each element's sum runs over k in order: the same bits as
// gemm_rows_avx512's.
void gemm_columns_through_transpose_avx512(int64_t col_begin, int64_t col_end, int64_t m,
                                           int64_t k, const float* a, int64_t lda,
                                           const float* b, int64_t ldb, float* c, int64_t ldc,
                                           float* scratch);
void gemm_columns_through_transpose_avx512(int64_t col_begin, int64_t col_end, int64_t m,
                                           int64_t k, const double* a, int64_t lda,
                                           const double* b, int64_t ldb, double* c,
                                           int64_t ldc, double* scratch);

// A's inner indices in groups: A(i, kk) at a[i * lda + (kk / group) * outer + (kk % group) *
// inner] (group >= 1; inner may be negative). The pad-skipping conv (conv_padskip.h) reads
// its weights in place so: the channels (outer) of a kernel row's taps (inner), turned by
// 180 degrees (inner -1) for dx.
struct InnerGroups {
    int64_t group, outer, inner;
};

// gemm_rows_avx512 with A's inner indices in groups; the same order of each element's sum.
void gemm_rows_grouped_avx512(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                              const float* a, int64_t lda, InnerGroups groups, const float* b,
                              int64_t ldb, float* c, int64_t ldc, bool accumulate);
void gemm_rows_grouped_avx512(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                              const double* a, int64_t lda, InnerGroups groups, const double* b,
                              int64_t ldb, double* c, int64_t ldc, bool accumulate);

// Y (m x n) = X (m x k, rows side by side) * B (k x n, rows ldb apart): a few samples
// through an affine layer, B read once for up to four rows of X. Rows of up to 16 vectors
// (256 float32, 128 float64) are summed whole in registers in blocks of rows while B
// streams by, the same B read the other way on the next pass (what L2 kept of it first;
// the same bits); wider ones eight rows at a time into Y (in L1). Each row of Y gets the
// bits it gets alone (m = 1), whatever m. One thread, one row, against OpenBLAS's gemv in
// turns in one process (`python benchmarks/bench_row_product.py --blas`, medians of 5):
// float32 3072 x 100 1.63x its speed, 3072 x 256 and 4096 x 256 1.28-1.29x, 8192 x 10
// 2.2x (sgemv's one FMA chain), 3072 x 512, 512 x 512 and 300 x 700 0.99-1.00x (both at
// the cache's read rate); float64 3072 x 100 1.57x, 4096 x 256 1.26x, 8192 x 10 2.1x,
// 3072 x 512 1.09x, 512 x 512 1.01x. See docs/performance/overhead.md.
// More rows than gemm_few_rows_per_pass_avx512 (1 to 4: as many as the sums of a row of n
// fit in registers, 4 for rows too wide for them) read B again for each pass.
void gemm_few_rows_avx512(int64_t m, int64_t n, int64_t k, const float* x, const float* b,
                          int64_t ldb, float* y);
void gemm_few_rows_avx512(int64_t m, int64_t n, int64_t k, const double* x, const double* b,
                          int64_t ldb, double* y);
int64_t gemm_few_rows_per_pass_avx512(int64_t n, const float*);
int64_t gemm_few_rows_per_pass_avx512(int64_t n, const double*);

}  // namespace graphnet
