// Max pooling, parallel over the N*C independent channel planes.
#include "pool.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "max_unpool_plane.h"
#include "pool_avx2.h"
#include "pool_avx512.h"
#include "recurrent.h"
#include "softmax_rows.h"
#include "threads.h"

namespace graphnet {

PoolGeometry pool_geometry(const Shape& x, int64_t pool_height, int64_t pool_width,
                           int64_t stride, const char* op) {
    const std::string name(op);
    require_rank(x, 4, (name + " x").c_str(), "(N, C, H, W)");
    const auto where = [&] { return " for x " + shape_str(x); };
    if (pool_height < 1 || pool_width < 1) {
        fail(name + " window must be at least 1x1, got " + std::to_string(pool_height) + "x" +
             std::to_string(pool_width) + where());
    }
    if (stride < 1) fail(name + " stride must be >= 1, got " + std::to_string(stride) + where());
    PoolGeometry g{x[0], x[1], x[2], x[3], pool_height, pool_width, stride, 0, 0};
    g.Ho = out_size(g.H, pool_height, stride);
    g.Wo = out_size(g.W, pool_width, stride);
    if (g.Ho < 1 || g.Wo < 1) {
        fail(name + " window " + std::to_string(pool_height) + "x" + std::to_string(pool_width) +
             " is larger than the input " + std::to_string(g.H) + "x" + std::to_string(g.W) + where());
    }
    if (checked_mul(g.H, g.W, [&] { return name + " input plane"; }) > INT32_MAX) {
        fail(name + " input plane is too large for int32 indices" + where());
    }
    return g;
}

namespace {

// What the pooling sees of an input: the input itself, or with Relu its relu as
// relu_forward computes it (a NaN passes, -0 becomes +0). The graph fuses relu -> max_pool
// this way, so the relu's output is never written. Blended bit by bit: a `? :` here
// compiles to jumps that mispredict on real data and cost 15x (measured).
template <bool Relu, typename T, typename U = typename BitsOf<T>::type>
inline T seen(T v) {
    if constexpr (!Relu) return v;
    return from_bits<T>(to_bits(v) & (U((v <= T(0))) - U(1)));
}

// Spans at least this long take span_argmax.
constexpr int64_t kSpanArgmax = 16;

// Offset of the winner (pool.h's tie rule) among n contiguous values: a whole-plane
// window (global max pooling) as one running maximum is a chain of dependent compares,
// 3-4 cycles a value. Instead, the maximum (row_max: vectorised, a NaN found if there is
// one), then the first value equal to it: a scan that stops there, a cycle a value.
template <bool Relu, typename T>
int64_t span_argmax(const T* x, int64_t n) {
    const T top = seen<Relu>(row_max(n, x));  // relu is monotone: max relu(x) = relu(max x)
    if (top != top) {
        for (int64_t k = 0; k < n; ++k) {
            if (x[k] != x[k]) return k;
        }
    }
    for (int64_t k = 0; k < n; ++k) {
        if (seen<Relu>(x[k]) == top) return k;
    }
    return 0;  // not reached: top is one of the values
}

// v's mask (all ones) if it beats the running best m under the tie rule, else 0.
template <typename T, typename U = typename BitsOf<T>::type>
inline U beats(T v, T m) {
    return U(0) - U((v > m) | ((v != v) & (m == m)));
}

// One plane (H x W in, Ho x Wo out) of any pooling, under the tie rule in pool.h: the first
// maximum of a window in row-major order, a NaN beating any number. kH, kW > 0 fix the
// window size at compile time; 0 reads it from g. A window's running maximum is a chain of
// dependent compares, 3-4 cycles each: so the windows of an output row advance side by
// side, entry (i, j) of each before entry (i, j + 1) of any (independent chains, each still
// in row-major order), their running maxima blended bit by bit under a mask (a `? :` there
// compiles to jumps, which a window's winner mispredicts on real data). One window at a
// time, 3x3 stride-2 windows took 2.7 ns a compare. Windows of whole rows (pw == W: one
// window per row of outputs) are contiguous spans: span_argmax.
template <bool Relu, typename T, int64_t kH, int64_t kW>
void pool_plane(const PoolGeometry& g, const T* __restrict src, T* __restrict dst,
                int32_t* __restrict win) {
    using U = typename BitsOf<T>::type;
    const int64_t ph = kH ? kH : g.pool_height, pw = kW ? kW : g.pool_width, s = g.stride;
    for (int64_t oh = 0; oh < g.Ho; ++oh) {
        const int64_t top = oh * s * g.W;
        T* best = dst + oh * g.Wo;
        int32_t* at = win + oh * g.Wo;
        if (pw == g.W && ph * pw >= kSpanArgmax) {  // Wo == 1
            at[0] = static_cast<int32_t>(top + span_argmax<Relu>(src + top, ph * pw));
            best[0] = seen<Relu>(src[at[0]]);
            continue;
        }
        for (int64_t ow = 0; ow < g.Wo; ++ow) {
            best[ow] = seen<Relu>(src[top + ow * s]);
            at[ow] = static_cast<int32_t>(top + ow * s);
        }
        for (int64_t i = 0; i < ph; ++i) {
            for (int64_t j = i == 0 ? 1 : 0; j < pw; ++j) {
                const int64_t entry = top + i * g.W + j;
                const T* row = src + entry;
                for (int64_t ow = 0; ow < g.Wo; ++ow) {
                    const T v = seen<Relu>(row[ow * s]);
                    const U take = beats(v, best[ow]);
                    const auto take_index = static_cast<int32_t>(take);  // 0 or all ones
                    best[ow] = from_bits<T>((to_bits(v) & take) | (to_bits(best[ow]) & ~take));
                    at[ow] = (static_cast<int32_t>(entry + ow * s) & take_index) |
                             (at[ow] & ~take_index);
                }
            }
        }
    }
}

// One output row of the 2x2, stride-2 pooling every CNN here uses, from input rows r0 and
// r1. Which element of a window wins is a coin toss on real data, and compilers turn the
// `c ? a : b` of a running maximum into jumps that mispredict half the time; blending bits
// under a mask has no jumps at all and runs 7x faster (measured).
template <bool Relu, typename T>
void pool_row_2x2(int64_t Wo, int32_t row_start, int32_t W, const T* __restrict r0,
                  const T* __restrict r1, T* __restrict dst, int32_t* __restrict win) {
    using U = typename BitsOf<T>::type;
    const U down = static_cast<U>(W);
    for (int64_t ow = 0; ow < Wo; ++ow) {
        const T a = seen<Relu>(r0[2 * ow]), b = seen<Relu>(r0[2 * ow + 1]);
        const T c = seen<Relu>(r1[2 * ow]), d = seen<Relu>(r1[2 * ow + 1]);
        U best = to_bits(a), offset = 0;
        const auto consider = [&](T v, U v_offset) {
            const U take = beats(v, from_bits<T>(best));
            best = (to_bits(v) & take) | (best & ~take);
            offset = (v_offset & take) | (offset & ~take);
        };
        consider(b, 1);
        consider(c, down);
        consider(d, down + 1);
        dst[ow] = from_bits<T>(best);
        win[ow] = row_start + 2 * static_cast<int32_t>(ow) + static_cast<int32_t>(offset);
    }
}

// One plane of the 2x2, stride-2 pooling: rows eight float32 or four float64 outputs at a
// time on AVX2 (pool_avx2.h) where avx2_activations_active() (recurrent.h: the switch of
// the relu kernels too), their last few on the scalar row.
template <bool Relu, typename T>
void pool_plane_2x2(const PoolGeometry& g, const T* src, T* dst, int32_t* win) {
    const bool avx2 = avx2_activations_active();
    for (int64_t oh = 0; oh < g.Ho; ++oh) {
        const T* r0 = src + 2 * oh * g.W;
        const auto row_start = static_cast<int32_t>(2 * oh * g.W);
        const auto W = static_cast<int32_t>(g.W);
        T* out = dst + oh * g.Wo;
        int32_t* winners = win + oh * g.Wo;
        const int64_t done =
            avx2 ? max_pool_row_2x2_avx2(g.Wo, row_start, W, r0, r0 + g.W, out, winners, Relu) : 0;
        pool_row_2x2<Relu>(g.Wo - done, row_start + 2 * static_cast<int32_t>(done), W,
                           r0 + 2 * done, r0 + g.W + 2 * done, out + done, winners + done);
    }
}

// One plane of any other pooling at stride 1 or 2 on AVX2 (pool_avx2.h), under
// pool_plane_2x2's switch.
template <bool Relu, typename T>
void pool_plane_avx2(const PoolGeometry& g, const T* src, T* dst, int32_t* win) {
    max_pool_plane_avx2(avg_pool_plane(g), src, dst, win, Relu);
}

template <bool Relu, typename T>
void pool_forward(const PoolGeometry& g, const T* x, T* out, int32_t* winners, bool threaded) {
    const bool two_by_two = g.pool_height == 2 && g.pool_width == 2;
    // Windows of whole rows (a global pooling) keep pool_plane's span_argmax. Strides of 3
    // and more that the stacks below do not take keep the scalar loop: their vectors of
    // entries would be gathers, which took longer than it (2x2 windows at stride 3, float32:
    // 1.4x).
    const bool spans = g.pool_width == g.W && g.pool_height * g.pool_width >= kSpanArgmax;
    const bool vectors = g.stride <= 2 && !spans && avx2_activations_active();
    // 2x2 stride-2 rows of 2 to 7 float32 (2 or 3 float64) outputs, fewer than a vector of
    // them, take the general plane's partial vectors: pool_plane_2x2's vectors are whole
    // ones, and its scalar row took 1.3x to 2.5x as long there (the same at 4 float32s,
    // which the compiler's 4-wide loop takes; longer at 1 output a row).
    const bool narrow = g.Wo > 1 && g.Wo < static_cast<int64_t>(32 / sizeof(T));
    const auto plane = two_by_two && g.stride == 2 && !(narrow && vectors) ? pool_plane_2x2<Relu, T>
                       : vectors                   ? pool_plane_avx2<Relu, T>
                       : two_by_two                ? pool_plane<Relu, T, 2, 2>
                                                   : pool_plane<Relu, T, 0, 0>;
    const int64_t planes = g.N * g.C, in_plane = g.H * g.W, out_plane = g.Ho * g.Wo;
    // The stacks of planes (pool_avx2.h) compute every entry's maximum over the window's
    // rows of its row maxima: at stride 1 two short passes rather than the window's
    // ph x pw compares an output, which pays once the rows hold 12 outputs (3x3 windows:
    // 1.4x faster on 16 x 21 planes, 1.3x on 13 x 13 to 64 x 64; at 8 outputs, a vector
    // of them side by side, 1.2x slower). At larger strides they compute entries no window
    // starts at, but they replace the scalar loop (stride 3: 1.3x-1.5x faster) and tiny
    // rows of 1 to 3 outputs, which fill a vector badly (3x3 stride 2 on 5 x 5: 1.7x).
    // On AVX-512 (pool_avx512.h) the stacks of planes of up to kBand entries pick several
    // rows' outputs at a time, which pays on rows of any length at stride 1 (2x2 and 3x3
    // windows on 5 x 5 to 45 x 45 planes: 1.1x-3.1x less time than the rows side by side
    // or the AVX2 stacks), and wherever the AVX2 stacks pay (strides of 3 and more:
    // 1.2x-1.7x; rows of 1 to 3 outputs at stride 2 that the segments below do not take).
    const AvgPoolPlane windows = avg_pool_plane(g);
    const bool avx512 = avx512_activations_active() && in_plane <= kBand;
    const bool stacked = avx2_activations_active() && !spans && stacks(windows, g.W) &&
                         ((g.stride == 1 && (avx512 || g.Wo >= 12)) || g.stride >= 3 ||
                          g.Wo <= 3);
    // On AVX-512 every window at stride 2 takes max_pool_planes_stride2_avx512
    // (pool_avx512.h: two segments of rows or planes to a vector, no per-plane setup, no
    // scalar tail): 2x2 windows 1.1x-3x less time than the rows side by side and their
    // scalar tails or the stacks, the others (3x3, 3x2, 4x4 on 4 x 4 to 32 x 34 planes)
    // 1.05x-2.7x, but for float32 rows of 2 outputs and rows of 1 (3x3 on 5 x 5 float32:
    // 1.2x the stacks' time; on 11 x 4, 1.6x).
    const bool pairs = avx512_activations_active() && g.stride == 2 &&
                       g.Wo >= (sizeof(T) == 4 ? 3 : 2);
    if (pairs || stacked) {
        const int64_t per_piece = std::max<int64_t>(1, 4 * kBand / in_plane);
        const int64_t pieces = (planes + per_piece - 1) / per_piece;
        parallel_for_dynamic(threaded ? team_size(pieces) : 1, pieces, 1, [&](int64_t piece) {
            const int64_t first = piece * per_piece, count = std::min(per_piece, planes - first);
            const T* src = x + first * in_plane;
            T* dst = out + first * out_plane;
            int32_t* win = winners + first * out_plane;
            if (pairs) {
                max_pool_planes_stride2_avx512(windows, count, src, dst, win, Relu);
            } else if (avx512) {
                max_pool_planes_avx512(windows, count, src, dst, win, Relu);
            } else {
                max_pool_planes_avx2(windows, count, src, dst, win, Relu);
            }
        });
        return;
    }
    const auto pool = [&](int64_t pl) {
        plane(g, x + pl * in_plane, out + pl * out_plane, winners + pl * out_plane);
    };
    // Inside a caller's team (not threaded) the planes run on the calling thread.
    parallel_for_dynamic(threaded ? team_size(planes) : 1, planes, 8, pool);
}

}  // namespace

template <typename T>
void max_pool_forward(const PoolGeometry& g, const T* x, T* out, int32_t* winners,
                      bool relu_first, bool threaded) {
    if (relu_first) {
        pool_forward<true>(g, x, out, winners, threaded);
    } else {
        pool_forward<false>(g, x, out, winners, threaded);
    }
}

void check_winners(const int32_t* winners, int64_t count, int64_t H, int64_t W) {
    // One pass without exits, which the compiler vectorises: the least and the greatest
    // winner. Only when one is outside, the first culprit is searched for.
    int32_t least = INT32_MAX, greatest = INT32_MIN;
    for (int64_t i = 0; i < count; ++i) {
        least = std::min(least, winners[i]);
        greatest = std::max(greatest, winners[i]);
    }
    if (count == 0 || (least >= 0 && greatest < H * W)) return;
    for (int64_t i = 0; i < count; ++i) {
        if (winners[i] < 0 || winners[i] >= H * W) {
            fail("max_pool winners must index an (H, W) = (" + std::to_string(H) + ", " +
                 std::to_string(W) + ") plane, found " + std::to_string(winners[i]));
        }
    }
}

namespace {

// Planes of at most this many entries take unpool_small_planes: where 2x2 blocks of
// winners may be (2 Ho <= H, 2 Wo <= W), and elsewhere (they only save a fill a plane).
constexpr int64_t kSmallPlaneOfBlocks = 100, kSmallPlane = 64;

// Whether planes of this size take unpool_small_planes (and go several to a thread's piece).
bool small_planes(int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
    const bool blocks = 2 * Ho <= H && 2 * Wo <= W;
    return H * W <= (blocks ? kSmallPlaneOfBlocks : kSmallPlane);
}

// dx of `planes` small planes one after another, as max_unpool_plane writes them: the whole
// stack zeroed at once, then each plane whose winners all lie in their windows' 2x2 blocks
// (where 2 Ho <= H and 2 Wo <= W) has each gradient stored at its winner, its bits as
// unpool_plane_2x2 writes them (a -0 stays -0; no two windows share a block), and any
// other plane's gradients are added at their winners (max_unpool_plane's scatter). Per
// plane, the block writer's rows of two or three windows and a fill of a few entries cost
// more than the entries. False if a winner lies outside its plane.
template <typename T>
bool unpool_small_planes(int64_t planes, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                         const T* grad, const int32_t* win, T* dx) {
    const int64_t in_plane = H * W, out_plane = Ho * Wo;
    const bool blocks = 2 * Ho <= H && 2 * Wo <= W;
    const auto down = static_cast<uint32_t>(W);
    std::fill(dx, dx + planes * in_plane, T(0));
    bool inside = true;
    for (int64_t pl = 0; pl < planes; ++pl) {
        const int32_t* w = win + pl * out_plane;
        const T* g = grad + pl * out_plane;
        T* d = dx + pl * in_plane;
        uint32_t elsewhere = !blocks;
        for (int64_t oh = 0; oh < Ho && blocks; ++oh) {
            for (int64_t ow = 0; ow < Wo; ++ow) {  // as unpool_plane_2x2 tells
                const uint32_t at = static_cast<uint32_t>(w[oh * Wo + ow]) -
                                    static_cast<uint32_t>(2 * oh * W + 2 * ow);
                elsewhere |= static_cast<uint32_t>(at > 1) & static_cast<uint32_t>(at - down > 1);
            }
        }
        if (elsewhere) {
            inside &= scatter_unpool_plane(in_plane, out_plane, g, w, d);
        } else {
            for (int64_t o = 0; o < out_plane; ++o) d[w[o]] = g[o];
        }
    }
    return inside;
}

}  // namespace

template <typename T>
bool max_unpool_planes(int64_t planes, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                       const T* dout, const int32_t* winners, T* dx) {
    const int64_t in_plane = H * W, out_plane = Ho * Wo;
    const bool blocks = 2 * Ho <= H && 2 * Wo <= W, small = small_planes(H, W, Ho, Wo);
    // On AVX-512 the planes whose winners all lie in 2x2 blocks take
    // max_unpool_planes_2x2_avx512 (pool_avx512.h: two segments of rows or planes to a
    // vector), 1.2x-1.6x less time than the block writer on 11 x 11 to 32 x 32 planes; it
    // stops at the first winner elsewhere, and the planes from there take the loops below.
    // Small planes keep unpool_small_planes (4 x 4 to 10 x 10: 1.1x-1.9x faster there).
    const bool pairs = blocks && !small && avx512_activations_active();
    const AvgPoolPlane g{H, W, 2, 2, 2, Ho, Wo};
    // On AVX-512, 2x2 and 3x3 windows at stride 1 (those of these planes' sizes: H - Ho + 1
    // by W - Wo + 1; winners of other windows are found elsewhere, and their planes
    // scattered) take max_unpool_planes_stride1_avx512 (pool_avx512.h: each entry of dx
    // gathered from the windows that cover it, ph pw compares a vector of entries) where
    // that paid (best of 5 runs in turns with the scatter): float32 2x2 1.1x-1.9x less
    // time on 7 x 7 to 32 x 32 planes; 3x3 1.2x-1.3x on rows of 14, 16, 28 and 32 entries
    // (1.0x on rows of 7, 8 and 21, whose last vector is mostly empty); float64 2x2 1.4x-1.6x
    // on rows of 7 to 21 (1.0x on 28 and 32: a row in four vectors, written a vector of
    // columns at a time); float64 3x3 1.0x.
    const AvgPoolPlane stride1{H, W, H - Ho + 1, W - Wo + 1, 1, Ho, Wo};
    const int64_t window = stride1.pool_height == stride1.pool_width ? stride1.pool_width : 0;
    constexpr auto lanes = static_cast<int64_t>(64 / sizeof(T));
    const int64_t last_vector = W % lanes;  // its entries (0: full)
    const bool full_rows = W >= 12 && (last_vector == 0 || 4 * last_vector >= 3 * lanes);
    const bool gather = !blocks && avx512_activations_active() &&
                        (sizeof(T) == 4 ? window == 2 || (window == 3 && full_rows)
                                        : window == 2 && W <= 24);
    int64_t first = 0;
    if (pairs) first = max_unpool_planes_2x2_avx512(g, planes, dout, winners, dx);
    bool inside = true;
    if (gather) {
        // the gather up to a plane with a winner outside its window, that one scattered
        while (first < planes) {
            first += max_unpool_planes_stride1_avx512(stride1, planes - first,
                                                      dout + first * out_plane,
                                                      winners + first * out_plane,
                                                      dx + first * in_plane);
            if (first == planes) break;
            inside &= max_unpool_plane(H, W, Ho, Wo, dout + first * out_plane,
                                       winners + first * out_plane, dx + first * in_plane);
            ++first;
        }
    } else if (small) {
        inside = unpool_small_planes(planes - first, H, W, Ho, Wo, dout + first * out_plane,
                                     winners + first * out_plane, dx + first * in_plane);
    } else {
        for (int64_t pl = first; pl < planes; ++pl) {
            inside &= max_unpool_plane(H, W, Ho, Wo, dout + pl * out_plane,
                                       winners + pl * out_plane, dx + pl * in_plane);
        }
    }
    return inside;
}

template <typename T>
bool max_pool_backward(int64_t planes, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                       const T* dout, const int32_t* winners, T* dx) {
    const int64_t in_plane = H * W, out_plane = Ho * Wo;
    std::atomic<bool> out_of_plane{false};
    // Pieces of whole planes, one thread's each, so overlapping windows add without races.
    const bool small = small_planes(H, W, Ho, Wo);
    const int64_t per_piece = small ? std::max<int64_t>(1, 4 * kBand / in_plane) : 8;
    const int64_t pieces = (planes + per_piece - 1) / per_piece;
    parallel_for_dynamic(team_size(pieces), pieces, 1, [&](int64_t piece) {
        const int64_t first = piece * per_piece, count = std::min(planes - first, per_piece);
        if (!max_unpool_planes(count, H, W, Ho, Wo, dout + first * out_plane,
                               winners + first * out_plane, dx + first * in_plane)) {
            out_of_plane.store(true, std::memory_order_relaxed);
        }
    });
    return !out_of_plane.load();
}

// Average pooling, one piece of whole planes per thread at a time (so overlapping windows
// add without races, in the same order for any thread count).
AvgPoolPlane avg_pool_plane(const PoolGeometry& g) {
    return {g.H, g.W, g.pool_height, g.pool_width, g.stride, g.Ho, g.Wo};
}

// Calls body(first, count) on pieces of consecutive planes, shared out across the threads:
// small planes several to a piece, which the stacked loops of avg_pool_plane.h take as one
// stack (the bits do not depend on how the planes are grouped).
template <typename Body>
void for_pieces_of_planes(const AvgPoolPlane& plane, int64_t planes, Body&& body) {
    const int64_t in_plane = std::max<int64_t>(1, plane.in_plane());
    const int64_t per_piece = std::max<int64_t>(1, 4 * kBand / in_plane);
    const int64_t pieces = (planes + per_piece - 1) / per_piece;
    parallel_for(team_size(pieces), pieces, [&](int64_t piece) {
        const int64_t first = piece * per_piece;
        body(first, std::min(per_piece, planes - first));
    });
}

template <typename T>
bool avg_pool_planes_forward_on_avx512(const AvgPoolPlane& plane, int64_t planes, const T* src,
                                       T* dst) {
    // Planes of up to kBand entries take avg_pool_planes_forward_avx512 (pool_avx512.h: the
    // sums of the vectors of a plane that hold windows' top left entries, in registers,
    // several short rows' outputs compressed out of a vector) where it pays against the
    // loops: 2x2 and 3x3 windows at strides 1 to 3 on 5 x 5 to 32 x 32 planes 1.1x-2.3x
    // less time (3x3 stride 2 on 5 x 5: 1.0x); 2x2 stride-2 windows on rows of up to 16
    // entries 1.05x-3x (on longer rows, which the 2x2 loop vectorises, 0.8x-0.9x), when a
    // call has 32 planes or more to spread the kernel's setup (its masks of the top left
    // entries) over: in the groupnorm kernels' groups of 4 planes of 6 x 6 to 16 x 16,
    // 1.0x-1.14x the loops' time, of 32 planes 0.86x-0.96x float32 (float64 0.9x-1.06x).
    const bool small = avx512_activations_active() && plane.in_plane() <= kBand &&
                       ((stacked_sums_forward(plane) &&
                         plane.pool_width <= 64 / static_cast<int64_t>(sizeof(T)) + 1) ||
                        (two_by_two_stride_2(plane) && plane.W <= 16 && planes >= 32));
    if (small) avg_pool_planes_forward_avx512(plane, planes, src, dst);
    return small;
}

template <typename T>
bool avg_pool_planes_backward_on_avx512(const AvgPoolPlane& plane, int64_t planes, const T* grad,
                                        T* dx) {
    if (!avx512_activations_active()) return false;
    const bool tiling = plane.stride == plane.pool_height && plane.stride == plane.pool_width;
    // The windows the stacked loops take at stride 1 or 2 (of two entries or more, at most 8
    // wide) on rows of 7 entries or more take avg_pool_planes_backward_avx512 (pool_avx512.h:
    // a row of dx at a time from its gradient rows' column sums, no spread plane of zeros):
    // 1.2x-1.8x faster float32, 1.3x-2.5x float64 on random networks' 3x3 stride 1 and 2
    // and 2x2 stride 1 pools; on rows of 4 and 5 entries, one vector a row mostly empty,
    // 0.85x-1.1x the stacked loops, which stack many planes' rows.
    const bool stacked = !tiling && !wide_windows(plane) &&
                         stacks(plane, plane.W + plane.pool_width - 1);
    const bool rows = stacked && plane.stride <= 2 &&
                      plane.pool_height * plane.pool_width > 1 && plane.pool_width <= 8 &&
                      plane.W >= 7;
    // Tiny planes (avg_pool_tiny_planes: gradients of up to two vectors, dx of up to eight)
    // where the stacked loops take them take avg_pool_tiny_planes_backward_avx512
    // (pool_avx512.h: each vector of dx, across rows, from the gradient's two vectors, a
    // permute a tap): 2x2 and 3x3 windows at strides 1 and 3 on 3 x 3 to 8 x 8 planes
    // 2x-5x less time than the stacked loops; against the rows above where dx is up to four
    // vectors (float32 3x3 on 7 x 7 and 6 x 8, 2x2 on 5 x 9 at strides 1 and 2: 1.25x-1.9x;
    // on 6 x 11 planes of five, 0.8x; float64 3x3 stride 2 of six to eight, 0.85x-0.9x).
    // Its permutes' indices, built once a call, take as long as it saves on 16-32 planes
    // against the stacked loops (the fused groupnorm -> gelu -> pool's backward of groups
    // of 4 planes: 1.4x-1.6x their time; 2x2 stride 1 on 4 x 4 and 5 x 5 0.8x at 16
    // planes, 3x3 on 6 x 6 1.1x at 16, 0.9x at 32), on 64-128 against the rows (7 x 7
    // float32: 1.0x at 64, 0.9x at 128).
    const int64_t setup_planes = rows ? 128 : 32;
    const bool tiny = stacked && avg_pool_tiny_planes(plane, sizeof(T)) &&
                      planes >= setup_planes &&
                      (!rows || plane.in_plane() <= 4 * 64 / static_cast<int64_t>(sizeof(T)));
    if (tiny) {
        avg_pool_tiny_planes_backward_avx512(plane, planes, grad, dx);
    } else if (rows) {
        avg_pool_planes_backward_avx512(plane, planes, grad, dx);
    }
    return tiny || rows;
}

template <typename T>
void avg_pool_forward(const PoolGeometry& g, const T* x, T* out) {
    const AvgPoolPlane plane = avg_pool_plane(g);
    // Stride 1 compiled for AVX2 (pool_avx2.h): 1.1x-1.25x faster on 7 x 7 to 16 x 16
    // float32 planes; at larger strides the baseline's loops were as fast or faster.
    const bool avx2 = g.stride == 1 && avx2_activations_active();
    for_pieces_of_planes(plane, g.N * g.C, [&](int64_t first, int64_t count) {
        const T* src = x + first * plane.in_plane();
        T* dst = out + first * plane.out_plane();
        if (avg_pool_planes_forward_on_avx512(plane, count, src, dst)) return;
        if (avx2) {
            avg_pool_planes_forward_avx2(plane, count, src, dst);
        } else {
            avg_pool_planes_forward(plane, count, src, dst);
        }
    });
}

template <typename T>
void avg_pool_backward(const PoolGeometry& g, const T* dout, T* dx) {
    const AvgPoolPlane plane = avg_pool_plane(g);
    // Windows that do not tile the plane compiled for AVX2 (pool_avx2.h): 1.1x-1.3x faster
    // on 7 x 7 to 16 x 16 float32 planes; the tiling windows' copies were not.
    const bool tiling = g.stride == g.pool_height && g.stride == g.pool_width;
    const bool avx2 = !tiling && avx2_activations_active();
    for_pieces_of_planes(plane, g.N * g.C, [&](int64_t first, int64_t count) {
        const T* grad = dout + first * plane.out_plane();
        T* dst = dx + first * plane.in_plane();
        if (avg_pool_planes_backward_on_avx512(plane, count, grad, dst)) return;
        if (avx2) {
            avg_pool_planes_backward_avx2(plane, count, grad, dst);
        } else {
            avg_pool_planes_backward(plane, count, grad, dst);
        }
    });
}

#define GRAPHNET_AVG_POOL_ON_AVX512(T)                                                        \
    template bool avg_pool_planes_forward_on_avx512<T>(const AvgPoolPlane&, int64_t, const T*, \
                                                       T*);                                   \
    template bool avg_pool_planes_backward_on_avx512<T>(const AvgPoolPlane&, int64_t,          \
                                                        const T*, T*);
GRAPHNET_AVG_POOL_ON_AVX512(float)
GRAPHNET_AVG_POOL_ON_AVX512(double)
#undef GRAPHNET_AVG_POOL_ON_AVX512

template void avg_pool_forward<float>(const PoolGeometry&, const float*, float*);
template void avg_pool_forward<double>(const PoolGeometry&, const double*, double*);
template void avg_pool_backward<float>(const PoolGeometry&, const float*, float*);
template void avg_pool_backward<double>(const PoolGeometry&, const double*, double*);
template void max_pool_forward<float>(const PoolGeometry&, const float*, float*, int32_t*, bool,
                                      bool);
template void max_pool_forward<double>(const PoolGeometry&, const double*, double*, int32_t*, bool,
                                       bool);
template bool max_unpool_planes<float>(int64_t, int64_t, int64_t, int64_t, int64_t, const float*,
                                       const int32_t*, float*);
template bool max_unpool_planes<double>(int64_t, int64_t, int64_t, int64_t, int64_t, const double*,
                                        const int32_t*, double*);
template bool max_pool_backward<float>(int64_t, int64_t, int64_t, int64_t, int64_t, const float*,
                                       const int32_t*, float*);
template bool max_pool_backward<double>(int64_t, int64_t, int64_t, int64_t, int64_t, const double*,
                                        const int32_t*, double*);

}  // namespace graphnet
