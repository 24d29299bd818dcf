// Tap kernels: a convolution written as a list of taps, each an offset into a flat input
// buffer, with the output channels along the vector lanes. conv_phases.cpp turns a
// strided convolution (and its input gradient) into such stride-1 sums over phase planes;
// the kernels only see offsets, so any stride and kernel size reach the same loops.
//
// Channels, not pixels, fill the lanes: a strided layer's output rows are short (8 or 16
// pixels in the zoo) but its channels many (64, 128), so a tile of 2-4 vectors of filters
// times 6-24 positions keeps every lane busy, where the row-wise direct kernels
// (conv_direct.h) would pad each 8-pixel row to 16 lanes.
//
// conv_taps_avx512.cpp is compiled for AVX-512: call it only when cpu_has_avx512f(). An
// AVX2 build of the same loops (2 x 6 and 1 x 12 tiles of 8 lanes) ran no faster than
// im2col + OpenBLAS's AVX2 GEMM (OPENBLAS_CORETYPE=Haswell; batch 64, one thread, stride 2
// 32->64 @32: forward 8.5 against 7.9 ms, backward 16.7 / 17.1; 64->128 @16: 7.8 / 7.4,
// 17.0 / 15.2), so CPUs without AVX-512 keep im2col. Like conv_direct.h, this header
// includes no library header, so no AVX-512 copy of a shared inline function leaks.
#pragma once

#include <cstdint>

namespace graphnet {

// `floats` floats from `from` (none where null), which a kernel brings into L2 while it
// computes, a few cache lines a tile: what the code around it reads or writes next.
struct TapPrefetch {
    const float* from = nullptr;
    int64_t floats = 0;
};

struct TapConv {
    int64_t taps;      // terms of each output
    int64_t F;         // output channels
    int64_t F_padded;  // F rounded up to kTapLanes: the row length of wpack, out_t, dout_t
    int64_t Q;         // rows of out_t computed per call (a wide grid, see below), each of
                       // `pack` output positions
    int64_t block;     // taps per pass of the forward over all positions (>= 1)
    // Where the forward's position q reads (in + at[q]), for q < Q rounded up to kTapRows;
    // null: at q itself. Only where tap_map_fits(F_padded).
    const int64_t* at = nullptr;
    // The forward's: the next images' input, which the phase split reads, and the output
    // lines, which the transpose writes; in a dx, dx's lines, which the merge writes, or
    // the next output gradient; the weight gradient's: the next images' input and output
    // gradient, which the split and the transpose read.
    TapPrefetch prefetch[2] = {};
    // Output positions per row of out_t: 1, or on a layer of F <= kTapLanes / pack filters
    // (one vector, F_padded = kTapLanes, no map) 2 or 4, lane pack * f + j holding filter f
    // at position pack * q + j, whose inputs one broadcast of `pack` consecutive floats reads:
    // one vector of 16 lanes on 3-8 filters left half to 13 in 16 of them idle. The weight
    // gradient's dout_t the same way (tap_conv_dw_avx512).
    int64_t pack = 1;
};


// Floats per vector, and vectors of filters in the forward's widest tile.
constexpr int64_t kTapLanes = 16;
constexpr int64_t kTapWide = 4;

// The positions per row of out_t for a forward of F filters (TapConv::pack).
constexpr int64_t tap_pack(int64_t F) { return F <= kTapLanes / 4 ? 4 : F <= kTapLanes / 2 ? 2 : 1; }

// Whether the forward takes a position map (TapConv::at) for F_padded filters: its tiles
// then keep a pointer per position, 6 for 4 vectors of filters, 8 for 3, 12 for 2; not
// where a single vector is left over, whose tile has 24 positions.
constexpr bool tap_map_fits(int64_t F_padded) { return F_padded / kTapLanes % kTapWide != 1; }

// Positions per forward tile divide this: out_t needs Q rounded up to it rows, and the
// input that many readable floats past its last tap's last position.
constexpr int64_t kTapRows = 24;

// The forward's last tile of a pass with `vectors` of filters covers the rows left in a
// multiple of this many, not a whole tile: 2 (3 or 4 vectors), 4 (2) or 8 (1), at least 8
// FMAs per tap for its 4-8 loads.
constexpr int64_t tap_rest_step(int64_t vectors) { return vectors >= 3 ? 2 : 8 / vectors; }

// The floats a forward block may keep in cache: half of a 1 MB L2. A tile's accumulators
// are loaded and stored once per block, and one FMA unit of 16 lanes (Zen 4's AVX-512)
// leaves the L2 time to stream the block's weights, 4 vectors a tap, under a tile's 24
// FMAs: blocks kept in a 24 KB share of L1 ran the 3x3 stride-2 forwards at 1.06-1.2x
// this time, their dx at 1.02-1.17x (batch 64, one thread, 32->64 @32 to 256->256 @8).
constexpr int64_t kTapBlockFloats = 128 * 1024;

// Taps per forward block: as many as keep a block's weights (taps x F_padded) and the
// input they read (about input_per_tap floats each) in that share of L2 together.
inline int64_t tap_conv_block(int64_t F_padded, int64_t input_per_tap) {
    const int64_t floats = kTapBlockFloats / (F_padded + input_per_tap);
    return floats > 1 ? floats : 1;
}

// out_t[q * F_padded + f] = bias[f] + sum_t wpack[t * F_padded + f] * in[offsets[t] + at[q]]
// for q < Q rounded up to kTapRows (bias and wpack padded with zeros to F_padded; at[q] = q
// when g.at is null); with g.pack > 1, lane l = pack * f + j of row q instead holds
// bias[l] + sum_t wpack[t * F_padded + l] * in[offsets[t] + pack * q + j] (the bias and
// weights of filter f in lanes pack * f .. pack * f + pack - 1).
void tap_conv_forward_avx512(const TapConv& g, const int64_t* offsets, const float* in,
                             const float* wpack, const float* bias, float* out_t);

// A forward with the output positions along the lanes and the filters in registers, for
// layers of few filters, where one vector of filters left most lanes idle: per tap one
// load of 16 consecutive positions' inputs and a broadcast weight per filter. Positions
// q < Q of a grid (conv_phases.cpp: as wide as a phase plane) read in + offsets[t] + q;
// vector k of 16 of them keeps the lanes keep[k] (the output's columns), which go in
// order to outputs dest[k] on.
struct LaneConv {
    int64_t taps, F, Q;
    int64_t out_filter;  // floats between filters' outputs
    const uint16_t* keep;
    const int64_t* dest;
};

// out[f * out_filter + (position q's output)] = bias[f] + sum_t w_t[t * F + f] *
// in[offsets[t] + q] for the kept q < Q, summed in the order of the taps as
// tap_conv_forward_avx512 sums them (the same bits); reads up to 15 floats past
// in + offsets[t] + Q - 1, whose lanes are dropped.
void lane_conv_forward_avx512(const LaneConv& g, const int64_t* offsets, const float* in,
                              const float* w_t, const float* bias, float* out);

// A weight gradient with the positions along the lanes, the transpose of the lane
// forward, for layers of few filters: 16 positions of each image's grid (LaneConv's) a
// vector, an accumulator per (tap, filter) of a tile of a few of each, summed over all the
// images' positions of a call and then reduced. Per position vector a masked load of the
// input a tap and a load of dout a filter feed taps x filters FMAs, where the tap kernels
// broadcast an input float for each FMA.
struct LaneDw {
    int64_t taps, F;
    int64_t images, image_floats;  // image n's input at in + n * image_floats
    int64_t vectors;               // vectors of 16 positions of an image's grid
    int64_t dout_filter, dout_image;  // floats between filters' and images' dout grids
    const uint16_t* keep;  // the lanes of each vector on the output (the input's other
                           // lanes are read as 0, so a pixel no window reads never counts)
};

// dw_t[t * F + f] += sum over images n, vectors k and kept lanes l of
//   in[n * image_floats + offsets[t] + 16 k + l] * dout[n * dout_image + f * dout_filter + 16 k + l]
// (dout finite in the lanes not kept: they are multiplied by 0). The order of the sums
// depends on the LaneDw alone.
void lane_conv_dw_avx512(const LaneDw& g, const int64_t* offsets, const float* in,
                         const float* dout, float* dw_t);

// One image's dout (F x rows x cols) onto the lane weight gradient's grid: filter f's
// position (r, c) at to[f * to_filter + r * row + c], 0 at columns cols .. row - 1 (the
// rest of `to` untouched); db[f] += the sum of filter f's dout.
void lane_dw_dout_avx512(int64_t F, int64_t rows, int64_t cols, int64_t row, const float* dout,
                         float* to, int64_t to_filter, float* db);

// The positions a weight gradient sums over: for each of `images` images (image n's input
// at in + n * image_floats, its rows * cols positions next in dout_t), positions
// r * row + x of the wide grid, r < rows, x < cols: only the real ones, so nothing outside
// the convolution's windows is read.
struct TapDwPositions {
    int64_t images, image_floats, rows, cols, row;
};

// dw_t[t * F + f] += sum over images n and positions (r, x) of
//   in[n * image_floats + offsets[t] + r * row + x]
//   * dout_t[((n * rows + r) * cols + x) * F_padded + f];
// with g.pack > 1 (F <= kTapLanes / pack, F_padded = kTapLanes), dout_t's rows instead hold
// `pack` positions of a row each, as the forward's out_t: lane pack * f + j of row
// (n * rows + r) * ceil(cols / pack) + k is filter f at position (r, pack * k + j), 0 past
// cols (pack_dw_positions_avx512).
void tap_conv_dw_avx512(const TapConv& g, const TapDwPositions& p, const int64_t* offsets,
                        const float* in, const float* dout_t, float* dw_t);

// One image's rows of a weight gradient's dout_t (positions x kTapLanes, rows * cols of
// them, filters f < F in the first lanes) regrouped as the packed kernel reads them
// (tap_conv_dw_avx512 with TapConv::pack = pack): lane pack * f + j of row
// r * ceil(cols / pack) + k from position (r, pack * k + j), 0 past cols and in the lanes
// past pack * F; `to` may be `from` or before it (each row is written at or before the
// rows it is read from, after they are read).
void pack_dw_positions_avx512(int64_t rows, int64_t cols, int64_t F, int64_t pack,
                              const float* from, float* to);

// The pixels of a stride-2 input gradient's rows of one row phase, merged from its two
// column phases' kernel outputs (positions x channels, positions `stride` floats apart):
// for pair k < pairs and channel c < channels,
//   dst[c * dst_channel + dst_at[k]] = first_t[first_at[k] * stride + c] and, where
//   second_at[k] >= 0, dst[c * dst_channel + dst_at[k] + 1] = second_t[second_at[k] * stride + c].
// 16 pairs a step: two 16 x 16 transposes in registers, two permutes a channel, and a
// store per run of pairs contiguous in a row, so dx is written once, in place.
struct PhasePairs {
    int64_t pairs;
    const int64_t* first_at;
    const int64_t* second_at;
    const int64_t* dst_at;
};
void merge_phase_pairs_avx512(const PhasePairs& p, int64_t channels, const float* first_t,
                              const float* second_t, int64_t stride, float* dst,
                              int64_t dst_channel);

// sums[c] += sum over r < rows of src[r * stride + c], for c < cols: a bias gradient from
// output gradients already in the kernels' layout (positions x channels).
void column_sums_avx512(int64_t rows, int64_t cols, const float* src, int64_t stride,
                        float* sums);

// dst[r * dst_stride + k] = src[r * src_stride + k] for r < rows, k < width: many short
// rows a call (a row of 8-16 floats through memmove cost a call each).
void copy_rows_avx512(int64_t rows, int64_t width, const float* src, int64_t src_stride,
                      float* dst, int64_t dst_stride);

// even[r * dst_stride + k] = src[r * src_stride + 2k] (k < (width + 1) / 2) and
// odd[r * dst_stride + k] = src[r * src_stride + 2k + 1] (k < width / 2) for r < rows:
// image rows `width` pixels wide split into their two phases (split_phases with stride 2),
// 16 pairs at a time with two permutes; many rows a call, as rows of 7-16 pixels take a
// few instructions each.
void deinterleave_avx512(int64_t rows, int64_t width, const float* src, int64_t src_stride,
                         float* even, float* odd, int64_t dst_stride);

// The same for strides 3 and 4 (and a copy for 1): phases[j][r * dst_stride + k] =
// src[r * src_stride + stride * k + j] for j < stride, r < rows and stride * k + j <
// width, 16 pixels of a phase at a time with two permutes and a blend. (On stride 2 its
// loop ran the 3x3 stride-2 forward on 8 x 8 images in 1.06x deinterleave_avx512's time.)
void split_columns_avx512(int64_t rows, int64_t width, int64_t stride, const float* src,
                          int64_t src_stride, float* const* phases, int64_t dst_stride);

// dst[c * dst_stride + r] = src[r * src_stride + c] for r < rows, c < cols: the layouts
// between the kernels (positions x channels) and the arrays (channels x positions), in
// 16 x 16 blocks held in registers.
void tap_transpose_avx512(int64_t rows, int64_t cols, const float* src, int64_t src_stride,
                          float* dst, int64_t dst_stride);

// The same with row k of the result at dst[k] (k < cols), rows rounded up to 16 floats
// long: dst[k][r] = src[r * src_stride + k] for r < rows, 0 up to the next multiple of 16.
// (dx's packed weights: each of a filter's taps goes to its phase's rows.)
void tap_transpose_to_rows_avx512(int64_t rows, int64_t cols, const float* src,
                                  int64_t src_stride, float* const* dst);

}  // namespace graphnet
