#include "recurrent.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include "activations_avx2.h"
#include "activations_avx512.h"
#include "cache_line.h"
#include "conv_taps.h"
#include "cpu_features.h"
#include "gemm.h"
#include "lstm_cell_avx512.h"
#include "matmul.h"
#include "panel_gemm_avx512.h"
#include "threads.h"

#if __has_include(<sys/mman.h>)
#include <sys/mman.h>  // madvise
#endif

namespace graphnet {

namespace {

// The blocks of work of one step: forward, the product with Wh in blocks of kColumns of its
// 4H columns, then the gates in blocks of at least kUnits hidden units (unit_block: one
// block per thread, as each block's rows cost a call per gate; the gates are elementwise,
// so the blocks do not change the result); backward, the gates, then
// the product with Wh^T in blocks of kHiddenColumns of its H columns (narrower: there are
// a quarter as many, and H = 128 should still give two threads work).
constexpr int64_t kColumns = 128;
constexpr int64_t kHiddenColumns = 64;
constexpr int64_t kUnits = 32;
// The backward adds each step's share into the weights' gradients (instead of one
// OpenBLAS product after the steps) from 64 rows on and while the gradients fit in the
// L2 cache, as each step loads and stores all of them: lstm_backward at N = 64, D = 32,
// H = 128 (330 KB) took 0.3-0.5 ms less, at N = 32 the same, at N = 64, D = 128, H = 512
// (5.2 MB) 5-15 ms more (one thread). In one block of work, as each block copies
// [x_t | prev_h_t] (at H = 128 four blocks of 128 columns took 0.1-0.4 ms more).
constexpr int64_t kOwnWeightRows = 64;
constexpr int64_t kOwnWeightBytes = int64_t(1) << 20;
// The forward computes x_t @ Wx step by step from N rows on (float32, AVX-512): fewer rows
// leave most of the panel kernel's 8 rows idle, and the one product over all N * T rows
// up front is faster (lstm_lm at N = 1: 0.16 ms against 0.28 per step).
constexpr int64_t kOwnStepRows = 8;

int64_t blocks_of(int64_t extent, int64_t size) { return (extent + size - 1) / size; }

int64_t unit_block(int64_t H) { return std::max(kUnits, blocks_of(H, num_threads())); }

// Scratch arrays, left uninitialised. One of 2 MB or more is aligned to 2 MB and asks the
// kernel for huge pages (as numpy does for its arrays): da is N*T x 4H floats (26 MB at
// N=64, T=50, H=512), and glibc returns it to the system between calls; faulted in 4 KB
// pages on every call, the scratch took about a fifth of a small training step (N=32,
// H=128; perf: exc_page_fault). Smaller ones start on a cache line: the panel kernels load
// whole vectors from the packed weights, which at the C library's 16-byte alignment
// straddled two lines in 3 loads of 4 in some processes and not in others (one sequence's
// forward at H = 256 took 1.45x as long in those).
struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
};
template <typename T>
using Scratch = std::unique_ptr<T[], FreeDeleter>;

template <typename T>
Scratch<T> scratch(int64_t n) {
    constexpr size_t kHugePage = size_t(2) << 20, kLine = 64;
    const size_t bytes = static_cast<size_t>(n) * sizeof(T);  // n elements exist elsewhere
    const bool huge = bytes >= kHugePage;
    const size_t align = huge ? kHugePage : kLine;
    const size_t rounded = std::max((bytes + align - 1) / align * align, align);
    void* p = std::aligned_alloc(align, rounded);
    if (p == nullptr) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    if (huge) madvise(p, rounded, MADV_HUGEPAGE);  // a hint: without it, 4 KB pages
#endif
    return Scratch<T>(static_cast<T*>(p));
}

// The backward's scratch arrays (da, N*T x 4H or one step's, [x | prev_h | 1], N*T x
// (D + H + 1), and the weights' gradient, (D + H + 1) x 4H) and an inference's gate
// inputs, kept from one call to the next on the calling thread: a training step calls the
// kernel again with the same sizes, and fresh huge pages are zeroed by the kernel on
// every call (26 MB of da at N = 64, T = 50, H = 512). Grown when too small, never
// shrunk; per thread, so that two Python threads may run the kernel at once.
enum class Kept {
    gates_gradient,
    inputs,
    gate_inputs,
    weights_gradient,
    packed_Wh,  // or Wh^T, backward
    packed_Wx,  // or Wx^T
    count
};

struct KeptSlot {
    Scratch<unsigned char> memory;
    size_t bytes = 0;
    std::uint64_t releases_seen = 0;
};
thread_local KeptSlot kept_slots[static_cast<int>(Kept::count)];

// The slot, emptied if the kept scratch was released since it last looked; a kernel takes
// each slot once a call, so no other part of the call can be using it.
KeptSlot& kept_slot(Kept which) {
    KeptSlot& slot = kept_slots[static_cast<int>(which)];
    const std::uint64_t releases = kept_scratch_releases.load(std::memory_order_relaxed);
    if (slot.releases_seen != releases) {
        slot.memory.reset();
        slot.bytes = 0;
        slot.releases_seen = releases;
    }
    return slot;
}

template <typename T>
T* kept_scratch(Kept which, int64_t n) {
    KeptSlot& slot = kept_slot(which);
    const size_t bytes = static_cast<size_t>(n) * sizeof(T);  // n elements exist elsewhere
    if (bytes > slot.bytes || !slot.memory) {
        slot.memory.reset();  // before the new one: not both at once
        slot.memory = scratch<unsigned char>(static_cast<int64_t>(bytes));
        slot.bytes = bytes;
    }
    return reinterpret_cast<T*>(slot.memory.get());
}

// Atomic: a Python thread may switch it while another runs a kernel without the GIL.
std::atomic<bool> avx2_enabled{true};
std::atomic<bool> avx512_enabled{true};

enum class Activation { sigmoid, tanh };

// out[k] = f(x[k] + bias[k]) for k < n (bias may be null); out may be x. float32 runs on
// AVX-512 or AVX2 where the CPU has it, float64 (the precision of gradient checks) on the
// C library.
template <typename T>
void activate(Activation f, int64_t n, const T* x, const T* bias, T* out) {
    if constexpr (std::is_same_v<T, float>) {
        if (avx512_activations_active()) {
            return (f == Activation::sigmoid ? sigmoid_avx512 : tanh_avx512)(n, x, bias, out);
        }
        if (avx2_activations_active()) {
            return (f == Activation::sigmoid ? sigmoid_avx2 : tanh_avx2)(n, x, bias, out);
        }
    }
    for (int64_t k = 0; k < n; ++k) {
        const T v = bias ? x[k] + bias[k] : x[k];
        // exp(-v) = inf for v << 0 gives 0, not nan
        out[k] = f == Activation::sigmoid ? T(1) / (T(1) + std::exp(-v)) : std::tanh(v);
    }
}

// C (m x n) = op(A) op(B) for contiguous operands, also when a size is zero.
template <typename T>
void product(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a,
             const T* b, T* c) {
    if (m == 0 || n == 0) return;
    if (k == 0) return std::fill(c, c + m * n, T(0));
    matmul(trans_a, trans_b, m, n, k, a, b, c);
}

// C (k x n) = A^T B for A (m x k) and B (m x n) over many rows m: the weights'
// gradient [x | prev_h]^T da. In two halves of C's columns whatever the thread count
// (the same BLAS calls, the same bits), each packing all of A: _C.matmul's blocks of 256
// columns pack it eight times at n = 2048 (54.2 ms for 640 x 3200 x 2048 on one
// thread; in one call OpenBLAS takes 45.4).
template <typename T>
void weight_gradient(int64_t k, int64_t n, int64_t m, const T* a, const T* b, T* c) {
    if (k == 0 || n == 0) return;
    if (m == 0) return std::fill(c, c + k * n, T(0));
    const int64_t half = n >= 256 ? (n / 2 + 63) / 64 * 64 : n;  // a multiple of 64
    const int64_t blocks = blocks_of(n, half);
    parallel_for(team_size(blocks), blocks, [&](int64_t block) {
        const int64_t c0 = block * half;
        gemm(true, false, static_cast<int>(k), static_cast<int>(std::min(half, n - c0)),
             static_cast<int>(m), a, static_cast<int>(k), b + c0, static_cast<int>(n), T(0),
             c + c0, static_cast<int>(n));
    });
}

// The geometry of one step t: where row n of each (N, T, .) array starts is base + n * ld.
template <typename T>
struct Step {
    const RecurrentGeometry& g;
    int64_t t;

    // The hidden state before step t, as (pointer, leading dimension).
    const T* prev_h(const T* h0, const T* h) const { return t == 0 ? h0 : h + (t - 1) * g.H; }
    int64_t prev_h_ld() const { return t == 0 ? g.H : g.T * g.H; }
    int64_t row(int64_t n, int64_t width) const { return (n * g.T + t) * width; }
};

// The weight matrix of the per-step products, B (k x n), element (r, j) at b[r * row_stride
// + j * column_stride], packed once a call for panel_gemm_avx512 when it runs here (float32
// on AVX-512) into the calling thread's kept scratch `slot`; null otherwise, and the
// products go to OpenBLAS. Kept, not allocated afresh: at H = 256 a fresh 1 MB for the
// packed Wh came from the system each call and its page faults took 80 of one sequence's
// 120 us at T = 1.
template <typename T>
const float* packed_panels(Kept slot, int64_t k, int64_t n, const T* b, int64_t row_stride,
                           int64_t column_stride) {
    if (!std::is_same_v<T, float> || !cpu_has_avx512f() || k == 0 || n == 0) return nullptr;
    const int64_t panels = blocks_of(n, kPanelColumns);
    float* const packed = kept_scratch<float>(slot, panels * kPanelColumns * k);
    for (int64_t p = 0; p < panels; ++p) {
        float* panel = packed + p * kPanelColumns * k;
        const int64_t j0 = p * kPanelColumns, width = std::min(kPanelColumns, n - j0);
        if constexpr (std::is_same_v<T, float>) {
            if (row_stride == 1) {
                // B is a matrix read transposed (the backward's Wh^T, Wx^T): a panel's row,
                // one element from each of 32 of its rows 4H floats apart, took 32 lines
                // of the same L1 set (4H = 1024: 4 KB apart) for each row of the panel;
                // 16 x 16 blocks transposed in registers read each line once (at H = 256
                // lstm_backward of one sequence, one step, 0.59-0.63 -> 0.14 ms).
                tap_transpose_avx512(width, k, b + j0 * column_stride, column_stride, panel,
                                     kPanelColumns);
                for (int64_t r = 0; r < k && width < kPanelColumns; ++r) {
                    std::fill(panel + r * kPanelColumns + width, panel + (r + 1) * kPanelColumns,
                              0.0f);
                }
                continue;
            }
        }
        for (int64_t r = 0; r < k; ++r) {
            float* row = panel + r * kPanelColumns;
            for (int64_t j = 0; j < width; ++j) {
                row[j] = static_cast<float>(b[r * row_stride + (j0 + j) * column_stride]);
            }
            // Only the last panel's columns past n are padding: zeroing all of the panels
            // first took 3% of one sequence's forward (H = 128, T = 50).
            std::fill(row + width, row + kPanelColumns, 0.0f);
        }
    }
    return packed;
}

// C[:, c0:c1] (+)= A @ B[:, c0:c1]: from B's packed panels when there are some, else
// OpenBLAS on B itself (row-major, leading dimension ldb).
template <typename T>
void step_product(int64_t m, int64_t c0, int64_t c1, int64_t k, const T* a, int64_t lda,
                  const float* packed, bool trans_b, const T* b, int64_t ldb,
                  bool accumulate, T* c, int64_t ldc) {
    if constexpr (std::is_same_v<T, float>) {
        if (packed) {
            return panel_gemm_avx512(m, c0, c1, k, a, lda, packed, accumulate, c, ldc);
        }
    }
    gemm(false, trans_b, static_cast<int>(m), static_cast<int>(c1 - c0), static_cast<int>(k),
         a, static_cast<int>(lda), trans_b ? b + c0 * ldb : b + c0, static_cast<int>(ldb),
         T(accumulate ? 1 : 0), c + c0, static_cast<int>(ldc));
}

// pre_t[:, c0:c1] (= x_t @ Wx[:, c0:c1] where packed_Wx is given) += prev_h @ Wh[:, c0:c1];
// pre_t is step t's first row, ld the distance between rows.
template <typename T>
void add_recurrent_product(const Step<T>& s, const T* x, const T* h0, const T* h,
                           const T* Wx, const float* packed_Wx, const T* Wh,
                           const float* packed_Wh, int64_t c0, int64_t c1, T* pre_t,
                           int64_t ld) {
    const RecurrentGeometry& g = s.g;
    if (packed_Wx) {
        step_product(g.N, c0, c1, g.D, x + s.t * g.D, g.T * g.D, packed_Wx, false, Wx, g.G(),
                     false, pre_t, ld);
    }
    step_product(g.N, c0, c1, g.H, s.prev_h(h0, h), s.prev_h_ld(), packed_Wh, false, Wh,
                 g.G(), true, pre_t, ld);
}

// The gates' loops below run over rows that never overlap; `omp simd` tells the compiler
// so, and it vectorises them (it would not from the __restrict pointers alone).

// The units [u0, u1) of step t; act_t: the step's gate inputs, row n at act_t + n * ld.
// zeros: H zeros, the cell state before the first step. keep: c and tanh_c hold every
// step's (N, T, H); else they are (N, H), the cell state updated in place and its tanh at
// the current step (the same operations, the same bits).
template <typename T>
void lstm_cell_forward(const Step<T>& s, bool keep, const T* b, const T* zeros, int64_t u0,
                       int64_t u1, T* act_t, int64_t ld, T* c, T* tanh_c, T* h) {
    const int64_t H = s.g.H, units = u1 - u0;
    for (int64_t n = 0; n < s.g.N; ++n) {
        T* a = act_t + n * ld + u0;
        if (units == H) {  // i, f, o side by side: one pass
            activate(Activation::sigmoid, 3 * H, a, b, a);
        } else {
            for (int64_t q = 0; q < 3; ++q) {
                activate(Activation::sigmoid, units, a + q * H, b + q * H + u0, a + q * H);
            }
        }
        activate(Activation::tanh, units, a + 3 * H, b + 3 * H + u0, a + 3 * H);  // g
        const int64_t at = s.row(n, H) + u0, state_at = keep ? at : n * H + u0;
        const T* __restrict i = a;
        const T* __restrict f = a + H;
        const T* __restrict o = a + 2 * H;
        const T* __restrict g = a + 3 * H;
        // Not __restrict: without keep, prev_c is cell (each unit reads its own, then writes).
        const T* prev_c = s.t == 0 ? zeros + u0 : (keep ? c + at - H : c + state_at);
        T* cell = c + state_at;
#pragma omp simd
        for (int64_t u = 0; u < units; ++u) cell[u] = f[u] * prev_c[u] + i[u] * g[u];
        activate(Activation::tanh, units, cell, static_cast<const T*>(nullptr),
                 tanh_c + state_at);
        const T* __restrict tc = tanh_c + state_at;
        T* __restrict out = h + at;
#pragma omp simd
        for (int64_t u = 0; u < units; ++u) out[u] = o[u] * tc[u];
    }
}

template <typename T>
void rnn_cell_forward(const Step<T>& s, const T* b, int64_t u0, int64_t u1, T* h) {
    for (int64_t n = 0; n < s.g.N; ++n) {
        T* out = h + s.row(n, s.g.H) + u0;
        activate(Activation::tanh, u1 - u0, out, b + u0, out);
    }
}

// da[:, t] for the units [u0, u1) from dh[:, t] + dnext (the gradient arriving from step
// t + 1), row n at da_t + n * ld; for the LSTM dc carries the cell state's gradient from
// step t + 1 to step t.
template <typename T>
void lstm_cell_backward(const Step<T>& s, const T* dh, const T* dnext, const T* act,
                        const T* c, const T* tanh_c, const T* zeros, int64_t u0, int64_t u1,
                        T* dc, T* da_t, int64_t ld) {
    const int64_t H = s.g.H, units = u1 - u0;
    for (int64_t n = 0; n < s.g.N; ++n) {
        const int64_t gates_at = s.row(n, s.g.G()) + u0, at = s.row(n, H) + u0;
        const T* __restrict i = act + gates_at;
        const T* __restrict f = i + H;
        const T* __restrict o = i + 2 * H;
        const T* __restrict g = i + 3 * H;
        const T* __restrict tc = tanh_c + at;
        const T* __restrict prev_c = s.t == 0 ? zeros + u0 : c + at - H;
        const T* __restrict up = dh + at;
        const T* __restrict next = dnext + n * H + u0;
        T* __restrict dcell = dc + n * H + u0;
        if constexpr (std::is_same_v<T, float>) {
            if (cpu_has_avx512f()) {
                lstm_cell_backward_avx512(units, H, up, next, i, tc, prev_c, dcell,
                                          da_t + n * ld + u0);
                continue;
            }
        }
        T* __restrict di = da_t + n * ld + u0;
        T* __restrict df = di + H;
        T* __restrict do_ = di + 2 * H;
        T* __restrict dg = di + 3 * H;
#pragma omp simd
        for (int64_t u = 0; u < units; ++u) {
            const T dht = up[u] + next[u];
            const T dct = dcell[u] + dht * o[u] * (T(1) - tc[u] * tc[u]);
            di[u] = dct * g[u] * i[u] * (T(1) - i[u]);
            df[u] = dct * prev_c[u] * f[u] * (T(1) - f[u]);
            do_[u] = dht * tc[u] * o[u] * (T(1) - o[u]);
            dg[u] = dct * i[u] * (T(1) - g[u] * g[u]);
            dcell[u] = dct * f[u];
        }
    }
}

template <typename T>
void rnn_cell_backward(const Step<T>& s, const T* dh, const T* dnext, const T* h, int64_t u0,
                       int64_t u1, T* da_t, int64_t ld) {
    const int64_t H = s.g.H, units = u1 - u0;
    for (int64_t n = 0; n < s.g.N; ++n) {
        const int64_t at = s.row(n, H) + u0;
        const T* __restrict out = h + at;
        const T* __restrict up = dh + at;
        const T* __restrict next = dnext + n * H + u0;
        T* __restrict d = da_t + n * ld + u0;
#pragma omp simd
        for (int64_t u = 0; u < units; ++u) d[u] = (up[u] + next[u]) * (T(1) - out[u] * out[u]);
    }
}

}  // namespace

void set_avx2_activations(bool enabled) { avx2_enabled = enabled; }
bool avx2_activations_active() { return avx2_enabled && cpu_has_avx2_fma(); }
void set_avx512_activations(bool enabled) { avx512_enabled = enabled; }
bool avx512_activations_active() {
    return avx512_enabled && avx2_activations_active() && cpu_has_avx512f();
}

RecurrentGeometry recurrent_geometry(Cell cell, const Shape& x, const Shape& h0,
                                     const Shape& Wx, const Shape& Wh, const Shape& b) {
    const char* fn = cell == Cell::lstm ? "lstm" : "rnn";
    require_rank(x, 3, "x", "(N, T, D)");
    require_rank(h0, 2, "h0", "(N, H)");
    const RecurrentGeometry g{cell, x[0], x[1], x[2], h0[1]};
    const auto sizes = [&] {
        return std::string(fn) + ": x " + shape_str(x) + ", h0 " + shape_str(h0) + ", Wx " +
               shape_str(Wx) + ", Wh " + shape_str(Wh) + ", b " + shape_str(b);
    };
    // BLAS takes 32-bit sizes: the N * T rows of the whole-sequence products, the G
    // columns, the stride T * G between one sequence's rows in the per-step products, and
    // the D + H + 1 rows of the weights' gradient. Checked first, so that G and the products
    // below cannot overflow (H may be anything when N = 0).
    const int64_t G = checked_mul(g.gates(), g.H, sizes);
    for (int64_t extent : {checked_mul(g.N, g.T, sizes), checked_mul(g.T, G, sizes), g.D, G}) {
        require_blas_size(extent, sizes);
    }
    require_blas_size(g.D + g.H + 1, sizes);  // D and H (<= G) are below 2^31 now
    if (h0[0] != g.N || Wx != Shape{g.D, G} || Wh != Shape{g.H, G} || b != Shape{G}) {
        fail(sizes() + " do not fit together: expected h0 (N, H), Wx (D, " +
             (cell == Cell::lstm ? "4H), Wh (H, 4H), b (4H,)" : "H), Wh (H, H), b (H,)"));
    }
    return g;
}

template <typename T>
void recurrent_forward(const RecurrentGeometry& g, bool keep, const T* x, const T* h0,
                       const T* Wx, const T* Wh, const T* b, T* h, T* act, T* c, T* tanh_c) {
    const bool lstm = g.cell == Cell::lstm;
    // float32 on AVX-512 and N >= kOwnStepRows: each step computes its own x_t @ Wx from
    // packed panels, before prev_h @ Wh, into rows still in cache. Otherwise every step's
    // x @ Wx at once, first (OpenBLAS; only prev_h @ Wh has to wait for the previous step).
    // One sequence (float32 on AVX-512) reads Wh in place (row_product_avx512), as its steps
    // read each row of a packed copy once too: the copy on every call cost about three
    // steps. Where Wh's rows start at different offsets from a cache line (4H not a
    // multiple of 16 floats), the copy's aligned panels pay.
    const bool rows_in_place = std::is_same_v<T, float> && cpu_has_avx512f() && g.N == 1 &&
                               g.G() % 16 == 0 &&
                               reinterpret_cast<std::uintptr_t>(Wh) % sizeof(T) == 0;
    const float* packed_Wh =
        rows_in_place ? nullptr : packed_panels(Kept::packed_Wh, g.H, g.G(), Wh, g.G(), 1);
    const float* packed_Wx = packed_Wh && g.N >= kOwnStepRows
                                 ? packed_panels(Kept::packed_Wx, g.D, g.G(), Wx, g.G(), 1)
                                 : nullptr;
    const bool own_steps = packed_Wh && packed_Wx;
    // The gates' inputs, activated in place step by step (the RNN's: h itself). Without
    // keep and with own_steps, the current step's only.
    const bool one_step = lstm && !keep && own_steps;
    if (lstm && !keep) {
        act = kept_scratch<T>(Kept::gate_inputs, g.N * (one_step ? 1 : g.T) * g.G());
    }
    T* const pre = lstm ? act : h;
    const int64_t ld = one_step ? g.G() : g.T * g.G();
    if (!own_steps) product(false, false, g.N * g.T, g.G(), g.D, x, Wx, pre);
    if (g.N == 0) return;
    const std::vector<T> zeros(g.H, T(0));
    const int64_t column_blocks = blocks_of(g.G(), kColumns);
    const int64_t units = unit_block(g.H), unit_blocks = blocks_of(g.H, units);
    on_team(team_size(std::max(column_blocks, unit_blocks)), [&](int thread, int threads) {
        // This thread's column blocks, the same at every step, read front to back at even
        // steps and back to front at odd ones: a Wh as large as the L2 cache (H = 256: 1 MB
        // packed) read in one direction step after step misses on every block, each evicted
        // just before it is read again; the other way round, the blocks read last are still
        // there. Each column's sum does not depend on the order of the blocks.
        const int64_t per_thread = blocks_of(column_blocks, threads);
        const int64_t first = std::min(column_blocks, thread * per_thread);
        const int64_t last = std::min(column_blocks, first + per_thread);
        for (int64_t t = 0; t < g.T; ++t) {
            const Step<T> s{g, t};
            T* const pre_t = one_step ? pre : pre + t * g.G();
            if constexpr (std::is_same_v<T, float>) {
                if (rows_in_place) {  // the thread's columns in one call, in the step's order
                    row_product_avx512(g.H, first * kColumns, std::min(g.G(), last * kColumns),
                                       s.prev_h(h0, h), Wh, g.G(), true, pre_t, t % 2 == 1);
                }
            }
            for (int64_t i = first; i < last && !rows_in_place; ++i) {
                const int64_t j = t % 2 == 0 ? i : first + last - 1 - i;
                add_recurrent_product(s, x, h0, h, Wx, packed_Wx, Wh, packed_Wh, j * kColumns,
                                      std::min(g.G(), (j + 1) * kColumns), pre_t, ld);
            }
#pragma omp barrier
            // the gates of a unit come from four column blocks
#pragma omp for schedule(static)
            for (int64_t j = 0; j < unit_blocks; ++j) {
                const int64_t u0 = j * units, u1 = std::min(g.H, u0 + units);
                if (lstm) {
                    lstm_cell_forward(s, keep, b, zeros.data(), u0, u1, pre_t, ld, c, tanh_c, h);
                } else {
                    rnn_cell_forward(s, b, u0, u1, h);
                }
            }  // the barrier: step t + 1 reads all of h[:, t]
        }
    });
}

template <typename T>
void recurrent_backward(const RecurrentGeometry& g, const T* dh, const T* x, const T* h0,
                        const T* Wx, const T* Wh, const T* h, const T* act, const T* c,
                        const T* tanh_c, T* dx, T* dh0, T* dWx, T* dWh, T* db) {
    const bool lstm = g.cell == Cell::lstm;
    const int64_t rows = g.N * g.T, G = g.G(), H = g.H;
    // float32 on AVX-512 and N >= kOwnStepRows (as in the forward): each step computes
    // dx[:, t] = da[:, t] @ Wx^T from packed panels while da[:, t] is in cache; otherwise
    // one product over all N * T rows after the steps. With own_weights (below) the steps
    // also add [x_t | prev_h_t]^T da[:, t] and db into the weights' gradients, and da is
    // one step's, N x G; otherwise da holds every step's for one product after the steps.
    const float* packed_Wh_t = g.N > 0 ? packed_panels(Kept::packed_Wh, G, H, Wh, 1, G) : nullptr;
    const float* packed_Wx_t = packed_Wh_t && g.N >= kOwnStepRows
                                   ? packed_panels(Kept::packed_Wx, G, g.D, Wx, 1, G)
                                   : nullptr;
    const bool own_steps = packed_Wh_t && packed_Wx_t;
    const bool own_weights = own_steps && g.N >= kOwnWeightRows &&
                             (g.D + H + 1) * G * int64_t(sizeof(float)) <= kOwnWeightBytes;
    // Between da's rows; one step's rows 64 bytes more than G apart, as rows 2^k bytes
    // apart share the L1 cache's sets (G = 512: every 32nd row the same).
    const int64_t ld = own_weights ? G + 16 : g.T * G;
    // Left uninitialised: every element is written before it is read.
    T* const da = kept_scratch<T>(Kept::gates_gradient, own_weights ? g.N * ld : rows * G);
    std::vector<T> dc(lstm ? g.N * H : 0, T(0)), zeros(H, T(0));
    const std::vector<float> ones(own_weights ? g.N : 0, 1.0f);  // db = ones^T da
    std::fill(dh0, dh0 + g.N * H, T(0));  // the gradient reaching h[:, t - 1], then h0
    // The blocks of columns of one step's products: dh0's (H), dx's (D), the weights'
    // gradients' (all G in one).
    const int64_t dh0_blocks = blocks_of(H, kHiddenColumns);
    const int64_t dx_blocks = own_steps ? blocks_of(g.D, kHiddenColumns) : 0;
    const int64_t dW_blocks = own_weights ? 1 : 0;
    if (own_weights) {
        std::fill(dWx, dWx + g.D * G, T(0));
        std::fill(dWh, dWh + H * G, T(0));
        std::fill(db, db + G, T(0));
    }
    const int64_t units = unit_block(H), unit_blocks = blocks_of(H, units);
    const int64_t column_blocks = dh0_blocks + dx_blocks + dW_blocks;
    if (g.N > 0) {
        on_team(team_size(std::max(column_blocks, unit_blocks)), [&](int, int) {
            for (int64_t t = g.T - 1; t >= 0; --t) {
                const Step<T> s{g, t};
                T* const da_t = own_weights ? da : da + t * G;
#pragma omp for schedule(static)
                for (int64_t j = 0; j < unit_blocks; ++j) {
                    const int64_t u0 = j * units, u1 = std::min(H, u0 + units);
                    if (lstm) {
                        lstm_cell_backward(s, dh, dh0, act, c, tanh_c, zeros.data(), u0, u1,
                                           dc.data(), da_t, ld);
                    } else {
                        rnn_cell_backward(s, dh, dh0, h, u0, u1, da_t, ld);
                    }
                }  // the barrier: every unit's da[:, t] is needed below
#pragma omp for schedule(static)
                // Front to back at even steps, back to front at odd ones, as the forward
                // reads Wh: the block of the packed Wh^T read last is still in L2 when it is
                // read first (H = 256: 1 MB; one sequence's backward at T = 50 took 3-7%
                // less). Each block's columns are its own: the same bits in either order.
                for (int64_t i = 0; i < column_blocks; ++i) {
                    const int64_t j = t % 2 == 0 ? i : column_blocks - 1 - i;
                    if (j < dh0_blocks) {  // dh0[:, c0:c1] = da[:, t] @ Wh^T
                        const int64_t c0 = j * kHiddenColumns;
                        step_product(g.N, c0, std::min(H, c0 + kHiddenColumns), G, da_t, ld,
                                     packed_Wh_t, true, Wh, G, false, dh0, H);
                    } else if (j < dh0_blocks + dx_blocks) {  // dx[:, t, c0:c1] = da[:, t] @ Wx^T
                        const int64_t c0 = (j - dh0_blocks) * kHiddenColumns;
                        step_product(g.N, c0, std::min(g.D, c0 + kHiddenColumns), G, da_t, ld,
                                     packed_Wx_t, true, Wx, G, false, dx + t * g.D, g.T * g.D);
                    } else if constexpr (std::is_same_v<T, float>) {  // own_weights: float32
                        transposed_gemm_accumulate_avx512(g.D, 0, G, g.N, x + t * g.D, g.T * g.D,
                                                          da_t, ld, dWx, G);
                        transposed_gemm_accumulate_avx512(H, 0, G, g.N, s.prev_h(h0, h),
                                                          s.prev_h_ld(), da_t, ld, dWh, G);
                        transposed_gemm_accumulate_avx512(1, 0, G, g.N, ones.data(), 1, da_t, ld,
                                                          db, G);
                    }
                }  // the barrier: step t - 1 reads dh0 and overwrites da
            }
        });
    }
    if (!own_steps) product(false, true, rows, g.D, G, da, Wx, dx);
    if (own_weights) return;
    // The weights' gradients sum over every step: one product over all N * T rows. dWx,
    // dWh and db are one product, [x | prev_h | 1]^T da, so that BLAS packs da once (the
    // products apart took 2.06 ms instead of 1.75 at N = 32, T = 50, D = 32, H = 128, and
    // 14.4 instead of 13.0 at N = 64, D = 64, H = 256; one thread); db, the column of
    // ones, costs 1 / (D + H + 1) of it instead of a pass over da.
    const int64_t K = g.D + H + 1;  // the columns of [x | prev_h | 1]
    T* const inputs = kept_scratch<T>(Kept::inputs, rows * K);
    for (int64_t n = 0; n < g.N; ++n) {
        for (int64_t t = 0; t < g.T; ++t) {
            const Step<T> s{g, t};
            T* row = inputs + (n * g.T + t) * K;
            const T* prev = s.prev_h(h0, h) + n * s.prev_h_ld();
            std::copy(x + s.row(n, g.D), x + s.row(n, g.D) + g.D, row);
            std::copy(prev, prev + H, row + g.D);
            row[K - 1] = T(1);
        }
    }
    T* const dW = kept_scratch<T>(Kept::weights_gradient, K * G);
    weight_gradient(K, G, rows, inputs, da, dW);
    std::copy(dW, dW + g.D * G, dWx);
    std::copy(dW + g.D * G, dW + (K - 1) * G, dWh);
    std::copy(dW + (K - 1) * G, dW + K * G, db);
}

int64_t recurrent_kept_bytes() {
    size_t bytes = 0;
    for (int k = 0; k < static_cast<int>(Kept::count); ++k) {
        bytes += kept_slot(static_cast<Kept>(k)).bytes;
    }
    return static_cast<int64_t>(bytes);
}

template void recurrent_forward<float>(const RecurrentGeometry&, bool, const float*,
                                       const float*, const float*, const float*,
                                       const float*, float*, float*, float*, float*);
template void recurrent_forward<double>(const RecurrentGeometry&, bool, const double*,
                                        const double*, const double*, const double*,
                                        const double*, double*, double*, double*, double*);
template void recurrent_backward<float>(const RecurrentGeometry&, const float*, const float*,
                                        const float*, const float*, const float*,
                                        const float*, const float*, const float*,
                                        const float*, float*, float*, float*, float*, float*);
template void recurrent_backward<double>(const RecurrentGeometry&, const double*,
                                         const double*, const double*, const double*,
                                         const double*, const double*, const double*,
                                         const double*, const double*, double*, double*,
                                         double*, double*, double*);

}  // namespace graphnet
