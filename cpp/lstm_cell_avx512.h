// float32 kernels of one sequence's steps on AVX-512, for recurrent.cpp: the LSTM cell
// backward (the portable loop is compiled for plain x86-64, 4 floats per instruction, and
// took about a tenth of lstm_backward at N = 64, H = 128: perf), and the product of one
// row by the weights read in place.
//
// Compiled for AVX-512F, no library headers; call only when cpu_has_avx512f().
#pragma once

#include <cstdint>

namespace graphnet {

// One row (sequence) of one step, `units` hidden units; the gate arrays hold i, f, o, g
// H apart (act: the activated gates, da: their gradients). dht = up + next is the
// gradient reaching h, dc the cell state's from the step after, replaced by the one
// reaching the previous cell state:
//   dct = dc + dht o (1 - tc^2); di = dct g i (1 - i); df = dct prev_c f (1 - f);
//   do = dht tc o (1 - o); dg = dct i (1 - g^2); dc = dct f.
void lstm_cell_backward_avx512(int64_t units, int64_t H, const float* up, const float* next,
                               const float* act, const float* tanh_c, const float* prev_c,
                               float* dc, float* da);

// Columns [c0, c1) of c (1 x n) = or += (accumulate) a (1 x k) times W (k x n, row stride
// ldw), W read in place, in blocks of about 128 columns, first to last or (backwards) last
// to first: each column's sum runs over k in order from zero and is then added to c (the
// bits of panel_gemm_avx512's row of packed panels, whatever the blocks). Fastest with
// ldw a multiple of 16: every row then starts at the same offset from a cache line.
void row_product_avx512(int64_t k, int64_t c0, int64_t c1, const float* a, const float* W,
                        int64_t ldw, bool accumulate, float* c, bool backwards);

}  // namespace graphnet
