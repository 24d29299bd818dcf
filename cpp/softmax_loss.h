// Softmax cross-entropy over rows, weighted per row: the temporal softmax loss of
// graphnet.rnn_layers (a language model's output layer: N * T rows of V scores), in one
// pass over each row where numpy takes eight (row max, shift, exp, row sum, log, scaling,
// the labels' entries), and two of them reduce along rows of a few dozen.
#pragma once

#include <cstdint>

namespace graphnet {

// For each row r < rows of x (rows x V), p = softmax(x[r]); the loss is the sum over the
// rows of weight[r] * -log p[label[r]] (in double, summed in row order), and dx[r] =
// weight[r] * (p - one_hot(label[r])) unless dx is null (the loss alone, for a forward no
// backward needs: an eval-mode loss); weight null: 1 for each row (the same bits as ones).
// A row of weight 0 adds 0 to the loss and has dx 0, whatever its scores (inf, NaN).
// Labels must lie in [0, V) (checked: std::invalid_argument otherwise). Rows are split
// across threads; each row's arithmetic is the same on any thread, so the result does not
// depend on the thread count. float32 runs e^x on AVX2 where avx2_activations_active()
// (recurrent.h) says so.
template <typename T>
double softmax_loss_rows(int64_t rows, int64_t V, const T* x, const int64_t* label,
                         const T* weight, T* dx);

}  // namespace graphnet
