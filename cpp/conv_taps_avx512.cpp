// The tap kernels of conv_taps.h with AVX-512 (call only when cpu_has_avx512f()): 24
// accumulators of the 32 registers, as 4 vectors of filters x 6 positions (2 x 12, 1 x 24
// for what is left). Every loop over a tile is unrolled with constant indices, so the
// accumulators stay in registers. Like conv_direct_avx512.cpp, it includes no library
// header, so no AVX-512 copy of a shared inline function leaks out.
#pragma GCC target("avx512f,avx2,fma")
#include <immintrin.h>

#include "conv_taps.h"

namespace graphnet {
namespace {

struct Lanes512 {
    using V = __m512;
    static constexpr int N = 16;
    static constexpr int kPack = 1;  // output positions a vector (TapConv::pack)
    static V load(const float* p) { return _mm512_loadu_ps(p); }
    static V broadcast(const float* p) { return _mm512_set1_ps(*p); }
    static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static V zero() { return _mm512_setzero_ps(); }
    static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
};
static_assert(Lanes512::N == kTapLanes, "F_padded is whole vectors");

// Pack positions a vector: a broadcast of Pack consecutive floats, lane Pack * f + j
// reading position j (vbroadcastsd, vbroadcastf32x4: one load each, as the 1-float one).
template <int Pack>
struct PackedLanes512 : Lanes512 {
    static_assert(Pack == 2 || Pack == 4, "2 or 4 positions a vector");
    static constexpr int kPack = Pack;
    static V broadcast(const float* p) {
        if constexpr (Pack == 2) {  // (as a double: a vbroadcastsd from memory, one load)
            double two;
            __builtin_memcpy(&two, p, sizeof two);
            return _mm512_castpd_ps(_mm512_set1_pd(two));
        } else {
            return _mm512_broadcast_f32x4(_mm_loadu_ps(p));
        }
    }
};

// Spreads the prefetches of g.prefetch (its first part, then its second) over about
// `tiles` calls of step(): the next images' input comes from memory into L2 while this
// one's FMAs run, instead of stalling the phase split that reads it next (32->64 @32
// forward, batch 64, one thread: 0.92x the time); in a stride-2 dx, dx's lines before the
// merge's stores to them and the next image's dout before its copy (together 0.93-0.95x
// dx's time, 32->64 @32, 64->128 @16); in a dw, the next images' input and output
// gradient, a step a tile (0.82-0.95x dw's time, 32->64 @32 to 16->32 @32; a step a row
// of positions, in the tile's loop, cost 1.1-1.2x the time of layers of 32 filters on
// 8-16 pixels); the forward's output lines too, before the transpose's stores to them
// (0.94-0.98x the forward's time at batch 64, 16->32 @32 to 32->64 @16; the same at 16).
class Prefetcher {
  public:
    Prefetcher(const TapConv& g, int64_t tiles)  // (a last part line is left: no address past it)
        : first_(g.prefetch[0].from),
          second_(g.prefetch[1].from),
          first_lines_(first_ ? g.prefetch[0].floats / kLineFloats : 0),
          lines_(first_lines_ + (second_ ? g.prefetch[1].floats / kLineFloats : 0)),
          per_step_((lines_ + tiles - 1) / (tiles > 0 ? tiles : 1)) {}
    void step() {
        for (int64_t k = 0; k < per_step_ && line_ < lines_; ++k, ++line_) {
            const float* at = line_ < first_lines_ ? first_ + line_ * kLineFloats
                                                   : second_ + (line_ - first_lines_) * kLineFloats;
            _mm_prefetch(reinterpret_cast<const char*>(at), _MM_HINT_T1);
        }
    }

  private:
    static constexpr int64_t kLineFloats = 16;
    const float *first_, *second_;
    int64_t first_lines_, lines_, per_step_, line_ = 0;
};

// Forward tile: Vf vectors of filters from f0 times Pos positions from q0, taps t0 .. t1-1.
// Per tap Vf weight loads and Pos broadcasts (folded into the FMAs) feed Vf * Pos FMAs.
// The first block of taps starts from the bias, the others from what out_t holds. Mapped:
// position q reads in + g.at[q], one pointer per position; else in + q, one pointer (row q
// of out_t in + L::kPack * q: its kPack positions).
template <class L, int Vf, int Pos, bool Mapped>
void tap_forward_tile(const TapConv& g, const int64_t* offsets, const float* in,
                      const float* wpack, const float* bias, float* out_t, int64_t f0,
                      int64_t q0, int64_t t0, int64_t t1) {
    using V = typename L::V;
    static_assert(L::kPack == 1 || !Mapped, "packed positions are consecutive, not mapped");
    const int64_t stride = g.F_padded;  // a local: a register
    V acc[Pos][Vf];
#pragma GCC unroll 32
    for (int j = 0; j < Pos; ++j) {
#pragma GCC unroll 8
        for (int v = 0; v < Vf; ++v) {
            acc[j][v] = L::load(t0 == 0 ? bias + f0 + v * L::N
                                        : out_t + (q0 + j) * stride + f0 + v * L::N);
        }
    }
    const float* w = wpack + t0 * stride + f0;
    const float* base = in + q0 * L::kPack;
    const float* from[Mapped ? Pos : 1];  // each position's pointer, where mapped
    if constexpr (Mapped) {
#pragma GCC unroll 32
        for (int j = 0; j < Pos; ++j) from[j] = in + g.at[q0 + j];
    }
    for (int64_t t = t0; t < t1; ++t, w += stride) {
        V wv[Vf];
#pragma GCC unroll 8
        for (int v = 0; v < Vf; ++v) wv[v] = L::load(w + v * L::N);
        const int64_t offset = offsets[t];
        const float* p = base + offset;
#pragma GCC unroll 32
        for (int j = 0; j < Pos; ++j) {
            const V x = L::broadcast(Mapped ? from[j] + offset : p + j * L::kPack);
#pragma GCC unroll 8
            for (int v = 0; v < Vf; ++v) acc[j][v] = L::fma(wv[v], x, acc[j][v]);
        }
    }
#pragma GCC unroll 32
    for (int j = 0; j < Pos; ++j) {
#pragma GCC unroll 8
        for (int v = 0; v < Vf; ++v) L::store(out_t + (q0 + j) * stride + f0 + v * L::N, acc[j][v]);
    }
}

// The last `rest` < Pos positions from q0: a tile of the fewest multiple of Step positions
// that covers them, not a whole one (an 8 x 8 output is 10 tiles of 6 positions and 4
// left, which a whole tile would compute as 6: 8 of 72 positions wasted).
template <class L, int Vf, int Pos, bool Mapped, int Step>
void tap_forward_rest(const TapConv& g, const int64_t* offsets, const float* in,
                      const float* wpack, const float* bias, float* out_t, int64_t f0,
                      int64_t q0, int64_t rest, int64_t t0, int64_t t1) {
    if constexpr (Pos > Step) {
        if (rest <= Pos - Step) {
            return tap_forward_rest<L, Vf, Pos - Step, Mapped, Step>(g, offsets, in, wpack, bias,
                                                                     out_t, f0, q0, rest, t0, t1);
        }
    }
    tap_forward_tile<L, Vf, Pos, Mapped>(g, offsets, in, wpack, bias, out_t, f0, q0, t0, t1);
}

template <class L, int Vf, int Pos, bool Mapped = false>
void tap_forward_block(const TapConv& g, const int64_t* offsets, const float* in,
                       const float* wpack, const float* bias, float* out_t, int64_t f0,
                       int64_t t0, int64_t t1, Prefetcher& prefetcher) {
    static_assert(kTapRows % Pos == 0, "out_t holds Q rounded up to kTapRows rows");
    constexpr int Step = static_cast<int>(tap_rest_step(Vf));
    int64_t q0 = 0;
    for (; q0 + Pos <= g.Q; q0 += Pos) {
        tap_forward_tile<L, Vf, Pos, Mapped>(g, offsets, in, wpack, bias, out_t, f0, q0, t0, t1);
        prefetcher.step();
    }
    if (q0 < g.Q) {
        tap_forward_rest<L, Vf, Pos, Mapped, Step>(g, offsets, in, wpack, bias, out_t, f0, q0,
                                                   g.Q - q0, t0, t1);
        prefetcher.step();
    }
}

// Blocks of g.block taps, whose weights and input stay in L2 while every tile of positions
// passes over them (all taps of a wide layer at once would stream its weights from L3);
// within a block, Wide vectors of filters while they last, then 2, then 1 (F_padded is
// whole vectors), each with as many positions as fill the accumulators.
template <class L, int Wide, int Accumulators>
void tap_forward(const TapConv& g, const int64_t* offsets, const float* in, const float* wpack,
                 const float* bias, float* out_t) {
    const int64_t vectors = g.F_padded / L::N;
    // the tiles of a block of taps: Wide vectors of filters while they last, then (mapped)
    // one tile of 3 or 2, or (not) tiles of 2 and then 1
    const int64_t wide = vectors / Wide, rest = vectors % Wide;
    const auto tiles_of = [&](int64_t v) {  // v vectors of filters: Accumulators / v positions
        return (g.Q + Accumulators / v - 1) / (Accumulators / v);
    };
    const int64_t tiles = wide * tiles_of(Wide) +
                          (g.at ? (rest > 1 ? tiles_of(rest) : 0)
                                : rest / 2 * tiles_of(2) + rest % 2 * tiles_of(1));
    Prefetcher prefetcher(g, (g.taps + g.block - 1) / g.block * tiles);
    for (int64_t t0 = 0; t0 < g.taps; t0 += g.block) {
        const int64_t t1 = g.taps - t0 < g.block ? g.taps : t0 + g.block;
        if constexpr (L::kPack == 1) {  // (packed positions are never mapped)
            if (g.at) {  // no single vector left over (tap_map_fits)
                int64_t v0 = 0;
                for (; v0 + Wide <= vectors; v0 += Wide) {
                    tap_forward_block<L, Wide, Accumulators / Wide, true>(
                        g, offsets, in, wpack, bias, out_t, v0 * L::N, t0, t1, prefetcher);
                }
                if constexpr (Wide == 4) {
                    if (vectors - v0 == 3) {
                        tap_forward_block<L, 3, Accumulators / 3, true>(
                            g, offsets, in, wpack, bias, out_t, v0 * L::N, t0, t1, prefetcher);
                    } else if (vectors - v0 == 2) {
                        tap_forward_block<L, 2, Accumulators / 2, true>(
                            g, offsets, in, wpack, bias, out_t, v0 * L::N, t0, t1, prefetcher);
                    }
                }
                continue;
            }
        }
        int64_t v0 = 0;
        for (; v0 + Wide <= vectors; v0 += Wide) {
            tap_forward_block<L, Wide, Accumulators / Wide>(g, offsets, in, wpack, bias, out_t,
                                                            v0 * L::N, t0, t1, prefetcher);
        }
        if constexpr (Wide > 2) {
            for (; v0 + 2 <= vectors; v0 += 2) {
                tap_forward_block<L, 2, Accumulators / 2>(g, offsets, in, wpack, bias, out_t,
                                                          v0 * L::N, t0, t1, prefetcher);
            }
        }
        for (; v0 < vectors; ++v0) {
            tap_forward_block<L, 1, Accumulators>(g, offsets, in, wpack, bias, out_t, v0 * L::N,
                                                  t0, t1, prefetcher);
        }
    }
}

// Weight-gradient tile: kTapGroup taps from t0 (past the last tap: repeats, dropped) times
// Vf vectors of filters from f0. Per position Vf loads of dout_t and kTapGroup broadcasts
// of the input feed Vf * kTapGroup FMAs; the sums run along the positions of all the
// images, per lane, so no horizontal sum is needed, and the tile's sums are added to dw_t
// once for all of them (a 4 x 4 output has 16 positions: adding per image cost as much as
// its FMAs).
constexpr int kTapGroup = 6;

__mmask16 first_lanes(int64_t n) {
    return n <= 0 ? __mmask16(0) : n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u);
}

template <class L, int Vf>
void tap_dw_tile(const TapConv& g, const TapDwPositions& pos, const int64_t* offsets,
                 const float* in, const float* dout_t, float* dw_t, int64_t f0, int64_t t0) {
    using V = typename L::V;
    V acc[kTapGroup][Vf];
    const float* p[kTapGroup];
#pragma GCC unroll 8
    for (int i = 0; i < kTapGroup; ++i) {
        p[i] = in + offsets[t0 + i < g.taps ? t0 + i : t0];
#pragma GCC unroll 8
        for (int v = 0; v < Vf; ++v) acc[i][v] = L::zero();
    }
    const int64_t stride = g.F_padded;
    const float* d = dout_t + f0;
    for (int64_t n = 0; n < pos.images; ++n) {
        for (int64_t r = 0; r < pos.rows; ++r) {
            const int64_t first = n * pos.image_floats + r * pos.row;
            for (int64_t x = first; x < first + pos.cols; ++x, d += stride) {
                V dv[Vf];
#pragma GCC unroll 8
                for (int v = 0; v < Vf; ++v) dv[v] = L::load(d + v * L::N);
#pragma GCC unroll 8
                for (int i = 0; i < kTapGroup; ++i) {
                    const V xb = L::broadcast(p[i] + x);
#pragma GCC unroll 8
                    for (int v = 0; v < Vf; ++v) acc[i][v] = L::fma(xb, dv[v], acc[i][v]);
                }
            }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < kTapGroup; ++i) {
        if (t0 + i >= g.taps) break;
        float* out = dw_t + (t0 + i) * g.F + f0;
#pragma GCC unroll 8
        for (int v = 0; v < Vf; ++v) {
            const __mmask16 valid = first_lanes(g.F - f0 - v * L::N);  // dw_t's rows are F long
            float* o = out + v * L::N;
            const __m512 sum = _mm512_add_ps(_mm512_maskz_loadu_ps(valid, o), acc[i][v]);
            _mm512_mask_storeu_ps(o, valid, sum);
        }
    }
}

template <class L, int Wide>
void tap_dw(const TapConv& g, const TapDwPositions& pos, const int64_t* offsets, const float* in,
            const float* dout_t, float* dw_t) {
    const int64_t vectors = g.F_padded / L::N;
    const int64_t tiles = (g.taps + kTapGroup - 1) / kTapGroup *
                          (vectors / Wide + vectors % Wide / 2 + vectors % Wide % 2);
    Prefetcher prefetcher(g, tiles);
    for (int64_t t0 = 0; t0 < g.taps; t0 += kTapGroup) {
        int64_t v0 = 0;
        for (; v0 + Wide <= vectors; v0 += Wide) {
            tap_dw_tile<L, Wide>(g, pos, offsets, in, dout_t, dw_t, v0 * L::N, t0);
            prefetcher.step();
        }
        if constexpr (Wide > 2) {
            for (; v0 + 2 <= vectors; v0 += 2) {
                tap_dw_tile<L, 2>(g, pos, offsets, in, dout_t, dw_t, v0 * L::N, t0);
                prefetcher.step();
            }
        }
        for (; v0 < vectors; ++v0) {
            tap_dw_tile<L, 1>(g, pos, offsets, in, dout_t, dw_t, v0 * L::N, t0);
            prefetcher.step();
        }
    }
}

// The weight gradient of a layer of F <= 16 / Pack filters (TapConv::pack): lane Pack * f + j
// of a row of dout_t holds filter f at position Pack * k + j of a row of the grid, so a tile
// of kTapGroup taps sums Pack positions an FMA, each lane its own share of the positions,
// and the Pack lanes of a filter are added together once, at the end. A row's last group
// of cols % Pack positions reads its input through a mask: the pixels past the row's end
// are another window's (or past the planes), where an inf times dout_t's 0 would be a nan.
template <int Pack>
void tap_dw_packed_tile(const TapConv& g, const TapDwPositions& pos, const int64_t* offsets,
                        const float* in, const float* dout_t, float* dw_t, int64_t t0) {
    using L = PackedLanes512<Pack>;
    __m512 acc[kTapGroup];
    const float* p[kTapGroup];
#pragma GCC unroll 8
    for (int i = 0; i < kTapGroup; ++i) {
        p[i] = in + offsets[t0 + i < g.taps ? t0 + i : t0];
        acc[i] = _mm512_setzero_ps();
    }
    const int64_t whole = pos.cols / Pack * Pack;  // the positions of a row in whole groups
    const __mmask16 last = first_lanes(pos.cols - whole);  // (as loaded: the first lanes)
    const float* d = dout_t;
    for (int64_t n = 0; n < pos.images; ++n) {
        for (int64_t r = 0; r < pos.rows; ++r) {
            const int64_t first = n * pos.image_floats + r * pos.row;
            for (int64_t x = first; x < first + whole; x += Pack, d += kTapLanes) {
                const __m512 dv = _mm512_loadu_ps(d);
#pragma GCC unroll 8
                for (int i = 0; i < kTapGroup; ++i) {
                    acc[i] = _mm512_fmadd_ps(L::broadcast(p[i] + x), dv, acc[i]);
                }
            }
            if (last == 0) continue;
            const __m512 dv = _mm512_loadu_ps(d);
            d += kTapLanes;
#pragma GCC unroll 8
            for (int i = 0; i < kTapGroup; ++i) {
                const __m512 v = _mm512_maskz_loadu_ps(last, p[i] + first + whole);
                const __m512 xb = Pack == 2 ? _mm512_castpd_ps(_mm512_broadcastsd_pd(
                                                  _mm512_castpd512_pd128(_mm512_castps_pd(v))))
                                            : _mm512_shuffle_f32x4(v, v, 0);
                acc[i] = _mm512_fmadd_ps(xb, dv, acc[i]);
            }
        }
    }
    // filter f's sum into lane Pack * f, then those lanes to the first F
    const __mmask16 filters = first_lanes(g.F);
    const __mmask16 firsts = Pack == 2 ? 0x5555 : 0x1111;
#pragma GCC unroll 8
    for (int i = 0; i < kTapGroup; ++i) {
        if (t0 + i >= g.taps) break;
        __m512 sum = _mm512_add_ps(acc[i], _mm512_permute_ps(acc[i], 0xB1));  // lane pairs
        if constexpr (Pack == 4) sum = _mm512_add_ps(sum, _mm512_permute_ps(sum, 0x4E));
        float* o = dw_t + (t0 + i) * g.F;
        _mm512_mask_storeu_ps(o, filters,
                              _mm512_add_ps(_mm512_maskz_loadu_ps(filters, o),
                                            _mm512_maskz_compress_ps(firsts, sum)));
    }
}

template <int Pack>
void tap_dw_packed(const TapConv& g, const TapDwPositions& pos, const int64_t* offsets,
                   const float* in, const float* dout_t, float* dw_t) {
    Prefetcher prefetcher(g, (g.taps + kTapGroup - 1) / kTapGroup);
    for (int64_t t0 = 0; t0 < g.taps; t0 += kTapGroup) {
        tap_dw_packed_tile<Pack>(g, pos, offsets, in, dout_t, dw_t, t0);
        prefetcher.step();
    }
}

// Transposes the 16 x 16 block in r: afterwards r[k] holds what was column k. Pairs, then
// pairs of pairs, then 128-bit quarters twice: 64 shuffles. (GCC 12's headers build these
// shuffles on a deliberately undefined vector, which -Wmaybe-uninitialized flags.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
__attribute__((always_inline)) inline void transpose16(__m512 (&r)[16]) {
    __m512 t[16], u[16], v[16];
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
        const __m512d a = _mm512_castps_pd(t[4 * k]), b = _mm512_castps_pd(t[4 * k + 2]);
        const __m512d c = _mm512_castps_pd(t[4 * k + 1]), d = _mm512_castps_pd(t[4 * k + 3]);
        u[4 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        u[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        u[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        u[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) {
            v[8 * h + i] = _mm512_shuffle_f32x4(u[8 * h + i], u[8 * h + i + 4], 0x88);
            v[8 * h + i + 4] = _mm512_shuffle_f32x4(u[8 * h + i], u[8 * h + i + 4], 0xdd);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
        r[i] = _mm512_shuffle_f32x4(v[i], v[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(v[i], v[i + 8], 0xdd);
    }
}
#pragma GCC diagnostic pop

}  // namespace

void deinterleave_avx512(int64_t rows, int64_t width, const float* src, int64_t src_stride,
                         float* even, float* odd, int64_t dst_stride) {
    const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                            28, 30);
    const __m512i odds = _mm512_add_epi32(evens, _mm512_set1_epi32(1));
    const int64_t whole = width / 32 * 16, rest = width - 2 * whole;  // pairs; < 32 pixels
    const __mmask16 first = first_lanes(rest), second = first_lanes(rest - 16);
    const __mmask16 to_even = first_lanes((rest + 1) / 2), to_odd = first_lanes(rest / 2);
    for (int64_t r = 0; r < rows; ++r, src += src_stride, even += dst_stride, odd += dst_stride) {
        for (int64_t k = 0; k < whole; k += 16) {
            const __m512 a = _mm512_loadu_ps(src + 2 * k), b = _mm512_loadu_ps(src + 2 * k + 16);
            _mm512_storeu_ps(even + k, _mm512_permutex2var_ps(a, evens, b));
            _mm512_storeu_ps(odd + k, _mm512_permutex2var_ps(a, odds, b));
        }
        if (rest == 0) continue;  // the last pixels: in up to two vectors
        const __m512 a = _mm512_maskz_loadu_ps(first, src + 2 * whole);
        const __m512 b = _mm512_maskz_loadu_ps(second, src + 2 * whole + 16);
        _mm512_mask_storeu_ps(even + whole, to_even, _mm512_permutex2var_ps(a, evens, b));
        _mm512_mask_storeu_ps(odd + whole, to_odd, _mm512_permutex2var_ps(a, odds, b));
    }
}

namespace {

// Where lane k of column phase r (pixel Stride * k + r of a run of 16 * Stride) lies: its
// index within the pair of vectors that holds it, and whether that is the second pair (its
// third and fourth vectors).
template <int Stride>
struct ColumnPhaseLanes {
    alignas(64) int32_t index[Stride][16] = {};
    uint16_t second_pair[Stride] = {};
    constexpr ColumnPhaseLanes() {
        for (int r = 0; r < Stride; ++r) {
            for (int k = 0; k < 16; ++k) {
                const int pixel = Stride * k + r;
                index[r][k] = pixel % 32;
                if (pixel >= 32) second_pair[r] = static_cast<uint16_t>(second_pair[r] | 1 << k);
            }
        }
    }
};

template <int Stride>
constexpr ColumnPhaseLanes<Stride> kColumnPhaseLanes{};

// split_columns_avx512 with the stride (3 or 4) a constant: per 16 pixels of each phase,
// two permutes of pairs of vectors of the row (16 * Stride pixels) and a blend.
template <int Stride>
void split_columns(int64_t rows, int64_t width, const float* src, int64_t src_stride,
                   float* const* phases, int64_t dst_stride) {
    constexpr int kVectors = Stride, kStep = 16 * Stride;  // row pixels per 16 of a phase
    constexpr const ColumnPhaseLanes<Stride>& lanes = kColumnPhaseLanes<Stride>;
    __m512i index[Stride];
    for (int r = 0; r < Stride; ++r) index[r] = _mm512_load_si512(lanes.index[r]);
    const auto phase_vector = [&](const __m512 (&v)[kVectors], int r) {
        const __m512 first = _mm512_permutex2var_ps(v[0], index[r], v[1]);
        const __m512 fourth = v[Stride - 1];  // (stride 3: the third again, unread)
        const __m512 second = _mm512_permutex2var_ps(v[2], index[r], fourth);
        return _mm512_mask_blend_ps(lanes.second_pair[r], first, second);
    };
    const int64_t whole = width / kStep * kStep, rest = width - whole;  // rest < kStep pixels
    __mmask16 rest_loads[kVectors], rest_stores[Stride];
    for (int v = 0; v < kVectors; ++v) rest_loads[v] = first_lanes(rest - 16 * v);
    for (int r = 0; r < Stride; ++r) rest_stores[r] = first_lanes((rest - r + Stride - 1) / Stride);
    float* dst[Stride];
    for (int r = 0; r < Stride; ++r) dst[r] = phases[r];
    for (int64_t row = 0; row < rows; ++row, src += src_stride) {
        for (int64_t x = 0; x < whole; x += kStep) {
            __m512 v[kVectors];
            for (int j = 0; j < kVectors; ++j) v[j] = _mm512_loadu_ps(src + x + 16 * j);
            for (int r = 0; r < Stride; ++r) _mm512_storeu_ps(dst[r] + x / Stride, phase_vector(v, r));
        }
        if (rest > 0) {
            __m512 v[kVectors];
            for (int j = 0; j < kVectors; ++j) {
                v[j] = _mm512_maskz_loadu_ps(rest_loads[j], src + whole + 16 * j);
            }
            for (int r = 0; r < Stride; ++r) {
                _mm512_mask_storeu_ps(dst[r] + whole / Stride, rest_stores[r], phase_vector(v, r));
            }
        }
        for (int r = 0; r < Stride; ++r) dst[r] += dst_stride;
    }
}

}  // namespace

void split_columns_avx512(int64_t rows, int64_t width, int64_t stride, const float* src,
                          int64_t src_stride, float* const* phases, int64_t dst_stride) {
    switch (stride) {
        case 1: return copy_rows_avx512(rows, width, src, src_stride, phases[0], dst_stride);
        case 3: return split_columns<3>(rows, width, src, src_stride, phases, dst_stride);
        default: return split_columns<4>(rows, width, src, src_stride, phases, dst_stride);
    }
}

void merge_phase_pairs_avx512(const PhasePairs& p, int64_t channels, const float* first_t,
                              const float* second_t, int64_t stride, float* dst,
                              int64_t dst_channel) {
    // pair j of a block: lanes 2j and 2j + 1 of the permutes (low: pairs 0-7, high: 8-15)
    const __m512i low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i high = _mm512_add_epi32(low, _mm512_set1_epi32(8));
    for (int64_t k0 = 0; k0 < p.pairs; k0 += 16) {
        const int64_t n = p.pairs - k0 < 16 ? p.pairs - k0 : 16;
        const int64_t* first_at = p.first_at + k0;
        const int64_t* second_at = p.second_at + k0;
        const int64_t* dst_at = p.dst_at + k0;
        // The block's stores: runs of pairs whose pixels follow each other in a row, within
        // a half; a run that does not start at its half's first lane is compressed down.
        int64_t run_at[16];
        __mmask16 run_lanes[16];
        bool run_high[16];
        int runs = 0;
        for (int64_t j = 0; j < n;) {
            const int64_t half_end = j < 8 ? (n < 8 ? n : 8) : n;
            int64_t e = j + 1;
            while (e < half_end && second_at[e - 1] >= 0 && dst_at[e] == dst_at[e - 1] + 2) ++e;
            const int64_t from = 2 * (j % 8);
            const int64_t to = 2 * ((e - 1) % 8) + (second_at[e - 1] >= 0 ? 2 : 1);
            run_at[runs] = dst_at[j];
            run_lanes[runs] = static_cast<__mmask16>(first_lanes(to) & ~first_lanes(from));
            run_high[runs] = j >= 8;
            ++runs;
            j = e;
        }
        for (int64_t c0 = 0; c0 < channels; c0 += 16) {
            const int64_t nc = channels - c0 < 16 ? channels - c0 : 16;
            __m512 f[16], s[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; ++i) {
                f[i] = i < n ? _mm512_loadu_ps(first_t + first_at[i] * stride + c0)
                             : _mm512_setzero_ps();
                s[i] = i < n && second_at[i] >= 0
                           ? _mm512_loadu_ps(second_t + second_at[i] * stride + c0)
                           : _mm512_setzero_ps();
            }
            transpose16(f);
            transpose16(s);
#pragma GCC unroll 16
            for (int c = 0; c < 16; ++c) {  // constant indices: f and s stay in registers
                if (c >= nc) break;
                const __m512 lo = _mm512_permutex2var_ps(f[c], low, s[c]);
                const __m512 hi = _mm512_permutex2var_ps(f[c], high, s[c]);
                float* row = dst + (c0 + c) * dst_channel;
                for (int r = 0; r < runs; ++r) {
                    const __m512 v = run_high[r] ? hi : lo;
                    const __mmask16 lanes = run_lanes[r];
                    if (lanes & 1) {
                        _mm512_mask_storeu_ps(row + run_at[r], lanes, v);
                    } else {  // the run's first lane to the vector's first
                        _mm512_mask_storeu_ps(row + run_at[r],
                                              first_lanes(__builtin_popcount(lanes)),
                                              _mm512_maskz_compress_ps(lanes, v));
                    }
                }
            }
        }
    }
}

void pack_dw_positions_avx512(int64_t rows, int64_t cols, int64_t F, int64_t pack,
                              const float* from, float* to) {
    // lane l = pack * f + j takes lane f of the j-th position's row: of the first
    // permute's pair (j = 0, 1) or, with pack 4, of the second's (j = 2, 3)
    alignas(64) int32_t index[16];
    for (int l = 0; l < 16; ++l) index[l] = static_cast<int32_t>(l / pack + 16 * (l % 2));
    const __m512i pick = _mm512_load_si512(index);
    const __mmask16 filters = first_lanes(pack * F), second_pair = 0xCCCC;
    const int64_t groups = (cols + pack - 1) / pack;
    for (int64_t r = 0; r < rows; ++r) {
        const float* row = from + r * cols * kTapLanes;
        for (int64_t k = 0; k < groups; ++k) {
            __m512 at[4];
            for (int64_t j = 0; j < pack; ++j) {
                at[j] = pack * k + j < cols ? _mm512_loadu_ps(row + (pack * k + j) * kTapLanes)
                                            : _mm512_setzero_ps();
            }
            __m512 lanes = _mm512_maskz_permutex2var_ps(filters, at[0], pick, at[1]);
            if (pack == 4) {
                lanes = _mm512_mask_blend_ps(
                    second_pair, lanes, _mm512_maskz_permutex2var_ps(filters, at[2], pick, at[3]));
            }
            _mm512_storeu_ps(to + (r * groups + k) * kTapLanes, lanes);
        }
    }
}

void column_sums_avx512(int64_t rows, int64_t cols, const float* src, int64_t stride,
                        float* sums) {
    for (int64_t c0 = 0; c0 < cols; c0 += 64) {  // 4 vectors of columns: 4 chains of adds
        __m512 acc[4];
        __mmask16 lanes[4];
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) {
            acc[v] = _mm512_setzero_ps();
            lanes[v] = first_lanes(cols - c0 - 16 * v);
        }
        for (int64_t r = 0; r < rows; ++r) {
#pragma GCC unroll 4
            for (int v = 0; v < 4; ++v) {
                acc[v] = _mm512_add_ps(
                    acc[v], _mm512_maskz_loadu_ps(lanes[v], src + r * stride + c0 + 16 * v));
            }
        }
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) {
            float* o = sums + c0 + 16 * v;
            _mm512_mask_storeu_ps(o, lanes[v],
                                  _mm512_add_ps(_mm512_maskz_loadu_ps(lanes[v], o), acc[v]));
        }
    }
}

void copy_rows_avx512(int64_t rows, int64_t width, const float* src, int64_t src_stride,
                      float* dst, int64_t dst_stride) {
    const __mmask16 last = first_lanes(width % 16 == 0 ? 16 : width % 16);
    for (int64_t r = 0; r < rows; ++r, src += src_stride, dst += dst_stride) {
        int64_t k = 0;
        for (; k + 16 < width; k += 16) _mm512_storeu_ps(dst + k, _mm512_loadu_ps(src + k));
        if (k < width) _mm512_mask_storeu_ps(dst + k, last, _mm512_maskz_loadu_ps(last, src + k));
    }
}

namespace {

// src (rows x cols) transposed in 16 x 16 blocks held in registers: row k of the result,
// columns r0 .. r0 + 15, goes to store(k, r0, the block's row k, the lanes below rows - r0),
// whose lanes past those are 0.
template <class Store>
void transpose_blocks(int64_t rows, int64_t cols, const float* src, int64_t src_stride,
                      Store&& store) {
    for (int64_t r0 = 0; r0 < rows; r0 += 16) {
        const int64_t nr = rows - r0 < 16 ? rows - r0 : 16;
        const __mmask16 real = first_lanes(nr);
        for (int64_t c0 = 0; c0 < cols; c0 += 16) {
            const int64_t nc = cols - c0 < 16 ? cols - c0 : 16;
            const __mmask16 load = first_lanes(nc);
            __m512 r[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; ++i) {
                r[i] = i < nr ? _mm512_maskz_loadu_ps(load, src + (r0 + i) * src_stride + c0)
                              : _mm512_setzero_ps();
            }
            transpose16(r);
#pragma GCC unroll 16
            for (int k = 0; k < 16; ++k) {
                if (k < nc) store(c0 + k, r0, r[k], real);
            }
        }
    }
}

}  // namespace

void tap_transpose_avx512(int64_t rows, int64_t cols, const float* src, int64_t src_stride,
                          float* dst, int64_t dst_stride) {
    transpose_blocks(rows, cols, src, src_stride,
                     [&](int64_t k, int64_t r0, __m512 row, __mmask16 real) {
                         _mm512_mask_storeu_ps(dst + k * dst_stride + r0, real, row);
                     });
}

void tap_transpose_to_rows_avx512(int64_t rows, int64_t cols, const float* src,
                                  int64_t src_stride, float* const* dst) {
    transpose_blocks(rows, cols, src, src_stride,
                     [&](int64_t k, int64_t r0, __m512 row, __mmask16) {
                         _mm512_storeu_ps(dst[k] + r0, row);
                     });
}

namespace {

// Positions per lane-forward tile for Fr filters: Fr x Pv accumulators and Pv input
// vectors within the 32 registers (the weights are broadcast from memory into the FMAs).
constexpr int lane_tile_vectors(int Fr) { return Fr <= 4 ? 6 : Fr <= 6 ? 4 : 3; }

// Fr filters (w_t, bias and out from the first) times Pv vectors of positions from
// vector k0 of the grid, all taps.
template <int Fr, int Pv>
void lane_tile(const LaneConv& g, const int64_t* offsets, const float* in, const float* w_t,
               const float* bias, float* out, int64_t k0) {
    __m512 acc[Fr][Pv];
#pragma GCC unroll 8
    for (int f = 0; f < Fr; ++f) {
        const __m512 b = _mm512_set1_ps(bias[f]);
#pragma GCC unroll 8
        for (int v = 0; v < Pv; ++v) acc[f][v] = b;
    }
    const float* from = in + 16 * k0;
    const int64_t F = g.F;  // a local: a register
    const float* w = w_t;
    for (int64_t t = 0; t < g.taps; ++t, w += F) {
        const float* p = from + offsets[t];
        __m512 x[Pv];
#pragma GCC unroll 8
        for (int v = 0; v < Pv; ++v) x[v] = _mm512_loadu_ps(p + 16 * v);
#pragma GCC unroll 8
        for (int f = 0; f < Fr; ++f) {
            const __m512 wf = _mm512_set1_ps(w[f]);
#pragma GCC unroll 8
            for (int v = 0; v < Pv; ++v) acc[f][v] = _mm512_fmadd_ps(wf, x[v], acc[f][v]);
        }
    }
#pragma GCC unroll 8
    for (int v = 0; v < Pv; ++v) {  // the kept lanes compressed into the output's rows
        const __mmask16 keep = g.keep[k0 + v];
        const __mmask16 to = first_lanes(__builtin_popcount(keep));
#pragma GCC unroll 8
        for (int f = 0; f < Fr; ++f) {
            _mm512_mask_storeu_ps(out + f * g.out_filter + g.dest[k0 + v], to,
                                  _mm512_maskz_compress_ps(keep, acc[f][v]));
        }
    }
}

// All vectors of the grid from k0 for Fr filters: tiles of Pv vectors, then one of the
// fewest vectors that covers the rest.
template <int Fr, int Pv = lane_tile_vectors(Fr)>
void lane_filters(const LaneConv& g, const int64_t* offsets, const float* in, const float* w_t,
                  const float* bias, float* out, int64_t k0) {
    const int64_t vectors = (g.Q + 15) / 16;
    for (; k0 + Pv <= vectors; k0 += Pv) lane_tile<Fr, Pv>(g, offsets, in, w_t, bias, out, k0);
    if (k0 == vectors) return;
    if constexpr (Pv > 1) {
        if (vectors - k0 < Pv) return lane_filters<Fr, Pv - 1>(g, offsets, in, w_t, bias, out, k0);
    }
}

}  // namespace

void lane_conv_forward_avx512(const LaneConv& g, const int64_t* offsets, const float* in,
                              const float* w_t, const float* bias, float* out) {
    using Filters = void (*)(const LaneConv&, const int64_t*, const float*, const float*,
                             const float*, float*, int64_t);
    static constexpr Filters kFilters[8] = {lane_filters<1>, lane_filters<2>, lane_filters<3>,
                                            lane_filters<4>, lane_filters<5>, lane_filters<6>,
                                            lane_filters<7>, lane_filters<8>};
    // the filters in groups of at most 8, as even as they come (19: 7, 6, 6)
    const int64_t groups = (g.F + 7) / 8;
    for (int64_t k = 0, f0 = 0; k < groups; ++k) {
        const int64_t Fr = g.F / groups + (k < g.F % groups ? 1 : 0);
        kFilters[Fr - 1](g, offsets, in, w_t + f0, bias + f0, out + f0 * g.out_filter, 0);
        f0 += Fr;
    }
}

namespace {

// Taps per lane weight-gradient tile for Fr filters: Tr x Fr accumulators, Fr dout vectors
// and an input vector within the 32 registers.
constexpr int lane_dw_taps(int Fr) { return Fr <= 3 ? 8 : Fr == 4 ? 6 : 4; }
constexpr int kLaneDwMaxTileFilters = 6;

// The sums of the 16 lanes of v[0 .. 7] into lanes 0 .. 7: halves, quarters, then the
// four lanes of each quarter, 24 shuffles and adds where a reduction apiece takes 64.
__attribute__((always_inline)) inline __m512 sum_lanes8(const __m512 (&v)[8]) {
    __m512 w[4], u[2];
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {  // v[2k]'s 8 partial sums, then v[2k + 1]'s
        w[k] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0xEE));
    }
#pragma GCC unroll 2
    for (int k = 0; k < 2; ++k) {  // quarter j: v[4k + j]'s 4 partial sums
        u[k] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * k], w[2 * k + 1], 0x88),
                             _mm512_shuffle_f32x4(w[2 * k], w[2 * k + 1], 0xDD));
    }
    __m512 s = _mm512_add_ps(_mm512_unpacklo_ps(u[0], u[1]), _mm512_unpackhi_ps(u[0], u[1]));
    s = _mm512_add_ps(s, _mm512_permute_ps(s, 0x4E));  // lane 4j: v[j], 4j + 1: v[4 + j]
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_permutexvar_ps(order, s);
}

// Taps t0 .. t0 + Tr - 1 (those under g.taps) times filters f0 .. f0 + Fr - 1.
template <int Fr, int Tr>
void lane_dw_tile(const LaneDw& g, const int64_t* offsets, const float* in, const float* dout,
                  float* dw_t, int64_t t0, int64_t f0) {
    __m512 acc[Tr * Fr];
    int64_t at[Tr];
#pragma GCC unroll 8
    for (int i = 0; i < Tr; ++i) at[i] = offsets[t0 + i < g.taps ? t0 + i : t0];
#pragma GCC unroll 24
    for (int a = 0; a < Tr * Fr; ++a) acc[a] = _mm512_setzero_ps();
    for (int64_t n = 0; n < g.images; ++n) {
        const float* x = in + n * g.image_floats;
        const float* d = dout + n * g.dout_image + f0 * g.dout_filter;
        for (int64_t k = 0; k < g.vectors; ++k, x += 16, d += 16) {
            const __mmask16 keep = g.keep[k];
            __m512 dv[Fr];
#pragma GCC unroll 8
            for (int f = 0; f < Fr; ++f) dv[f] = _mm512_loadu_ps(d + f * g.dout_filter);
#pragma GCC unroll 8
            for (int i = 0; i < Tr; ++i) {
                const __m512 xv = _mm512_maskz_loadu_ps(keep, x + at[i]);
#pragma GCC unroll 8
                for (int f = 0; f < Fr; ++f) {
                    acc[i * Fr + f] = _mm512_fmadd_ps(xv, dv[f], acc[i * Fr + f]);
                }
            }
        }
    }
    alignas(64) float sums[16];
#pragma GCC unroll 3
    for (int a0 = 0; a0 < Tr * Fr; a0 += 8) {
        __m512 eight[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) eight[j] = a0 + j < Tr * Fr ? acc[a0 + j] : _mm512_setzero_ps();
        _mm512_store_ps(sums, sum_lanes8(eight));
        for (int j = 0; j < 8 && a0 + j < Tr * Fr; ++j) {
            const int64_t t = t0 + (a0 + j) / Fr;
            if (t < g.taps) dw_t[t * g.F + f0 + (a0 + j) % Fr] += sums[j];
        }
    }
}

template <int Fr>
void lane_dw_filters(const LaneDw& g, const int64_t* offsets, const float* in, const float* dout,
                     float* dw_t, int64_t f0) {
    constexpr int Tr = lane_dw_taps(Fr);
    for (int64_t t0 = 0; t0 < g.taps; t0 += Tr) {
        lane_dw_tile<Fr, Tr>(g, offsets, in, dout, dw_t, t0, f0);
    }
}

}  // namespace

void lane_conv_dw_avx512(const LaneDw& g, const int64_t* offsets, const float* in,
                         const float* dout, float* dw_t) {
    using Filters = void (*)(const LaneDw&, const int64_t*, const float*, const float*, float*,
                             int64_t);
    static constexpr Filters kFilters[kLaneDwMaxTileFilters] = {
        lane_dw_filters<1>, lane_dw_filters<2>, lane_dw_filters<3>,
        lane_dw_filters<4>, lane_dw_filters<5>, lane_dw_filters<6>};
    // the filters in groups of at most kLaneDwMaxTileFilters, as even as they come
    const int64_t groups = (g.F + kLaneDwMaxTileFilters - 1) / kLaneDwMaxTileFilters;
    for (int64_t k = 0, f0 = 0; k < groups; ++k) {
        const int64_t Fr = g.F / groups + (k < g.F % groups ? 1 : 0);
        kFilters[Fr - 1](g, offsets, in, dout, dw_t, f0);
        f0 += Fr;
    }
}

void lane_dw_dout_avx512(int64_t F, int64_t rows, int64_t cols, int64_t row, const float* dout,
                         float* to, int64_t to_filter, float* db) {
    for (int64_t f = 0; f < F; ++f) {
        __m512 sum = _mm512_setzero_ps();
        for (int64_t r = 0; r < rows; ++r) {
            const float* src = dout + (f * rows + r) * cols;
            float* dst = to + f * to_filter + r * row;
            for (int64_t k = 0; k < row; k += 16) {
                const __m512 v = _mm512_maskz_loadu_ps(first_lanes(cols - k), src + k);
                sum = _mm512_add_ps(sum, v);
                _mm512_mask_storeu_ps(dst + k, first_lanes(row - k), v);
            }
        }
        db[f] += _mm512_reduce_add_ps(sum);
    }
}

void tap_conv_forward_avx512(const TapConv& g, const int64_t* offsets, const float* in,
                             const float* wpack, const float* bias, float* out_t) {
    if (g.pack == 2) return tap_forward<PackedLanes512<2>, 1, 24>(g, offsets, in, wpack, bias, out_t);
    if (g.pack == 4) return tap_forward<PackedLanes512<4>, 1, 24>(g, offsets, in, wpack, bias, out_t);
    tap_forward<Lanes512, kTapWide, 24>(g, offsets, in, wpack, bias, out_t);
}

void tap_conv_dw_avx512(const TapConv& g, const TapDwPositions& p, const int64_t* offsets,
                        const float* in, const float* dout_t, float* dw_t) {
    if (g.pack == 2) return tap_dw_packed<2>(g, p, offsets, in, dout_t, dw_t);
    if (g.pack == 4) return tap_dw_packed<4>(g, p, offsets, in, dout_t, dw_t);
    tap_dw<Lanes512, 4>(g, p, offsets, in, dout_t, dw_t);
}

}  // namespace graphnet
