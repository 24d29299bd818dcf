// AVX-512 kernel of gemm_avx512.h. Compiled for AVX-512F: includes only the intrinsics.
#pragma GCC target("avx512f")
#include "gemm_avx512.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <type_traits>
#include <utility>

namespace graphnet {
namespace {

// One vector of 16 floats or 8 doubles, and the operations the tile needs on it.
template <typename T>
struct Lanes;

template <>
struct Lanes<float> {
    using Vec = __m512;
    static constexpr int64_t kWidth = 16;
    static Vec zero() { return _mm512_setzero_ps(); }
    static Vec broadcast(const float* p) { return _mm512_set1_ps(*p); }
    static Vec load(const float* p) { return _mm512_loadu_ps(p); }
    static Vec load(const float* p, __mmask16 lanes) { return _mm512_maskz_loadu_ps(lanes, p); }
    static void store_aligned(float* p, Vec v) { _mm512_store_ps(p, v); }
    static void store(float* p, __mmask16 lanes, Vec v) { _mm512_mask_storeu_ps(p, lanes, v); }
    static Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
    static Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
};

template <>
struct Lanes<double> {
    using Vec = __m512d;
    static constexpr int64_t kWidth = 8;
    static Vec zero() { return _mm512_setzero_pd(); }
    static Vec broadcast(const double* p) { return _mm512_set1_pd(*p); }
    static Vec load(const double* p) { return _mm512_loadu_pd(p); }
    static Vec load(const double* p, __mmask16 lanes) {
        return _mm512_maskz_loadu_pd(static_cast<__mmask8>(lanes), p);
    }
    static void store_aligned(double* p, Vec v) { _mm512_store_pd(p, v); }
    static void store(double* p, __mmask16 lanes, Vec v) {
        _mm512_mask_storeu_pd(p, static_cast<__mmask8>(lanes), v);
    }
    static Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_pd(a, b, c); }
    static Vec add(Vec a, Vec b) { return _mm512_add_pd(a, b); }
};

// Register tile: up to 8 rows x 3 vectors = 24 accumulators, 3 vectors of B and one
// broadcast element of A per row: per inner index 24 FMAs against 11 loads.
constexpr int kRows = 8;
constexpr int kVectors = 3;
// Inner indices per block: a panel of B (256 x 3 vectors: 48 KB in either dtype).
constexpr int64_t kDepth = 256;
// Rows of A per pass over B's panels: 32 tiles share each panel, and their block of A
// (256 rows x 256 inner indices, 256 KB in float32) stays in L2 from panel to panel.
constexpr int64_t kChunkRows = 32 * kRows;
// A panel is copied side by side first (pack_panel) when B's rows are a multiple of 2 KB
// apart (512 float32 columns): read in place, such a panel's rows fall on a few sets of
// the L1 cache and miss at every tile (the 512-column products ran at 1.3x OpenBLAS's
// time, copied at 0.8x). Otherwise for at least 8 tiles of rows and 128 inner indices:
// for fewer rows the copy costs more than it saves (16 x 3072 x 100: 1.35x the in-place
// time), and a shallower panel (24 KB at most) stays in L1 as it is (the Winograd
// convolution's products, 32 or 64 channels deep).
constexpr int64_t kPackRows = 8 * kRows;
constexpr int64_t kPackDepth = 128;
constexpr int64_t kAliasingBytes = 2048;

template <typename T>
struct Block {
    int64_t lda, ldb, depth;
    bool first;  // the first block of k, not accumulating: C is written, not added to
    // On the last block of k, the bias at the tile's first column (or nullptr): added to
    // each sum as it is stored, one rounding after the product's, as numpy's `c += bias`.
    const T* bias;
    // With kGroupedA tiles, A's inner indices in groups (gemm_rows_grouped_avx512), the
    // block starting at index `start` of its first group.
    InnerGroups groups;
    int64_t start;
};

// How a tile reads A: rows lda apart (A), rows side by side and inner indices lda apart
// (A^T), or rows lda apart and inner indices in groups (gemm_rows_grouped_avx512).
enum ALayout { kRowsOfA, kTransposedA, kGroupedA };

// Rows [0, Rows) of A (a at the block's first row and inner index, rows blk.lda apart;
// TransposedA: rows side by side, inner indices blk.lda apart, as in A^T or a tile of
// pack_transposed_rows; Layout kGroupedA: a at the start of the block's first group of inner
// indices) times Vectors vectors of B's panel
// (b at its first inner index and column, rows ldb apart; Masked: the last vector runs
// past column n), into the columns of c that `lanes` keeps.
template <typename T, int Rows, int Vectors, bool Masked, ALayout Layout>
void tile(const Block<T>& blk, const T* a, const T* b, const __mmask16 (&lanes)[kVectors],
          T* c, int64_t ldc) {
    using L = Lanes<T>;
    typename L::Vec acc[Rows][Vectors];
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
#pragma GCC unroll 3
        for (int v = 0; v < Vectors; ++v) {
            acc[r][v] = blk.first ? L::zero() : L::load(c + r * ldc + v * L::kWidth, lanes[v]);
        }
    }
    // Locals, not blk's fields: the compiler cannot tell that the stores to c leave blk
    // alone, and would reload them at every inner index.
    constexpr bool kTransposed = Layout == kTransposedA;
    const int64_t lda = kTransposed ? 1 : blk.lda, ldb = blk.ldb, depth = blk.depth;
    const int64_t a_step = kTransposed ? blk.lda : 1;
    // Only a panel's last vector can run past column n: the others load unmasked, and
    // the one mask stays in a register.
    const __mmask16 last = lanes[Vectors - 1];
    const auto step = [&](const T* column) {  // A's column at `column` times B's row at b
        typename L::Vec bv[Vectors];
#pragma GCC unroll 3
        for (int v = 0; v < Vectors - 1; ++v) bv[v] = L::load(b + v * L::kWidth);
        bv[Vectors - 1] = Masked ? L::load(b + (Vectors - 1) * L::kWidth, last)
                                 : L::load(b + (Vectors - 1) * L::kWidth);
#pragma GCC unroll 8
        for (int r = 0; r < Rows; ++r) {
            const typename L::Vec av = L::broadcast(column + r * lda);
#pragma GCC unroll 3
            for (int v = 0; v < Vectors; ++v) acc[r][v] = L::fma(av, bv[v], acc[r][v]);
        }
    };
    if constexpr (Layout == kGroupedA) {
        const int64_t group = blk.groups.group, outer = blk.groups.outer;
        const int64_t inner = blk.groups.inner;
        int64_t i = blk.start;
        for (int64_t kk = 0; kk < depth; ++kk, b += ldb) {
            step(a + i * inner);
            if (++i == group) {
                i = 0;
                a += outer;
            }
        }
    } else {
        for (int64_t kk = 0; kk < depth; ++kk, a += a_step, b += ldb) step(a);
    }
    if (blk.bias) {
#pragma GCC unroll 3
        for (int v = 0; v < Vectors; ++v) {
            const typename L::Vec bias = L::load(blk.bias + v * L::kWidth, lanes[v]);
#pragma GCC unroll 8
            for (int r = 0; r < Rows; ++r) acc[r][v] = L::add(acc[r][v], bias);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
#pragma GCC unroll 3
        for (int v = 0; v < Vectors; ++v) L::store(c + r * ldc + v * L::kWidth, lanes[v], acc[r][v]);
    }
}

template <typename T>
using Tile = void (*)(const Block<T>&, const T*, const T*, const __mmask16 (&)[kVectors], T*,
                      int64_t);

template <typename T, int V, bool M, ALayout P>
constexpr Tile<T> kTilesOf[kRows + 1] = {
    nullptr,           tile<T, 1, V, M, P>, tile<T, 2, V, M, P>, tile<T, 3, V, M, P>,
    tile<T, 4, V, M, P>, tile<T, 5, V, M, P>, tile<T, 6, V, M, P>, tile<T, 7, V, M, P>,
    tile<T, 8, V, M, P>};

template <typename T, ALayout A>
const Tile<T>* tiles_for(int vectors, bool masked) {
    return vectors == 3   ? (masked ? kTilesOf<T, 3, true, A> : kTilesOf<T, 3, false, A>)
           : vectors == 2 ? (masked ? kTilesOf<T, 2, true, A> : kTilesOf<T, 2, false, A>)
                          : (masked ? kTilesOf<T, 1, true, A> : kTilesOf<T, 1, false, A>);
}

template <typename T>
const Tile<T>* tiles_for(int vectors, bool masked, ALayout layout) {
    return layout == kGroupedA      ? tiles_for<T, kGroupedA>(vectors, masked)
           : layout == kTransposedA ? tiles_for<T, kTransposedA>(vectors, masked)
                                    : tiles_for<T, kRowsOfA>(vectors, masked);
}

__mmask16 first_lanes(int64_t valid, int64_t width) {
    return valid >= width ? __mmask16((1u << width) - 1)
                          : valid <= 0 ? __mmask16(0) : __mmask16((1u << valid) - 1);
}

// Copies `depth` rows of `vectors` vectors of B (b at the panel's first row and column,
// rows ldb apart) side by side into `panel`, the lanes past column n as zeros.
template <typename T>
void pack_panel(int64_t depth, int vectors, const T* b, int64_t ldb,
                const __mmask16 (&lanes)[kVectors], T* panel) {
    using L = Lanes<T>;
    for (int64_t kk = 0; kk < depth; ++kk, b += ldb) {
        for (int v = 0; v < vectors; ++v, panel += L::kWidth) {
            L::store_aligned(panel, L::load(b + v * L::kWidth, lanes[v]));
        }
    }
}

// The square block v (one vector a row) transposed in registers: the standard unpack /
// shuffle network, 16 x 16 floats or 8 x 8 doubles. Inlined, so that the block stays in
// registers: called, it went to the stack and back on each side of the call.
[[gnu::always_inline]] inline void transpose_square(__m512 (&v)[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {  // rows 4i..4i+3, entries 4 apart within each 128 bits
        const __m512d lo = _mm512_castps_pd(t[4 * i]), hi = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d lo2 = _mm512_castps_pd(t[4 * i + 2]), hi2 = _mm512_castps_pd(t[4 * i + 3]);
        v[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, lo2));
        v[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, lo2));
        v[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi, hi2));
        v[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi, hi2));
    }
    // v[4i + c] holds columns c, c + 4, c + 8, c + 12 of rows 4i..4i+3, one per 128 bits.
    for (int c = 0; c < 4; ++c) {
        const __m512 a = _mm512_shuffle_f32x4(v[c], v[4 + c], 0x88);
        const __m512 b = _mm512_shuffle_f32x4(v[c], v[4 + c], 0xdd);
        const __m512 d = _mm512_shuffle_f32x4(v[8 + c], v[12 + c], 0x88);
        const __m512 e = _mm512_shuffle_f32x4(v[8 + c], v[12 + c], 0xdd);
        t[c] = _mm512_shuffle_f32x4(a, d, 0x88);
        t[c + 8] = _mm512_shuffle_f32x4(a, d, 0xdd);
        t[c + 4] = _mm512_shuffle_f32x4(b, e, 0x88);
        t[c + 12] = _mm512_shuffle_f32x4(b, e, 0xdd);
    }
    for (int i = 0; i < 16; ++i) v[i] = t[i];
}

[[gnu::always_inline]] inline void transpose_square(__m512d (&v)[8]) {
    __m512d t[8];
    for (int i = 0; i < 4; ++i) {
        t[2 * i] = _mm512_unpacklo_pd(v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_pd(v[2 * i], v[2 * i + 1]);
    }
    // t[2i] holds columns 0, 2, 4, 6 of rows 2i, 2i+1 (one pair per 128 bits), t[2i+1] 1, 3, 5, 7.
    for (int h = 0; h < 2; ++h) {  // rows 4h..4h+3
        const __m512d* r = t + 4 * h;
        v[4 * h] = _mm512_shuffle_f64x2(r[0], r[2], 0x88);      // columns 0, 4
        v[4 * h + 1] = _mm512_shuffle_f64x2(r[0], r[2], 0xdd);  // 2, 6
        v[4 * h + 2] = _mm512_shuffle_f64x2(r[1], r[3], 0x88);  // 1, 5
        v[4 * h + 3] = _mm512_shuffle_f64x2(r[1], r[3], 0xdd);  // 3, 7
    }
    constexpr int kColumn[4][2] = {{0, 4}, {2, 6}, {1, 5}, {3, 7}};
    for (int p = 0; p < 4; ++p) {
        t[kColumn[p][0]] = _mm512_shuffle_f64x2(v[p], v[4 + p], 0x88);
        t[kColumn[p][1]] = _mm512_shuffle_f64x2(v[p], v[4 + p], 0xdd);
    }
    for (int i = 0; i < 8; ++i) v[i] = t[i];
}

// A panel of op(B) = B^T, for B stored n x k: `depth` inner indices of `vectors` vectors
// of columns (b at the panel's first column's row, at its first inner index), the
// columns past n (`columns` of them are B's) as zeros, in square blocks transposed in
// registers.
template <typename T>
void pack_transposed_panel(int64_t depth, int vectors, int64_t columns, const T* b,
                           int64_t ldb, T* panel) {
    using L = Lanes<T>;
    constexpr int W = static_cast<int>(L::kWidth);
    const int64_t ldp = vectors * W;
    for (int v = 0; v < vectors; ++v) {
        const int64_t rows = columns - v * W < W ? columns - v * W : W;
        for (int64_t k0 = 0; k0 < depth; k0 += W) {
            const int64_t inner = depth - k0 < W ? depth - k0 : W;
            const __mmask16 lanes = first_lanes(inner, W);
            typename L::Vec block[W];
            for (int r = 0; r < W; ++r) {
                block[r] = r < rows ? L::load(b + (v * W + r) * ldb + k0, lanes) : L::zero();
            }
            transpose_square(block);
            for (int64_t kk = 0; kk < inner; ++kk) {
                L::store_aligned(panel + (k0 + kk) * ldp + v * W, block[kk]);
            }
        }
    }
}

// Rows [i0, i1) of op(A) = A^T (A stored k x m, a at the block's first inner index), over
// `depth` inner indices, copied tile by tile (kRows rows) into `packed`: a tile's rows
// side by side at each inner index, for tile<..., TransposedA>. Read in place, A's rows
// are lda apart and a tile's 256 of them map to a few sets of the L1 cache, read again
// from L2 for every panel of B: copied, once. The copy reads A a row at a time, whole
// vectors in order, each vector's halves going to two tiles: gathered a tile at a time,
// 8 entries from each of `depth` rows lda apart, a (3072 x 64)^T copy waited on its
// loads (a sixth of the product 3072 x 64 x 100's time).
template <typename T>
void pack_transposed_rows(int64_t i0, int64_t i1, int64_t depth, const T* a, int64_t lda,
                          T* packed) {
    using L = Lanes<T>;
    constexpr int64_t W = L::kWidth, kTilesPerVector = W / kRows;  // 2 float32, 1 float64
    const int64_t tile_size = depth * kRows;  // elements of one tile in `packed`
    for (int64_t kk = 0; kk < depth; ++kk, a += lda) {
        T* out = packed + kk * kRows;
        for (int64_t i = i0; i < i1; i += W, out += kTilesPerVector * tile_size) {
            const typename L::Vec v = L::load(a + i, first_lanes(i1 - i, W));
            L::store(out, first_lanes(i1 - i, kRows), v);
            if constexpr (kTilesPerVector == 2) {
                const __mmask16 upper = first_lanes(i1 - i - kRows, kRows);
                if (upper) L::store(out + tile_size, upper, _mm512_shuffle_f32x4(v, v, 0xee));
            }
        }
    }
}

// C's columns past the last whole vector of B's last panel, when there are at most this
// many, are summed along the rows (lone_columns) instead of in a vector of columns that
// they would mostly leave empty. With A transposed (x^T dout), A's column is read in place:
// one thread, CPU time, float32 128 x 3200 x 65 509 us against 630 in five vectors of
// columns (477-497 at 64 columns), 72 columns 563 against 600, 300 x 300 x 65 111 against
// 131; float64 300 x 300 x 65 238 against 270 (benchmarks/bench_matmul_columns.py). A
// row-major A's rows are transposed first, which costs most of a vector of columns: it
// pays for one float32 column (3200 x 128 x 65 564 against 595, dout w^T 569 against 590),
// not for two or more (66-68 columns within 2% either way) nor in float64.
template <typename T>
constexpr int64_t kMaxLoneColumns = Lanes<T>::kWidth / 2;

template <typename T>
int64_t lone_column_limit(bool transposed_a) {
    return transposed_a ? kMaxLoneColumns<T> : std::is_same_v<T, float> ? 1 : 0;
}

// Rows of C a pass of lone_columns computes: three vectors of rows, whose FMA chains
// overlap; a row-major A's block of them is copied into the panel's buffer
// (kDepth x 3 vectors).
template <typename T>
constexpr int64_t kLoneRows = kVectors * Lanes<T>::kWidth;

// Rows [i0, i1) x Lone columns of C (c at row 0, column 0 of them, rows ldc apart) over
// `depth` inner indices (C written when `first`, else added to), a vector of rows at a
// time: op(A)'s column (A^T read in place at a + kk * lda + i, or a row-major A's rows
// copied transposed into `scratch`) times one element of B (b at the block's first inner
// index, b + kk * b_inner + l * b_column), plus the `bias` of the columns when not null.
// Each element's sum runs over the inner indices in order, starting from zero or C, and
// the bias is added to it once it is whole, as in the tiles: the same bits.
template <typename T, int Lone>
void lone_columns(bool first, int64_t depth, int64_t i0, int64_t i1, const T* a, int64_t lda,
                  bool transposed_a, const T* b, int64_t b_inner, int64_t b_column,
                  const T* bias, T* c, int64_t ldc, T* scratch) {
    using L = Lanes<T>;
    using Vec = typename L::Vec;
    constexpr int64_t W = L::kWidth;
    constexpr int S = kVectors;
    for (int64_t i = i0; i < i1; i += kLoneRows<T>) {
        __mmask16 rows[S];
        const T* a_rows[S];  // each vector of rows' column at the block's first inner index
        int64_t a_step = lda;
        for (int s = 0; s < S; ++s) {
            rows[s] = first_lanes(i1 - i - s * W, W);
            a_rows[s] = a + i + s * W;
            if (!transposed_a) {  // a block past i1 is read as zeros
                if (rows[s] != 0) {
                    pack_transposed_panel(depth, 1, std::min(i1 - i - s * W, W),
                                          a + (i + s * W) * lda, lda, scratch + s * depth * W);
                }
                a_rows[s] = scratch + s * depth * W;
            }
        }
        if (!transposed_a) a_step = W;
        alignas(64) T column[W];
        Vec acc[S][Lone];
#pragma GCC unroll 3
        for (int s = 0; s < S; ++s) {
#pragma GCC unroll 8
            for (int l = 0; l < Lone; ++l) {
                for (int64_t r = 0; r < W; ++r) {
                    const int64_t row = i + s * W + r;
                    column[r] = first || row >= i1 ? T(0) : c[row * ldc + l];
                }
                acc[s][l] = L::load(column);
            }
        }
        const __mmask16 rows0 = rows[0], rows1 = rows[1], rows2 = rows[2];
        const T *a0 = a_rows[0], *a1 = a_rows[1], *a2 = a_rows[2];
        for (int64_t kk = 0; kk < depth; ++kk) {
            const Vec av[S] = {L::load(a0 + kk * a_step, rows0), L::load(a1 + kk * a_step, rows1),
                               L::load(a2 + kk * a_step, rows2)};
#pragma GCC unroll 8
            for (int l = 0; l < Lone; ++l) {
                const Vec bv = L::broadcast(b + kk * b_inner + l * b_column);
#pragma GCC unroll 3
                for (int s = 0; s < S; ++s) acc[s][l] = L::fma(av[s], bv, acc[s][l]);
            }
        }
#pragma GCC unroll 3
        for (int s = 0; s < S; ++s) {
#pragma GCC unroll 8
            for (int l = 0; l < Lone; ++l) {
                const Vec sum = bias ? L::add(acc[s][l], L::broadcast(bias + l)) : acc[s][l];
                L::store_aligned(column, sum);
                for (int64_t r = 0; r < W && i + s * W + r < i1; ++r) {
                    c[(i + s * W + r) * ldc + l] = column[r];
                }
            }
        }
    }
}

template <typename T>
using LoneColumns = void (*)(bool, int64_t, int64_t, int64_t, const T*, int64_t, bool,
                             const T*, int64_t, int64_t, const T*, T*, int64_t, T*);

template <typename T, int... Lone>
constexpr auto lone_kernels(std::integer_sequence<int, Lone...>) {
    return std::array<LoneColumns<T>, sizeof...(Lone)>{lone_columns<T, Lone + 1>...};
}

// (groups: of A's inner indices, or none)
template <typename T>
void rows(int64_t row_begin, int64_t row_end, int64_t n, int64_t k, const T* a,
          int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc, bool accumulate,
          GemmTransposes transposes, T* a_scratch, const T* bias,
          const InnerGroups* groups = nullptr) {
    constexpr int64_t width = Lanes<T>::kWidth, panel_columns = kVectors * width;
    const bool aliasing = ldb * static_cast<int64_t>(sizeof(T)) % kAliasingBytes == 0;
    alignas(64) T packed[kDepth * panel_columns];
    for (int64_t k0 = 0; k0 < k; k0 += kDepth) {
        const int64_t depth = k - k0 < kDepth ? k - k0 : kDepth;
        for (int64_t i0 = row_begin; i0 < row_end; i0 += kChunkRows) {
            const int64_t i1 = row_end - i0 < kChunkRows ? row_end : i0 + kChunkRows;
            // A^T's rows are copied where more than one panel reads them.
            const bool pack_a = transposes.a && n > 2 * panel_columns;
            if (pack_a) pack_transposed_rows(i0, i1, depth, a + k0 * lda, lda, a_scratch);
            const bool pack = transposes.b || aliasing ||
                              (i1 - i0 >= kPackRows && depth >= kPackDepth);
            for (int64_t j = 0; j < n; j += panel_columns) {
                // The last panel's few columns past its whole vectors are summed along the
                // rows after its tiles, which leave `packed` free for them.
                const int64_t past_vectors = (n - j) % width;
                const bool last_panel = n - j <= panel_columns;
                const int64_t lone =
                    !groups && last_panel && past_vectors <= lone_column_limit<T>(transposes.a)
                        ? past_vectors
                        : 0;
                const int64_t left = n - j - lone;  // columns the tiles compute
                const bool first = k0 == 0 && !accumulate;
                const bool last_block = k0 + depth == k;
                if (left > 0) {
                    const __mmask16 lanes[kVectors] = {first_lanes(left, width),
                                                       first_lanes(left - width, width),
                                                       first_lanes(left - 2 * width, width)};
                    const int vectors = left > 2 * width ? 3 : left > width ? 2 : 1;
                    const T* panel = b + k0 * ldb + j;
                    Block<T> blk{pack_a ? kRows : lda, ldb, depth, first,
                                 bias && last_block ? bias + j : nullptr,
                                 groups ? *groups : InnerGroups{1, 1, 0},
                                 groups ? k0 % groups->group : 0};
                    if (transposes.b) {
                        pack_transposed_panel(depth, vectors, left, b + j * ldb + k0, ldb,
                                              packed);
                    } else if (pack) {  // zeros past column n: every load is whole
                        pack_panel(depth, vectors, panel, ldb, lanes, packed);
                    }
                    if (pack) {
                        panel = packed;
                        blk.ldb = vectors * width;
                    }
                    // A's column k0 (grouped: the start of its group), from a row's start
                    const int64_t a_k0 = groups ? k0 / groups->group * groups->outer : k0;
                    const ALayout layout = groups         ? kGroupedA
                                           : transposes.a ? kTransposedA
                                                          : kRowsOfA;
                    const Tile<T>* tiles =
                        tiles_for<T>(vectors, !pack && left < vectors * width, layout);
                    for (int64_t i = i0; i < i1; i += kRows) {
                        const int64_t count = i1 - i < kRows ? i1 - i : kRows;
                        const T* a_tile = pack_a         ? a_scratch + (i - i0) * depth
                                          : transposes.a ? a + k0 * lda + i
                                                         : a + i * lda + a_k0;
                        tiles[count](blk, a_tile, panel, lanes, c + i * ldc + j, ldc);
                    }
                }
                if (lone > 0) {
                    static constexpr auto kLoneKernels = lone_kernels<T>(
                        std::make_integer_sequence<int, int(kMaxLoneColumns<T>)>{});
                    const int64_t column = j + left;
                    kLoneKernels[lone - 1](
                        first, depth, i0, i1, transposes.a ? a + k0 * lda : a + k0, lda,
                        transposes.a,
                        transposes.b ? b + column * ldb + k0 : b + k0 * ldb + column,
                        transposes.b ? 1 : ldb, transposes.b ? ldb : 1,
                        bias && last_block ? bias + column : nullptr, c + column, ldc, packed);
                }
            }
        }
    }
}

// Y's R rows += X's R rows' entries [i0, i0 + Rows) times B's rows i0.. (n columns), for
// rows too wide for registers: each vector of a row's products summed in two chains (even
// rows, odd rows: half the FMA latency a vector waits), their sum added to y's vector (in
// L1). Each vector of B is loaded once for the R rows of X.
template <typename T, int Rows, int R>
void add_rows(int64_t n, int64_t i0, const T* x, int64_t ldx, const T* b, int64_t ldb, T* y,
              int64_t ldy) {
    using L = Lanes<T>;
    using Vec = typename L::Vec;
    constexpr int64_t W = L::kWidth;
    Vec xi[R][Rows];
    for (int q = 0; q < R; ++q)
        for (int r = 0; r < Rows; ++r) xi[q][r] = L::broadcast(x + q * ldx + i0 + r);
    const T* rows = b + i0 * ldb;
    for (int64_t j = 0; j < n; j += W) {
        const __mmask16 lanes = first_lanes(n - j, W);
        Vec even[R], odd[R];
        for (int q = 0; q < R; ++q) even[q] = odd[q] = L::zero();
        for (int r = 0; r < Rows; r += 2) {
            const Vec b_even = L::load(rows + r * ldb + j, lanes);
            for (int q = 0; q < R; ++q) even[q] = L::fma(xi[q][r], b_even, even[q]);
            if (r + 1 < Rows) {
                const Vec b_odd = L::load(rows + (r + 1) * ldb + j, lanes);
                for (int q = 0; q < R; ++q) odd[q] = L::fma(xi[q][r + 1], b_odd, odd[q]);
            }
        }
        for (int q = 0; q < R; ++q) {
            T* yq = y + q * ldy + j;
            L::store(yq, lanes, L::add(L::load(yq, lanes), L::add(even[q], odd[q])));
        }
    }
}

// Y (R x n) = X (R x k, rows ldx apart) * B for rows too wide for registers.
template <typename T, int R>
void rows_times_wide_matrix(int64_t n, int64_t k, const T* x, int64_t ldx, const T* b,
                            int64_t ldb, T* y, int64_t ldy) {
    for (int q = 0; q < R; ++q)
        for (int64_t j = 0; j < n; ++j) y[q * ldy + j] = T(0);
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) add_rows<T, 8, R>(n, i, x, ldx, b, ldb, y, ldy);
    for (; i < k; ++i) add_rows<T, 1, R>(n, i, x, ldx, b, ldb, y, ldy);
}

// rows_times_narrow_matrix's blocks of rows: at least 64 rows each, at most 32 blocks, whose
// sums wait in L1 (32 blocks of 16 vectors: 32 KB a row of X).
constexpr int64_t kMaxBlocks = 32;
constexpr int64_t kMinBlockRows = 64;

// Sums kept apart a row of X in rows_times_narrow_matrix: eight FMA chains or more.
constexpr int narrow_sums(int vectors) { return (8 + vectors - 1) / vectors; }

// Y (R x n) = X (R x k) * B where B's rows are Vectors vectors or fewer: the whole row's
// sums stay in registers while B is read as one stream (the cache's prefetchers' best
// case), each of its vectors loaded once for the R rows of X. Within a block of B's rows,
// sums over rows i = u mod Sums are kept apart and then added in u's order, so that at
// least eight FMA chains a row of X are in flight however narrow B's row; the blocks'
// sums are added in their order at the end. So the blocks may be read last to first
// (`backwards`) with the same result, and a row of X gets the same bits whatever R.
template <typename T, int Vectors, int R>
void rows_times_narrow_matrix(int64_t n, int64_t k, const T* x, int64_t ldx, const T* b,
                              int64_t ldb, T* y, int64_t ldy, bool backwards) {
    using L = Lanes<T>;
    using Vec = typename L::Vec;
    constexpr int64_t W = L::kWidth;
    constexpr int Sums = narrow_sums(Vectors);
    const __mmask16 last = first_lanes(n - (Vectors - 1) * W, W);
    const int64_t block_rows = std::max(kMinBlockRows, (k + kMaxBlocks - 1) / kMaxBlocks);
    const int64_t blocks = (k + block_rows - 1) / block_rows;
    Vec block_sums[R][kMaxBlocks][Vectors];
    for (int64_t p = 0; p < blocks; ++p) {
        const int64_t block = backwards ? blocks - 1 - p : p;
        const int64_t end = std::min(k, (block + 1) * block_rows);
        Vec acc[R][Sums][Vectors];
        for (auto& row_sums : acc)
            for (auto& sums : row_sums)
                for (auto& v : sums) v = L::zero();
        const auto add_row = [&](int u, int64_t i) {
            Vec xi[R];
            for (int q = 0; q < R; ++q) xi[q] = L::broadcast(x + q * ldx + i);
            const T* row = b + i * ldb;
            for (int v = 0; v < Vectors; ++v) {
                const Vec bv = v + 1 < Vectors ? L::load(row + v * W) : L::load(row + v * W, last);
                for (int q = 0; q < R; ++q) acc[q][u][v] = L::fma(xi[q], bv, acc[q][u][v]);
            }
        };
        int64_t i = block * block_rows;
        for (; i + Sums <= end; i += Sums)
            for (int u = 0; u < Sums; ++u) add_row(u, i + u);
        for (; i < end; ++i) add_row(0, i);
        for (int q = 0; q < R; ++q) {
            for (int v = 0; v < Vectors; ++v) {
                Vec sum = acc[q][0][v];
                for (int u = 1; u < Sums; ++u) sum = L::add(sum, acc[q][u][v]);
                block_sums[q][block][v] = sum;
            }
        }
    }
    for (int q = 0; q < R; ++q) {
        for (int v = 0; v < Vectors; ++v) {
            Vec sum = L::zero();
            for (int64_t block = 0; block < blocks; ++block) sum = L::add(sum, block_sums[q][block][v]);
            L::store(y + q * ldy + v * W, v + 1 < Vectors ? first_lanes(W, W) : last, sum);
        }
    }
}

// Rows of up to 16 vectors (256 float32, 128 float64) in registers.
constexpr int kNarrowVectors = 16;
// Rows of X a pass over B serves: for the narrow rows as many as keep every sum in
// registers (at most 28 of the 32 vector registers for them), but one where B's row is a
// single vector (4096 x 10 float32 at two rows: 7.3 us, against 5.1 on the tiles); four
// for the wide ones.
constexpr int kNarrowSumRegisters = 28;
constexpr int kMaxPassRows = 4;

constexpr int narrow_pass_rows(int vectors) {
    return vectors == 1 ? 1
                        : std::clamp(kNarrowSumRegisters / (narrow_sums(vectors) * vectors), 1,
                                     kMaxPassRows);
}

template <typename T>
using NarrowKernel = void (*)(int64_t, int64_t, const T*, int64_t, const T*, int64_t, T*,
                              int64_t, bool);

// narrow_kernels<T>(...)[Vectors - 1][R - 1]: rows_times_narrow_matrix for R up to
// narrow_pass_rows(Vectors) (null past it).
template <typename T, int Vectors, int... R>
constexpr std::array<NarrowKernel<T>, kMaxPassRows> narrow_kernels_of(
    std::integer_sequence<int, R...>) {
    return {(R + 1 <= narrow_pass_rows(Vectors) ? rows_times_narrow_matrix<T, Vectors, R + 1>
                                                 : nullptr)...};
}

template <typename T, int... Vectors>
constexpr auto narrow_kernels(std::integer_sequence<int, Vectors...>) {
    return std::array<std::array<NarrowKernel<T>, kMaxPassRows>, sizeof...(Vectors)>{
        narrow_kernels_of<T, Vectors + 1>(std::make_integer_sequence<int, kMaxPassRows>{})...};
}

int64_t pass_rows(int64_t n, int64_t width) {
    const int64_t vectors = (n + width - 1) / width;
    return vectors <= kNarrowVectors ? narrow_pass_rows(static_cast<int>(vectors)) : kMaxPassRows;
}

// Whether to read B last row to first this time: the other way from its last read on this
// thread, so that the rows read last, which are still in L2, are read first. A B a little
// larger than L2 (1 MB here) read front to back call after call misses on every row (each
// row is evicted just before it is read again). Remembered for the last few matrices;
// a matrix forgotten or mistaken (a new one at a freed one's address) is read either way
// with the same result, only at another speed.
bool read_backwards(const void* b) {
    struct LastRead {
        const void* b;
        bool backwards;
    };
    constexpr int kRemembered = 16;
    thread_local LastRead reads[kRemembered] = {};
    thread_local int next = 0;
    for (LastRead& read : reads) {
        if (read.b == b) return read.backwards = !read.backwards;
    }
    reads[next] = LastRead{b, false};
    next = (next + 1) % kRemembered;
    return false;
}

template <typename T>
void rows_times_matrix(int64_t m, int64_t n, int64_t k, const T* x, int64_t ldx, const T* b,
                       int64_t ldb, T* y, int64_t ldy) {
    if (n <= 0) return;
    const int64_t vectors = (n + Lanes<T>::kWidth - 1) / Lanes<T>::kWidth;
    if (vectors <= kNarrowVectors) {
        static constexpr auto kernels =
            narrow_kernels<T>(std::make_integer_sequence<int, kNarrowVectors>{});
        for (int64_t i = 0; i < m;) {
            const int64_t rows = std::min<int64_t>(m - i, narrow_pass_rows(int(vectors)));
            kernels[vectors - 1][rows - 1](n, k, x + i * ldx, ldx, b, ldb, y + i * ldy, ldy,
                                           read_backwards(b));
            i += rows;
        }
        return;
    }
    using Wide = void (*)(int64_t, int64_t, const T*, int64_t, const T*, int64_t, T*, int64_t);
    static constexpr Wide kWide[kMaxPassRows] = {
        rows_times_wide_matrix<T, 1>, rows_times_wide_matrix<T, 2>,
        rows_times_wide_matrix<T, 3>, rows_times_wide_matrix<T, 4>};
    for (int64_t i = 0; i < m;) {
        const int64_t rows = std::min<int64_t>(m - i, kMaxPassRows);
        kWide[rows - 1](n, k, x + i * ldx, ldx, b, ldb, y + i * ldy, ldy);
        i += rows;
    }
}

// C (`columns` x `rows`, leading dimension ldc) = S^T, S (rows x columns) side by side:
// in square blocks of a vector's width, transposed in registers.
template <typename T>
void transpose_out(int64_t rows, int64_t columns, const T* s, T* c, int64_t ldc) {
    using L = Lanes<T>;
    constexpr int64_t W = L::kWidth;
    for (int64_t r0 = 0; r0 < rows; r0 += W) {
        const int64_t block_rows = std::min(W, rows - r0);
        const __mmask16 row_lanes = first_lanes(block_rows, W);
        for (int64_t c0 = 0; c0 < columns; c0 += W) {
            const int64_t block_columns = std::min(W, columns - c0);
            const __mmask16 column_lanes = first_lanes(block_columns, W);
            typename L::Vec block[W];
            for (int64_t r = 0; r < W; ++r) {
                block[r] = r < block_rows ? L::load(s + (r0 + r) * columns + c0, column_lanes)
                                          : L::zero();
            }
            transpose_square(block);
            for (int64_t q = 0; q < block_columns; ++q) {
                L::store(c + (c0 + q) * ldc + r0, row_lanes, block[q]);
            }
        }
    }
}

template <typename T>
void columns_through_transpose(int64_t col_begin, int64_t col_end, int64_t m, int64_t k,
                               const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
                               int64_t ldc, T* scratch) {
    // Blocks of C's columns whose C^T fills the scratch, a whole number of vectors.
    constexpr int64_t W = Lanes<T>::kWidth;
    const int64_t block = std::max(W, kGemmTransposedAScratch / m / W * W);
    for (int64_t j0 = col_begin; j0 < col_end; j0 += block) {
        const int64_t width = std::min(block, col_end - j0);
        rows(0, width, m, k, b + j0 * ldb, ldb, a, lda, scratch, m, false,
             GemmTransposes{false, true}, static_cast<T*>(nullptr), static_cast<const T*>(nullptr));
        transpose_out(width, m, scratch, c + j0, ldc);
    }
}

}  // namespace

void gemm_rows_grouped_avx512(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                              const float* a, int64_t lda, InnerGroups groups, const float* b,
                              int64_t ldb, float* c, int64_t ldc, bool accumulate) {
    rows(row_begin, row_end, n, k, a, lda, b, ldb, c, ldc, accumulate, GemmTransposes{},
         static_cast<float*>(nullptr), static_cast<const float*>(nullptr), &groups);
}

void gemm_rows_grouped_avx512(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                              const double* a, int64_t lda, InnerGroups groups, const double* b,
                              int64_t ldb, double* c, int64_t ldc, bool accumulate) {
    rows(row_begin, row_end, n, k, a, lda, b, ldb, c, ldc, accumulate, GemmTransposes{},
         static_cast<double*>(nullptr), static_cast<const double*>(nullptr), &groups);
}

void gemm_rows_avx512(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                      const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                      int64_t ldc, bool accumulate, GemmTransposes transposes,
                      float* a_scratch, const float* bias) {
    rows(row_begin, row_end, n, k, a, lda, b, ldb, c, ldc, accumulate, transposes, a_scratch,
         bias);
}

void gemm_rows_avx512(int64_t row_begin, int64_t row_end, int64_t n, int64_t k,
                      const double* a, int64_t lda, const double* b, int64_t ldb, double* c,
                      int64_t ldc, bool accumulate, GemmTransposes transposes,
                      double* a_scratch, const double* bias) {
    rows(row_begin, row_end, n, k, a, lda, b, ldb, c, ldc, accumulate, transposes, a_scratch,
         bias);
}

void gemm_columns_through_transpose_avx512(int64_t col_begin, int64_t col_end, int64_t m,
                                           int64_t k, const float* a, int64_t lda,
                                           const float* b, int64_t ldb, float* c, int64_t ldc,
                                           float* scratch) {
    columns_through_transpose(col_begin, col_end, m, k, a, lda, b, ldb, c, ldc, scratch);
}

void gemm_columns_through_transpose_avx512(int64_t col_begin, int64_t col_end, int64_t m,
                                           int64_t k, const double* a, int64_t lda,
                                           const double* b, int64_t ldb, double* c,
                                           int64_t ldc, double* scratch) {
    columns_through_transpose(col_begin, col_end, m, k, a, lda, b, ldb, c, ldc, scratch);
}

int64_t gemm_few_rows_per_pass_avx512(int64_t n, const float*) {
    return pass_rows(n, Lanes<float>::kWidth);
}

int64_t gemm_few_rows_per_pass_avx512(int64_t n, const double*) {
    return pass_rows(n, Lanes<double>::kWidth);
}

void gemm_few_rows_avx512(int64_t m, int64_t n, int64_t k, const float* x, const float* b,
                          int64_t ldb, float* y) {
    rows_times_matrix(m, n, k, x, k, b, ldb, y, n);
}

void gemm_few_rows_avx512(int64_t m, int64_t n, int64_t k, const double* x, const double* b,
                          int64_t ldb, double* y) {
    rows_times_matrix(m, n, k, x, k, b, ldb, y, n);
}

}  // namespace graphnet
