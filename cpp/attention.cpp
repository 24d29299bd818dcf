#include "attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>

#include "attention_loops.h"
#include "conv_taps.h"
#include "cpu_features.h"
#include "matmul.h"
#include "recurrent.h"
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

// dst (cols x rows) = src (rows x cols, rows `stride` apart)ᵀ: the queries (the upstream
// gradient) as the second operand of a product over the features. float32 with the
// AVX-512 products goes by 16 x 16 blocks in registers (conv_taps.h's, a copy: the same
// bits); one float at a time it was 8% of a transformer's attention forward (4 heads of
// 16, 32 steps: perf).
template <typename T>
void transpose_into(int64_t rows, int64_t cols, const T* src, int64_t stride, T* dst) {
    if constexpr (std::is_same_v<T, float>) {
        if (avx512_matmul_active()) return tap_transpose_avx512(rows, cols, src, stride, dst, rows);
    }
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

// A head split's pairs of one sample lie side by side in the same rows: pair b + j's matrix
// starts j * cols after pair b's, the rows heads x cols apart, so a pair's rows are short
// pieces of many rows. Read in place from memory (as a graph's operands mostly are), those
// scattered pieces took the forward 1.7x and the backward 1.5x the time of the same
// operands made contiguous (64 samples of 4 heads of 32 x 16 floats, caches flushed). So
// the operands the kernels would copy anyway (rows_together), and the backward's v, are
// staged a run of such pairs at a time: copied at once, whole rows in order, into
// contiguous matrices: in a transformer step the backward took 0.8-0.9x the time. (Staging
// the forward's q and k too, or its output written back a run's rows at once, and asking
// L2 for the next run's rows while a run is computed, did not pay: the copies cost about
// what they saved.) Runs stop at kStagedBytes per operand, so that the staged matrices
// stay in L1 and L2.
constexpr int64_t kStagedBytes = 32 << 10;

// A pair's matrix where the kernels read it: its rows `stride` apart.
template <typename T>
struct Matrix {
    const T* at;
    int64_t stride;
};

// The number of pairs from b (before end, at most `most`) whose matrices of m lie side by
// side: each next one's cols further along the same rows, all within one row's stride.
template <typename T>
int64_t side_by_side(const PairMatrices<const T>& m, int64_t cols, int64_t b, int64_t end,
                     int64_t most) {
    int64_t n = 1;
    while (n < most && b + n < end && (n + 1) * cols <= m.row_stride &&
           m.offset[b + n] == m.offset[b] + n * cols) {
        ++n;
    }
    return n;
}

// An input's pairs of rows x cols and its longest run side by side of at most
// kStagedBytes: what a thread's buffer for its runs holds (nothing where runs are single).
template <typename T>
struct Staging {
    PairMatrices<const T> m;
    int64_t rows, cols, most = 1;

    Staging(PairMatrices<const T> matrices, int64_t pairs, int64_t rows_, int64_t cols_)
        : m(matrices), rows(rows_), cols(cols_) {
        const int64_t bytes = rows * cols * int64_t(sizeof(T));
        const int64_t fit = bytes > 0 ? kStagedBytes / bytes : 1;
        for (int64_t b = 0; b < pairs && most < fit;) {
            const int64_t n = side_by_side(m, cols, b, pairs, fit);
            most = std::max(most, n);
            b += n;
        }
    }

    int64_t entries() const { return most > 1 ? most * rows * cols : 0; }
};

// An input's pairs in a thread's range (up to `end`, asked for in order), in the runs of its
// Staging: a run of two or more copied into `buffer` when its first pair is asked for, a
// single pair read in place.
template <typename T>
class StagedInput {
  public:
    // `buffer` of staging.entries(), moved past it.
    StagedInput(const Staging<T>& staging, int64_t end, T*& buffer)
        : s_(staging), end_(end), buffer_(buffer) {
        buffer += staging.entries();
    }

    Matrix<T> operator()(int64_t b) {
        if (b >= first_ + count_) stage(b);
        if (count_ == 1) return {s_.m.base + s_.m.offset[b], s_.m.row_stride};
        return {buffer_ + (b - first_) * s_.rows * s_.cols, s_.cols};
    }

  private:
    void stage(int64_t b) {
        first_ = b;
        count_ = side_by_side(s_.m, s_.cols, b, end_, s_.most);
        if (count_ == 1) return;
        const T* row = s_.m.base + s_.m.offset[b];
        for (int64_t r = 0; r < s_.rows; ++r, row += s_.m.row_stride) {
            for (int64_t j = 0; j < count_; ++j) {
                std::copy(row + j * s_.cols, row + (j + 1) * s_.cols,
                          buffer_ + (j * s_.rows + r) * s_.cols);
            }
        }
    }

    const Staging<T>& s_;
    int64_t end_;
    T* buffer_;
    int64_t first_ = 0, count_ = 0;
};

// Below this many multiply-adds a thread's share of the pairs costs less than waking it.
constexpr double kProductsPerThread = 1 << 15;

// The pairs split into contiguous ranges, one per thread: body(first, end, scratch), each
// thread with `scratch` elements of its own (not initialized); on one thread outside a
// parallel region (threads.h's on_team). A thread per kProductsPerThread of the pairs'
// S L (d + dv) products (counted in double: they may pass int64), not one per pair: a
// region for five pairs of 3 x 4 cost up to 300x their work on two threads of a busy
// machine.
template <typename T, typename Body>
void for_pairs(const AttentionShape& s, int64_t scratch, Body body) {
    const double products = double(s.pairs) * double(s.S) * double(s.L) * double(s.d + s.dv);
    const double shares = std::min(products / kProductsPerThread, double(s.pairs));
    on_team(team_size(static_cast<int64_t>(shares)), [&](int64_t t, int64_t team) {
        const std::unique_ptr<T[]> own(new T[scratch]);
        body(s.pairs * t / team, s.pairs * (t + 1) / team, own.get());
    });
}

enum class ExpLanes { kPortable, kAvx2, kAvx512 };

// Where the exps run: the AVX-512 ones where the CPU has them and the activations use them
// (recurrent.h's switches, which the tests flip to compare the paths).
ExpLanes exp_lanes() {
    if (!avx2_activations_active()) return ExpLanes::kPortable;
    return avx512_activations_active() ? ExpLanes::kAvx512 : ExpLanes::kAvx2;
}

// The softmax over each column of wt (L x S, pair b's scores transposed) in place, the keys
// the mask refuses set to -inf first (attention_loops.h's softmax_columns: a query with no
// allowed key gets zero weights); `tail`: scratch of softmax_tail_entries(L).
template <typename T>
void masked_softmax(int64_t S, int64_t L, const AttentionMask& mask, int64_t b, ExpLanes lanes,
                    T* wt, T* tail) {
    if (mask.base) {
        constexpr T kMinusInf = -std::numeric_limits<T>::infinity();
        for (int64_t i = 0; i < S; ++i) {
            const uint8_t* allowed = mask.base + mask.offset[b] + i * mask.row_stride;
            for (int64_t l = 0; l < L; ++l) {
                if (!allowed[l * mask.col_stride]) wt[l * S + i] = kMinusInf;
            }
        }
    }
    if (lanes == ExpLanes::kAvx512) {
        softmax_columns_avx512(S, L, wt, tail);
    } else if (lanes == ExpLanes::kAvx2) {
        softmax_columns_avx2(S, L, wt, tail);
    } else {
        softmax_columns<Vector<T, 16>>(S, L, wt, tail, [](Vector<T, 16> x) {
            for (int i = 0; i < int(16 / sizeof(T)); ++i) x[i] = std::exp(x[i]);
            return x;
        });
    }
}

}  // namespace

// Per pair, the scores transposed: wt (L x S) = scale K Qᵀ, which takes Q transposed as the
// product's second operand (as Q Kᵀ took K), and out = W V reads wt as its first operand
// stored transposed, at no cost.
template <typename T>
void attention_forward(const AttentionShape& s, T scale, PairMatrices<const T> q,
                       PairMatrices<const T> k, PairMatrices<const T> v,
                       const AttentionMask& mask, T* weights, PairMatrices<T> out) {
    const PairProduct<T> product = pair_product<T>();
    const ExpLanes lanes = exp_lanes();
    const Staging<T> v_runs(v, s.pairs, s.L, s.dv);
    const int64_t own = s.d * s.S + s.L * s.dv + softmax_tail_entries(s.L);
    const int64_t scratch = own + v_runs.entries();
    for_pairs<T>(s, scratch, [&](int64_t first, int64_t end, T* q_t) {
        T *v_rows = q_t + s.d * s.S, *tail = v_rows + s.L * s.dv, *buffer = q_t + own;
        StagedInput<T> vs(v_runs, end, buffer);
        for (int64_t b = first; b < end; ++b) {
            T* wt = weights + b * s.L * s.S;
            transpose_into(s.S, s.d, q.base + q.offset[b], q.row_stride, q_t);
            product(s.L, s.S, s.d, k.base + k.offset[b], k.row_stride, false, q_t, s.S, scale,
                    wt, s.S);
            masked_softmax(s.S, s.L, mask, b, lanes, wt, tail);
            const Matrix<T> vb = vs(b);
            const T* vr = rows_together(s.L, s.dv, vb.at, vb.stride, v_rows);
            product(s.S, s.dv, s.L, wt, s.S, true, vr, s.dv, T(1), out.base + out.offset[b],
                    out.row_stride);
        }
    });
}

// Per pair, with the weights transposed (wt, L x S) and so the scores' gradient: dSᵀ = V
// doutᵀ (dout transposed as the second operand), the softmax's backward down its columns,
// then dq = dS K (dSᵀ read as stored transposed), dk = dSᵀ Q and dv = Wᵀ dout.
template <typename T>
void attention_backward(const AttentionShape& s, T scale, PairMatrices<const T> q,
                        PairMatrices<const T> k, PairMatrices<const T> v, const T* weights,
                        PairMatrices<const T> dout, PairMatrices<T> dq, PairMatrices<T> dk,
                        PairMatrices<T> dv) {
    const PairProduct<T> product = pair_product<T>();
    const Staging<T> q_runs(q, s.pairs, s.S, s.d), k_runs(k, s.pairs, s.L, s.d),
        v_runs(v, s.pairs, s.L, s.dv), dout_runs(dout, s.pairs, s.S, s.dv);
    const int64_t own = s.S * s.dv + s.L * s.S + s.L * s.d + s.S * s.d + s.S * s.dv + s.S;
    const int64_t scratch = own + q_runs.entries() + k_runs.entries() + v_runs.entries() +
                            dout_runs.entries();
    for_pairs<T>(s, scratch, [&](int64_t first, int64_t end, T* dout_t) {
        T* dscores_t = dout_t + s.S * s.dv;
        T *k_rows = dscores_t + s.L * s.S, *q_rows = k_rows + s.L * s.d;
        T *dout_rows = q_rows + s.S * s.d, *total = dout_rows + s.S * s.dv;
        T* buffer = dout_t + own;
        StagedInput<T> qs(q_runs, end, buffer), ks(k_runs, end, buffer), vs(v_runs, end, buffer),
            douts(dout_runs, end, buffer);
        for (int64_t b = first; b < end; ++b) {
            const T* wt = weights + b * s.L * s.S;
            const Matrix<T> qm = qs(b), km = ks(b), vm = vs(b), dm = douts(b);
            const T* db = rows_together(s.S, s.dv, dm.at, dm.stride, dout_rows);
            transpose_into(s.S, s.dv, db, s.dv, dout_t);
            product(s.L, s.S, s.dv, vm.at, vm.stride, false, dout_t, s.S, T(1), dscores_t, s.S);
            // The softmax's backward: dS = W (dW - sum(dW W)) scale, a query's sum down its
            // column, taken a row at a time (down the columns a vector at a time, whose rows
            // are S apart, was 1.2x slower at S = L = 256); masked weights are 0.
#pragma omp simd
            for (int64_t i = 0; i < s.S; ++i) total[i] = 0;
            for (int64_t l = 0; l < s.L; ++l) {
                const T *w = wt + l * s.S, *g = dscores_t + l * s.S;
#pragma omp simd
                for (int64_t i = 0; i < s.S; ++i) total[i] += g[i] * w[i];
            }
            for (int64_t l = 0; l < s.L; ++l) {
                const T* w = wt + l * s.S;
                T* g = dscores_t + l * s.S;
#pragma omp simd
                for (int64_t i = 0; i < s.S; ++i) g[i] = w[i] * (g[i] - total[i]) * scale;
            }
            const T* kb = rows_together(s.L, s.d, km.at, km.stride, k_rows);
            const T* qb = rows_together(s.S, s.d, qm.at, qm.stride, q_rows);
            product(s.S, s.d, s.L, dscores_t, s.S, true, kb, s.d, T(1), dq.base + dq.offset[b],
                    dq.row_stride);
            product(s.L, s.d, s.S, dscores_t, s.S, false, qb, s.d, T(1), dk.base + dk.offset[b],
                    dk.row_stride);
            product(s.L, s.dv, s.S, wt, s.S, false, db, s.dv, T(1), dv.base + dv.offset[b],
                    dv.row_stride);
        }
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
