// AVX2 + FMA kernels of conv_direct.h. Everything in this file is compiled for AVX2, so it
// includes only the intrinsics and its own header (see there).
#pragma GCC target("avx2,fma")
#include "conv_direct.h"

#include "avx2_lanes.h"

namespace graphnet {
namespace {

// Forward register tile: Filters x Vectors = 12 accumulators of 8 lanes, plus the input
// vectors of one row and 1 broadcast weight. Per tap: 12 FMAs against Vectors loads and
// Filters broadcasts, so the two FMA pipes, not the loads, set the pace, and 12
// independent sums cover the FMA latency (5 cycles x 2 pipes). Measured on rows of 32:
// 3 x 4 runs at 83% of the FMA peak on one core, 6 x 2 at 76% (more broadcasts per FMA);
// 12 x 1, for rows of 8, lost to im2col + GEMM (one broadcast per FMA).
constexpr int kAccumulators = 12;
constexpr int kWidestVectors = 4;
static_assert(8 * kWidestVectors <= kDirectSlack, "the slack must cover the widest tile");
// Weight-gradient tile: 3 filters x 4 taps = 12 accumulators, 3 output-gradient vectors and
// 1 input vector. Each accumulator sums 8 pixel lanes; they are added up at the end.
constexpr int kGradFilters = 3;
constexpr int kGradTaps = 4;
// The weight gradient sums a tile over as many images at once as keep the tile's rows of
// dout and the padded images in L1: fewer horizontal sums where images are small.
constexpr int64_t kGradWorkingSet = 24 * 1024;  // bytes

// Vectors per forward tile for rows Wo pixels wide (at least 2 vectors: conv.cpp sends
// narrower rows to im2col + GEMM): of 4, 3 and 2, the one whose tiles run past the row by
// the fewest whole vectors, the wider on a tie.
int tile_vectors(int64_t Wo) {
    const int64_t vectors = (Wo + 7) / 8;
    int best = kWidestVectors;
    int64_t best_waste = vectors;
    for (int v = kWidestVectors; v >= 2; --v) {
        const int64_t waste = (vectors + v - 1) / v * v - vectors;
        if (waste < best_waste) best = v, best_waste = waste;
    }
    return best;
}

float horizontal_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Filters f0 .. f0+Filters-1 at output row oy, pixels ox0 .. ox0 + 8*Vectors - 1 (those
// past the row are computed and dropped, and so are filters past F, whose packed weights
// are zero). Every loop over the tile is unrolled with constant indices: an index the
// compiler cannot resolve would keep the accumulators in memory instead of registers.
template <int Filters, int Vectors>
void forward_tile(const DirectConv& g, const float* xpad, const float* wpack,
                  const float* bias, float* out, int64_t f0, int64_t oy, int64_t ox0) {
    __m256 acc[Filters][Vectors];
#pragma GCC unroll 16
    for (int i = 0; i < Filters; ++i) {
        const __m256 b = _mm256_set1_ps(f0 + i < g.F ? bias[f0 + i] : 0.0f);
#pragma GCC unroll 8
        for (int j = 0; j < Vectors; ++j) acc[i][j] = b;
    }
    const int64_t plane = g.Hp * g.Wp, taps = g.C * g.HH * g.WW, WW = g.WW;  // locals: registers
    for (int64_t c = 0; c < g.C; ++c) {
        for (int64_t kh = 0; kh < g.HH; ++kh) {
            const float* in = xpad + c * plane + (oy + kh) * g.Wp + ox0;
            const float* w = wpack + (f0 * taps + (c * g.HH + kh) * WW * Filters);
            for (int64_t kw = 0; kw < WW; ++kw, ++in, w += Filters) {
                __m256 x[Vectors];
#pragma GCC unroll 8
                for (int j = 0; j < Vectors; ++j) x[j] = _mm256_loadu_ps(in + 8 * j);
#pragma GCC unroll 16
                for (int i = 0; i < Filters; ++i) {
                    const __m256 wi = _mm256_broadcast_ss(w + i);
#pragma GCC unroll 8
                    for (int j = 0; j < Vectors; ++j) acc[i][j] = _mm256_fmadd_ps(wi, x[j], acc[i][j]);
                }
            }
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < Filters; ++i) {
        if (f0 + i >= g.F) continue;
        float* row = out + ((f0 + i) * g.Ho + oy) * g.Wo;
#pragma GCC unroll 8
        for (int j = 0; j < Vectors; ++j) {
            const int64_t ox = ox0 + 8 * j;
            if (ox + 8 <= g.Wo) {
                _mm256_storeu_ps(row + ox, acc[i][j]);
            } else if (ox < g.Wo) {
                _mm256_maskstore_ps(row + ox, first_lanes(g.Wo - ox), acc[i][j]);
            }
        }
    }
}

template <int Vectors>
void forward_image(const DirectConv& g, const float* xpad, const float* wpack,
                   const float* bias, float* out) {
    constexpr int kFilters = kAccumulators / Vectors;
    for (int64_t f0 = 0; f0 < g.F; f0 += kFilters) {
        for (int64_t oy = 0; oy < g.Ho; ++oy) {
            for (int64_t ox = 0; ox < g.Wo; ox += 8 * Vectors) {
                forward_tile<kFilters, Vectors>(g, xpad, wpack, bias, out, f0, oy, ox);
            }
        }
    }
}

// One step of the weight-gradient tile: the output gradients of the tile's filters and the
// input under each tap at the same 8 pixels, multiplied and added into the accumulators.
// Masked lanes (past the row) load as zero on both sides, so an inf or nan there cannot
// leak in as 0 * inf.
template <int Filters, bool Masked>
void dw_step(__m256 (&acc)[Filters][kGradTaps], const float* const (&grad)[Filters],
             int64_t grad_at, const float* const (&in)[kGradTaps], int64_t in_at,
             __m256i mask) {
    __m256 d[Filters];
#pragma GCC unroll 8
    for (int i = 0; i < Filters; ++i) {
        const float* p = grad[i] + grad_at;
        d[i] = Masked ? _mm256_maskload_ps(p, mask) : _mm256_loadu_ps(p);
    }
#pragma GCC unroll 8
    for (int t = 0; t < kGradTaps; ++t) {
        const float* p = in[t] + in_at;
        __m256 x = Masked ? _mm256_maskload_ps(p, mask) : _mm256_loadu_ps(p);
        // Keeps x in a register: folded into each FMA it would be loaded once per filter,
        // and the loads, not the FMAs, would set the pace.
        asm("" : "+x"(x));
#pragma GCC unroll 8
        for (int i = 0; i < Filters; ++i) acc[i][t] = _mm256_fmadd_ps(d[i], x, acc[i][t]);
    }
}

// Filters f0 .. f0+Filters-1 against the kGradTaps taps from t0 (those below `taps`),
// summed over `images` images and added to dw_t.
template <int Filters>
void dw_tile(const DirectConv& g, const int64_t* tap_offsets, const float* xpads,
             int64_t xpad_stride, const float* dout, int64_t images, float* dw_t, int64_t f0,
             int64_t t0) {
    const int64_t taps = g.C * g.HH * g.WW, out_plane = g.Ho * g.Wo;
    __m256 acc[Filters][kGradTaps];
#pragma GCC unroll 8
    for (int i = 0; i < Filters; ++i) {
#pragma GCC unroll 8
        for (int t = 0; t < kGradTaps; ++t) acc[i][t] = _mm256_setzero_ps();
    }
    const int64_t full = g.Wo / 8 * 8;
    const __m256i tail = first_lanes(g.Wo - full);
    for (int64_t image = 0; image < images; ++image) {
        const float* in[kGradTaps];  // where each tap's window starts in this padded image
        for (int t = 0; t < kGradTaps; ++t) {
            const int64_t tap = t0 + t < taps ? t0 + t : t0;  // past the end: a repeat, dropped
            in[t] = xpads + image * xpad_stride + tap_offsets[tap];
        }
        const float* grad[Filters];
        for (int i = 0; i < Filters; ++i) grad[i] = dout + (image * g.F + f0 + i) * out_plane;
        for (int64_t oy = 0; oy < g.Ho; ++oy) {
            const int64_t grad_at = oy * g.Wo, in_at = oy * g.Wp;
            for (int64_t ox = 0; ox < full; ox += 8) {
                dw_step<Filters, false>(acc, grad, grad_at + ox, in, in_at + ox, tail);
            }
            if (full < g.Wo) dw_step<Filters, true>(acc, grad, grad_at + full, in, in_at + full, tail);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < kGradTaps; ++t) {
        if (t0 + t >= taps) continue;
#pragma GCC unroll 8
        for (int i = 0; i < Filters; ++i) dw_t[(t0 + t) * g.F + f0 + i] += horizontal_sum(acc[i][t]);
    }
}

void dw_pass(const DirectConv& g, const int64_t* tap_offsets, const float* xpads,
             int64_t xpad_stride, const float* dout, int64_t images, float* dw_t) {
    const int64_t taps = g.C * g.HH * g.WW;
    for (int64_t t0 = 0; t0 < taps; t0 += kGradTaps) {
        int64_t f0 = 0;
        for (; f0 + kGradFilters <= g.F; f0 += kGradFilters) {
            dw_tile<kGradFilters>(g, tap_offsets, xpads, xpad_stride, dout, images, dw_t, f0, t0);
        }
        if (g.F - f0 == 2) dw_tile<2>(g, tap_offsets, xpads, xpad_stride, dout, images, dw_t, f0, t0);
        if (g.F - f0 == 1) dw_tile<1>(g, tap_offsets, xpads, xpad_stride, dout, images, dw_t, f0, t0);
    }
}

// direct_sparse_dw_rows with the kernel height fixed, so the rows stay in registers. Each
// row's sum is one chain of dependent FMAs, so below 8 rows a second set of accumulators
// takes every other window: twice the chains in flight to cover the FMA latency.
template <int HH>
void sparse_dw_rows(int64_t Wp, const float* plane, const int32_t* offsets, const float* gains,
                    int64_t count, float* rows) {
    constexpr int kSets = HH < 8 ? 2 : 1;  // 14 accumulators and 2 gains fill the 16 registers
    __m256 acc[kSets][HH];
#pragma GCC unroll 8
    for (int i = 0; i < HH; ++i) {
        acc[0][i] = _mm256_loadu_ps(rows + 8 * i);
        if constexpr (kSets == 2) acc[1][i] = _mm256_setzero_ps();
    }
    int64_t k = 0;
    for (; k + kSets <= count; k += kSets) {
#pragma GCC unroll 2
        for (int set = 0; set < kSets; ++set) {
            const float* window = plane + offsets[k + set];
            const __m256 gain = _mm256_broadcast_ss(gains + k + set);
#pragma GCC unroll 8
            for (int i = 0; i < HH; ++i) {
                acc[set][i] = _mm256_fmadd_ps(gain, _mm256_loadu_ps(window + i * Wp), acc[set][i]);
            }
        }
    }
    if (k < count) {  // an odd window out
        const __m256 gain = _mm256_broadcast_ss(gains + k);
#pragma GCC unroll 8
        for (int i = 0; i < HH; ++i) {
            const __m256 row = _mm256_loadu_ps(plane + offsets[k] + i * Wp);
            acc[0][i] = _mm256_fmadd_ps(gain, row, acc[0][i]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < HH; ++i) {
        if constexpr (kSets == 2) acc[0][i] = _mm256_add_ps(acc[0][i], acc[1][i]);
        _mm256_storeu_ps(rows + 8 * i, acc[0][i]);
    }
}

}  // namespace

void direct_sparse_dw_rows(int64_t HH, int64_t Wp, const float* plane, const int32_t* offsets,
                           const float* gains, int64_t count, float* rows) {
    static_assert(kSparseMaxKernel == 8, "one case per kernel height below");
    switch (HH) {
        case 1: return sparse_dw_rows<1>(Wp, plane, offsets, gains, count, rows);
        case 2: return sparse_dw_rows<2>(Wp, plane, offsets, gains, count, rows);
        case 3: return sparse_dw_rows<3>(Wp, plane, offsets, gains, count, rows);
        case 4: return sparse_dw_rows<4>(Wp, plane, offsets, gains, count, rows);
        case 5: return sparse_dw_rows<5>(Wp, plane, offsets, gains, count, rows);
        case 6: return sparse_dw_rows<6>(Wp, plane, offsets, gains, count, rows);
        case 7: return sparse_dw_rows<7>(Wp, plane, offsets, gains, count, rows);
        default: return sparse_dw_rows<8>(Wp, plane, offsets, gains, count, rows);
    }
}

int64_t direct_tile_filters(int64_t Wo) { return kAccumulators / tile_vectors(Wo); }

void direct_conv_forward_image(const DirectConv& g, const float* xpad, const float* wpack,
                               const float* bias, float* out) {
    switch (tile_vectors(g.Wo)) {
        case 4: forward_image<4>(g, xpad, wpack, bias, out); break;
        case 3: forward_image<3>(g, xpad, wpack, bias, out); break;
        default: forward_image<2>(g, xpad, wpack, bias, out); break;
    }
}

void direct_conv_dw_images(const DirectConv& g, const int64_t* tap_offsets, const float* xpads,
                           int64_t xpad_stride, const float* dout, int64_t images, float* dw_t) {
    const int64_t bytes_per_image = 4 * (kGradFilters * g.Ho * g.Wo + g.C * g.Hp * g.Wp);
    const int64_t per_pass = kGradWorkingSet / bytes_per_image > 1 ? kGradWorkingSet / bytes_per_image : 1;
    for (int64_t first = 0; first < images; first += per_pass) {
        const int64_t count = images - first < per_pass ? images - first : per_pass;
        dw_pass(g, tap_offsets, xpads + first * xpad_stride, xpad_stride,
                dout + first * g.F * g.Ho * g.Wo, count, dw_t);
    }
}

}  // namespace graphnet
