// The direct kernels of conv_direct.h with AVX-512 vectors of 16 floats, for CPUs that
// have them (conv.cpp asks cpu_has_avx512f() first). The forward: same packed weights and
// padded image as the AVX2 kernel, a tile of its own: 24 accumulators (of the 32
// registers) as 12 filters x 2 vectors for rows of 17+ pixels, 24 x 1 for rows of 16 or
// fewer; per tap 24 FMAs against 1-2 loads and 12-24 broadcasts. The weight gradient: the
// AVX2 kernel's scheme with a tile of 6 filters x 4 taps. Like conv_direct.cpp, it includes
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

// Weight gradient: a tile of 6 filters x 4 taps = 24 accumulators, with 6 output-gradient
// vectors and 1 input vector: 31 of the 32 registers. Per step 10 loads for 24 FMAs.
constexpr int kGradFilters = 6;
constexpr int kGradTaps = 4;
constexpr int64_t kGradWorkingSet = 24 * 1024;  // bytes: as conv_direct.cpp

template <int Filters, bool Masked>
void dw_step(__m512 (&acc)[Filters][kGradTaps], const float* const (&grad)[Filters],
             int64_t grad_at, const float* const (&in)[kGradTaps], int64_t in_at,
             __mmask16 mask) {
    __m512 d[Filters];
#pragma GCC unroll 8
    for (int i = 0; i < Filters; ++i) {
        const float* p = grad[i] + grad_at;
        d[i] = Masked ? _mm512_maskz_loadu_ps(mask, p) : _mm512_loadu_ps(p);
    }
#pragma GCC unroll 8
    for (int t = 0; t < kGradTaps; ++t) {
        const float* p = in[t] + in_at;
        __m512 x = Masked ? _mm512_maskz_loadu_ps(mask, p) : _mm512_loadu_ps(p);
        asm("" : "+v"(x));  // one load per tap, not one per filter (see conv_direct.cpp)
#pragma GCC unroll 8
        for (int i = 0; i < Filters; ++i) acc[i][t] = _mm512_fmadd_ps(d[i], x, acc[i][t]);
    }
}

template <int Filters>
void dw_tile(const DirectConv& g, const int64_t* tap_offsets, const float* xpads,
             int64_t xpad_stride, const float* dout, int64_t images, float* dw_t, int64_t f0,
             int64_t t0) {
    const int64_t taps = g.C * g.HH * g.WW, out_plane = g.Ho * g.Wo;
    __m512 acc[Filters][kGradTaps];
#pragma GCC unroll 8
    for (int i = 0; i < Filters; ++i) {
#pragma GCC unroll 8
        for (int t = 0; t < kGradTaps; ++t) acc[i][t] = _mm512_setzero_ps();
    }
    const int64_t full = g.Wo / 16 * 16;
    const __mmask16 tail = static_cast<__mmask16>((1u << (g.Wo - full)) - 1u);
    for (int64_t image = 0; image < images; ++image) {
        const float* in[kGradTaps];
        for (int t = 0; t < kGradTaps; ++t) {
            const int64_t tap = t0 + t < taps ? t0 + t : t0;  // past the end: a repeat, dropped
            in[t] = xpads + image * xpad_stride + tap_offsets[tap];
        }
        const float* grad[Filters];
        for (int i = 0; i < Filters; ++i) grad[i] = dout + (image * g.F + f0 + i) * out_plane;
        for (int64_t oy = 0; oy < g.Ho; ++oy) {
            const int64_t grad_at = oy * g.Wo, in_at = oy * g.Wp;
            for (int64_t ox = 0; ox < full; ox += 16) {
                dw_step<Filters, false>(acc, grad, grad_at + ox, in, in_at + ox, tail);
            }
            if (full < g.Wo) dw_step<Filters, true>(acc, grad, grad_at + full, in, in_at + full, tail);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < kGradTaps; ++t) {
        if (t0 + t >= taps) continue;
#pragma GCC unroll 8
        for (int i = 0; i < Filters; ++i) dw_t[(t0 + t) * g.F + f0 + i] += _mm512_reduce_add_ps(acc[i][t]);
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
        static_assert(kGradFilters == 6, "one case per remainder below");
        switch (g.F - f0) {
            case 5: dw_tile<5>(g, tap_offsets, xpads, xpad_stride, dout, images, dw_t, f0, t0); break;
            case 4: dw_tile<4>(g, tap_offsets, xpads, xpad_stride, dout, images, dw_t, f0, t0); break;
            case 3: dw_tile<3>(g, tap_offsets, xpads, xpad_stride, dout, images, dw_t, f0, t0); break;
            case 2: dw_tile<2>(g, tap_offsets, xpads, xpad_stride, dout, images, dw_t, f0, t0); break;
            case 1: dw_tile<1>(g, tap_offsets, xpads, xpad_stride, dout, images, dw_t, f0, t0); break;
            default: break;
        }
    }
}

}  // namespace

void direct_conv_dw_images_avx512(const DirectConv& g, const int64_t* tap_offsets,
                                  const float* xpads, int64_t xpad_stride, const float* dout,
                                  int64_t images, float* dw_t) {
    const int64_t bytes_per_image = 4 * (kGradFilters * g.Ho * g.Wo + g.C * g.Hp * g.Wp);
    const int64_t per_pass = kGradWorkingSet / bytes_per_image > 1 ? kGradWorkingSet / bytes_per_image : 1;
    for (int64_t first = 0; first < images; first += per_pass) {
        const int64_t count = images - first < per_pass ? images - first : per_pass;
        dw_pass(g, tap_offsets, xpads + first * xpad_stride, xpad_stride,
                dout + first * g.F * g.Ho * g.Wo, count, dw_t);
    }
}

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
