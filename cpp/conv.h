// Convolution forward and backward (cross-correlation, as in CS231n and PyTorch).
// x (N, C, H, W), w (F, C, HH, WW), b (F,) -> out (N, F, Ho, Wo) with
// Ho = 1 + (H + 2 pad - HH) // stride, Wo likewise. All arrays C-contiguous.
#pragma once

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

template <typename T>
void conv_forward(const ConvGeometry& g, const T* x, const T* w, const T* b, T* out);

// db is always written. dx and dw may be null: that gradient is then not computed at
// all (the graph engine skips dx for data inputs that need no gradient).
template <typename T>
void conv_backward(const ConvGeometry& g, const T* dout, const T* x, const T* w, T* dx,
                   T* dw, T* db);

}  // namespace graphnet
