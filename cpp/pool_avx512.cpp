// AVX-512 kernels of pool_avx512.h. Compiled for AVX-512: includes only the intrinsics.
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
// PoolRow<V> specialises a template on a vector type, which drops its may_alias attribute
// (GCC warns): nothing reads memory through a pointer to V.
#pragma GCC diagnostic ignored "-Wignored-attributes"
// GCC warns that a lambda returning a vector "changes the ABI without AVX512F": it means the
// lambda's unused conversion to a plain function pointer; every call here is inside this
// file, compiled for AVX-512.
#pragma GCC diagnostic ignored "-Wpsabi"
#include "pool_avx512.h"

#include <type_traits>

#include "pool_stacks.h"
#include "simd_lanes_avx512.h"

namespace graphnet {
namespace {

// What row_maxima and column_maxima (pool_stacks.h) need of the AVX-512 vectors: a window's
// offsets in integer lanes as wide as V's.
template <>
struct PoolRow<__m512> {
    static __m512 offset(int32_t k) { return _mm512_castsi512_ps(_mm512_set1_epi32(k)); }
    static __m512 add_offset(__m512 offsets, int32_t k) {
        return _mm512_castsi512_ps(
            _mm512_add_epi32(_mm512_castps_si512(offsets), _mm512_set1_epi32(k)));
    }
};

template <>
struct PoolRow<__m512d> {
    static __m512d offset(int32_t k) { return _mm512_castsi512_pd(_mm512_set1_epi64(k)); }
    static __m512d add_offset(__m512d offsets, int32_t k) {
        return _mm512_castsi512_pd(
            _mm512_add_epi64(_mm512_castpd_si512(offsets), _mm512_set1_epi64(k)));
    }
};

// The lanes of v in `lanes`, in order, at dst: compressed to the front of a register (a
// compress to memory is microcoded on Zen 4) and stored under a mask.
inline void store_compressed(__mmask16 lanes, __m512 v, float* dst) {
    const auto front = static_cast<__mmask16>((1u << __builtin_popcount(lanes)) - 1);
    _mm512_mask_storeu_ps(dst, front, _mm512_maskz_compress_ps(lanes, v));
}
inline void store_compressed(__mmask8 lanes, __m512d v, double* dst) {
    const auto front = static_cast<__mmask8>((1u << __builtin_popcount(lanes)) - 1);
    _mm512_mask_storeu_pd(dst, front, _mm512_maskz_compress_pd(lanes, v));
}

// The outputs among a vector of a plane's entries k0 .. k0 + L - 1 (lanes: the windows'
// top left entries), in order, at dst, and their winners k + offset (an offset's low 32
// bits: x86 is little-endian) at win (store_compressed).
inline void store_picked(__mmask16 lanes, int32_t k0, __m512 best, __m512 offset, float* dst,
                         int32_t* win) {
    const auto front = static_cast<__mmask16>((1u << __builtin_popcount(lanes)) - 1);
    const __m512i k = _mm512_add_epi32(
        _mm512_set1_epi32(k0),
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    store_compressed(lanes, best, dst);
    const __m512i winners = _mm512_add_epi32(k, _mm512_castps_si512(offset));
    _mm512_mask_storeu_epi32(win, front, _mm512_maskz_compress_epi32(lanes, winners));
}

inline void store_picked(__mmask8 lanes, int32_t k0, __m512d best, __m512d offset, double* dst,
                         int32_t* win) {
    const auto front = static_cast<__mmask8>((1u << __builtin_popcount(lanes)) - 1);
    const __m256i k =
        _mm256_add_epi32(_mm256_set1_epi32(k0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    store_compressed(lanes, best, dst);
    const __m256i winners = _mm256_add_epi32(k, _mm512_cvtepi64_epi32(_mm512_castpd_si512(offset)));
    _mm256_mask_storeu_epi32(win, front, _mm256_maskz_compress_epi32(lanes, winners));
}

// The vectors of a plane's entries (at most kBand) that hold windows' top left entries:
// their first entry, their lanes that do, and the outputs before them. The same for every
// plane of g: listed once a call.
template <typename L>
struct TopLeftVectors {
    using Mask = typename L::Mask;
    static constexpr int64_t most = kBand / L::width;
    int64_t count = 0;
    int32_t at[most], outputs_before[most];
    Mask lanes[most] = {};

    // A row of windows at a time, its lanes of a vector gathered in a register: set lane by
    // lane in memory, each lane waited for the last one's store (the max pool's forward of
    // 2x2 stride-1 windows on 32 x 32 float32 planes took 1.4x the time, on 16 x 16 1.15x).
    explicit TopLeftVectors(const AvgPoolPlane& g) {
        constexpr int64_t width = L::width;
        const int64_t s = g.stride;
        for (int64_t oh = 0; oh < g.Ho; ++oh) {
            const int64_t first = oh * s * g.W, last = first + (g.Wo - 1) * s;
            for (int64_t k = first; k <= last;) {
                const int64_t v = k / width, end = std::min(last + 1, (v + 1) * width);
                uint32_t bits = 0;
                if (s == 1) {
                    bits = ((1u << (end - k)) - 1) << (k - v * width);
                    k = end;
                } else {
                    for (; k < end; k += s) bits |= 1u << (k - v * width);
                }
                lanes[v] = static_cast<Mask>(lanes[v] | bits);
            }
        }
        int64_t before = 0;
        for (int64_t v = 0; v * width < g.in_plane(); ++v) {
            if (!lanes[v]) continue;
            at[count] = static_cast<int32_t>(v * width);
            outputs_before[count] = static_cast<int32_t>(before);
            before += __builtin_popcount(lanes[v]);
            lanes[count++] = lanes[v];
        }
    }
};

// The stacks of planes (pool_avx2.cpp's stacked_planes: each entry's first maximum along
// the window's width, in long vectors along the stack, then down its height) for planes of
// at most kBand entries, in bands of whole planes. The maxima down the height are taken
// only in the vectors of a plane's entries that hold windows' top left entries, under
// their masks (the same for every plane: listed once), and the outputs picked straight
// out of those registers (store_picked: several rows of a small plane in one). A row at
// a time (as stacked_planes), a row of a few outputs had cost more than its maxima; a
// pass down the height over every entry stored and loaded them again, and at strides of
// 2 and more computed rows no window starts at (1.05x-1.6x this time).
template <typename V, bool Relu, typename S = typename Lanes<V>::Scalar>
void stacked_small_planes(const AvgPoolPlane& g, int64_t planes, const S* src, S* dst,
                          int32_t* win) {
    using L = Lanes<V>;
    const int64_t in_plane = g.in_plane(), out_plane = g.out_plane();
    // Bands of whole planes of up to 4 KB of entries (1,024 float32, 512 float64), at least
    // a plane: then the band's maxima and offsets are 8 KB beside them. Bands of kBand
    // entries took 1.05x-1.2x the time on float32 24 x 24 and 32 x 32 planes, 1.1x-1.45x
    // on float64 9 x 11 to 32 x 32 (measured; bands of 2 KB did no better).
    constexpr int64_t kBandBytes = 4096;
    const int64_t per_band =
        std::max<int64_t>(1, kBandBytes / static_cast<int64_t>(sizeof(S)) / in_plane);
    const TopLeftVectors<L> tops(g);
    S best[kBand], offsets[kBand];
    const int64_t ph = g.pool_height, pw = g.pool_width;
    for (int64_t first = 0; first < planes; first += per_band) {
        const int64_t n = std::min(per_band, planes - first), entries = n * in_plane;
        row_maxima<V, Relu>(src + first * in_plane, pw, entries - pw + 1, best, offsets);
        for (int64_t p = 0; p < n; ++p) {
            const int64_t out = (first + p) * out_plane;
            for (int64_t v = 0; v < tops.count; ++v) {
                // the column maxima of the vectors that hold outputs alone, kept in registers
                const auto load = [&](const S* at) { return L::load(at, tops.lanes[v]); };
                V offset;
                const V top = column_maximum<V>(best, offsets, p * in_plane + tops.at[v], g.W,
                                                ph, load, offset);
                const int64_t o = out + tops.outputs_before[v];
                store_picked(tops.lanes[v], tops.at[v], top, offset, dst + o, win + o);
            }
        }
    }
}

// ----- 2x2 windows at stride 2 -----------------------------------------------------------

// What planes_stride_2 and unpool_planes_2x2 need of a vector type: the even and the odd
// lanes of two vectors, and
// the winners' int32 vectors (as wide as V's lanes: sixteen of __m512, eight of __m512d).
template <typename V>
struct Pairs;

template <>
struct Pairs<__m512> {
    using Mask = __mmask16;
    using Winners = __m512i;
    static __m512 evens(__m512 lo, __m512 hi) {
        const __m512i at = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                             28, 30);
        return _mm512_permutex2var_ps(lo, at, hi);
    }
    static __m512 odds(__m512 lo, __m512 hi) {
        const __m512i at = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27,
                                             29, 31);
        return _mm512_permutex2var_ps(lo, at, hi);
    }
    // The windows' top left entries: lo's lanes first_lo + 2 i, hi's first_hi + 2 i.
    static __m512i tops(int32_t first_lo, int32_t first_hi) {
        const __m512i first = _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi32(first_lo),
                                                      _mm512_set1_epi32(first_hi));
        const __m512i step =
            _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14);
        return _mm512_add_epi32(first, step);
    }
    static __m512i winners(__m512i tops, __m512 offsets) {
        return _mm512_add_epi32(tops, _mm512_castps_si512(offsets));
    }
    static __m512i compress(Mask m, __m512i w) { return _mm512_maskz_compress_epi32(m, w); }
    static __m512 compress(Mask m, __m512 v) { return _mm512_maskz_compress_ps(m, v); }
    static void store(int32_t* at, Mask m, __m512i w) { _mm512_mask_storeu_epi32(at, m, w); }
    static __m512i load(const int32_t* at, Mask m) { return _mm512_maskz_loadu_epi32(m, at); }
    static __m512i expand(Mask m, __m512i w) { return _mm512_maskz_expand_epi32(m, w); }
    static __m512 expand(Mask m, __m512 v) { return _mm512_maskz_expand_ps(m, v); }
    // The lanes where w is k.
    static Mask equal(__m512i w, int32_t k) {
        return _mm512_cmpeq_epi32_mask(w, _mm512_set1_epi32(k));
    }
    static __m512i sub(__m512i a, __m512i b) { return _mm512_sub_epi32(a, b); }
    // The lo and the hi halves of u and v interleaved: u0 v0 u1 v1 ...
    static __m512 interleave_lo(__m512 u, __m512 v) {
        const __m512i at = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7,
                                             23);
        return _mm512_permutex2var_ps(u, at, v);
    }
    static __m512 interleave_hi(__m512 u, __m512 v) {
        const __m512i at = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14,
                                             30, 15, 31);
        return _mm512_permutex2var_ps(u, at, v);
    }
};

template <>
struct Pairs<__m512d> {
    using Mask = __mmask8;
    using Winners = __m256i;
    static __m512d evens(__m512d lo, __m512d hi) {
        return _mm512_permutex2var_pd(lo, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), hi);
    }
    static __m512d odds(__m512d lo, __m512d hi) {
        return _mm512_permutex2var_pd(lo, _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), hi);
    }
    static __m256i tops(int32_t first_lo, int32_t first_hi) {
        const __m256i first = _mm256_mask_blend_epi32(0xF0, _mm256_set1_epi32(first_lo),
                                                      _mm256_set1_epi32(first_hi));
        return _mm256_add_epi32(first, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6));
    }
    // the offsets' low 32 bits added
    static __m256i winners(__m256i tops, __m512d offsets) {
        return _mm256_add_epi32(tops, _mm512_cvtepi64_epi32(_mm512_castpd_si512(offsets)));
    }
    static __m256i compress(Mask m, __m256i w) { return _mm256_maskz_compress_epi32(m, w); }
    static __m512d compress(Mask m, __m512d v) { return _mm512_maskz_compress_pd(m, v); }
    static void store(int32_t* at, Mask m, __m256i w) { _mm256_mask_storeu_epi32(at, m, w); }
    static __m256i load(const int32_t* at, Mask m) { return _mm256_maskz_loadu_epi32(m, at); }
    static __m256i expand(Mask m, __m256i w) { return _mm256_maskz_expand_epi32(m, w); }
    static __m512d expand(Mask m, __m512d v) { return _mm512_maskz_expand_pd(m, v); }
    static Mask equal(__m256i w, int32_t k) {
        return _mm256_cmpeq_epi32_mask(w, _mm256_set1_epi32(k));
    }
    static __m256i sub(__m256i a, __m256i b) { return _mm256_sub_epi32(a, b); }
    static __m512d interleave_lo(__m512d u, __m512d v) {
        return _mm512_permutex2var_pd(u, _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), v);
    }
    static __m512d interleave_hi(__m512d u, __m512d v) {
        return _mm512_permutex2var_pd(u, _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15), v);
    }
};

// The stride-2 windows of `planes` planes one after another in segments of up to
// `half` outputs (half a vector): a row's first `half` outputs, its next ones, ..., then the
// next row's, the next plane's. A vector takes two segments, the next two whatever row or
// plane they are in, so rows shorter than a vector fill it as well as long ones, and a
// plane has no setup and no scalar tail.
class Segments {
public:
    struct Segment {
        int64_t entry;     // the first window's top left entry in the stack of planes
        int64_t out;       // its output in the stack of outputs
        int32_t first;     // that entry's index in its plane
        int64_t outputs;   // 0 past the last plane
        bool row_end;      // the last segment of its row
        int64_t plane;     // whose last segment it is, or -1
    };

    Segments(const AvgPoolPlane& g, int64_t planes, int64_t half)
        : W_(g.W), Ho_(g.Ho), Wo_(g.Wo), in_plane_(g.in_plane()), out_plane_(g.out_plane()),
          planes_(planes), half_(half) {}

    bool more() const { return p_ < planes_; }

    Segment next() {
        if (p_ == planes_) return {0, 0, 0, 0, false, -1};
        const int64_t entry = 2 * oh_ * W_ + 2 * ow_;
        Segment s{p_ * in_plane_ + entry, p_ * out_plane_ + oh_ * Wo_ + ow_,
                  static_cast<int32_t>(entry), std::min(half_, Wo_ - ow_), false, -1};
        ow_ += half_;
        if (ow_ >= Wo_) {
            ow_ = 0;
            s.row_end = true;
            if (++oh_ == Ho_) {
                oh_ = 0;
                s.plane = p_++;
            }
        }
        return s;
    }

private:
    // copies, which stay in registers across the kernels' stores
    const int64_t W_, Ho_, Wo_, in_plane_, out_plane_, planes_, half_;
    int64_t p_ = 0, oh_ = 0, ow_ = 0;  // the next segment's plane, output row and output
};

// The lanes of a vector of segments lo and hi: lo's outputs in its first half, hi's in
// its second.
template <typename L>
typename L::Mask halves(const Segments::Segment& lo, const Segments::Segment& hi) {
    constexpr int64_t half = L::width / 2;
    return static_cast<typename L::Mask>(L::tail(lo.outputs) | (L::tail(hi.outputs) << half));
}

// The pooling at stride 2 of `planes` planes (pool.h's tie rule; with Relu, of relu(x) as
// relu_forward computes it) on sixteen float32 or eight float64 lanes, the windows of
// pool_avx2.cpp's rows side by side: each row of the windows' first maximum (a chain of
// compares along it), then the first of those, row after row. Each half of a vector holds
// a segment's windows: a masked load of each of its rows at each even column of the
// window gives the windows' entries at that column in its even lanes and at the next one
// in its odd lanes (one permute each pairs the entries of both halves). The outputs of
// both segments are stored as one run (compressed together where the first is short).
// kH, kW > 0 fix the window at compile time (2x2, 3x3); 0 reads it from g.
template <typename V, bool Relu, int64_t kH, int64_t kW, typename S = typename Lanes<V>::Scalar>
void planes_stride_2(const AvgPoolPlane& g, int64_t planes, const S* src, S* dst, int32_t* win) {
    using L = Lanes<V>;
    using P = Pairs<V>;
    using Mask = typename P::Mask;
    constexpr int64_t half = L::width / 2;
    const auto seen = [](V v) {  // relu_forward's numbers: x <= 0 (not a NaN) becomes +0
        return Relu ? L::select(L::ge(L::zero(), v), L::zero(), v) : v;
    };
    const int64_t ph = kH ? kH : g.pool_height, pw = kW ? kW : g.pool_width, W = g.W;
    const auto at = [](int64_t k) { return PoolRow<V>::offset(static_cast<int32_t>(k)); };
    Segments segments(g, planes, half);
    while (segments.more()) {
        const auto lo = segments.next(), hi = segments.next();
        // The lanes of a load at a window's column: the entries of that column and the next
        // one, but the last entry at the window's last column (which could be past x).
        const Mask lo_pairs = L::tail(2 * lo.outputs), hi_pairs = L::tail(2 * hi.outputs);
        const Mask lo_last = L::tail(2 * lo.outputs - 1), hi_last = L::tail(2 * hi.outputs - 1);
        // the first maximum of the windows' row i, and its offset
        const auto row_maximum = [&](int64_t i, V& row_offset) {
            const S* lo_row = src + lo.entry + i * W;
            const S* hi_row = src + hi.entry + i * W;
            V row_best = V();
            for (int64_t j = 0; j < pw; j += 2) {
                const bool odd = j + 1 < pw;
                const V a = seen(L::load(lo_row + j, odd ? lo_pairs : lo_last));
                const V b = seen(L::load(hi_row + j, odd ? hi_pairs : hi_last));
                if (j == 0) {
                    row_best = P::evens(a, b);
                    row_offset = at(i * W);
                } else {
                    row_best = first_max(row_best, P::evens(a, b), row_offset, at(i * W + j),
                                         row_offset);
                }
                if (odd) {
                    row_best = first_max(row_best, P::odds(a, b), row_offset, at(i * W + j + 1),
                                         row_offset);
                }
            }
            return row_best;
        };
        V offset = V();
        V best = row_maximum(0, offset);
        for (int64_t i = 1; i < ph; ++i) {
            V row_offset = V();
            const V row_best = row_maximum(i, row_offset);
            best = first_max(best, row_best, offset, row_offset, offset);
        }
        auto winners = P::winners(P::tops(lo.first, hi.first), offset);
        const Mask run = L::tail(lo.outputs + hi.outputs);
        if (lo.outputs < half) {  // the two segments' outputs as one run
            best = P::compress(halves<L>(lo, hi), best);
            winners = P::compress(halves<L>(lo, hi), winners);
        }
        L::store(dst + lo.out, run, best);
        P::store(win + lo.out, run, winners);
    }
}

template <typename V, bool Relu, typename S>
void planes_stride_2(const AvgPoolPlane& g, int64_t planes, const S* src, S* dst, int32_t* win) {
    const auto kernel = g.pool_height == 2 && g.pool_width == 2   ? planes_stride_2<V, Relu, 2, 2>
                        : g.pool_height == 3 && g.pool_width == 3 ? planes_stride_2<V, Relu, 3, 3>
                                                                  : planes_stride_2<V, Relu, 0, 0>;
    kernel(g, planes, src, dst, win);
}

// max_unpool_plane's dx of `planes` planes of 2x2 stride-2 windows (2 Ho <= H, 2 Wo <= W),
// unpool_plane_2x2's bits: each window's block written whole, its gradient's bits where
// the winner lies and +0 elsewhere (a -0 stays -0), the segments of planes_stride_2 two to a
// vector: the gradients and winners of both as one run (expanded into the halves where
// the first is short), the four masks of the winners' offsets, and each half's block
// rows interleaved from the masked gradients. The columns and the row no block covers
// are zeroed as each row and plane ends. Stops at a vector with a winner outside its
// block (a 3x3 window's, or a hostile one) and returns the planes finished before it.
template <typename V, typename S = typename Lanes<V>::Scalar>
int64_t unpool_planes_2x2(const AvgPoolPlane& g, int64_t planes, const S* grad,
                          const int32_t* win, S* dx) {
    using L = Lanes<V>;
    using P = Pairs<V>;
    using Mask = typename P::Mask;
    constexpr int64_t half = L::width / 2;
    const auto W = static_cast<int32_t>(g.W);
    Segments segments(g, planes, half);
    int64_t finished = 0;
    const int64_t H = g.H, Ho = g.Ho, columns = g.W - 2 * g.Wo;
    const auto uncovered = [&](const Segments::Segment& s) {
        if (s.row_end && columns) {  // the columns no block covers (a call to memset cost
            const int64_t end = s.entry + 2 * s.outputs;  // more than the row's blocks)
            if (columns <= L::width) {
                L::store(dx + end, L::tail(columns), L::zero());
                L::store(dx + end + W, L::tail(columns), L::zero());
            } else {
                std::fill(dx + end, dx + end + columns, S(0));
                std::fill(dx + end + W, dx + end + W + columns, S(0));
            }
        }
        if (s.plane >= 0) {  // the row no block covers
            std::fill(dx + (s.plane * H + 2 * Ho) * W, dx + (s.plane + 1) * H * W, S(0));
            finished = s.plane + 1;
        }
    };
    while (segments.more()) {
        const auto lo = segments.next(), hi = segments.next();
        const Mask run = L::tail(lo.outputs + hi.outputs);
        V grads = L::load(grad + lo.out, run);
        auto winners = P::load(win + lo.out, run);
        const Mask both = halves<L>(lo, hi);
        if (lo.outputs < half) {
            grads = P::expand(both, grads);
            winners = P::expand(both, winners);
        }
        const auto at = P::sub(winners, P::tops(lo.first, hi.first));
        const Mask left = P::equal(at, 0), right = P::equal(at, 1);
        const Mask down = P::equal(at, W), down_right = P::equal(at, W + 1);
        if (static_cast<Mask>(both & ~(left | right | down | down_right))) return finished;
        const V a = L::keep(left, grads), b = L::keep(right, grads);
        const V c = L::keep(down, grads), d = L::keep(down_right, grads);
        S* top_lo = dx + lo.entry;
        S* top_hi = dx + hi.entry;
        const Mask lo_out = L::tail(2 * lo.outputs), hi_out = L::tail(2 * hi.outputs);
        L::store(top_lo, lo_out, P::interleave_lo(a, b));
        L::store(top_lo + W, lo_out, P::interleave_lo(c, d));
        L::store(top_hi, hi_out, P::interleave_hi(a, b));
        L::store(top_hi + W, hi_out, P::interleave_hi(c, d));
        uncovered(lo);
        uncovered(hi);
    }
    return finished;
}

// ----- the max pool's backward of overlapping windows at stride 1 ----------------------

// The winners as integer lanes beside a vector of V's: sixteen int32 beside __m512, eight
// beside __m512d (AVX-512VL), under V's masks. add(sum, m, grad) is sum + grad where m is
// set with sum the first operand, which x86 returns of two NaNs: the scatter's
// `dx[winner] += grad` keeps the NaN already in dx. In asm: the compiler takes an add's
// operands in either order (it did swap the intrinsic's).
template <typename V>
struct WinnerLanes;

// What is alike for both: prefix _mm512 or _mm256, integer vectors of si512 or si256.
#define GRAPHNET_WINNER_LANES(Int, M, prefix, si)                                          \
    using I = Int;                                                                        \
    static I zero() { return prefix##_setzero_##si(); }                                   \
    static I offset(I entries, int64_t by) {                                              \
        return prefix##_add_epi32(entries, prefix##_set1_epi32(static_cast<int32_t>(by))); \
    }                                                                                     \
    static M equal(M m, I winners, I entries) {                                           \
        return prefix##_mask_cmpeq_epi32_mask(m, winners, entries);                       \
    }                                                                                     \
    static I count(I counts, M m) {                                                       \
        return prefix##_mask_sub_epi32(counts, m, counts, prefix##_set1_epi32(-1));       \
    }

template <>
struct WinnerLanes<__m512> {
    GRAPHNET_WINNER_LANES(__m512i, __mmask16, _mm512, si512)
    static I entries(int32_t first) {  // first, first + 1, ...
        return _mm512_add_epi32(_mm512_set1_epi32(first),
                                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    }
    static int64_t total(I counts) { return _mm512_reduce_add_epi32(counts); }
    static __m512 add(__m512 sum, __mmask16 m, __m512 grad) {
        asm("vaddps %[grad], %[sum], %[sum]%{%[m]%}" : [sum] "+v"(sum) : [grad] "v"(grad), [m] "Yk"(m));
        return sum;
    }
};

template <>
struct WinnerLanes<__m512d> {
    GRAPHNET_WINNER_LANES(__m256i, __mmask8, _mm256, si256)
    static I entries(int32_t first) {
        return _mm256_add_epi32(_mm256_set1_epi32(first), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    static int64_t total(I counts) {
        const __m128i pairs = _mm_add_epi32(_mm256_castsi256_si128(counts),
                                            _mm256_extracti128_si256(counts, 1));
        const __m128i two = _mm_add_epi32(pairs, _mm_unpackhi_epi64(pairs, pairs));
        return _mm_cvtsi128_si32(_mm_add_epi32(two, _mm_srli_epi64(two, 32)));
    }
    static __m512d add(__m512d sum, __mmask8 m, __m512d grad) {
        asm("vaddpd %[grad], %[sum], %[sum]%{%[m]%}" : [sum] "+v"(sum) : [grad] "v"(grad), [m] "Yk"(m));
        return sum;
    }
};

#undef GRAPHNET_WINNER_LANES

// The lanes m of the vector at array + at (at most the array's end), the others zero, where
// m's lanes are consecutive and inside the array: a row's windows, m leaving out those off
// the row's left end, before which `at` points at a row's first windows (at < 0 on the
// plane's first row). A pointer before an array is undefined even where no lane reads
// through it, so those vectors expand m's lanes from the array's start.
inline __m512 load_within(const float* array, int64_t at, __mmask16 m) {
    return at >= 0 ? _mm512_maskz_loadu_ps(m, array + at) : _mm512_maskz_expandloadu_ps(m, array);
}
inline __m512d load_within(const double* array, int64_t at, __mmask8 m) {
    return at >= 0 ? _mm512_maskz_loadu_pd(m, array + at) : _mm512_maskz_expandloadu_pd(m, array);
}
inline __m512i load_within(const int32_t* array, int64_t at, __mmask16 m) {
    return at >= 0 ? _mm512_maskz_loadu_epi32(m, array + at)
                   : _mm512_maskz_expandloadu_epi32(m, array);
}
inline __m256i load_within(const int32_t* array, int64_t at, __mmask8 m) {
    return at >= 0 ? _mm256_maskz_loadu_epi32(m, array + at)
                   : _mm256_maskz_expandloadu_epi32(m, array);
}

// max_unpool_plane's dx (+0, then each window's gradient added at its winner, the windows
// in order) of `planes` planes of stride-1 windows (g's, Wo = W - pw + 1), gathered
// rather than scattered: an entry of dx is +0 plus the gradients, in the windows' order,
// of the windows that cover it whose winner it is. So a vector of a row of dx compares
// the winners of each covering window with its entries (masked loads: the windows off
// the plane compare nothing) and adds the gradients where they match (a masked add: the
// others add nothing, the scatter's operations in its order: the same bits, NaNs and -0
// too). The scatter's adds at the same entry one after another waited on each other
// through memory (8x a copy's time on 3x3 windows). An entry is compared with the winner
// of each window that covers it, so every winner in its window matches once: a plane with
// fewer matches than windows has a winner elsewhere (from other windows, or hostile, or
// off the plane). Returns how many planes it finished before the first such plane (its dx
// then unfinished, left to the scatter).
template <typename V, int64_t K, typename S = typename Lanes<V>::Scalar>
int64_t gather_unpool_planes(const AvgPoolPlane& g, int64_t planes, const S* grad,
                             const int32_t* win, S* dx) {
    using L = Lanes<V>;
    using WL = WinnerLanes<V>;
    using Mask = typename L::Mask;
    constexpr int64_t lanes = L::width;
    const int64_t W = g.W, Ho = g.Ho, Wo = g.Wo;
    constexpr int64_t ph = K, pw = K;
    const int64_t in_plane = g.in_plane(), out_plane = g.out_plane();
    Mask on_row[pw];  // the lanes whose window starting b columns left is on the row
    V sums[ph];       // rows oh .. oh + ph - 1 of dx, as the windows of row oh add
    for (int64_t p = 0; p < planes; ++p) {
        const S* plane_grad = grad + p * out_plane;
        const int32_t* plane_win = win + p * out_plane;
        S* plane_dx = dx + p * in_plane;
        auto matched = WL::zero();
        for (int64_t w = 0; w < W; w += lanes) {
            const auto row_end = L::tail(W - w);
            for (int64_t b = 0; b < pw; ++b) {
                on_row[b] = static_cast<Mask>(L::tail(Wo - w + b) & ~L::tail(b - w));
            }
            for (int64_t i = 0; i < ph; ++i) sums[i] = L::zero();
            for (int64_t oh = 0; oh < Ho; ++oh) {
                const auto entries = WL::entries(static_cast<int32_t>(oh * W + w));
                // lane k's windows of this row start at columns w + k - b (b = pw - 1 .. 0:
                // left to right); each one's winner and gradient loaded once for the ph rows
                // of dx it covers
                for (int64_t b = pw - 1; b >= 0; --b) {
                    // lane 0's window (maybe off the row; where on_row[b] is empty, maybe past
                    // the last, which pointing at the gradients' end does no harm)
                    const int64_t at = std::min(oh * Wo + w - b, out_plane);
                    const auto winners = load_within(plane_win, at, on_row[b]);
                    const V grads = load_within(plane_grad, at, on_row[b]);
                    Mask any = 0;
                    for (int64_t i = 0; i < ph; ++i) {
                        const Mask hit = WL::equal(on_row[b], winners, WL::offset(entries, i * W));
                        sums[i] = WL::add(sums[i], hit, grads);
                        any = static_cast<Mask>(any | hit);  // a winner is one entry at most
                    }
                    matched = WL::count(matched, any);
                }
                L::store(plane_dx + oh * W + w, row_end, sums[0]);  // row oh has all its windows
                for (int64_t i = 1; i < ph; ++i) sums[i - 1] = sums[i];
                sums[ph - 1] = L::zero();
            }
            for (int64_t i = 0; i + 1 < ph; ++i) {  // the rows below every window's top row
                L::store(plane_dx + (Ho + i) * W + w, row_end, sums[i]);
            }
        }
        if (WL::total(matched) != out_plane) return p;
    }
    return planes;
}

template <typename V, typename S = typename Lanes<V>::Scalar>
int64_t gather_unpool_planes(const AvgPoolPlane& g, int64_t planes, const S* grad,
                             const int32_t* win, S* dx) {
    return (g.pool_width == 2 ? gather_unpool_planes<V, 2, S>
                              : gather_unpool_planes<V, 3, S>)(g, planes, grad, win, dx);
}

// ----- the average pool's backward at stride 1 or 2 ---------------------------------------

// The lanes of the vectors of columns q0 - L .. q0 - 1 (prev) and q0 .. q0 + L - 1 (cur) at
// columns q0 - d .. q0 - d + L - 1, at = behind<V>(d): one permute.
inline __m512 from_two(__m512 prev, __m512 cur, __m512i at) {
    return _mm512_permutex2var_ps(prev, at, cur);
}
inline __m512d from_two(__m512d prev, __m512d cur, __m512i at) {
    return _mm512_permutex2var_pd(prev, at, cur);
}
template <typename V>
__m512i behind(int64_t d);
template <>
__m512i behind<__m512>(int64_t d) {
    return _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(16 - d)),
                            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
}
template <>
__m512i behind<__m512d>(int64_t d) {
    return _mm512_add_epi64(_mm512_set1_epi64(8 - d), _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7));
}

// avg_pool_planes_backward's dx (avg_pool_plane.h: the stride-1 window sums of the gradient
// spread over a plane of zeros with the full correlation's pad, / the window's size) of
// `planes` planes at stride 1 or 2 (pool_width <= L), a row of dx at a time. A spread zero
// left out of a left fold changes no number but a -0 sum (which adding a zero makes +0), so
// an entry of dx is: the fold, left to right, of the sums (top to bottom) of the gradients
// of the windows that cover it, column by column, + 0 where the spread plane's window
// held a zero (at stride 2 always; at stride 1 in rows the windows clip, and off the
// row's ends, where the columns' sums are zeros), / the window's size. So a row of dx
// takes its covering gradient rows' column sums a vector at a time (masked loads: zeros
// off the row), and each window's columns from this vector and the one before (permutes):
// no plane of zeros and no passes over it, each gradient loaded once a row. At stride 2
// the columns w = 2 q + t of each phase t (even, odd) are those of windows q - d .. q,
// and both phases are interleaved into dx.
template <typename V, typename S = typename Lanes<V>::Scalar>
void avg_unpool_rows(const AvgPoolPlane& g, int64_t planes, const S* grad, S* dx) {
    using L = Lanes<V>;
    using Mask = typename L::Mask;
    constexpr int64_t lanes = L::width;
    const int64_t s = g.stride, ph = g.pool_height, pw = g.pool_width;
    const int64_t H = g.H, W = g.W, Ho = g.Ho, Wo = g.Wo;
    const V count = L::set1(static_cast<S>(ph * pw));
    __m512i shifts[lanes];
    for (int64_t d = 1; d < pw && d < lanes; ++d) shifts[d] = behind<V>(d);
    for (int64_t p = 0; p < planes; ++p) {
        for (int64_t r = 0; r < H; ++r) {
            S* dst = dx + (p * H + r) * W;
            // the covering gradient rows first .. last (none where r % s > ph - 1)
            const int64_t top = r % s <= ph - 1 ? r / s - (ph - 1 - r % s) / s : r / s + 1;
            const int64_t first = std::max<int64_t>(top, 0), last = std::min(r / s, Ho - 1);
            if (first > last) {
                std::fill(dst, dst + W, S(0));
                continue;
            }
            const S* rows = grad + (p * Ho + first) * Wo;
            const int64_t count_rows = last - first + 1;
            const bool clipped = s == 1 && count_rows < ph;
            const auto columns = [&](int64_t q) {  // the column sums q .. q + L, zeros off the row
                const auto inside = static_cast<Mask>(L::tail(Wo - q));
                const S* column = rows + std::min(q, Wo);  // (rows + q could point past grad)
                V sum = L::load(column, inside);
                for (int64_t i = 1; i < count_rows; ++i) {
                    sum = L::add(sum, L::load(column + i * Wo, inside));
                }
                return clipped ? L::add(sum, L::zero()) : sum;
            };
            // the folds of the column sums q - before .. q, for the L columns q of cur
            const auto windows = [&](V prev, V cur, int64_t before) {
                V sum = before ? from_two(prev, cur, shifts[before]) : cur;
                for (int64_t d = before - 1; d >= 0; --d) {
                    sum = L::add(sum, d ? from_two(prev, cur, shifts[d]) : cur);
                }
                return sum;
            };
            V prev = L::zero();
            if (s == 1) {
                for (int64_t w = 0; w < W; w += lanes) {
                    const V cur = columns(w);
                    L::store(dst + w, L::tail(W - w), L::div(windows(prev, cur, pw - 1), count));
                    prev = cur;
                }
                continue;
            }
            for (int64_t q = 0; 2 * q < W; q += lanes) {
                const V cur = columns(q);
                const V even = L::add(windows(prev, cur, (pw - 1) / 2), L::zero());
                const V odd = pw > 1 ? L::add(windows(prev, cur, (pw - 2) / 2), L::zero()) : L::zero();
                const int64_t w = 2 * q;
                L::store(dst + w, L::tail(W - w), L::div(Pairs<V>::interleave_lo(even, odd), count));
                // (dst + w + lanes could point past dx)
                L::store(dst + std::min(w + lanes, W), L::tail(W - w - lanes),
                         L::div(Pairs<V>::interleave_hi(even, odd), count));
                prev = cur;
            }
        }
    }
}

// ----- the average pool's forward of small planes ----------------------------------------

// avg_pool_planes_forward's outputs (avg_pool_plane.h) of `planes` planes of at most kBand
// entries, where it takes the stacked loops' sums (stacked_sums_forward: each window's
// column sums top to bottom, then their sum left to right; pool_width - 1 at most a
// vector's lanes) at any stride, or the 2x2 stride-2 loops' (kTwoByTwo: 0 + the window's
// entries in row-major order), / the window's size. Only the vectors of a plane's entries
// that hold windows' top left entries (TopLeftVectors) are summed, in registers: their
// column sums (ph masked loads) and the next vector's, each window's columns from those
// two (a permute a column), or a 2x2 window's four entries (masked loads), and the outputs
// compressed out of the register (store_compressed): several short rows' outputs at a
// time, no band of column sums or window sums stored and loaded again, and at strides of 2
// and more no sums of entries no window starts at. The next vector's column sums are the
// following top vector's where it is that one.
template <typename V, bool kTwoByTwo, typename S = typename Lanes<V>::Scalar>
void avg_pool_small_planes(const AvgPoolPlane& g, int64_t planes, const S* src, S* dst) {
    using L = Lanes<V>;
    constexpr int64_t lanes = L::width;
    const int64_t ph = g.pool_height, pw = g.pool_width, W = g.W;
    // the entries where a window's column starts: the rows above the last ph - 1
    const int64_t column_tops = (g.H - ph + 1) * W;
    const V count = L::set1(static_cast<S>(ph * pw));
    __m512i shifts[lanes];  // shifts[j]: the lanes of two vectors j entries on
    for (int64_t j = 1; j < pw && j < lanes; ++j) shifts[j] = behind<V>(lanes - j);
    const TopLeftVectors<L> tops(g);
    for (int64_t p = 0; p < planes; ++p) {
        const S* plane = src + p * g.in_plane();
        S* out = dst + p * g.out_plane();
        // the column sums of the vector at entry k, zeros past the columns' tops (every
        // pointer in the plane: k + i W < column_tops + (ph - 1) W)
        const auto columns = [&](int64_t k) {
            if (k >= column_tops) return L::zero();
            const auto inside = L::tail(column_tops - k);
            V sum = L::load(plane + k, inside);
            for (int64_t i = 1; i < ph; ++i) sum = L::add(sum, L::load(plane + k + i * W, inside));
            return sum;
        };
        int64_t next_at = -1;
        V next = L::zero();
        for (int64_t v = 0; v < tops.count; ++v) {
            const int64_t at = tops.at[v];
            const auto top_lefts = tops.lanes[v];
            V sum;
            if (kTwoByTwo) {  // a window's entries lie in the plane where its top left does
                const S* first = plane + at;
                sum = L::add(L::zero(), L::load(first, top_lefts));
                sum = L::add(sum, L::load(first + 1, top_lefts));
                sum = L::add(sum, L::load(first + W, top_lefts));
                sum = L::add(sum, L::load(first + W + 1, top_lefts));
            } else {
                const V cur = at == next_at ? next : columns(at);
                if (pw > 1) {
                    next_at = at + lanes;
                    next = columns(next_at);
                }
                sum = cur;
                for (int64_t j = 1; j < pw; ++j) {
                    sum = L::add(sum, j < lanes ? from_two(cur, next, shifts[j]) : next);
                }
            }
            store_compressed(top_lefts, L::div(sum, count), out + tops.outputs_before[v]);
        }
    }
}

// ----- the average pool's backward of tiny planes ----------------------------------------

// The entries of a plane's gradient, held in two vectors lo and hi, at a vector of
// indices into them (zeros where m is clear): one permute.
inline __m512 pick(__mmask16 m, __m512 lo, __m512i at, __m512 hi) {
    return _mm512_maskz_permutex2var_ps(m, lo, at, hi);
}
inline __m512d pick(__mmask8 m, __m512d lo, __m512i at, __m512d hi) {
    return _mm512_maskz_permutex2var_pd(m, lo, at, hi);
}

// avg_pool_planes_backward's dx (avg_pool_plane.h: the stride-1 window sums of the gradient
// spread over a plane P of zeros with the full correlation's pad, P's zeros added too, /
// the window's size) of `planes` planes whose gradient fits two vectors and dx
// kTinyVectors: each vector of a plane's dx entries, across its rows, takes P's entry
// (r + i, w + j) of each of its lanes (r, w) straight from the gradient's two vectors, a
// permute a tap (zeros where P holds a zero), in the stacked loops' order: each column's
// sum top to bottom, then the columns' left to right. Where the stacked loops built P and
// passed over it ph + pw times, rows of a few entries a loop. The permutes' indices and
// masks are the same for every plane: built once a call.

template <typename V, typename S = typename Lanes<V>::Scalar>
void avg_unpool_tiny_planes(const AvgPoolPlane& g, int64_t planes, const S* grad, S* dx) {
    using L = Lanes<V>;
    using Mask = typename L::Mask;
    using Index = std::conditional_t<sizeof(S) == 4, int32_t, int64_t>;
    constexpr int64_t lanes = L::width;
    const int64_t ph = g.pool_height, pw = g.pool_width, s = g.stride;
    const int64_t in_plane = g.in_plane(), out_plane = g.out_plane();
    const int64_t vectors = (in_plane + lanes - 1) / lanes, taps = ph * pw;
    __m512i at[kTinyVectors * kTinyTaps];
    Mask from[kTinyVectors * kTinyTaps];
    for (int64_t v = 0; v < vectors; ++v) {
        for (int64_t t = 0; t < taps; ++t) {  // tap t: column t / ph, row t % ph
            Index index[lanes] = {};
            uint32_t bits = 0;
            for (int64_t l = 0; l < lanes && v * lanes + l < in_plane; ++l) {
                const int64_t e = v * lanes + l;
                const int64_t a = e / g.W + t % ph - (ph - 1), b = e % g.W + t / ph - (pw - 1);
                if (a < 0 || b < 0 || a % s || b % s || a / s >= g.Ho || b / s >= g.Wo) continue;
                index[l] = static_cast<Index>(a / s * g.Wo + b / s);
                bits |= 1u << l;
            }
            at[v * taps + t] = _mm512_loadu_si512(index);
            from[v * taps + t] = static_cast<Mask>(bits);
        }
    }
    const V count = L::set1(static_cast<S>(taps));
    for (int64_t p = 0; p < planes; ++p) {
        const S* plane = grad + p * out_plane;
        const V lo = L::load(plane, L::tail(out_plane));
        // (plane + lanes could point past grad)
        const V hi =
            out_plane > lanes ? L::load(plane + lanes, L::tail(out_plane - lanes)) : L::zero();
        for (int64_t v = 0; v < vectors; ++v) {
            const __m512i* tap_at = at + v * taps;
            const Mask* tap_from = from + v * taps;
            V sum = L::zero();
            for (int64_t j = 0; j < pw; ++j) {
                V column = pick(tap_from[j * ph], lo, tap_at[j * ph], hi);
                for (int64_t i = 1; i < ph; ++i) {
                    column = L::add(column, pick(tap_from[j * ph + i], lo, tap_at[j * ph + i], hi));
                }
                sum = j ? L::add(sum, column) : column;
            }
            L::store(dx + p * in_plane + v * lanes, L::tail(in_plane - v * lanes),
                     L::div(sum, count));
        }
    }
}

}  // namespace

void max_pool_planes_avx512(const AvgPoolPlane& g, int64_t planes, const float* src, float* dst,
                            int32_t* win, bool relu) {
    (relu ? stacked_small_planes<__m512, true>
          : stacked_small_planes<__m512, false>)(g, planes, src, dst, win);
}

void max_pool_planes_avx512(const AvgPoolPlane& g, int64_t planes, const double* src,
                            double* dst, int32_t* win, bool relu) {
    (relu ? stacked_small_planes<__m512d, true>
          : stacked_small_planes<__m512d, false>)(g, planes, src, dst, win);
}

void max_pool_planes_stride2_avx512(const AvgPoolPlane& g, int64_t planes, const float* src,
                                    float* dst, int32_t* win, bool relu) {
    (relu ? planes_stride_2<__m512, true, float> : planes_stride_2<__m512, false, float>)(
        g, planes, src, dst, win);
}

void max_pool_planes_stride2_avx512(const AvgPoolPlane& g, int64_t planes, const double* src,
                                    double* dst, int32_t* win, bool relu) {
    (relu ? planes_stride_2<__m512d, true, double> : planes_stride_2<__m512d, false, double>)(
        g, planes, src, dst, win);
}

int64_t max_unpool_planes_2x2_avx512(const AvgPoolPlane& g, int64_t planes, const float* grad,
                                     const int32_t* win, float* dx) {
    return unpool_planes_2x2<__m512>(g, planes, grad, win, dx);
}

int64_t max_unpool_planes_2x2_avx512(const AvgPoolPlane& g, int64_t planes, const double* grad,
                                     const int32_t* win, double* dx) {
    return unpool_planes_2x2<__m512d>(g, planes, grad, win, dx);
}

int64_t max_unpool_planes_stride1_avx512(const AvgPoolPlane& g, int64_t planes,
                                         const float* grad, const int32_t* win, float* dx) {
    return gather_unpool_planes<__m512>(g, planes, grad, win, dx);
}

int64_t max_unpool_planes_stride1_avx512(const AvgPoolPlane& g, int64_t planes,
                                         const double* grad, const int32_t* win, double* dx) {
    return gather_unpool_planes<__m512d>(g, planes, grad, win, dx);
}

void avg_pool_planes_forward_avx512(const AvgPoolPlane& g, int64_t planes, const float* src,
                                    float* dst) {
    (two_by_two_stride_2(g) ? avg_pool_small_planes<__m512, true>
                            : avg_pool_small_planes<__m512, false>)(g, planes, src, dst);
}

void avg_pool_planes_forward_avx512(const AvgPoolPlane& g, int64_t planes, const double* src,
                                    double* dst) {
    (two_by_two_stride_2(g) ? avg_pool_small_planes<__m512d, true>
                            : avg_pool_small_planes<__m512d, false>)(g, planes, src, dst);
}

void avg_pool_planes_backward_avx512(const AvgPoolPlane& g, int64_t planes, const float* grad,
                                     float* dx) {
    avg_unpool_rows<__m512>(g, planes, grad, dx);
}

void avg_pool_planes_backward_avx512(const AvgPoolPlane& g, int64_t planes, const double* grad,
                                     double* dx) {
    avg_unpool_rows<__m512d>(g, planes, grad, dx);
}

void avg_pool_tiny_planes_backward_avx512(const AvgPoolPlane& g, int64_t planes,
                                          const float* grad, float* dx) {
    avg_unpool_tiny_planes<__m512>(g, planes, grad, dx);
}

void avg_pool_tiny_planes_backward_avx512(const AvgPoolPlane& g, int64_t planes,
                                          const double* grad, double* dx) {
    avg_unpool_tiny_planes<__m512d>(g, planes, grad, dx);
}

}  // namespace graphnet

