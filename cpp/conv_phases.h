// Strided float32 convolution as stride-1 sums over phase planes, on the AVX-512 tap
// kernels of conv_taps.h (call only when cpu_has_avx512f()). With stride 1 the one phase
// plane is the padded image: conv.cpp runs some stride-1 weight gradients here too.
//
// With stride s, output (oy, ox) reads padded input pixel (s*oy + kh, s*ox + kw). Split
// the padded image into s*s phase planes, plane (a, b) holding the pixels (s*i + a,
// s*j + b): tap (kh, kw) then reads plane (kh % s, kw % s) at (oy + kh / s, ox + kw / s),
// a stride-1 window, so every tap is one offset into the planes and the output a plain
// sum of shifted planes, computed on a grid as wide as a plane (the columns past Wo are
// computed and dropped). The input gradient splits the same way, by the phase of the
// input pixel: phase (a, b) of dx is a stride-1 correlation of the (padded) output
// gradient with the taps (s*m + a, s*n + b) of the filters turned around. The weight
// gradient sums input taps times output gradients over the real positions only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cache_line.h"
#include "conv.h"
#include "threads.h"

namespace graphnet {

// Strides this path takes: s*s planes per image, so larger strides stay with im2col.
constexpr int64_t kPhaseMaxStride = 4;

// The forward of one layer: its weights packed once, then a group of images at a time.
class PhaseForward {
  public:
    PhaseForward(const ConvGeometry& g, const float* w, const float* b);
    // Images per call of the kernel: several where an image has few outputs and the
    // kernel takes a position map (which then reaches into each image's planes); else 1.
    int64_t group() const { return group_; }
    int64_t scratch_floats() const;  // per thread
    // Zeroes what images() reads of a thread's scratch and never writes (the planes'
    // borders, the reads past them); the rest, the output, images() writes before reading.
    void clear(float* scratch) const;
    // The outputs of `count` <= group() consecutive images (each C x H x W) into the
    // scratch, this thread's, on a cache line and cleared once; then output(i, ...) copies
    // image i's out (F x Ho x Wo).
    // The `next` images' input is brought into L2 meanwhile (none where null), and the
    // first out_floats of `out`, the output lines output() writes next.
    void images(const float* x, int64_t count, float* scratch, const float* next,
                int64_t next_count, const float* out, int64_t out_floats) const;
    void output(int64_t i, const float* scratch, float* out) const;

  private:
    int64_t out_t_offset() const;  // in the scratch
    ConvGeometry g_;
    int64_t s_, Hs_, Ws_, F_padded_, planes_floats_;  // planes_floats_: one image's
    // Where each output position of the group's images reads the planes (TapConv::at),
    // where the kernel takes a map (conv_phases.cpp); else empty, and the output of one
    // image is computed on the wide grid.
    std::vector<int64_t> at_;
    int64_t group_;
    int64_t pack_;      // positions a row of out_t (TapConv::pack)
    int64_t Q_, rows_;  // positions computed per image, and out_t's rows: group_ * Q_ / pack_
                        // rounded up
    std::vector<int64_t> offsets_;
    CacheLineScratch wpack_, bias_;  // taps x F_padded, F_padded
};

// The lane kernel's grid (LaneConv) over `rows` rows `row` floats apart, up to the last
// output: each vector of 16 positions keeps the columns first .. first + cols - 1 of its
// rows, which go to rows of `cols` outputs.
struct LaneGrid {
    LaneGrid(int64_t rows, int64_t row, int64_t first, int64_t cols);
    int64_t Q;
    std::vector<uint16_t> keep;
    std::vector<int64_t> dest;
};

// Whether PhaseLaneForward beats PhaseForward on layer g: on up to kLaneForwardMaxFilters
// filters, where its vectors of work (positions of the grid / 16 x filters) are at most
// kLaneForwardMaxWork times the tap kernel's (positions x vectors of filters / positions a vector), as the lanes the tap
// kernel leaves idle on few filters, or on 17-24 of 32, cost it more than the columns past
// the output's that the lane kernel computes on narrow images.
bool lane_forward_pays(const ConvGeometry& g);
// The most filters the lane kernel runs a forward of (conv_phases.cpp: measured).
constexpr int64_t kLaneForwardMaxFilters = 48;

// The forward of a strided layer of few filters (conv.cpp: lane_forward) on the lane
// kernel (lane_conv_forward_avx512): output positions along the lanes, the filters in
// registers. It reads the phase planes as PhaseForward does, on a grid as wide as a plane
// whose vectors of 16 positions keep only their lanes on the output's columns, compressed
// into the output's rows: no transpose after it.
class PhaseLaneForward {
  public:
    PhaseLaneForward(const ConvGeometry& g, const float* w, const float* b);
    int64_t scratch_floats() const;  // per thread
    void clear(float* scratch) const;  // once per thread's scratch: the planes' borders
    // The output of image x (C x H x W) into out (F x Ho x Wo).
    void image(const float* x, float* scratch, float* out) const;

  private:
    ConvGeometry g_;
    int64_t Hs_, Ws_, planes_floats_;
    std::vector<int64_t> offsets_;
    std::vector<float> w_t_, bias_;  // taps x F, F
    LaneGrid grid_;
};

// Splits image x into its phase planes (the planes' floats first in `planes`).
void split_phases(const ConvGeometry& g, int64_t Hs, int64_t Ws, const float* x, float* planes);

// dw_t (taps x F, the transposed weight gradient) += that of `count` consecutive images,
// in groups of several images per call of the kernel where an image has few positions:
// with `lanes` on the lane kernel (lane_conv_dw_avx512: positions along the lanes, the
// filters' and taps' sums in registers; lane_weight_gradient_pays), else on the tap
// kernel (the filters along the lanes, or 2-4 positions a vector on up to 8).
class PhaseWeightGradient {
  public:
    PhaseWeightGradient(const ConvGeometry& g, bool lanes);
    int64_t scratch_floats() const;  // per thread, zeroed by the caller once
    // and db (F) += their bias gradient, summed from the output gradients while in cache
    // The image after them, `after` and its output gradient `after_dout` (none where
    // null), are brought into L2 meanwhile (by the tap kernel).
    void images(const float* x, const float* dout, int64_t count, float* dw_t, float* db,
                float* scratch, const float* after, const float* after_dout) const;

  private:
    int64_t image_floats() const;  // of the scratch
    void lane_images(const float* x, const float* dout, int64_t count, float* dw_t, float* db,
                     float* scratch) const;
    ConvGeometry g_;
    int64_t s_, Hs_, Ws_, F_padded_, planes_floats_;
    bool lanes_;
    int64_t dout_grid_;  // floats of a filter's dout on the lane kernel's grid
    int64_t group_;
    std::vector<int64_t> offsets_;
    int64_t pack_;  // positions a row of the kernel's dout_t (TapConv::pack)
    LaneGrid grid_;  // the lane kernel's (with `lanes`)
};

// Whether the weight gradient of layer g runs faster on the lane kernel than on the tap
// kernel (where conv.cpp takes the latter: strided layers, and stride-1 ones on short rows).
bool lane_weight_gradient_pays(const ConvGeometry& g);

// dx (N x C x H x W) of the whole batch, on team_size(N) threads. With `lanes` each phase
// of dx on the lane kernel (its positions along the lanes, the channels in registers;
// lane_input_gradient_pays), else on the tap kernel (the channels along the lanes).
void phase_input_gradient(const ConvGeometry& g, const float* dout, const float* w, float* dx,
                          bool lanes);
// Whether dx of layer g runs faster on the lane kernel than on the tap kernel and than
// im2col + GEMM (conv.cpp takes the latter for few channels from many filters).
bool lane_input_gradient_pays(const ConvGeometry& g);

// dx (N x C x H x W) of the whole batch as columns, on team_size(N) threads: per image
// dout^T w (positions x C k k) on the tap kernel, the weights read as they are, then each
// column added to dx's pixels (col2im).
void column_input_gradient(const ConvGeometry& g, const float* dout, const float* w, float* dx);
// Whether dx of layer g runs faster as columns than on the phases' tap kernel.
bool column_input_gradient_pays(const ConvGeometry& g);

// dw (F x C x HH x WW) and db (F) of the whole batch as columns: dout (positions x F,
// transposed) times im2col's rows (positions x C k k, padded to whole vectors) on the tap
// kernel, the filters as its positions, in dw's own layout; the filters split between
// threads. Each sums the batch's positions in order.
void column_weight_gradient(const ConvGeometry& g, const float* dout, const float* x, float* dw,
                            float* db);
// Whether dw of layer g runs faster as columns than on the phases' tap kernel.
bool column_weight_gradient_pays(const ConvGeometry& g);

// The forward over the batch on `threads` threads, with conv.cpp's forward_images contract:
// image n's output goes to out_of(n, thread), then done(n, that output) runs.
template <typename OutOf, typename Done>
void phase_forward(const ConvGeometry& g, int threads, const float* x, const float* w,
                   const float* b, OutOf&& out_of, Done&& done) {
    const PhaseForward layer(g, w, b);
    const int64_t group = layer.group(), groups = (g.N + group - 1) / group;
    CacheLineScratch scratches(threads, layer.scratch_floats(), CacheLineScratch::Fill::none);
    for (int t = 0; t < threads; ++t) layer.clear(scratches.scratch_of(t));
    parallel_for_dynamic(threads, groups, 1, [&](int64_t k, int t) {
        const int64_t first = k * group, count = std::min(group, g.N - first);
        const int64_t image = g.C * g.H * g.W, later = std::min(group, g.N - first - count);
        // (only one image's output lines: a group's outputs need not be consecutive, as
        // conv_pooled's are one thread's buffer)
        layer.images(x + first * image, count, scratches.scratch_of(t),
                     later > 0 ? x + (first + count) * image : nullptr, later,
                     out_of(first, t), count == 1 ? g.F * g.Ho * g.Wo : 0);
        for (int64_t i = 0; i < count; ++i) {
            float* out = out_of(first + i, t);
            layer.output(i, scratches.scratch_of(t), out);
            done(first + i, out);
        }
    });
}

// The forward of PhaseLaneForward over the batch on `threads` threads, with the contract
// of phase_forward.
template <typename OutOf, typename Done>
void phase_lane_forward(const ConvGeometry& g, int threads, const float* x, const float* w,
                        const float* b, OutOf&& out_of, Done&& done) {
    const PhaseLaneForward layer(g, w, b);
    CacheLineScratch scratches(threads, layer.scratch_floats(), CacheLineScratch::Fill::none);
    for (int t = 0; t < threads; ++t) layer.clear(scratches.scratch_of(t));
    parallel_for_dynamic(threads, g.N, 1, [&](int64_t n, int t) {
        float* out = out_of(n, t);
        layer.image(x + n * g.C * g.H * g.W, scratches.scratch_of(t), out);
        done(n, out);
    });
}

}  // namespace graphnet
