// Convolution forward and backward (cross-correlation, as in CS231n and PyTorch).
// x (N, C, H, W), w (F, C, HH, WW), b (F,) -> out (N, F, Ho, Wo) with
// Ho = 1 + (H + 2 pad - HH) // stride, Wo likewise. All arrays C-contiguous.
#pragma once

#include <algorithm>

#include "pool.h"
#include "shapes.h"

namespace graphnet {

struct ConvGeometry {
    int64_t N, C, H, W;   // input
    int64_t F, HH, WW;    // filters
    int64_t stride, pad;
    int64_t Ho, Wo;       // output

    int64_t taps() const { return C * HH * WW; }  // rows of the im2col matrix
    int64_t positions() const { return Ho * Wo; } // columns of the im2col matrix
    Shape out_shape() const { return {N, F, Ho, Wo}; }
};

// Validates the shapes and parameters; throws std::invalid_argument naming them.
ConvGeometry conv_geometry(const Shape& x, const Shape& w, const Shape& b, int64_t stride,
                           int64_t pad);

// The direct float32 stride-1 kernels are used when the CPU has AVX2 + FMA, unless they
// were switched off here (tests and benchmarks compare them with im2col + GEMM).
void set_direct_conv(bool enabled);
bool direct_conv_active();
// Where float32 3x3 layers with stride 1 and pad 1 (and 5x5 with pad 2) run Winograd on
// AVX-512 (forward, dx and dw; the forward and dx of narrower pads too): off, on the layers where it is faster (the default), or
// on all; and the output tiles of a 3x3 layer's passes: 4x4 where F(4x4, 3x3) is faster
// than F(2x2, 3x3) (the default), or always 2x2 or 4x4.
enum class WinogradMode { kOff, kWherePays, kEverywhere };
enum class WinogradTiles { kWherePays, k2x2, k4x4 };
void set_winograd_conv(WinogradMode mode, WinogradTiles tiles);
// Where stride-1 layers whose pad lies inside the kernel skip the taps that fall into the
// padding instead of multiplying im2col's zeros (conv_padskip.h): never, on the wide layers
// on small images that run im2col + GEMM (the default), or on every pass of every such
// layer.
enum class PadSkipMode { kOff, kWherePays, kEverywhere };
void set_pad_skip_conv(PadSkipMode mode);
// Where strided float32 forwards run on the lane kernel (conv_phases.h: PhaseLaneForward)
// rather than the tap kernel: where it pays (the default), on every such layer, or never.
enum class LaneForwardMode { kOff, kWherePays, kEverywhere };
void set_lane_conv(LaneForwardMode mode);
// Where the input gradients of strided float32 layers run as columns (conv_phases.h:
// column_input_gradient) rather than on the phases: where it pays (the default), on every
// such layer, or never.
enum class ColumnDxMode { kOff, kWherePays, kEverywhere };
void set_column_dx(ColumnDxMode mode);
// Where their weight gradients run as columns (column_weight_gradient): where it pays
// (the default; not on the layers of few filters whose weight gradient runs on the lane
// kernel), on every such layer, or never.
enum class ColumnDwMode { kOff, kWherePays, kEverywhere };
void set_column_dw(ColumnDwMode mode);
// The paths a float32 layer's dx and dw take under the modes above: "columns", "lanes",
// "phases" (the tap kernel on the phase planes), or "other" (not a strided layer on
// AVX-512, or one of the passes the phases leave to im2col + GEMM). For the tests, which
// cannot tell the paths apart by their bits where the windows do not overlap.
struct StridedGradientPaths {
    const char* dx;
    const char* dw;
};
StridedGradientPaths strided_gradient_paths(const ConvGeometry& g);
// They run on AVX-512 where the CPU has it, unless switched off here.
void set_avx512_conv(bool enabled);
bool avx512_conv_active();

// Copies an image (C planes of H x W) into the interior of xpad (C planes of Hp x Wp),
// pad_h rows and pad_w columns in. The border is never written, so a buffer zeroed once
// serves every image.
template <typename T>
void pad_interior(int64_t C, int64_t H, int64_t W, int64_t Hp, int64_t Wp, int64_t pad_h,
                  int64_t pad_w, const T* x, T* xpad) {
    for (int64_t c = 0; c < C; ++c) {
        for (int64_t h = 0; h < H; ++h) {
            const T* src = x + (c * H + h) * W;
            std::copy(src, src + W, xpad + (c * Hp + h + pad_h) * Wp + pad_w);
        }
    }
}

// An activation that follows a conv (passes/conv_activation.py): its forward applies it to
// each image's output while that is still in cache, and its backward takes its gradient
// from its output. relu as the relu gate takes it (a NaN passes); leaky relu as the
// pointwise kernel (cpp/pointwise.h) with a slope alpha >= 0. Both then pass the gradient
// exactly where their output is positive, as where their input is, and the gradient
// through either is dout * (output > 0 ? 1 : alpha) (alpha 0 for the relu: the relu gate's
// product, with its signed zeros and 0 * inf).
struct ConvActivation {
    enum Kind { kNone, kRelu, kLeakyRelu } kind = kNone;
    double alpha = 0;  // leaky relu's slope
};

// out holds act(the convolution), each image's taken while it is still in cache, instead
// of in a pass of its own over the batch.
template <typename T>
void conv_forward(const ConvGeometry& g, const T* x, const T* w, const T* b, T* out,
                  ConvActivation act = {});

// conv -> relu -> max pool in one pass over the batch, with p the pooling of the
// convolution's output (N, F, Ho, Wo): each image's convolution is pooled while it is still
// in cache, and the batch's convolution output is never written. pooled and winners are
// max_pool_forward's of relu(conv_forward(...)), bit for bit.
template <typename T>
void conv_relu_pool_forward(const ConvGeometry& g, const PoolGeometry& p, const T* x, const T* w,
                            const T* b, T* pooled, int32_t* winners);

// db is always written. dx and dw may be null: that gradient is then not computed at
// all (the graph engine skips dx for data inputs that need no gradient).
// With act (not kNone) and act_out, its output (N, F, Ho, Wo): dout is the gradient of
// that output, and the convolution's own is taken from it chunk by chunk of images, into a
// buffer that each chunk's passes read while it is in cache (dx on the whole-batch kernels,
// Winograd, direct and tap, reads it whole: there it is taken once for the batch).
template <typename T>
void conv_backward(const ConvGeometry& g, const T* dout, const T* x, const T* w, T* dx,
                   T* dw, T* db, ConvActivation act = {}, const T* act_out = nullptr);

}  // namespace graphnet
