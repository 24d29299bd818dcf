#include "attention.h"

#include <omp.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "attention_loops.h"
#include "cpu_features.h"
#include "matmul.h"
#include "recurrent.h"
#include "softmax_rows.h"
#include "threads.h"

namespace graphnet {

namespace {

template <typename T>
using PairProduct = void (*)(int64_t, int64_t, int64_t, const T*, int64_t, bool, const T*,
                             int64_t, T, T*, int64_t);

template <typename T>
void pair_product_portable(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
                           bool a_transposed, const T* b, int64_t ldb, T alpha, T* c,
                           int64_t ldc) {
    pair_product_loops<16>(m, n, k, PairOperand<T>{a, lda, a_transposed}, b, ldb, alpha, c, ldc);
}

// The AVX-512 products where matmul's are on (matmul.h's switch, which the tests flip to
// compare them with the AVX2 ones).
template <typename T>
PairProduct<T> pair_product() {
    if (avx512_matmul_active()) return pair_product_avx512<T>;
    if (cpu_has_avx2_fma()) return pair_product_avx2<T>;
    return pair_product_portable<T>;
}

// dst (cols x rows) = src (rows x cols, rows `stride` apart)ᵀ: the keys (values) as the
// second operand of a product over the features.
template <typename T>
void transpose_into(int64_t rows, int64_t cols, const T* src, int64_t stride, T* dst) {
    for (int64_t c = 0; c < cols; ++c) {
        for (int64_t r = 0; r < rows; ++r) dst[c * rows + r] = src[r * stride + c];
    }
}

// src (rows x cols, rows `stride` apart) with its rows next to each other: src itself, or
// its copy in dst. The second operand of a product reads its rows over and over; a head
// split's view has them heads x d apart, and at 2 KB or more apart they fall into the
// same few sets of the L1 cache and evict each other (the values of 128 keys x 64
// features, 8 heads: the product 1.7x slower in place).
template <typename T>
const T* rows_together(int64_t rows, int64_t cols, const T* src, int64_t stride, T* dst) {
    if (stride == cols) return src;
    for (int64_t r = 0; r < rows; ++r) {
        std::copy(src + r * stride, src + r * stride + cols, dst + r * cols);
    }
    return dst;
}

// The pairs split into contiguous ranges, one per thread, each thread with `scratch`
// elements of its own.
template <typename T, typename Body>
void for_pairs(int64_t pairs, int64_t scratch, Body body) {
#pragma omp parallel num_threads(team_size(pairs))
    {
        const int64_t t = omp_get_thread_num(), team = omp_get_num_threads();
        std::vector<T> own(scratch);
        for (int64_t b = pairs * t / team; b < pairs * (t + 1) / team; ++b) body(b, own.data());
    }
}

enum class ExpLanes { kPortable, kAvx2, kAvx512 };

// Where the exps run: the AVX-512 ones where the CPU has them and the activations use them
// (recurrent.h's switches, which the tests flip to compare the paths).
ExpLanes exp_lanes() {
    if (!avx2_activations_active()) return ExpLanes::kPortable;
    return avx512_activations_active() ? ExpLanes::kAvx512 : ExpLanes::kAvx2;
}

// The softmax of each row of w (S x L, pair b's scores) in place, the keys the mask refuses
// set to -inf first; a row with no allowed key becomes zeros. Each row shifted by its
// maximum, then the exps of all rows in one pass (a row at a time, the exp's latency
// chain would not overlap across a short row's few vectors: 40% of the forward at
// L = 32), then each row scaled by its sum's reciprocal.
template <typename T>
void softmax_rows(int64_t S, int64_t L, const AttentionMask& mask, int64_t b, ExpLanes lanes,
                  T* w) {
    constexpr T kMinusInf = -std::numeric_limits<T>::infinity();
    for (int64_t i = 0; i < S; ++i) {
        T* row = w + i * L;
        if (mask.base) {
            const uint8_t* allowed = mask.base + mask.offset[b] + i * mask.row_stride;
            for (int64_t l = 0; l < L; ++l) {
                if (!allowed[l * mask.col_stride]) row[l] = kMinusInf;
            }
        }
        T shift = row_max(L, row);
        if (shift == kMinusInf) shift = 0;  // no allowed key: e^-inf = 0 throughout
#pragma omp simd
        for (int64_t l = 0; l < L; ++l) row[l] -= shift;
    }
    if (lanes == ExpLanes::kAvx512) {
        exp_in_place_avx512(S * L, w);
    } else {
        exp_shifted_sum(S * L, w, T(0), w, lanes == ExpLanes::kAvx2);
    }
    for (int64_t i = 0; i < S; ++i) {
        T* row = w + i * L;
        T sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t l = 0; l < L; ++l) sum += row[l];
        const T inverse = sum > 0 ? T(1) / sum : T(0);  // a NaN row stays NaN
#pragma omp simd
        for (int64_t l = 0; l < L; ++l) row[l] *= inverse;
    }
}

}  // namespace

template <typename T>
void attention_forward(const AttentionShape& s, T scale, PairMatrices<const T> q,
                       PairMatrices<const T> k, PairMatrices<const T> v,
                       const AttentionMask& mask, T* weights, PairMatrices<T> out) {
    const PairProduct<T> product = pair_product<T>();
    const ExpLanes lanes = exp_lanes();
    for_pairs<T>(s.pairs, s.d * s.L + s.L * s.dv, [&](int64_t b, T* scratch) {
        T *k_t = scratch, *w = weights + b * s.S * s.L;
        transpose_into(s.L, s.d, k.base + k.offset[b], k.row_stride, k_t);
        product(s.S, s.L, s.d, q.base + q.offset[b], q.row_stride, false, k_t, s.L, scale, w,
                s.L);
        softmax_rows(s.S, s.L, mask, b, lanes, w);
        const T* vb = rows_together(s.L, s.dv, v.base + v.offset[b], v.row_stride,
                                    scratch + s.d * s.L);
        product(s.S, s.dv, s.L, w, s.L, false, vb, s.dv, T(1), out.base + out.offset[b],
                out.row_stride);
    });
}

template <typename T>
void attention_backward(const AttentionShape& s, T scale, PairMatrices<const T> q,
                        PairMatrices<const T> k, PairMatrices<const T> v, const T* weights,
                        PairMatrices<const T> dout, PairMatrices<T> dq, PairMatrices<T> dk,
                        PairMatrices<T> dv) {
    const PairProduct<T> product = pair_product<T>();
    const int64_t scratch = s.L * s.dv + s.S * s.L + s.L * s.d + s.S * s.d + s.S * s.dv;
    for_pairs<T>(s.pairs, scratch, [&](int64_t b, T* v_t) {
        T* dscores = v_t + s.L * s.dv;
        T *k_rows = dscores + s.S * s.L, *q_rows = k_rows + s.L * s.d;
        T* dout_rows = q_rows + s.S * s.d;
        const T* w = weights + b * s.S * s.L;
        const T* db = rows_together(s.S, s.dv, dout.base + dout.offset[b], dout.row_stride,
                                    dout_rows);
        transpose_into(s.L, s.dv, v.base + v.offset[b], v.row_stride, v_t);
        product(s.S, s.L, s.dv, db, s.dv, false, v_t, s.L, T(1), dscores, s.L);
        // The softmax's backward: dscores = w (dw - sum(dw w)) scale; masked weights are 0.
        for (int64_t i = 0; i < s.S; ++i) {
            const T* wi = w + i * s.L;
            T* g = dscores + i * s.L;
            T total = 0;
#pragma omp simd reduction(+ : total)
            for (int64_t l = 0; l < s.L; ++l) total += g[l] * wi[l];
#pragma omp simd
            for (int64_t l = 0; l < s.L; ++l) g[l] = wi[l] * (g[l] - total) * scale;
        }
        const T* kb = rows_together(s.L, s.d, k.base + k.offset[b], k.row_stride, k_rows);
        const T* qb = rows_together(s.S, s.d, q.base + q.offset[b], q.row_stride, q_rows);
        product(s.S, s.d, s.L, dscores, s.L, false, kb, s.d, T(1), dq.base + dq.offset[b],
                dq.row_stride);
        product(s.L, s.d, s.S, dscores, s.L, true, qb, s.d, T(1), dk.base + dk.offset[b],
                dk.row_stride);
        product(s.L, s.dv, s.S, w, s.L, true, db, s.dv, T(1), dv.base + dv.offset[b],
                dv.row_stride);
    });
}

#define GRAPHNET_ATTENTION(T)                                                                  \
    template void attention_forward<T>(const AttentionShape&, T, PairMatrices<const T>,       \
                                       PairMatrices<const T>, PairMatrices<const T>,          \
                                       const AttentionMask&, T*, PairMatrices<T>);             \
    template void attention_backward<T>(const AttentionShape&, T, PairMatrices<const T>,      \
                                        PairMatrices<const T>, PairMatrices<const T>,         \
                                        const T*, PairMatrices<const T>, PairMatrices<T>,     \
                                        PairMatrices<T>, PairMatrices<T>);
GRAPHNET_ATTENTION(float)
GRAPHNET_ATTENTION(double)
#undef GRAPHNET_ATTENTION

}  // namespace graphnet
