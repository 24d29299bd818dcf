// The weight and bias gradients of conv -> relu -> max pool, straight from the pooled
// gradient.
//
// The convolution's output gradient is zero everywhere except at each pool window's
// winner (pool.h), and there only if the winner passed the relu, that is if the window's
// pooled value is > 0; there it is the window's gradient (summed where overlapping
// windows share a winner). With 2x2 pooling that is at most a quarter of the positions,
// and about half of those pass the relu. So adding up the input patches at those
// positions alone takes an eighth of the dense weight gradient's products, and the dense
// output gradient is never written.
#pragma once

#include <cstdint>

#include "conv.h"

namespace graphnet {

// x: the convolution's input (N, C, H, W). pooled, dpool, winners: the pooling's output,
// the gradient of that output and its winners, each (N, F, windows), every winner an
// index into an (Ho, Wo) plane of the convolution's output. Writes dw (F, C, HH, WW) and
// db (F). Returns false, with dw and db unfinished, if some winner lies outside its plane.
// The sums do not depend on the number of threads (the batch is summed in fixed chunks).
template <typename T>
bool conv_pooled_backward(const ConvGeometry& g, int64_t windows, const T* x, const T* pooled,
                          const T* dpool, const int32_t* winners, T* dw, T* db);

}  // namespace graphnet
