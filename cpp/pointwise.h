// The general elementwise gates' kernels (graphnet/gates/pointwise.py and elementwise.py):
// one threaded pass each way, float32 or float64, where numpy needs several passes and
// temporaries (and has no erf at all). On AVX2 (avx2_activations_active(), recurrent.h)
// the transcendental ones run eight float32 or four float64 lanes at a time (the list in
// pointwise_avx2.h, the errors in simd_math.h); elsewhere the C library's functions.
//
// Every output entry depends on its own input entries only, so any thread count gives the
// same bits.
#pragma once

#include <cstdint>

namespace graphnet {

enum class Pointwise : int {
    gelu,        // x Phi(x), Phi the standard normal CDF
    gelu_tanh,   // x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2
    leaky_relu,  // x if x > 0 else alpha x
    relu,        // x if x > 0 (or NaN, as np.maximum) else 0
    softplus,    // ln(1 + e^x)
    sigmoid,     // 1 / (1 + e^-x)
    tanh,        // tanh x (backward only)
};

// An activation a kernel applies to its own results in the same pass (a norm's:
// group_norm.h, norm.h): none where active is false, else `op` with its alpha.
template <typename T>
struct PointwiseAct {
    bool active;
    Pointwise op;
    T alpha;
};

// What backward reads as `saved`: x for gelu, gelu_tanh, leaky_relu, relu and softplus;
// the forward's output for sigmoid and tanh.
bool pointwise_saves_input(Pointwise op);

// The ops that are a comparison and a product per entry (relu, leaky relu), which a kernel
// applies inside its own loops (group_norm_loops.h) rather than in a pass of the pointwise
// kernels; plain_forward and plain_backward are their entries, the same expressions the
// pointwise kernels' loops run, so the same bits. Internal to each file that includes them:
// the groupnorm loops' copies are compiled for AVX2 and AVX-512, and no other file may
// link to those.
namespace {

inline bool pointwise_is_plain(Pointwise op) {
    return op == Pointwise::relu || op == Pointwise::leaky_relu;
}

// relu (kRelu; its gradient the relu gate's product dout * (x > 0): a NaN or infinite dout
// where it blocks still gives a NaN) or leaky relu of slope alpha.
template <bool kRelu, typename T>
inline T plain_forward(T x, T alpha) {
    if constexpr (kRelu) return (x > T(0) || x != x) ? x : T(0);
    return x * (x > 0 ? T(1) : alpha);  // no jumps
}

template <bool kRelu, typename T>
inline T plain_backward(T dout, T x, T alpha) {
    if constexpr (kRelu) return dout * static_cast<T>(x > T(0));
    return dout * (x > 0 ? T(1) : alpha);
}

}  // namespace

template <typename T>
void pointwise_forward(Pointwise op, int64_t n, const T* x, T alpha, T* out);

// The ops whose forward can give their slope f'(x) too (gelu, gelu_tanh):
// pointwise_forward_slope's.
bool pointwise_has_slope(Pointwise op);

// out = f(x), pointwise_forward's bits, and slope = f'(x) in the same pass, the factor by
// which pointwise_backward multiplies dout (dout * slope is its dx bit for bit): a backward
// that only multiplies. For the ops of pointwise_has_slope.
template <typename T>
void pointwise_forward_slope(Pointwise op, int64_t n, const T* x, T* out, T* slope);

// dx = dout * f'(x), f' from `saved` (see pointwise_saves_input).
template <typename T>
void pointwise_backward(Pointwise op, int64_t n, const T* dout, const T* saved, T alpha, T* dx);

// The same on the calling thread only, for a kernel that applies an activation to its own
// slices of work (group_norm.h): the same bits as the threaded ones.
template <typename T>
void pointwise_forward_serial(Pointwise op, int64_t n, const T* x, T alpha, T* out);
template <typename T>
void pointwise_backward_serial(Pointwise op, int64_t n, const T* dout, const T* saved, T alpha,
                               T* dx);

// erf, float32 on AVX2 (within 2 units in the last place, see the tests) or the C library's.
template <typename T>
void erf_forward(int64_t n, const T* x, T* out);

// Softmax (log=false) or log softmax (log=true) of each row of x (rows x cols), shifted by
// the row's maximum as numpy's formula is (a NaN anywhere in a row makes the row NaN).
template <typename T>
void softmax_rows_forward(int64_t rows, int64_t cols, const T* x, T* out, bool log);

// softmax: dx = s (dout - sum(dout s)); log softmax: dx = dout - e^out sum(dout), per row.
template <typename T>
void softmax_rows_backward(int64_t rows, int64_t cols, const T* dout, const T* out, T* dx,
                           bool log);

}  // namespace graphnet
