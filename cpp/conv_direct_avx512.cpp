// The direct forward kernel of conv_direct.h with AVX-512 vectors of 16 floats, for CPUs
// that have them (conv.cpp asks cpu_has_avx512f() first). Same packed weights and padded
// image as the AVX2 kernel, a tile of its own: 24 accumulators (of the 32 registers) as
// 12 filters x 2 vectors for rows of 17+ pixels, 24 x 1 for rows of 16 or fewer. Per
// tap: 24 FMAs against 1-2 loads and 12-24 broadcasts. Like conv_direct.cpp, it includes
// no library header, so no AVX-512 copy of a shared inline function leaks out.
#pragma GCC target("avx512f,avx2,fma")
#include <immintrin.h>

#include "conv_direct.h"

namespace graphnet {
namespace {

constexpr int kAccumulators = 24;

int tile_vectors(int64_t Wo) { return Wo > 16 ? 2 : 1; }

template <int Filters, int Vectors>
void forward_tile(const DirectConv& g, const float* xpad, const float* wpack, const float* bias,
                  float* out, int64_t f0, int64_t oy, int64_t ox0) {
    __m512 acc[Filters][Vectors];
#pragma GCC unroll 32
    for (int i = 0; i < Filters; ++i) {
        const __m512 b = _mm512_set1_ps(f0 + i < g.F ? bias[f0 + i] : 0.0f);
#pragma GCC unroll 4
        for (int j = 0; j < Vectors; ++j) acc[i][j] = b;
    }
    const int64_t plane = g.Hp * g.Wp, taps = g.C * g.HH * g.WW, WW = g.WW;  // locals: registers
    for (int64_t c = 0; c < g.C; ++c) {
        for (int64_t kh = 0; kh < g.HH; ++kh) {
            const float* in = xpad + c * plane + (oy + kh) * g.Wp + ox0;
            const float* w = wpack + (f0 * taps + (c * g.HH + kh) * WW * Filters);
            for (int64_t kw = 0; kw < WW; ++kw, ++in, w += Filters) {
                __m512 x[Vectors];
#pragma GCC unroll 4
                for (int j = 0; j < Vectors; ++j) x[j] = _mm512_loadu_ps(in + 16 * j);
#pragma GCC unroll 32
                for (int i = 0; i < Filters; ++i) {
                    const __m512 wi = _mm512_set1_ps(w[i]);
#pragma GCC unroll 4
                    for (int j = 0; j < Vectors; ++j) acc[i][j] = _mm512_fmadd_ps(wi, x[j], acc[i][j]);
                }
            }
        }
    }
#pragma GCC unroll 32
    for (int i = 0; i < Filters; ++i) {
        if (f0 + i >= g.F) continue;
        float* row = out + ((f0 + i) * g.Ho + oy) * g.Wo;
#pragma GCC unroll 4
        for (int j = 0; j < Vectors; ++j) {
            const int64_t ox = ox0 + 16 * j;
            if (ox + 16 <= g.Wo) {
                _mm512_storeu_ps(row + ox, acc[i][j]);
            } else if (ox < g.Wo) {
                const __mmask16 first = static_cast<__mmask16>((1u << (g.Wo - ox)) - 1u);
                _mm512_mask_storeu_ps(row + ox, first, acc[i][j]);
            }
        }
    }
}

template <int Vectors>
void forward_image(const DirectConv& g, const float* xpad, const float* wpack, const float* bias,
                   float* out) {
    constexpr int kFilters = kAccumulators / Vectors;
    for (int64_t f0 = 0; f0 < g.F; f0 += kFilters) {
        for (int64_t oy = 0; oy < g.Ho; ++oy) {
            for (int64_t ox = 0; ox < g.Wo; ox += 16 * Vectors) {
                forward_tile<kFilters, Vectors>(g, xpad, wpack, bias, out, f0, oy, ox);
            }
        }
    }
}

}  // namespace

int64_t direct_tile_filters_avx512(int64_t Wo) { return kAccumulators / tile_vectors(Wo); }

void direct_conv_forward_image_avx512(const DirectConv& g, const float* xpad, const float* wpack,
                                      const float* bias, float* out) {
    if (tile_vectors(g.Wo) == 2) {
        forward_image<2>(g, xpad, wpack, bias, out);
    } else {
        forward_image<1>(g, xpad, wpack, bias, out);
    }
}

}  // namespace graphnet
