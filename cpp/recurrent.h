// Vanilla (tanh) RNN and LSTM over whole sequences: the kernels behind
// graphnet.rnn_layers.rnn_forward/backward and lstm_forward/backward.
//
// Layout is the course's, batch-major: x (N, T, D), h (N, T, H), and for the LSTM four
// gate blocks (i, f, o, g) side by side in Wx (D, 4H), Wh (H, 4H), b (4H,).
//
// Work is split into fixed blocks of hidden units, whatever the thread count: a block's
// matrix products are the same BLAS calls on the same operands on any thread, so the
// results do not depend on the number of threads, bit for bit.
#pragma once

#include <cstdint>

#include "shapes.h"

namespace graphnet {

enum class Cell { rnn, lstm };

struct RecurrentGeometry {
    Cell cell;
    int64_t N, T, D, H;

    int64_t gates() const { return cell == Cell::lstm ? 4 : 1; }
    int64_t G() const { return gates() * H; }  // width of the stacked gate pre-activations
};

// float32 sigmoid and tanh on AVX2 (activations_avx2.h) where the CPU has it and this
// says so (the default); false runs the C library's, to compare the two.
void set_avx2_activations(bool enabled);
bool avx2_activations_active();
// Where those run and the CPU has AVX-512F, the sixteen-lane ones (activations_avx512.h)
// unless this says not (the default: it does); false leaves the AVX2 ones, to test them.
void set_avx512_activations(bool enabled);
bool avx512_activations_active();

// Checks x (N, T, D), h0 (N, H), Wx (D, G), Wh (H, G), b (G,) and the BLAS size limits;
// std::invalid_argument naming the function and the shapes otherwise.
RecurrentGeometry recurrent_geometry(Cell cell, const Shape& x, const Shape& h0,
                                     const Shape& Wx, const Shape& Wh, const Shape& b);

// The forward pass. Outputs: h (N, T, H); act (N, T, G), the gates after their
// nonlinearity (LSTM only: i, f, o sigmoid, g tanh); c and tanh_c (N, T, H), the cell
// states and their tanh (LSTM only; the initial cell state is zero). For the RNN act, c
// and tanh_c are not touched and may be null: its backward pass reads h. keep false (a
// forward no backward reads): the LSTM's c and tanh_c are only (N, H), the current step's,
// act is ignored (the kernel's own scratch); h is the same, bit for bit.
template <typename T>
void recurrent_forward(const RecurrentGeometry& g, bool keep, const T* x, const T* h0,
                       const T* Wx, const T* Wh, const T* b, T* h, T* act, T* c, T* tanh_c);

// The backward pass from dh (N, T, H), the upstream gradient of every hidden state, given
// the forward's inputs and outputs. Writes dx (N, T, D), dh0 (N, H), dWx (D, G), dWh (H, G),
// db (G,).
template <typename T>
void recurrent_backward(const RecurrentGeometry& g, const T* dh, const T* x, const T* h0,
                        const T* Wx, const T* Wh, const T* h, const T* act, const T* c,
                        const T* tanh_c, T* dx, T* dh0, T* dWx, T* dWh, T* db);

// Bytes of scratch the calling thread keeps for its next recurrent kernel call (none
// once kept_scratch_releases, cache_line.h, has moved).
int64_t recurrent_kept_bytes();

}  // namespace graphnet
