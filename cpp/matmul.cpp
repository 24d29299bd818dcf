#include "matmul.h"

#include <algorithm>

#include "gemm.h"
#include "threads.h"

namespace graphnet {

template <typename T>
void matmul(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a,
            const T* b, T* c) {
    const int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
    const bool split_rows = m >= n;
    const int64_t extent = split_rows ? m : n;
    // Fixed blocks of 64 rows or columns, whatever the thread count: BLAS computes the
    // ragged edge of a block with other kernels than its middle, so blocks that moved
    // with the thread count would change the last bits of the result.
    constexpr int64_t kBlock = 64;
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
