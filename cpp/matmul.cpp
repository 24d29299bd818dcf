#include "matmul.h"

#include <omp.h>

#include <algorithm>
#include <atomic>

#include <type_traits>

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
    const int threads = team_size(tiles);
#pragma omp parallel num_threads(threads)
    {
        const int64_t t = omp_get_thread_num(), team = omp_get_num_threads();
        const int64_t begin = std::min(m, tiles * t / team * kTile);
        const int64_t end = std::min(m, tiles * (t + 1) / team * kTile);
        if (begin < end) skinny_gemm_rows(begin, end, n, k, a, k, b, n, c);
    }
}

// A batch times a weight matrix of at most 256 columns over a long inner dimension:
// gemm_avx512.h's kernel beats OpenBLAS there by 1.2-1.6x (docs/performance/zoo.md).
// With k = n = 100 (the course's hidden layers) OpenBLAS is 1.2x faster, and with 512
// columns 1.1x.
std::atomic<bool> avx512_enabled{true};  // set_avx512_matmul

bool use_avx512(bool trans_a, bool trans_b, int64_t n, int64_t k) {
    return avx512_enabled && !trans_a && !trans_b && k >= 256 && n <= 256 && cpu_has_avx512f();
}

// Rows of C split across the threads in whole register tiles (8 rows).
template <typename T>
void avx512_matmul(int64_t m, int64_t n, int64_t k, const T* a, const T* b, T* c) {
    constexpr int64_t kTile = 8;
    const int64_t tiles = (m + kTile - 1) / kTile;
#pragma omp parallel num_threads(team_size(tiles))
    {
        const int64_t t = omp_get_thread_num(), team = omp_get_num_threads();
        const int64_t begin = std::min(m, tiles * t / team * kTile);
        const int64_t end = std::min(m, tiles * (t + 1) / team * kTile);
        if (begin < end) gemm_rows_avx512(begin, end, n, k, a, k, b, n, c, n);
    }
}

}  // namespace

void set_avx512_matmul(bool enabled) { avx512_enabled = enabled; }
bool avx512_matmul_active() { return avx512_enabled && cpu_has_avx512f(); }

template <typename T>
void matmul(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a,
            const T* b, T* c) {
    const int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
    if (m == 1) {
        // One row (an affine layer on one sample): BLAS's gemv streams op(B) once, where
        // the blocked gemm paths pack it first (3072 x 100 float32: 12 us against 41, one
        // thread). The row of A is contiguous either way (lda is 1 when transposed). One
        // call on one thread, so the result is the same on any thread count.
        return gemv(!trans_b, static_cast<int>(trans_b ? n : k), static_cast<int>(trans_b ? k : n),
                    b, static_cast<int>(ldb), a, c);
    }
    if (use_avx512(trans_a, trans_b, n, k)) return avx512_matmul(m, n, k, a, b, c);
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
#pragma omp parallel for schedule(static) num_threads(team_size(blocks))
    for (int64_t block = 0; block < blocks; ++block) {
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
    }
}

template void matmul<float>(bool, bool, int64_t, int64_t, int64_t, const float*, const float*,
                            float*);
template void matmul<double>(bool, bool, int64_t, int64_t, int64_t, const double*,
                             const double*, double*);

}  // namespace graphnet
