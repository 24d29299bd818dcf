// Stride-1 convolutions on small images without the taps that fall into the padding.
//
// im2col + GEMM multiplies a zero for every (tap, output position) pair whose input pixel
// lies in the padding: 44 of the 144 pairs of a 3x3 pad-1 conv on a 4 x 4 image, 20 of 36
// on 2 x 2. Here the product skips them. A conv is a sum over the kernel's rows kh of
// 1-row convs: output row oh reads input row oh + kh - pad_h, and the rows kh sees are one
// range of oh. The output columns ow fall into classes of the same valid kernel columns
// kw (on 4 x 4 with 3x3 pad 1: ow 0 sees kw 1-2, ow 1-2 all three, ow 3 kw 0-1). Each
// class k has its own matrix Xk, rows (c, kw) over its valid kw only, columns (ih, j, n)
// for every input row ih, column j of the class and image n of the group: entry x[n, c,
// ih, first_k + j + kw - pad_w], never a padding zero. Kernel row kh's product for class k
// is then one GEMM over a contiguous range of Xk's columns (the input rows oh + kh - pad_h
// of the output rows oh it sees) into a contiguous range of the output's columns, laid out
// (class, oh, j, n) alike: every (tap, position) pair it multiplies is a real one, and Xk,
// read by every kernel row, is about a third of the im2col matrix on 4 x 4.
//
// The weights are read in place: a product's (kernel row kh, class k's kw, a block of
// channels) are, along each filter's row, groups of the class's kw (1 apart) a channel
// (HH x WW apart), the AVX-512 product's grouped inner indices (gemm_avx512.h); OpenBLAS
// takes them copied side by side. A block's weights stay in L2 for its products.
//
// The input gradient runs through the same code as the forward of dout with the filters
// turned by 180 degrees, their filter and channel axes swapped, and pads HH - 1 - pad and
// WW - 1 - pad; the weight gradient through the same matrices, Xk times dout in the
// output's column layout, transposed.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "gemm.h"
#include "gemm_avx512.h"
#include "matmul.h"

namespace graphnet {

// The conv the pad-skipping product runs: C x H x W images, F filters HH x WW, stride 1,
// pads pad_h and pad_w (0 <= pad < the kernel's side), outputs Ho x Wo.
struct PadSkipConv {
    int64_t C, H, W, F, HH, WW, pad_h, pad_w, Ho, Wo;

    int64_t kernel() const { return HH * WW; }
    int64_t positions() const { return Ho * Wo; }
};

// Output columns first .. first + width - 1, which all see the kernel columns [kw_lo, kw_hi).
struct ColumnClass {
    int64_t first, width, kw_lo, kw_hi;

    int64_t kernel_columns() const { return kw_hi - kw_lo; }
};

inline std::vector<ColumnClass> column_classes(const PadSkipConv& s) {
    std::vector<ColumnClass> classes;
    for (int64_t ow = 0; ow < s.Wo; ++ow) {
        // input column ow + kw - pad_w inside [0, W)
        const int64_t lo = std::max<int64_t>(0, s.pad_w - ow);
        const int64_t hi = std::max(lo, std::min(s.WW, s.W + s.pad_w - ow));
        if (!classes.empty() && classes.back().kw_lo == lo && classes.back().kw_hi == hi) {
            ++classes.back().width;
        } else {
            classes.push_back({ow, 1, lo, hi});
        }
    }
    return classes;
}

// The output rows [first, last) that kernel row kh sees, and the input row of the first.
struct KernelRowRange {
    int64_t first, last, input;
};

inline KernelRowRange kernel_row_range(const PadSkipConv& s, int64_t kh) {
    const int64_t first = std::clamp<int64_t>(s.pad_h - kh, 0, s.Ho);
    const int64_t last = std::clamp<int64_t>(s.H + s.pad_h - kh, first, s.Ho);
    return {first, last, first + kh - s.pad_h};
}

// The (tap, output position) pairs whose input pixel lies inside the image, of one image.
inline int64_t inside_pairs(const PadSkipConv& s) {
    int64_t rows = 0, columns = 0;
    for (int64_t kh = 0; kh < s.HH; ++kh) {
        const KernelRowRange r = kernel_row_range(s, kh);
        rows += r.last - r.first;
    }
    for (const ColumnClass& k : column_classes(s)) columns += k.width * k.kernel_columns();
    return rows * columns;
}

// Where the weights w(f, c, kh, kw) of the conv run sit: at w + f filter_stride + c
// channel_stride + kh WW + kw, or, turned by 180 degrees (dx: the forward's filters, their
// filter and channel axes swapped), + (HH - 1 - kh) WW + WW - 1 - kw.
template <typename T>
struct PadSkipWeights {
    const T* w;
    int64_t filter_stride, channel_stride, HH, WW;
    bool turned;

    const T* at(int64_t c, int64_t kh, int64_t kw) const {
        return w + c * channel_stride +
               (turned ? (HH - 1 - kh) * WW + WW - 1 - kw : kh * WW + kw);
    }
    int64_t tap_stride() const { return turned ? -1 : 1; }  // from kw to kw + 1
};

// Where a group of `count` images sits in the pad-skipping layout (the classes built once
// a call, outside the threads' loop: no allocation inside it).
class PadSkipLayout {
  public:
    explicit PadSkipLayout(const PadSkipConv& s) : s_(s), classes_(column_classes(s)) {}

    // Output columns of a group (of one filter's row): count x positions.
    int64_t columns(int64_t count) const { return count * s_.positions(); }
    // Floats of the Xk of a block of `channels` channels, all classes.
    int64_t cols_floats(int64_t count, int64_t channels) const {
        int64_t floats = 0;
        for (const ColumnClass& k : classes_) {
            floats += channels * k.kernel_columns() * s_.H * count * k.width;
        }
        return floats;
    }
    // The weights of one product copied side by side (without the AVX-512 product).
    int64_t packed_floats(int64_t channels) const { return s_.F * s_.WW * channels; }

    // Xk of channels c0 .. c0 + channels - 1 of the group's images (x: the first image's
    // channel c0, `image` floats to the next image), all classes one after the other.
    template <typename T>
    void gather(int64_t count, const T* x, int64_t image, int64_t channels, T* cols) const {
        const int64_t plane = s_.H * s_.W;
        for (const ColumnClass& k : classes_) {
            const int64_t line = count * k.width;  // columns of one input row
            for (int64_t kw = k.kw_lo; kw < k.kw_hi; ++kw) {
                const int64_t shift = k.first + kw - s_.pad_w;  // input column of j = 0
                for (int64_t c = 0; c < channels; ++c) {
                    T* row = cols + (c * k.kernel_columns() + kw - k.kw_lo) * s_.H * line;
                    const T* plane_c = x + c * plane + shift;
                    for (int64_t ih = 0; ih < s_.H; ++ih) {
                        for (int64_t j = 0; j < k.width; ++j) {
                            const T* from = plane_c + ih * s_.W + j;
                            T* to = row + (ih * k.width + j) * count;
                            for (int64_t n = 0; n < count; ++n) to[n] = from[n * image];
                        }
                    }
                }
            }
            cols += k.kernel_columns() * channels * s_.H * line;
        }
    }

    // o (F x columns(count), in the class layout) += the weights of channels c0 ..
    // c0 + channels - 1 times their Xk. Without `packed` on the AVX-512 product, reading
    // the weights in place; else each product's copied into `packed` (packed_floats) first.
    template <typename T>
    void multiply(int64_t count, const PadSkipWeights<T>& w, int64_t c0, int64_t channels,
                  const T* cols, T* packed, T* o) const {
        const int64_t ldo = columns(count);
        for (const ColumnClass& k : classes_) {
            const int64_t line = count * k.width, group = k.kernel_columns();
            const int64_t depth = group * channels;
            for (int64_t kh = 0; kh < s_.HH && depth > 0; ++kh) {
                const KernelRowRange r = kernel_row_range(s_, kh);
                if (r.first == r.last) continue;
                const int64_t n = (r.last - r.first) * line;
                const T* a = w.at(c0, kh, k.kw_lo);
                const InnerGroups groups{group, w.channel_stride, w.tap_stride()};
                T* to = o + r.first * line;
                const T* from = cols + r.input * line;
                if (!packed) {
                    gemm_rows_grouped_avx512(0, s_.F, n, depth, a, w.filter_stride, groups, from,
                                             s_.H * line, to, ldo, true);
                    continue;
                }
                for (int64_t f = 0; f < s_.F; ++f) {
                    for (int64_t kk = 0; kk < depth; ++kk) {
                        packed[f * depth + kk] = a[f * w.filter_stride + kk / group * groups.outer +
                                                   kk % group * groups.inner];
                    }
                }
                gemm(false, false, static_cast<int>(s_.F), static_cast<int>(n),
                     static_cast<int>(depth), packed, static_cast<int>(depth), from,
                     static_cast<int>(s_.H * line), T(1), to, static_cast<int>(ldo));
            }
            o += s_.Ho * line;
            cols += depth * s_.H * line;
        }
    }

    // dw_t (the block's channels x kernel rows of F: row (c, kh, kw)) += Xk times dout
    // transposed (dout_t: columns(count) x F, its columns in the class layout): for each
    // kernel row kh and kernel column kw of a class, the channels' rows of Xk for that kw
    // times the rows of dout_t of the outputs kh sees (gemm_block: the AVX-512 product).
    template <typename T>
    void weight_gradient(int64_t count, int64_t channels, const T* cols, const T* dout_t,
                         T* dw_t) const {
        for (const ColumnClass& k : classes_) {
            const int64_t line = count * k.width, group = k.kernel_columns(), ldx = s_.H * line;
            for (int64_t kh = 0; kh < s_.HH && group > 0; ++kh) {
                const KernelRowRange r = kernel_row_range(s_, kh);
                if (r.first == r.last) continue;
                for (int64_t kw = k.kw_lo; kw < k.kw_hi; ++kw) {
                    gemm_block(channels, s_.F, (r.last - r.first) * line,
                               cols + (kw - k.kw_lo) * ldx + r.input * line, group * ldx,
                               dout_t + r.first * line * s_.F, s_.F, true,
                               dw_t + (kh * s_.WW + kw) * s_.F, s_.kernel() * s_.F);
                }
            }
            dout_t += s_.Ho * line * s_.F;
            cols += group * channels * ldx;
        }
    }

    // Calls visit(position, column) for every output position of image n of a group and
    // its column in the class layout.
    template <typename Visit>
    void for_each_position(int64_t count, int64_t n, Visit&& visit) const {
        int64_t start = 0;  // of the class's columns
        for (const ColumnClass& k : classes_) {
            for (int64_t oh = 0; oh < s_.Ho; ++oh) {
                for (int64_t j = 0; j < k.width; ++j) {
                    visit(oh * s_.Wo + k.first + j, start + (oh * k.width + j) * count + n);
                }
            }
            start += s_.Ho * count * k.width;
        }
    }

  private:
    PadSkipConv s_;
    std::vector<ColumnClass> classes_;
};

}  // namespace graphnet
