// The direct kernels of conv_direct.h with AVX-512 vectors of 16 floats, for CPUs that
// have them (conv.cpp asks cpu_has_avx512f() first). The forward: same packed weights and
// padded image as the AVX2 kernel, a tile of its own: 24 accumulators (of the 32
// registers) as 12 filters x 2 vectors. The weight gradient: on few channels the AVX2
// kernel's scheme with a tile of 6 filters x 4 taps, on more a product with vectors along
// the filters, and for square layers of few filters one with vectors along the channels. Like
// conv_direct.cpp, it includes no library header, so no AVX-512 copy of a shared inline
// function leaks out.
#pragma GCC target("avx512f,avx2,fma")
#include <immintrin.h>

#include "conv_direct.h"

namespace graphnet {
namespace {

constexpr int kTileFilters = 12;

// The vector of rows `low` (lanes 0-7) and `high` (lanes 8-15), 8 pixels of each.
inline __m512 row_pair(const float* low, const float* high) {
    const __m512d low_half = _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(low)));
    return _mm512_castpd_ps(_mm512_insertf64x4(low_half, _mm256_castps_pd(_mm256_loadu_ps(high)), 1));
}

// A tile of 12 filters x 2 vectors of 16 pixels: two vectors along one output row where
// rows are 17+ pixels wide, else one vector on each of two rows (and one on a last odd
// row), and on rows of 8 pixels or fewer (Pairs) two rows a vector, so that a 7-pixel row
// does not leave 9 of the 16 lanes empty: a tile of 4 rows (2 on the last, or 1; a last
// vector with a missing second row computes its first twice and stores it once). Per tap
// 24 FMAs against 2 loads (4 with Pairs) and 12 broadcasts: a tile of 24 filters x 1
// vector, per tap 24 broadcasts and a load, was bound by the loads (per pass, batch 16,
// one thread, 64 -> 64 channels 3x3 on rows of 16: forward 59% of the FMA peak). Layers
// whose filters would leave much of the last 12-filter tile empty take a narrower tile
// (direct_tile_filters_avx512).
template <int Filters, int Vectors, int Rows, bool Pairs = false>
void forward_tile(const DirectConv& g, const float* xpad, const float* wpack, const float* bias,
                  float* out, int64_t f0, int64_t oy, int64_t ox0) {
    static_assert(!Pairs || Vectors == 1, "a pair of rows fills a vector");
    constexpr int kVectors = Vectors * Rows;
    const int64_t plane = g.Hp * g.Wp, taps = g.C * g.HH * g.WW, WW = g.WW, Wp = g.Wp;
    // where vector j reads, relative to its tile's first row: its 16 pixels, or with Pairs
    // its two rows (the first again where the second lies past the output)
    int64_t first[kVectors], second[kVectors];
#pragma GCC unroll 4
    for (int j = 0; j < kVectors; ++j) {
        if (Pairs) {
            first[j] = 2 * j * Wp;
            second[j] = oy + 2 * j + 1 < g.Ho ? first[j] + Wp : first[j];
        } else {
            first[j] = second[j] = (j / Vectors) * Wp + 16 * (j % Vectors);
        }
    }
    __m512 acc[Filters][kVectors];
#pragma GCC unroll 32
    for (int i = 0; i < Filters; ++i) {
        const __m512 b = _mm512_set1_ps(f0 + i < g.F ? bias[f0 + i] : 0.0f);
#pragma GCC unroll 4
        for (int j = 0; j < kVectors; ++j) acc[i][j] = b;
    }
    for (int64_t c = 0; c < g.C; ++c) {
        for (int64_t kh = 0; kh < g.HH; ++kh) {
            const float* in = xpad + c * plane + (oy + kh) * Wp + ox0;
            const float* w = wpack + (f0 * taps + (c * g.HH + kh) * WW * Filters);
            for (int64_t kw = 0; kw < WW; ++kw, ++in, w += Filters) {
                __m512 x[kVectors];
#pragma GCC unroll 4
                for (int j = 0; j < kVectors; ++j) {
                    x[j] = Pairs ? row_pair(in + first[j], in + second[j]) : _mm512_loadu_ps(in + first[j]);
                }
#pragma GCC unroll 32
                for (int i = 0; i < Filters; ++i) {
                    const __m512 wi = _mm512_set1_ps(w[i]);
#pragma GCC unroll 4
                    for (int j = 0; j < kVectors; ++j) acc[i][j] = _mm512_fmadd_ps(wi, x[j], acc[i][j]);
                }
            }
        }
    }
    const __mmask16 row_lanes = static_cast<__mmask16>((1u << (g.Wo < 16 ? g.Wo : 16)) - 1u);
#pragma GCC unroll 32
    for (int i = 0; i < Filters; ++i) {
        if (f0 + i >= g.F) continue;
#pragma GCC unroll 4
        for (int j = 0; j < kVectors; ++j) {
            if (Pairs) {
                float* row = out + ((f0 + i) * g.Ho + oy + 2 * j) * g.Wo;
                _mm512_mask_storeu_ps(row, row_lanes, acc[i][j]);
                if (oy + 2 * j + 1 < g.Ho) {  // lanes 8-15 down to 0-7
                    _mm512_mask_storeu_ps(row + g.Wo, row_lanes,
                                          _mm512_shuffle_f32x4(acc[i][j], acc[i][j], 0xEE));
                }
                continue;
            }
            float* row = out + ((f0 + i) * g.Ho + oy + j / Vectors) * g.Wo;
            const int64_t ox = ox0 + 16 * (j % Vectors);
            if (ox + 16 <= g.Wo) {
                _mm512_storeu_ps(row + ox, acc[i][j]);
            } else if (ox < g.Wo) {
                const __mmask16 first_lanes = static_cast<__mmask16>((1u << (g.Wo - ox)) - 1u);
                _mm512_mask_storeu_ps(row + ox, first_lanes, acc[i][j]);
            }
        }
    }
}

template <int Filters>
void forward_image(const DirectConv& g, const float* xpad, const float* wpack, const float* bias,
                   float* out) {
    for (int64_t f0 = 0; f0 < g.F; f0 += Filters) {
        if (g.Wo > 16) {
            for (int64_t oy = 0; oy < g.Ho; ++oy) {
                for (int64_t ox = 0; ox < g.Wo; ox += 32) {
                    forward_tile<Filters, 2, 1>(g, xpad, wpack, bias, out, f0, oy, ox);
                }
            }
            continue;
        }
        int64_t oy = 0;
        if (g.Wo <= kDirectRowPairMaxWidth) {
            for (; oy + 2 < g.Ho; oy += 4) forward_tile<Filters, 1, 2, true>(g, xpad, wpack, bias, out, f0, oy, 0);
            if (oy < g.Ho) forward_tile<Filters, 1, 1, true>(g, xpad, wpack, bias, out, f0, oy, 0);
            continue;
        }
        for (; oy + 2 <= g.Ho; oy += 2) forward_tile<Filters, 1, 2>(g, xpad, wpack, bias, out, f0, oy, 0);
        if (oy < g.Ho) forward_tile<Filters, 1, 1>(g, xpad, wpack, bias, out, f0, oy, 0);
    }
}

// The weight gradient of layers on few channels or filters (not direct_dw_filter_vectors):
// vectors along the pixels of a row, as in conv_direct.cpp, in a tile of 6 filters x 4
// taps = 24 accumulators, with 6 output-gradient vectors and 1 input vector: 31 of the
// 32 registers. Per step 10 loads for 24 FMAs, and one horizontal sum per accumulator
// per pass of images.
constexpr int kGradFilters = 6;
constexpr int kGradTaps = 4;
constexpr int64_t kGradWorkingSet = 24 * 1024;  // bytes of a filter tile's output gradients

template <int Filters, bool Masked>
void pixel_dw_step(__m512 (&acc)[Filters][kGradTaps], const float* const (&grad)[Filters],
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
void pixel_dw_tile(const DirectConv& g, const int64_t* tap_offsets, const float* xpads,
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
                pixel_dw_step<Filters, false>(acc, grad, grad_at + ox, in, in_at + ox, tail);
            }
            if (full < g.Wo) pixel_dw_step<Filters, true>(acc, grad, grad_at + full, in, in_at + full, tail);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < kGradTaps; ++t) {
        if (t0 + t >= taps) continue;
#pragma GCC unroll 8
        for (int i = 0; i < Filters; ++i) dw_t[(t0 + t) * g.F + f0 + i] += _mm512_reduce_add_ps(acc[i][t]);
    }
}

// Filter tiles outside, tap tiles inside: a filter tile's output gradients stay in L1
// while every tap tile reads them, and only the padded images stream in from L2.
void pixel_dw_pass(const DirectConv& g, const int64_t* tap_offsets, const float* xpads,
                   int64_t xpad_stride, const float* dout, int64_t images, float* dw_t) {
    const int64_t taps = g.C * g.HH * g.WW;
    int64_t f0 = 0;
    for (; f0 + kGradFilters <= g.F; f0 += kGradFilters) {
        for (int64_t t0 = 0; t0 < taps; t0 += kGradTaps) {
            pixel_dw_tile<kGradFilters>(g, tap_offsets, xpads, xpad_stride, dout, images, dw_t, f0, t0);
        }
    }
    static_assert(kGradFilters == 6, "one case per remainder below");
    for (int64_t t0 = 0; f0 < g.F && t0 < taps; t0 += kGradTaps) {
        switch (g.F - f0) {
            case 5: pixel_dw_tile<5>(g, tap_offsets, xpads, xpad_stride, dout, images, dw_t, f0, t0); break;
            case 4: pixel_dw_tile<4>(g, tap_offsets, xpads, xpad_stride, dout, images, dw_t, f0, t0); break;
            case 3: pixel_dw_tile<3>(g, tap_offsets, xpads, xpad_stride, dout, images, dw_t, f0, t0); break;
            case 2: pixel_dw_tile<2>(g, tap_offsets, xpads, xpad_stride, dout, images, dw_t, f0, t0); break;
            default: pixel_dw_tile<1>(g, tap_offsets, xpads, xpad_stride, dout, images, dw_t, f0, t0); break;
        }
    }
}

void pixel_dw_images(const DirectConv& g, const int64_t* tap_offsets, const float* xpads,
                     int64_t xpad_stride, const float* dout, int64_t images, float* dw_t) {
    const int64_t bytes_per_image = 4 * kGradFilters * g.Ho * g.Wo;
    const int64_t per_pass = kGradWorkingSet / bytes_per_image > 1 ? kGradWorkingSet / bytes_per_image : 1;
    for (int64_t first = 0; first < images; first += per_pass) {
        const int64_t count = images - first < per_pass ? images - first : per_pass;
        pixel_dw_pass(g, tap_offsets, xpads + first * xpad_stride, xpad_stride,
                      dout + first * g.F * g.Ho * g.Wo, count, dw_t);
    }
}

// The weight gradient of layers on many channels and filters (direct_dw_filter_vectors), as the
// product dw_t (taps x F) += X (taps x pixels) * D (pixels x F):
// vectors run along the filters, not the pixels, so sums never need adding across lanes
// (horizontal sums of pixel vectors took a fifth of the time on rows of 16). D is the
// image's output gradient transposed, pixel by pixel (F rounded up to whole vectors, zero
// past F), in blocks of rows that stay in L1 while every tap tile reads them; X is read
// straight from the padded image, one broadcast per tap and pixel. The register tile is
// Taps taps x Vectors vectors of 16 filters: 24 accumulators, Vectors loads and Taps
// broadcasts per 24 FMAs.
constexpr int64_t kLanes = 16;
// A block of D's rows, in L1 (48 KB) with room for the input's lines (A/B in turns,
// batch 16: 40 KB took 2-3% off the weight gradients of the zoo's 3x3 layers against 24 KB).
constexpr int64_t kGradBlockBytes = 40 * 1024;

int64_t filter_vectors(int64_t F) { return (F + kLanes - 1) / kLanes; }

// Rows of D's blocks for rows Wo pixels wide.
int64_t block_rows(const DirectConv& g) {
    const int64_t bytes = 4 * g.Wo * filter_vectors(g.F) * kLanes;
    return kGradBlockBytes / bytes > 1 ? kGradBlockBytes / bytes : 1;
}

// Transposes the 16 x 16 block in v (row i: v[i]) in registers.
void transpose16(__m512 (&v)[16]) {
    __m512 t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 16; i += 2) {  // pairs of rows: 2 x 2 blocks of floats
        t[i] = _mm512_unpacklo_ps(v[i], v[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(v[i], v[i + 1]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 16; i += 4) {  // 4 x 4 blocks
#pragma GCC unroll 2
        for (int j = 0; j < 2; ++j) {
            const __m512d a = _mm512_castps_pd(t[i + j]), b = _mm512_castps_pd(t[i + j + 2]);
            v[i + 2 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            v[i + 2 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        }
    }
    // v[i] now holds, in each 128-bit lane k, column 4k + (i % 4) of rows 4(i / 4) .. +3;
    // the lanes are gathered across the four row groups.
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
        const __m512 a = _mm512_shuffle_f32x4(v[i], v[i + 4], 0x88);       // lanes 0, 2
        const __m512 b = _mm512_shuffle_f32x4(v[i], v[i + 4], 0xdd);       // lanes 1, 3
        const __m512 c = _mm512_shuffle_f32x4(v[i + 8], v[i + 12], 0x88);
        const __m512 d = _mm512_shuffle_f32x4(v[i + 8], v[i + 12], 0xdd);
        t[i] = _mm512_shuffle_f32x4(a, c, 0x88);       // lane 0: column i
        t[i + 8] = _mm512_shuffle_f32x4(a, c, 0xdd);   // lane 2: column 8 + i
        t[i + 4] = _mm512_shuffle_f32x4(b, d, 0x88);   // lane 1: column 4 + i
        t[i + 12] = _mm512_shuffle_f32x4(b, d, 0xdd);  // lane 3: column 12 + i
    }
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) v[i] = t[i];
}

// Transposes output rows oy0 .. oy0+rows-1 of one image's gradient (F x Ho x Wo) into
// packed (pixels x stride floats), zero past F, and adds their sums to db (F): so the
// output gradient is read once for dw and db. In blocks of 16 filters x 16 pixels,
// transposed in registers (against a scalar loop, in turns, batch 16: dw 32 -> 32 @32
// 2.22 -> 1.92 ms, 32 -> 64 @16 1.06 -> 0.97, 64 -> 64 @16 2.03 -> 1.92).
void transpose_rows(const DirectConv& g, const float* dout, int64_t oy0, int64_t rows,
                    int64_t stride, float* packed, float* db) {
    const int64_t pixels = rows * g.Wo, out_plane = g.Ho * g.Wo;
    const float* first = dout + oy0 * g.Wo;
    for (int64_t p0 = 0; p0 < pixels; p0 += kLanes) {
        const int64_t width = pixels - p0 < kLanes ? pixels - p0 : kLanes;
        const __mmask16 lanes = static_cast<__mmask16>((1u << width) - 1u);
        for (int64_t f0 = 0; f0 < stride; f0 += kLanes) {
            __m512 v[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; ++i) {
                v[i] = f0 + i < g.F ? _mm512_maskz_loadu_ps(lanes, first + (f0 + i) * out_plane + p0)
                                    : _mm512_setzero_ps();
            }
            transpose16(v);
            __m512 sum = _mm512_setzero_ps();  // lanes: filters (pixels past width are zero)
#pragma GCC unroll 16
            for (int j = 0; j < 16; ++j) sum = _mm512_add_ps(sum, v[j]);
            for (int64_t j = 0; j < width; ++j) _mm512_storeu_ps(packed + (p0 + j) * stride + f0, v[j]);
            const int64_t left = g.F - f0;
            if (left <= 0) continue;
            const __mmask16 keep = left >= kLanes ? static_cast<__mmask16>(0xffff)
                                                  : static_cast<__mmask16>((1u << left) - 1u);
            _mm512_mask_storeu_ps(db + f0, keep,
                                  _mm512_add_ps(sum, _mm512_maskz_loadu_ps(keep, db + f0)));
        }
    }
}

// dw_t rows t0 .. t0+Taps-1 (those below `taps`), filter vectors v0 .. v0+Vectors-1 (lanes
// below F), += the taps' input times D over rows oy0 .. oy0+rows-1. Triples: the kernel is
// 3 wide and t0 and Taps multiples of 3, so each 3 taps read one window row at offsets 0, 1,
// 2 and share a pointer; one pointer per tap left the 12 x 2 tile short of registers
// (spilled pointers reloaded every pixel). Per pass, the kernel alone, batch 16, one
// thread: 3x3 32 -> 32 @32 1.60 -> 1.48 ms, 64 -> 64 @16 1.56 -> 1.43.
template <int Taps, int Vectors, bool Triples>
void dw_tile(const DirectConv& g, const int64_t* tap_offsets, const float* xpad,
             const float* packed, int64_t stride, int64_t oy0, int64_t rows, float* dw_t,
             int64_t t0, int64_t v0) {
    const int64_t taps = g.C * g.HH * g.WW;
    __mmask16 keep[Vectors];  // the lanes of each vector below F
#pragma GCC unroll 4
    for (int j = 0; j < Vectors; ++j) {
        const int64_t left = g.F - (v0 + j) * kLanes;
        keep[j] = left >= kLanes ? static_cast<__mmask16>(0xffff)
                                 : static_cast<__mmask16>((1u << left) - 1u);
    }
    __m512 acc[Taps][Vectors];
#pragma GCC unroll 24
    for (int t = 0; t < Taps; ++t) {
#pragma GCC unroll 4
        for (int j = 0; j < Vectors; ++j) acc[t][j] = _mm512_setzero_ps();
    }
    static_assert(!Triples || Taps % 3 == 0, "whole triples of taps");
    constexpr int kPointers = Triples ? Taps / 3 : Taps;
    const float* in[kPointers];  // where each tap (triple) starts at row oy0
#pragma GCC unroll 24
    for (int i = 0; i < kPointers; ++i) {
        const int64_t first = t0 + (Triples ? 3 * i : i);
        const int64_t tap = first < taps ? first : t0;  // past the end: a repeat, dropped
        in[i] = xpad + tap_offsets[tap] + oy0 * g.Wp;
    }
    const float* d = packed + v0 * kLanes;
    for (int64_t row = 0; row < rows * g.Wp; row += g.Wp) {
        for (int64_t at = row; at < row + g.Wo; ++at, d += stride) {
            __m512 dv[Vectors];
#pragma GCC unroll 4
            for (int j = 0; j < Vectors; ++j) dv[j] = _mm512_loadu_ps(d + kLanes * j);
#pragma GCC unroll 24
            for (int t = 0; t < Taps; ++t) {
                const __m512 x = _mm512_set1_ps(Triples ? in[t / 3][at + t % 3] : in[t][at]);
#pragma GCC unroll 4
                for (int j = 0; j < Vectors; ++j) acc[t][j] = _mm512_fmadd_ps(x, dv[j], acc[t][j]);
            }
        }
    }
#pragma GCC unroll 24
    for (int t = 0; t < Taps; ++t) {
        if (t0 + t >= taps) continue;
        float* to = dw_t + (t0 + t) * g.F + (v0)*kLanes;
#pragma GCC unroll 4
        for (int j = 0; j < Vectors; ++j) {
            float* p = to + j * kLanes;
            _mm512_mask_storeu_ps(p, keep[j], _mm512_add_ps(acc[t][j], _mm512_maskz_loadu_ps(keep[j], p)));
        }
    }
}

// All taps for filter vectors v0 .. v0+Vectors-1 over one block of rows.
template <int Vectors>
void dw_filter_tile(const DirectConv& g, const int64_t* tap_offsets, const float* xpad,
                    const float* packed, int64_t stride, int64_t oy0, int64_t rows, float* dw_t,
                    int64_t v0) {
    constexpr int kTaps = 24 / Vectors;
    const bool triples = kTaps % 3 == 0 && g.WW == 3;
    for (int64_t t0 = 0; t0 < g.C * g.HH * g.WW; t0 += kTaps) {
        if (triples) {
            dw_tile<kTaps, Vectors, kTaps % 3 == 0>(g, tap_offsets, xpad, packed, stride, oy0,
                                                    rows, dw_t, t0, v0);
        } else {
            dw_tile<kTaps, Vectors, false>(g, tap_offsets, xpad, packed, stride, oy0, rows, dw_t,
                                           t0, v0);
        }
    }
}

// The weight gradient of 3x3, 5x5 and 7x7 layers on few filters
// (direct_dw_channel_vectors), with the vectors along the channels: acc[f][s] (a filter,
// a tap s = kh * WW + kw, 16 channels) += x[pixel + s] * dout[f][pixel]. The padded image
// is turned channels-last (pixels x channel vectors, zero past C) once per image, so each
// pixel's taps are one load each shared by the tile's filters, and dout is broadcast
// straight from its planes, one broadcast per filter and pixel shared by the taps: for
// 3x3 a tile of 3 filters x 9 taps, 27 accumulators, 12 loads per 27 FMAs. With vectors
// along the filters a layer of 16 filters fills one vector, and each FMA needs a
// broadcast of its own (25 loads per 24 FMAs).
// The input rows of a block (one channel vector): 24 KB took 10% off 16 -> 16 @32 against
// reading the whole image from L2 (each filter tile's pass).
constexpr int64_t kChannelBlockBytes = 24 * 1024;

int64_t channel_lanes(int64_t C) { return (C + kLanes - 1) / kLanes * kLanes; }

// The interior of hwc (Hp * Wp pixels x lanes floats, the padded image channels-last) =
// the image x (C x H x W), pad rows and columns in: in blocks of 16 channels x 16 pixels
// of a row, transposed in registers. The border and the lanes past C are left as they are
// (zero).
void channels_last(const DirectConv& g, int64_t pad, const float* x, int64_t lanes, float* hwc) {
    const int64_t H = g.Hp - 2 * pad, W = g.Wp - 2 * pad, plane = H * W;
    for (int64_t y = 0; y < H; ++y) {
        for (int64_t x0 = 0; x0 < W; x0 += kLanes) {
            const int64_t width = W - x0 < kLanes ? W - x0 : kLanes;
            const __mmask16 mask = static_cast<__mmask16>((1u << width) - 1u);
            float* to = hwc + ((y + pad) * g.Wp + pad + x0) * lanes;
            for (int64_t c0 = 0; c0 < g.C; c0 += kLanes) {
                __m512 v[16];
#pragma GCC unroll 16
                for (int i = 0; i < 16; ++i) {
                    v[i] = c0 + i < g.C ? _mm512_maskz_loadu_ps(mask, x + (c0 + i) * plane + y * W + x0)
                                        : _mm512_setzero_ps();
                }
                transpose16(v);
                for (int64_t j = 0; j < width; ++j) _mm512_storeu_ps(to + j * lanes + c0, v[j]);
            }
        }
    }
}

// db (F) += the sums of one image's output gradient planes.
void add_plane_sums(const DirectConv& g, const float* dout, float* db) {
    const int64_t plane = g.Ho * g.Wo, full = plane / kLanes * kLanes;
    const __mmask16 tail = static_cast<__mmask16>((1u << (plane - full)) - 1u);
    for (int64_t f = 0; f < g.F; ++f) {
        const float* p = dout + f * plane;
        __m512 sum[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                         _mm512_setzero_ps()};  // 4 chains: an add's latency is 4 cycles
        int64_t i = 0;
        for (; i + 4 * kLanes <= full; i += 4 * kLanes) {
#pragma GCC unroll 4
            for (int k = 0; k < 4; ++k) sum[k] = _mm512_add_ps(sum[k], _mm512_loadu_ps(p + i + k * kLanes));
        }
        for (; i < full; i += kLanes) sum[0] = _mm512_add_ps(sum[0], _mm512_loadu_ps(p + i));
        sum[1] = _mm512_add_ps(sum[1], _mm512_maskz_loadu_ps(tail, p + full));
        db[f] += _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(sum[0], sum[1]),
                                                    _mm512_add_ps(sum[2], sum[3])));
    }
}

// sums ((f * taps + t) * lanes + c) += channel vector c0 of filters f0 .. f0+Filters-1's
// taps t of kernel rows kh0 .. kh0+Rows-1 (Width taps each) over one image's output rows
// oy0 .. oy0+rows-1 (hwc channels-last, dout its F planes).
template <int Filters, int Width, int Rows>
void channel_dw_tile(const DirectConv& g, const float* hwc, int64_t lanes, const float* dout,
                     int64_t oy0, int64_t rows, int64_t kh0, int64_t f0, int64_t c0,
                     float* sums) {
    constexpr int kTaps = Width * Rows;
    __m512 acc[Filters][kTaps];
#pragma GCC unroll 5
    for (int i = 0; i < Filters; ++i) {
#pragma GCC unroll 9
        for (int s = 0; s < kTaps; ++s) acc[i][s] = _mm512_setzero_ps();
    }
    const int64_t out_plane = g.Ho * g.Wo, row = g.Wp * lanes;
    const float* grad = dout + f0 * out_plane;
    for (int64_t oy = oy0; oy < oy0 + rows; ++oy) {
        const float* in = hwc + (oy + kh0) * row + c0;
        const float* d = grad + oy * g.Wo;
        for (int64_t ox = 0; ox < g.Wo; ++ox, in += lanes, ++d) {
            __m512 gain[Filters];
#pragma GCC unroll 5
            for (int i = 0; i < Filters; ++i) gain[i] = _mm512_set1_ps(d[i * out_plane]);
#pragma GCC unroll 9
            for (int s = 0; s < kTaps; ++s) {
                __m512 x = _mm512_loadu_ps(in + (s / Width) * row + (s % Width) * lanes);
                asm("" : "+v"(x));  // one load per tap: else each FMA reads x from memory
#pragma GCC unroll 5
                for (int i = 0; i < Filters; ++i) acc[i][s] = _mm512_fmadd_ps(x, gain[i], acc[i][s]);
            }
        }
    }
    const int64_t taps = g.HH * g.WW;
#pragma GCC unroll 5
    for (int i = 0; i < Filters; ++i) {
#pragma GCC unroll 9
        for (int s = 0; s < kTaps; ++s) {
            float* p = sums + ((f0 + i) * taps + kh0 * Width + s) * lanes + c0;
            _mm512_storeu_ps(p, _mm512_add_ps(acc[i][s], _mm512_loadu_ps(p)));
        }
    }
}

// All filters for kernel rows kh0 .. kh0+Rows-1 in tiles of Tile filters; where F % Tile
// leaves 1 and Tile is 3, the last 4 as two tiles of 2.
template <int Width, int Rows, int Tile>
void channel_dw_filters(const DirectConv& g, const float* hwc, int64_t lanes, const float* dout,
                        int64_t oy0, int64_t rows, int64_t kh0, int64_t c0, float* sums) {
    int64_t f0 = 0;
    for (; g.F - f0 >= Tile && !(Tile == 3 && g.F - f0 == 4); f0 += Tile) {
        channel_dw_tile<Tile, Width, Rows>(g, hwc, lanes, dout, oy0, rows, kh0, f0, c0, sums);
    }
    static_assert(Tile <= 4, "the remainders below: 3, 2 and 1 filters");
    while (f0 < g.F) {
        const int64_t left = g.F - f0;
        if (left == 3) {
            channel_dw_tile<3, Width, Rows>(g, hwc, lanes, dout, oy0, rows, kh0, f0, c0, sums);
        } else if (left == 1) {
            channel_dw_tile<1, Width, Rows>(g, hwc, lanes, dout, oy0, rows, kh0, f0, c0, sums);
        } else {
            channel_dw_tile<2, Width, Rows>(g, hwc, lanes, dout, oy0, rows, kh0, f0, c0, sums);
        }
        f0 += left == 3 ? 3 : left == 1 ? 1 : 2;
    }
}

// In blocks of output rows whose input rows' channel vector stays in L1 while every
// filter tile reads it. 3x3: a tile of 3 filters x 9 taps (27 accumulators, 12 loads per
// 27 FMAs); 5x5: 4 filters x a kernel row's 5 taps (20, 9 per 20); 7x7: 3 x 7 (21, 10 per 21).
void channel_dw_image(const DirectConv& g, const float* hwc, int64_t lanes, const float* dout,
                      float* sums) {
    const int64_t in_rows = kChannelBlockBytes / (g.Wp * kLanes * 4);
    const int64_t block = in_rows > g.HH ? in_rows - (g.HH - 1) : 1;
    for (int64_t oy0 = 0; oy0 < g.Ho; oy0 += block) {
        const int64_t rows = g.Ho - oy0 < block ? g.Ho - oy0 : block;
        for (int64_t c0 = 0; c0 < lanes; c0 += kLanes) {
            for (int64_t kh0 = 0; kh0 < g.HH; kh0 += g.WW == 3 ? 3 : 1) {
                switch (g.WW) {
                    case 3: channel_dw_filters<3, 3, 3>(g, hwc, lanes, dout, oy0, rows, kh0, c0, sums); break;
                    case 5: channel_dw_filters<5, 1, 4>(g, hwc, lanes, dout, oy0, rows, kh0, c0, sums); break;
                    default: channel_dw_filters<7, 1, 3>(g, hwc, lanes, dout, oy0, rows, kh0, c0, sums); break;
                }
            }
        }
    }
}

}  // namespace

void direct_conv_dw_channels_avx512(const DirectConv& g, int64_t pad, const float* x,
                                    const float* dout, int64_t images, float* dw_t, float* db,
                                    float* scratch) {
    const int64_t taps = g.HH * g.WW, lanes = channel_lanes(g.C), sums_floats = g.F * taps * lanes;
    float* sums = scratch;  // F x taps x lanes
    float* hwc = scratch + sums_floats;
    for (int64_t i = 0; i < sums_floats + g.Hp * g.Wp * lanes; ++i) scratch[i] = 0.0f;
    const int64_t image_in = g.C * (g.Hp - 2 * pad) * (g.Wp - 2 * pad), image_out = g.F * g.Ho * g.Wo;
    for (int64_t image = 0; image < images; ++image) {
        channels_last(g, pad, x + image * image_in, lanes, hwc);
        channel_dw_image(g, hwc, lanes, dout + image * image_out, sums);
        add_plane_sums(g, dout + image * image_out, db);
    }
    for (int64_t c = 0; c < g.C; ++c) {
        for (int64_t s = 0; s < taps; ++s) {
            float* to = dw_t + (c * taps + s) * g.F;
            for (int64_t f = 0; f < g.F; ++f) to[f] += sums[(f * taps + s) * lanes + c];
        }
    }
}

int64_t direct_dw_scratch_avx512(const DirectConv& g) {
    if (direct_dw_channel_vectors(g.C, g.F, g.HH, g.WW)) {
        return (g.F * g.HH * g.WW + g.Hp * g.Wp) * channel_lanes(g.C);
    }
    if (!direct_dw_filter_vectors(g.C, g.F, g.HH, g.WW)) return 0;
    return block_rows(g) * g.Wo * filter_vectors(g.F) * kLanes;
}

void direct_conv_dw_images_avx512(const DirectConv& g, const int64_t* tap_offsets,
                                  const float* xpads, int64_t xpad_stride, const float* dout,
                                  int64_t images, float* dw_t, float* db, float* scratch) {
    if (!direct_dw_filter_vectors(g.C, g.F, g.HH, g.WW)) {
        return pixel_dw_images(g, tap_offsets, xpads, xpad_stride, dout, images, dw_t);
    }
    const int64_t vectors = filter_vectors(g.F), stride = vectors * kLanes, block = block_rows(g);
    for (int64_t image = 0; image < images; ++image) {
        const float* xpad = xpads + image * xpad_stride;
        const float* image_dout = dout + image * g.F * g.Ho * g.Wo;
        for (int64_t oy0 = 0; oy0 < g.Ho; oy0 += block) {
            const int64_t rows = g.Ho - oy0 < block ? g.Ho - oy0 : block;
            transpose_rows(g, image_dout, oy0, rows, stride, scratch, db);
            int64_t v0 = 0;
            for (; v0 + 4 <= vectors; v0 += 4) {
                dw_filter_tile<4>(g, tap_offsets, xpad, scratch, stride, oy0, rows, dw_t, v0);
            }
            switch (vectors - v0) {
                case 3: dw_filter_tile<3>(g, tap_offsets, xpad, scratch, stride, oy0, rows, dw_t, v0); break;
                case 2: dw_filter_tile<2>(g, tap_offsets, xpad, scratch, stride, oy0, rows, dw_t, v0); break;
                case 1: dw_filter_tile<1>(g, tap_offsets, xpad, scratch, stride, oy0, rows, dw_t, v0); break;
                default: break;
            }
        }
    }
}

// The tile of 6-12 filters that computes the fewest padding filters, the widest of those
// (a tile of 8 against one of 12 on 24, 48 and 96 filters, per pass, batch 16, one
// thread: 0.96-1.22x the time; 8 on 32 and 64 filters, which tiles of 12 pad to 36 and
// 72, 0.80-0.92x: forward and dx of 3x3, 5x5 and 7x7 layers, 3 -> 32 @32, 5x5 32 -> 64
// @16, ...; benchmarks/bench_conv_sweep.py). So 13 filters run as 7 + 7, 20 as 10 + 10.
int64_t direct_tile_filters_avx512(int64_t F) {
    const auto padded = [F](int64_t tile) { return (F + tile - 1) / tile * tile; };
    int64_t best = kTileFilters;
    for (int64_t tile = kTileFilters - 1; tile >= kDirectAvx512MinFilters; --tile) {
        if (padded(tile) < padded(best)) best = tile;
    }
    return best;
}

void direct_conv_forward_image_avx512(const DirectConv& g, const float* xpad, const float* wpack,
                                      const float* bias, float* out) {
    static_assert(kTileFilters == 12 && kDirectAvx512MinFilters == 6, "one case per tile");
    switch (direct_tile_filters_avx512(g.F)) {
        case 6: return forward_image<6>(g, xpad, wpack, bias, out);
        case 7: return forward_image<7>(g, xpad, wpack, bias, out);
        case 8: return forward_image<8>(g, xpad, wpack, bias, out);
        case 9: return forward_image<9>(g, xpad, wpack, bias, out);
        case 10: return forward_image<10>(g, xpad, wpack, bias, out);
        case 11: return forward_image<11>(g, xpad, wpack, bias, out);
        default: return forward_image<12>(g, xpad, wpack, bias, out);
    }
}

}  // namespace graphnet
