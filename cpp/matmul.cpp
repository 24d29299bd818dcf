#include "matmul.h"

#include <algorithm>
#include <atomic>

#include <type_traits>
#include <vector>

#include "cache_line.h"
#include "conv_taps.h"
#include "cpu_features.h"
#include "gemm.h"
#include "gemm_avx512.h"
#include "skinny_gemm.h"
#include "threads.h"

namespace graphnet {

namespace {

// A small C over a long inner dimension, as in the affine forward (50 x 8192 times
// 8192 x 100), where the skinny kernel beats OpenBLAS 2-3x (README, C++ kernels). Below
// one register tile of columns (24) it wastes most of its lanes and OpenBLAS wins.
template <typename T>
bool use_skinny(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k) {
    return std::is_same_v<T, float> && !trans_a && !trans_b && n >= 24 &&
           k >= 8 * std::max(m, n) && cpu_has_avx2_fma();
}

void skinny_matmul(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c) {
    constexpr int64_t kTile = 4;  // rows per register tile of the kernel
    const int64_t tiles = (m + kTile - 1) / kTile;
    on_team(team_size(tiles), [&](int64_t t, int64_t team) {
        const int64_t begin = std::min(m, tiles * t / team * kTile);
        const int64_t end = std::min(m, tiles * (t + 1) / team * kTile);
        if (begin < end) skinny_gemm_rows(begin, end, n, k, a, k, b, n, c);
    });
}

// A batch times a weight matrix over 32 or more inner indices (the affine forward, the
// temporal affine): gemm_avx512.h's kernel against OpenBLAS on one thread, float32
// (float64): 256 x 3072 x 512 at 169 (78) GFLOP/s against 138 (65), 256 x 3072 x 100
// 147 (77) against 132 (70), 12800 x 128 x 65 136 (73) against 108 (48), 256 x 100 x 100
// the same (docs/performance/zoo.md). Below 32 inner indices the loads and stores of C's
// tiles weigh more than the products. The backward's products, dout w^T and x^T dout,
// take it too, their transposed operand copied into the kernel's layout as it goes:
// 1024 x 256 x 64 (a transformer's dx) at 153 GFLOP/s against OpenBLAS's 113, 64 x 1024
// x 256 (its dw) at 140 against 102, float64 64 x 100 x 3072 66 against 50.
std::atomic<bool> avx512_enabled{true};  // set_avx512_matmul

bool use_avx512(int64_t k) { return avx512_enabled && k >= 32 && cpu_has_avx512f(); }

// C (m x n) += bias, row by row: off the AVX-512 kernel, which adds it in its tiles.
template <typename T>
void add_bias(int64_t m, int64_t n, const T* bias, T* c) {
    for (int64_t i = 0; i < m; ++i) {
        T* row = c + i * n;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) row[j] += bias[j];
    }
}

// C split across the threads in whole register tiles of rows (8), or when there are
// fewer of those than threads, in blocks of 48 columns (one panel of the kernel in
// float32, two in float64). Each element's sum runs over k in order whichever block
// computes it, so the result is the same on any thread count.
// dout w^T at a batch of at most 64 rows, of a layer with more inputs than that, runs as
// C^T = w dout^T (gemm_columns_through_transpose_avx512), C's columns split across the
// threads in blocks of 256 (C^T's rows). One thread, float32 GFLOP/s, in turns with the
// B^T panels' path (benchmarks/bench_products.py): 16 x 256 x 4096 101-103 against
// 66-70, 16 x 100 x 3072 86-89 against 64, 16 x 100 x 100 77-79 against 55, 64 x 512 x
// 3072 99-100 against 88-93, 64 x 256 x 4096 91-100 against 89-95, 64 x 100 x 3072 90
// either way; float64 16 x 256 x 4096 38-50 against 32-34. At 128 rows it lost (128 x
// 100 x 3072: 73-87 against 100).
constexpr int64_t kMaxRowsThroughTranspose = 64;
constexpr int64_t kColumnsThroughTranspose = 256;

bool through_transpose(GemmTransposes transposes, int64_t m, int64_t n, bool biased) {
    return transposes.b && !transposes.a && !biased && m <= kMaxRowsThroughTranspose && n > m;
}

template <typename T>
void avx512_matmul_through_transpose(int64_t m, int64_t n, int64_t k, const T* a, const T* b,
                                     T* c) {
    const int64_t pieces = (n + kColumnsThroughTranspose - 1) / kColumnsThroughTranspose;
    on_team(team_size(pieces), [&](int64_t t, int64_t team) {
        const int64_t begin = std::min(n, pieces * t / team * kColumnsThroughTranspose);
        const int64_t end = std::min(n, pieces * (t + 1) / team * kColumnsThroughTranspose);
        if (begin >= end) return;
        KeptBuffer scratch(kGemmTransposedAScratch * int64_t(sizeof(T) / sizeof(float)));
        gemm_columns_through_transpose_avx512(begin, end, m, k, a, k, b, k, c, n,
                                              reinterpret_cast<T*>(scratch.get()));
    });
}

template <typename T>
void avx512_matmul(GemmTransposes transposes, int64_t m, int64_t n, int64_t k, const T* a,
                   const T* b, T* c, const T* bias) {
    if (through_transpose(transposes, m, n, bias != nullptr)) {
        return avx512_matmul_through_transpose(m, n, k, a, b, c);
    }
    constexpr int64_t kTile = 8, kColumns = 48;
    const int64_t lda = transposes.a ? m : k, ldb = transposes.b ? k : n;
    const int64_t tiles = (m + kTile - 1) / kTile, panels = (n + kColumns - 1) / kColumns;
    const bool split_rows = tiles >= num_threads() || tiles >= panels;
    const int64_t pieces = split_rows ? tiles : panels;
    on_team(team_size(pieces), [&](int64_t t, int64_t team) {
        const int64_t first = pieces * t / team, last = pieces * (t + 1) / team;
        // A transposed A is packed a block at a time into the thread's kept scratch.
        KeptBuffer scratch;
        if (transposes.a) {
            scratch = KeptBuffer(kGemmTransposedAScratch * int64_t(sizeof(T) / sizeof(float)));
        }
        T* a_scratch = reinterpret_cast<T*>(scratch.get());
        if (split_rows) {
            const int64_t begin = std::min(m, first * kTile), end = std::min(m, last * kTile);
            if (begin < end) {
                gemm_rows_avx512(begin, end, n, k, a, lda, b, ldb, c, n, false, transposes,
                                 a_scratch, bias);
            }
        } else {
            const int64_t begin = std::min(n, first * kColumns);
            const int64_t end = std::min(n, last * kColumns);
            if (begin < end) {
                const T* b_columns = transposes.b ? b + begin * ldb : b + begin;
                gemm_rows_avx512(0, m, end - begin, k, a, lda, b_columns, ldb, c + begin, n,
                                 false, transposes, a_scratch, bias ? bias + begin : nullptr);
            }
        }
    });
}

}  // namespace

void set_avx512_matmul(bool enabled) { avx512_enabled = enabled; }

template <typename T>
void gemm_block(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
                int64_t ldb, bool accumulate, T* c, int64_t ldc) {
    if (avx512_matmul_active()) {
        return gemm_rows_avx512(0, m, n, k, a, lda, b, ldb, c, ldc, accumulate);
    }
    gemm(false, false, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), a,
         static_cast<int>(lda), b, static_cast<int>(ldb), T(accumulate ? 1 : 0), c,
         static_cast<int>(ldc));
}

// Per pass, batch 64, one thread, CPU time, against OpenBLAS's sgemm / dgemm: the 1x1
// conv 64 -> 32 @32 dw 6.0 -> 3.5 ms (float64 10.9 -> 6.8), @16 1.1 -> 0.8 (3.1 -> 2.0);
// 128 -> 128 @8 1.6 -> 1.4. On 16 rows (a 1x1 conv of 16 channels) the panel copies weigh
// more than the tiles that read them: 16 -> 48 @32 1.9 -> 2.2 ms, so OpenBLAS keeps those.
// The input gradient's w^T dout gained nothing there (0.9-1.1x): not taken.
// With 16-31 rows and 64 or more columns over 1024 or more inner indices (the dw^T of a
// 1x1 conv from 16 channels to 64 filters on 32 x 32 images), where OpenBLAS's product
// falls to a third of its speed, C^T's product B A^T takes the AVX-512 kernel on its n
// rows instead, into a scratch then added to C transposed. One product, one thread,
// GFLOP/s against OpenBLAS's A B^T (m x n over k): 16 x 64 over 1024 89 / 36, over 4096
// 98 / 35; 16 x 256 over 1024 107 / 35; 24 x 64 over 1024 74 / 46; but over 256-512
// 89-93 / 94-102 (16 x 64), and 8 rows 43-55 / 70-107, 16 x 32 73-78 / 85-98 (k <= 1024):
// OpenBLAS's. Per pass, one thread, the builds in turns in one process: 1x1 16 -> 64 @32
// dw at batch 16 1.02 -> 0.45 ms, at 64 4.68 -> 2.14; on 256 positions (@16) 16 -> 64
// lost 7-9% this way, 20 -> 64 @8 12%.
constexpr int64_t kMinTransposedRows = 16;
constexpr int64_t kMinTransposedColumns = 64;
constexpr int64_t kMinTransposedInner = 1024;

template <typename T>
void gemm_add_transposed_b(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
                           int64_t ldb, T* c, int64_t ldc) {
    constexpr int64_t kMinRows = 32;
    if (m >= kMinRows && use_avx512(k)) {
        return gemm_rows_avx512(0, m, n, k, a, lda, b, ldb, c, ldc, /*accumulate=*/true,
                                GemmTransposes{false, true});
    }
    if (m >= kMinTransposedRows && n >= kMinTransposedColumns && k >= kMinTransposedInner &&
        use_avx512(k)) {
        KeptBuffer scratch(checked_mul(n, m, "gemm scratch") * int64_t(sizeof(T) / sizeof(float)));
        T* c_t = reinterpret_cast<T*>(scratch.get());  // n x m
        gemm_rows_avx512(0, n, m, k, b, ldb, a, lda, c_t, m, /*accumulate=*/false,
                         GemmTransposes{false, true});
        for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) c[i * ldc + j] += c_t[j * m + i];
        }
        return;
    }
    gemm(false, true, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), a,
         static_cast<int>(lda), b, static_cast<int>(ldb), T(1), c, static_cast<int>(ldc));
}

template void gemm_add_transposed_b(int64_t, int64_t, int64_t, const float*, int64_t,
                                    const float*, int64_t, float*, int64_t);
template void gemm_add_transposed_b(int64_t, int64_t, int64_t, const double*, int64_t,
                                    const double*, int64_t, double*, int64_t);

template void gemm_block(int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                         int64_t, bool, float*, int64_t);
template void gemm_block(int64_t, int64_t, int64_t, const double*, int64_t, const double*,
                         int64_t, bool, double*, int64_t);
bool avx512_matmul_active() { return avx512_enabled && cpu_has_avx512f(); }

namespace {

// matmul off the AVX-512 kernel, without the bias.
template <typename T>
void unbiased_matmul(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a,
                     const T* b, T* c) {
    const int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
    if (m == 1) {
        // One row (an affine layer on one sample): a vector product streams op(B) once,
        // where the blocked gemm paths pack it first (3072 x 100 float32: 12 us against
        // 41, one thread): B's rows times the row, ours (gemm_avx512.h), else BLAS's
        // gemv. The row of A is contiguous either way (lda is 1 when transposed). One
        // call on one thread, so the result is the same on any thread count.
        if (!trans_b && avx512_matmul_active()) {
            return gemm_few_rows_avx512(1, n, k, a, b, ldb, c);
        }
        return gemv(!trans_b, static_cast<int>(trans_b ? n : k), static_cast<int>(trans_b ? k : n),
                    b, static_cast<int>(ldb), a, c);
    }
    if constexpr (std::is_same_v<T, float>) {
        if (use_skinny<T>(trans_a, trans_b, m, n, k)) return skinny_matmul(m, n, k, a, b, c);
    }
    const bool split_rows = m >= n;
    const int64_t extent = split_rows ? m : n;
    // Fixed blocks of rows or columns, whatever the thread count: BLAS computes the
    // ragged edge of a block with other kernels than its middle, so blocks that moved
    // with the thread count would change the last bits of the result. Each block packs
    // all of the other operand again, so large products take a quarter of the extent,
    // 256 to 1024 (rounded to 64): a 3200 x 1000 x 512 product, one thread, ran at 94
    // GFLOP/s in blocks of 64 and 117 in blocks of 256; x @ w and dout @ w^T of that size
    // took 19.2 and 21.0 ms in blocks of 256, 18.1 and 18.8 in the four of 832.
    const int64_t kBlock =
        extent >= 512 ? std::clamp((extent + 255) / 256 * 64, int64_t(256), int64_t(1024)) : 64;
    const int64_t blocks = (extent + kBlock - 1) / kBlock;
    parallel_for(team_size(blocks), blocks, [&](int64_t block) {
        const int64_t lo = block * kBlock, size = std::min(kBlock, extent - lo);
        if (split_rows) {  // rows lo.. of C come from rows lo.. of op(A)
            const T* a_rows = trans_a ? a + lo : a + lo * lda;
            gemm(trans_a, trans_b, static_cast<int>(size), static_cast<int>(n),
                 static_cast<int>(k), a_rows, static_cast<int>(lda), b, static_cast<int>(ldb),
                 T(0), c + lo * n, static_cast<int>(n));
        } else {  // columns lo.. of C come from columns lo.. of op(B)
            const T* b_cols = trans_b ? b + lo * ldb : b + lo;
            gemm(trans_a, trans_b, static_cast<int>(m), static_cast<int>(size),
                 static_cast<int>(k), a, static_cast<int>(lda), b_cols, static_cast<int>(ldb),
                 T(0), c + lo, static_cast<int>(n));
        }
    });
}

}  // namespace

// A few samples through an affine layer whose weights B are past L1 (32 KB) take the
// row kernel, B streamed once for them all, where the tiles pack it panel by panel (or
// read it a panel at a time) however few the rows; each row gets the bits it gets alone.
// One product, one thread, CPU time, us, min of 7 x 200 calls, the tiles against this
// (A m x k, B k x n): float32 m = 2, 3072 x 512 215-263 / 80-87; m = 4, 3072 x 512 248-300
// / 146-160; m = 2, 3072 x 100 25.6-25.9 / 19.6-20.1; m = 3, 512 x 64 3.0 / 2.5; float64
// m = 2, 3072 x 512 598-685 / 203-311; m = 2, 3072 x 100 43.4-44.4 / 30.4-32.0. A second
// pass over B lost to the tiles on narrow rows (m = 4, 3072 x 100 float32: 38.5-39.3
// against 28.5-28.8) and on a few inner indices (m = 8, 32 x 512 float64: 12-13 against
// 8.3-8.9); a B within L1 they read from there at less cost (m = 3, 100 x 10 float32: 0.8
// against 0.6). One call on one thread: the same bits on any thread count.
constexpr int64_t kFewRowsMinBytes = 32 * 1024;

template <typename T>
void matmul(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a,
            const T* b, T* c, const T* bias) {
    if (!trans_a && !trans_b && m > 1 && avx512_matmul_active() &&
        k * n >= kFewRowsMinBytes / int64_t(sizeof(T)) &&
        m <= gemm_few_rows_per_pass_avx512(n, a)) {
        gemm_few_rows_avx512(m, n, k, a, b, n, c);
        if (bias) add_bias(m, n, bias, c);
        return;
    }
    if (use_avx512(k) && m > 1) {
        return avx512_matmul(GemmTransposes{trans_a, trans_b}, m, n, k, a, b, c, bias);
    }
    unbiased_matmul(trans_a, trans_b, m, n, k, a, b, c);
    if (bias) add_bias(m, n, bias, c);
}

namespace {

// Where matrix `index` (counted row-major over the batch) of a stack starts, in elements.
int64_t matrix_offset(const Shape& batch, const Shape& batch_strides, int64_t index) {
    int64_t offset = 0;
    for (size_t axis = batch.size(); axis-- > 0;) {
        offset += index % batch[axis] * batch_strides[axis];
        index /= batch[axis];
    }
    return offset;
}

// Are a stack's matrices stored as matmul reads them, row-major and dense (numpy's
// C-contiguous: the stride of an axis of one entry does not matter)?
template <typename T>
bool row_major(const MatrixStack<T>& s) {
    return (s.rows <= 1 || s.row_stride == s.columns) && (s.columns <= 1 || s.column_stride == 1);
}

// Matrix `index` of a stack, row-major: where it lies, or copied into `copy` (rows x
// columns) when it lies otherwise, as the binding of matmul copies such a matrix.
template <typename T>
const T* row_major_matrix(const Shape& batch, const MatrixStack<T>& s, int64_t index, T* copy) {
    const T* first = s.data + matrix_offset(batch, s.batch_strides, index);
    if (row_major(s)) return first;
    for (int64_t r = 0; r < s.rows; ++r) {
        for (int64_t col = 0; col < s.columns; ++col) {
            copy[r * s.columns + col] = first[r * s.row_stride + col * s.column_stride];
        }
    }
    return copy;
}

// The index (row-major over `batch`) of the product number `r` of those summed into
// result `j` of `summed_to` (batch's rank, 1 on the axes summed over): j's digits on the
// kept axes, r's on the summed ones, so that r counts them in the batch's order.
int64_t summed_product(const Shape& batch, const Shape& summed_to, int64_t j, int64_t r) {
    int64_t index = 0, pitch = 1;
    for (size_t axis = batch.size(); axis-- > 0;) {
        int64_t& digits = summed_to[axis] == batch[axis] ? j : r;
        index += digits % batch[axis] * pitch;
        digits /= batch[axis];
        pitch *= batch[axis];
    }
    return index;
}

// sum (m x n) += product, the first time (second) from +0 as numpy's sums start: a -0
// there becomes +0, and nothing else changes.
template <typename T>
void add_product(int64_t size, const T* product, bool second, T* sum) {
    if (second) {
#pragma omp simd
        for (int64_t x = 0; x < size; ++x) sum[x] = (sum[x] + T(0)) + product[x];
        return;
    }
#pragma omp simd
    for (int64_t x = 0; x < size; ++x) sum[x] += product[x];
}

}  // namespace

template <typename T>
void batched_matmul(bool trans_a, bool trans_b, const Shape& batch, const MatrixStack<T>& a,
                    const MatrixStack<T>& b, const Shape& summed_to, T* c) {
    const int64_t m = trans_a ? a.columns : a.rows, k = trans_a ? a.rows : a.columns;
    const int64_t n = trans_b ? b.rows : b.columns;
    int64_t count = 1, results = 1;  // the caller allocated C: the results fit
    for (size_t axis = 0; axis < batch.size(); ++axis) {
        count *= batch[axis];
        results *= summed_to[axis];
    }
    if (results == 0 || m == 0 || n == 0) return;
    if (count == 0 || k == 0) return std::fill(c, c + results * m * n, T(0));  // empty sums
    const int64_t summed = count / results;
    // Many results go whole to the threads, each product on its thread alone; fewer than
    // threads run one after another, each product on the whole team.
    const int team = results >= num_threads() ? team_size(results) : 1;
    // Each thread's room for a matrix stored otherwise than row-major and for a product to
    // add to a sum, allocated here: an allocation that failed inside the team would end
    // the process, not raise.
    const int64_t a_room = row_major(a) ? 0 : m * k, b_room = row_major(b) ? 0 : k * n;
    const int64_t product_room = summed > 1 ? m * n : 0;
    const int64_t room = a_room + b_room + product_room;
    std::vector<T> copies(static_cast<size_t>(team * room));
    const auto products = [&](int64_t t, int64_t threads) {  // thread t's share
        T* a_copy = copies.data() + t * room;
        T* b_copy = a_copy + a_room;
        T* product = b_copy + b_room;
        for (int64_t j = results * t / threads; j < results * (t + 1) / threads; ++j) {
            T* sum = c + j * m * n;
            for (int64_t r = 0; r < summed; ++r) {
                const int64_t i = summed_product(batch, summed_to, j, r);
                matmul(trans_a, trans_b, m, n, k, row_major_matrix(batch, a, i, a_copy),
                       row_major_matrix(batch, b, i, b_copy), r == 0 ? sum : product);
                if (r > 0) add_product(m * n, product, r == 1, sum);
            }
        }
    };
    if (team == 1) return products(0, 1);
    on_team(team, [&](int64_t t, int64_t threads) {
        const OneThreadHere alone;  // no team of its own under each product
        products(t, threads);
    });
}

template void batched_matmul(bool, bool, const Shape&, const MatrixStack<float>&,
                             const MatrixStack<float>&, const Shape&, float*);
template void batched_matmul(bool, bool, const Shape&, const MatrixStack<double>&,
                             const MatrixStack<double>&, const Shape&, double*);

namespace {

// sums[j] = +0 + a[0][j] + a[1][j] + ... for the `width` columns at a (rows lda apart): the
// order numpy's sum(axis=0) adds in. The sums of kRegisterColumns columns at a time stay
// in registers down all the rows, where a loop over each row into sums[] loaded and stored
// every sum once a row (float64 one thread, us: 512 x 256 22-35 -> 19-26, 256 x 4096
// 229-244 -> 176-224; 128 bytes of columns a pass instead of 256: 334-345 there).
template <typename T>
void column_block_sums(int64_t m, int64_t width, const T* a, int64_t lda, T* sums) {
    constexpr int64_t kRegisterColumns = 64 / int64_t(sizeof(T)) * 4;  // 256 bytes
    int64_t lo = 0;
    for (; lo + kRegisterColumns <= width; lo += kRegisterColumns) {
        T acc[kRegisterColumns] = {};
        for (int64_t i = 0; i < m; ++i) {
            const T* row = a + i * lda + lo;
#pragma GCC unroll 64
            for (int64_t j = 0; j < kRegisterColumns; ++j) acc[j] += row[j];
        }
        std::copy(acc, acc + kRegisterColumns, sums + lo);
    }
    if (lo == width) return;
    std::fill(sums + lo, sums + width, T(0));
    for (int64_t i = 0; i < m; ++i) {
        const T* row = a + i * lda;
#pragma omp simd
        for (int64_t j = lo; j < width; ++j) sums[j] += row[j];
    }
}

}  // namespace

template <typename T>
void column_sums(int64_t m, int64_t n, const T* a, T* out) {
    // Blocks of columns, a thread's piece each; every column is summed alone, down its
    // rows in order, so the result is the same on any thread count.
    constexpr int64_t kColumns = 512;
    const int64_t blocks = (n + kColumns - 1) / kColumns;
    parallel_for(team_size(blocks), blocks, [&](int64_t block) {
        const int64_t lo = block * kColumns, width = std::min(kColumns, n - lo);
        if constexpr (std::is_same_v<T, float>) {
            // Four vectors of sums a pass (float32 one thread, us: 512 x 256 16-19 -> 7.0-7.3,
            // 512 x 64 4.3-5.5 -> 1.5, 2048 x 256 48-74 -> 34; the portable loop below 7.3-7.6,
            // 2.0, 42).
            if (avx512_matmul_active()) {
                std::fill(out + lo, out + lo + width, 0.0f);
                return column_sums_avx512(m, width, a + lo, n, out + lo);
            }
        }
        column_block_sums(m, width, a + lo, n, out + lo);
    });
}

template void column_sums(int64_t, int64_t, const float*, float*);
template void column_sums(int64_t, int64_t, const double*, double*);

template void matmul<float>(bool, bool, int64_t, int64_t, int64_t, const float*, const float*,
                            float*, const float*);
template void matmul<double>(bool, bool, int64_t, int64_t, int64_t, const double*,
                             const double*, double*, const double*);

}  // namespace graphnet
