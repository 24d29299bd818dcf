// im2col / col2im for one image: the trick that turns a convolution into one GEMM.
//
// The im2col matrix has one row per kernel tap r = (c, kh, kw) and one column per
// output position p = (oh, ow); entry (r, p) is the input pixel that tap r sees at
// position p, or 0 where it falls into the padding. Then out = w(F, taps) * cols.
// col2im is the adjoint: it scatters a taps x positions matrix back onto the image,
// adding where windows overlap. Its rows are ld >= positions floats apart, so that
// several images' matrices can sit side by side as one (conv.cpp: one GEMM for the
// images of a few positions each).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "conv.h"

namespace graphnet {

// Integer division rounding towards -infinity (C++ rounds towards zero).
inline int64_t floor_div(int64_t a, int64_t b) { return a / b - (a % b != 0 && (a < 0) != (b < 0)); }

// Walks the im2col matrix (rows ld apart) one line (fixed tap, fixed output row oh) at a time and calls
// visit(line, src, lo, hi): columns line[ow] for lo <= ow < hi pair with the input
// pixels src[(ow - lo) * stride]; the columns outside [lo, hi) are padding.
// Shared by im2col and col2im so the index arithmetic exists only once.
template <typename Line, typename Pixel, typename Visit>
void for_each_tap_line(const ConvGeometry& g, Line* cols, int64_t ld, Pixel* x, Visit&& visit) {
    const int64_t s = g.stride, p = g.pad;
    for (int64_t c = 0; c < g.C; ++c) {
        for (int64_t kh = 0; kh < g.HH; ++kh) {
            for (int64_t kw = 0; kw < g.WW; ++kw) {
                // Output columns whose input column ow*s - p + kw lies inside [0, W): from
                // ceil((p - kw) / s), written so that a stride near 2^63 cannot overflow.
                const int64_t left = p - kw;
                const int64_t lo = std::min(g.Wo, left > 0 ? (left - 1) / s + 1 : 0);
                const int64_t hi = std::max(lo, std::min(g.Wo, floor_div(g.W - 1 + left, s) + 1));
                Line* row = cols + ((c * g.HH + kh) * g.WW + kw) * ld;
                for (int64_t oh = 0; oh < g.Ho; ++oh) {
                    const int64_t ih = oh * s - p + kh;
                    if (ih < 0 || ih >= g.H || lo == hi) {  // the whole line is padding
                        visit(row + oh * g.Wo, x, int64_t(0), int64_t(0));
                    } else {
                        visit(row + oh * g.Wo, x + (c * g.H + ih) * g.W + (lo * s - p + kw), lo, hi);
                    }
                }
            }
        }
    }
}

// im2col of a stride-1 conv whose output rows are as wide as its input's (a "same"
// padding: WW = 2 pad + 1). Each tap's lines for the input rows inside the image are then
// one stretch of the input plane shifted by kw - pad: one copy a tap instead of one a line
// (on 8x8 planes the library calls per line cost more than the data they copy), after
// which the |kw - pad| entries at one end of each line, read from the neighbouring row,
// become the padding's zeros.
template <typename T>
void im2col_same_width(const ConvGeometry& g, const T* x, T* cols, int64_t ld) {
    const int64_t W = g.W, P = g.positions();
    for (int64_t c = 0; c < g.C; ++c) {
        for (int64_t kh = 0; kh < g.HH; ++kh) {
            // Output rows oh whose input row oh - pad + kh lies inside [0, H).
            const int64_t first = std::clamp<int64_t>(g.pad - kh, 0, g.Ho);
            const int64_t last = std::clamp<int64_t>(g.H + g.pad - kh, first, g.Ho);
            for (int64_t kw = 0; kw < g.WW; ++kw) {
                T* block = cols + ((c * g.HH + kh) * g.WW + kw) * ld;
                const int64_t shift = kw - g.pad, wrapped = std::abs(shift);
                if (wrapped >= W) {  // every column of this tap falls into the padding
                    std::fill(block, block + P, T(0));
                    continue;
                }
                std::fill(block, block + first * W, T(0));
                std::fill(block + last * W, block + P, T(0));
                if (first == last) continue;
                const T* rows = x + (c * g.H + first - g.pad + kh) * W;
                T* lines = block + first * W;
                const int64_t n = (last - first) * W;
                if (shift >= 0) {
                    std::copy(rows + shift, rows + n, lines);
                } else {
                    std::copy(rows, rows + n + shift, lines - shift);
                }
                const int64_t edge = shift >= 0 ? W - wrapped : 0;  // where each line's wrap is
                for (int64_t k = edge; k < edge + wrapped; ++k) {
                    for (int64_t line = 0; line < last - first; ++line) lines[line * W + k] = T(0);
                }
            }
        }
    }
}

// Stride-1 images of at most this many taps x output positions a channel (3x3 on 4 x 4
// outputs, 5x5 on 3 x 3) take im2col_small.
constexpr int64_t kSmallIm2colEntries = 256;
// Their padded planes, (Ho + HH - 1) x (Wo + WW - 1), are then at most 4x as large.
constexpr int64_t kSmallIm2colPlane = 4 * kSmallIm2colEntries;

// im2col of a small stride-1 image: each channel's plane copied into a zero border, then
// every tap's row read through a table, built once, of where in the padded plane the tap
// sees each position. On 2 x 2 and 4 x 4 images the copies and fills of
// im2col_same_width, a library call for every 4 or 16 floats, took a quarter of a wide
// layer's forward (512 -> 512 @2, batch 64, one thread).
template <typename T>
void im2col_small(const ConvGeometry& g, const T* x, T* cols, int64_t ld) {
    const int64_t P = g.positions(), taps = g.HH * g.WW, Wp = g.Wo + g.WW - 1;  // W + 2 pad
    int32_t source[kSmallIm2colEntries];
    for (int64_t kh = 0; kh < g.HH; ++kh) {
        for (int64_t kw = 0; kw < g.WW; ++kw) {
            for (int64_t oh = 0; oh < g.Ho; ++oh) {
                for (int64_t ow = 0; ow < g.Wo; ++ow) {
                    source[(kh * g.WW + kw) * P + oh * g.Wo + ow] =
                        static_cast<int32_t>((oh + kh) * Wp + ow + kw);
                }
            }
        }
    }
    T padded[kSmallIm2colPlane] = {};  // the border stays zero
    for (int64_t c = 0; c < g.C; ++c) {
        for (int64_t h = 0; h < g.H; ++h) {
            std::copy_n(x + (c * g.H + h) * g.W, g.W, padded + (h + g.pad) * Wp + g.pad);
        }
        for (int64_t t = 0; t < taps; ++t) {
            T* row = cols + (c * taps + t) * ld;
            const int32_t* from = source + t * P;
            for (int64_t p = 0; p < P; ++p) row[p] = padded[from[p]];
        }
    }
}

template <typename T>
void im2col(const ConvGeometry& g, const T* x, T* cols, int64_t ld) {
    const int64_t taps = g.HH * g.WW, P = g.positions();  // each under 2^62: conv_geometry
    if (g.stride == 1 && taps <= kSmallIm2colEntries && P <= kSmallIm2colEntries &&
        taps * P <= kSmallIm2colEntries) {
        return im2col_small(g, x, cols, ld);
    }
    if (g.stride == 1 && g.Wo == g.W) return im2col_same_width(g, x, cols, ld);
    const int64_t s = g.stride, wo = g.Wo;
    for_each_tap_line(g, cols, ld, x, [s, wo](T* line, const T* src, int64_t lo, int64_t hi) {
        std::fill(line, line + lo, T(0));
        if (s == 1) {
            std::copy(src, src + (hi - lo), line + lo);
        } else {
            for (int64_t ow = lo; ow < hi; ++ow) line[ow] = src[(ow - lo) * s];
        }
        std::fill(line + hi, line + wo, T(0));
    });
}

// col2im for output rows under kGatherCol2imMaxRow positions: each pixel's sum gathered
// from the columns that read it, written once. col2im's adds of short lines (a 5x5 layer's
// dx on 2 x 3 outputs: lines of 3 floats, each tap's overlapping the last's one column
// over) waited on the stores before them, 7-8 cycles an add (per pass, batch 64, one
// thread, 14 -> 30 channels 5x5 pad 0 @6x7, dx on im2col + GEMM: 359 us, of which the
// GEMM 100). The pairs (tap, position) of one channel, grouped by the pixel they add to, in
// tap order: the sum of each pixel is col2im's, bit for bit.
constexpr int64_t kGatherCol2imMaxRow = 8;

class Col2imGather {
  public:
    // Whether the gather takes this layer's images: short rows of windows that overlap (a
    // kernel no wider than the stride adds each column to pixels of its own, without waits,
    // and leaves pixels the gather would visit for nothing: 1x1 stride 3, 16 -> 48 channels
    // @13x17, batch 64, took 1.9x col2im's time). (Its pairs, at most kernel x positions,
    // fit int32: conv_geometry checked that taps() x positions() fits a BLAS int.)
    static bool fits(const ConvGeometry& g) {
        return g.Wo < kGatherCol2imMaxRow && (g.HH > g.stride || g.WW > g.stride);
    }

    explicit Col2imGather(const ConvGeometry& g)
        : plane_(g.H * g.W), kernel_(g.HH * g.WW), start_(plane_ + 1, 0) {
        const auto visit = [&](auto&& pair) {
            for (int64_t kh = 0; kh < g.HH; ++kh) {
                for (int64_t kw = 0; kw < g.WW; ++kw) {
                    for (int64_t oh = 0; oh < g.Ho; ++oh) {
                        const int64_t ih = oh * g.stride - g.pad + kh;
                        if (ih < 0 || ih >= g.H) continue;
                        for (int64_t ow = 0; ow < g.Wo; ++ow) {
                            const int64_t iw = ow * g.stride - g.pad + kw;
                            if (iw >= 0 && iw < g.W) {
                                pair(ih * g.W + iw, kh * g.WW + kw, oh * g.Wo + ow);
                            }
                        }
                    }
                }
            }
        };
        visit([&](int64_t pixel, int64_t, int64_t) { ++start_[pixel + 1]; });
        for (int64_t p = 0; p < plane_; ++p) start_[p + 1] += start_[p];
        std::vector<int32_t> next(start_.begin(), start_.end() - 1);
        tap_.resize(start_.back());
        position_.resize(start_.back());
        visit([&](int64_t pixel, int64_t tap, int64_t position) {
            const int32_t at = next[pixel]++;
            tap_[at] = static_cast<int32_t>(tap);
            position_[at] = static_cast<int32_t>(position);
        });
    }

    // col2im(g, cols, ld, x) of the layer it was built for.
    template <typename T>
    void scatter(int64_t channels, const T* cols, int64_t ld, T* x) const {
        for (int64_t c = 0; c < channels; ++c) {
            const T* taps = cols + c * kernel_ * ld;
            T* plane = x + c * plane_;
            for (int64_t p = 0; p < plane_; ++p) {
                T sum = T(0);
                for (int32_t j = start_[p]; j < start_[p + 1]; ++j) {
                    sum += taps[tap_[j] * ld + position_[j]];
                }
                plane[p] = sum;
            }
        }
    }

  private:
    int64_t plane_, kernel_;
    std::vector<int32_t> start_;  // pixel p's pairs: start_[p] .. start_[p + 1] - 1
    std::vector<int32_t> tap_, position_;
};

// Overwrites x (one image, C*H*W) with the sum of the columns that read each pixel.
template <typename T>
void col2im(const ConvGeometry& g, const T* cols, int64_t ld, T* x) {
    std::fill(x, x + g.C * g.H * g.W, T(0));
    const int64_t s = g.stride;
    for_each_tap_line(g, cols, ld, x, [s](const T* line, T* dst, int64_t lo, int64_t hi) {
        if (s == 1) {  // a separate loop the compiler can vectorise
            for (int64_t ow = lo; ow < hi; ++ow) dst[ow - lo] += line[ow];
        } else {
            for (int64_t ow = lo; ow < hi; ++ow) dst[(ow - lo) * s] += line[ow];
        }
    });
}

}  // namespace graphnet
