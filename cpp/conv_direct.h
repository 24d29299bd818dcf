// Direct float32 convolution for stride 1 on CPUs with AVX2 and FMA: the hot case of
// training (the CIFAR 7x7 layer), where im2col + GEMM loses half its time to writing and
// re-reading a 600 KB patch matrix that does not stay in L2.
//
// The kernels read a zero-padded image (C x Hp x Wp: 17 KB for the CIFAR layer, in L1)
// through a register tile of filters x 8-pixel vectors along an output row. The forward
// works on one image at a time, the weight gradient on a few; conv.cpp pads the images,
// packs the weights and shares the batch out over the threads.
//
// conv_direct.cpp is compiled with AVX2 + FMA code generation: call it only when
// cpu_has_avx2_fma() (cpu_features.h) says yes. It includes no library header, so no
// AVX2-compiled copy of a shared inline function can leak into the rest of the module,
// which stays portable x86-64.
#pragma once

#include <cstdint>

namespace graphnet {

// A stride-1 convolution of one padded image.
struct DirectConv {
    int64_t C, F;       // channels, filters
    int64_t HH, WW;     // kernel
    int64_t Ho, Wo;     // output
    int64_t Hp, Wp;     // padded input plane (Hp = Ho + HH - 1, Wp = Wo + WW - 1)
    int64_t filters_padded;  // F rounded up to whole tiles of direct_tile_filters(Wo)
};

// Output rows narrower than this go to im2col + GEMM: the kernels below need at least two
// vectors of 8 pixels per row to beat it (measured, README).
constexpr int64_t kDirectMinRow = 16;

// Layers of this many filters or more go to im2col + GEMM, in the forward and both
// gradients: per pass, CPU time of one thread, batch 16, 3x3/5x5/7x7 kernels on rows of
// 16-32 pixels, 3-128 channels, GEMM / direct was 0.66-0.93 for 48-128 filters (once 1.08:
// the 3x3 forward from 3 channels to 64); at 32 filters 0.95-1.45 and at 16, 1.2-1.7.
constexpr int64_t kDirectMaxFilters = 48;

// Filters in the forward kernel's register tile for output rows Wo >= kDirectMinRow pixels
// wide. The tile holds 12 accumulators: 3 filters x 4 vectors of 8 pixels for rows of 32,
// 6 x 2 for rows of 16, 4 x 3 for rows of 24 or 40, so that tiles run past a row by as
// little as possible. The packed weights are padded with zero filters to a multiple.
int64_t direct_tile_filters(int64_t Wo);

// Where weight t (t = (c*HH + kh)*WW + kw) of filter f goes in the packed weights, for
// filter tiles of `tile` and `taps` taps.
inline int64_t direct_packed_index(int64_t tile, int64_t taps, int64_t f, int64_t t) {
    return (f / tile * taps + t) * tile + f % tile;
}

// Floats a padded image buffer needs past C * Hp * Wp: a forward tile is up to 4 vectors
// wide and computes whole vectors past the row's end (they are not stored), so its loads
// may run up to 31 floats beyond the last row. Those floats must be zero.
constexpr int64_t kDirectSlack = 32;

// out (F x Ho x Wo) = bias + the convolution of xpad (C x Hp x Wp, zero borders) with the
// packed weights: the filters in tiles of direct_tile_filters(Wo), each tile's weights
// together, tap by tap (direct_packed_index), zero for filters f >= F. So a tile reads one
// small block (1.7 KB for the CIFAR layer), not a few floats from every row of a matrix.
void direct_conv_forward_image(const DirectConv& g, const float* xpad, const float* wpack,
                               const float* bias, float* out);

// The same forward with AVX-512 vectors of 16 floats (conv_direct_avx512.cpp; call only
// when cpu_has_avx512f()), on weights packed in tiles of direct_tile_filters_avx512(F)
// filters (6-12), for layers of kDirectAvx512MinFilters filters or more: fewer would
// compute mostly padding filters (per pass, 3 -> 32 channels: at 0.5x the AVX2 kernel's
// speed). It runs rows of any width, a row of 9-16 pixels in one vector.
constexpr int64_t kDirectAvx512MinFilters = 6;
// Its rows of this many pixels or fewer run two to a vector, in lanes 0-7 and 8-15.
constexpr int64_t kDirectRowPairMaxWidth = 8;
int64_t direct_tile_filters_avx512(int64_t F);
void direct_conv_forward_image_avx512(const DirectConv& g, const float* xpad, const float* wpack,
                                      const float* bias, float* out);
// direct_conv_dw_images with AVX-512 (same arguments and contract), plus scratch: room
// for direct_dw_scratch_avx512(g) floats, where it packs the output gradients, and db
// (F): where direct_dw_filter_vectors(C, F) it adds the images' output gradient sums
// there too (elsewhere db is not touched). Those layers take its kernel with vectors along
// the filters, which works for any row width; the others its kernel with vectors along a
// row's pixels. Per pass, batch 16, one thread: 3 -> 32 channels 3x3 at 0.5-0.7x the time
// of the filter-vector kernel, 32 -> 32 at 1.1x; a layer of fewer filters than a vector's
// 16 lanes leaves them part empty (batch 64, 3x3 16 -> 8 @32 3.42 -> 2.01 ms on the pixel
// kernel, 24 -> 12 5.20 -> 3.96, 5x5 16 -> 8 6.22 -> 3.73; but 5x5 16 -> 16 @16
// 1.61 -> 2.05, so a full vector stays).
constexpr int64_t kDirectDwFilterVectorMinChannels = 16;
constexpr int64_t kDirectDwFilterVectorMinFilters = 16;
// 3x3, 5x5 and 7x7 layers of 16+ channels and fewer than 32 filters take a kernel with
// vectors along the channels instead (direct_conv_dw_channels_avx512): kernel alone, one
// thread, 4 images @32, GF/s against the kernels above: 3x3 16 -> 16 103 -> 169, 32 -> 16
// 109 -> 168, 16 -> 8 110 -> 152, 24 -> 24 128 -> 140; 5x5 16 -> 16 147 -> 166, 16 -> 8
// 115 -> 153; 7x7 16 -> 16 155 -> 176, 16 -> 8 116 -> 167; a tie at 32 filters (two
// whole filter vectors) and on 12 or 20 channels, a loss on 8 (half its lanes empty:
// 3x3 118 -> 88). 5x5 and 7x7 layers take it on whole channel vectors only (per pass,
// batch 64, one thread: 5x5 24 -> 24 at 1.03-1.13x the filter-vector kernel's time, 48 ->
// 24 at 0.73-0.86x).
constexpr int64_t kDirectDwChannelVectorMinChannels = 16;
constexpr int64_t kDirectDwChannelVectorMaxFilters = 31;
inline bool direct_dw_channel_vectors(int64_t C, int64_t F, int64_t HH, int64_t WW) {
    const bool kernel = HH == WW && (HH == 3 || ((HH == 5 || HH == 7) && C % 16 == 0));
    return kernel && C >= kDirectDwChannelVectorMinChannels && F <= kDirectDwChannelVectorMaxFilters;
}
// dw_t (taps x F) += the weight gradient, and db (F) += the bias gradient, of `images`
// consecutive images x (images x C x H x W, H = Hp - 2 pad, W = Wp - 2 pad) and their
// output gradients dout, for the layers where direct_dw_channel_vectors: read straight
// from x (each image padded and turned channels-last in scratch, room for
// direct_dw_scratch_avx512(g) floats).
void direct_conv_dw_channels_avx512(const DirectConv& g, int64_t pad, const float* x,
                                    const float* dout, int64_t images, float* dw_t, float* db,
                                    float* scratch);
inline bool direct_dw_filter_vectors(int64_t C, int64_t F, int64_t HH, int64_t WW) {
    return !direct_dw_channel_vectors(C, F, HH, WW) && C >= kDirectDwFilterVectorMinChannels &&
           F >= kDirectDwFilterVectorMinFilters;
}
int64_t direct_dw_scratch_avx512(const DirectConv& g);
void direct_conv_dw_images_avx512(const DirectConv& g, const int64_t* tap_offsets,
                                  const float* xpads, int64_t xpad_stride, const float* dout,
                                  int64_t images, float* dw_t, float* db, float* scratch);

// dw_t (taps x F) += the weight gradient of `images` consecutive images: their output
// gradients dout (images x F x Ho x Wo) and their padded inputs, xpads + i * xpad_stride.
// tap_offsets[t] is where tap t = (c*HH + kh)*WW + kw starts in a padded image:
// (c*Hp + kh)*Wp + kw.
void direct_conv_dw_images(const DirectConv& g, const int64_t* tap_offsets, const float* xpads,
                           int64_t xpad_stride, const float* dout, int64_t images, float* dw_t);

// The weight gradient when the output gradient is sparse (a convolution followed by relu
// and max pooling: only each pool window's winner gets a gradient). rows (HH x 8 floats,
// one filter and one channel) += gains[k] * the HH x 8 floats of `plane` (rows Wp apart)
// from offsets[k], for k < count; HH <= kSparseMaxKernel. Only lanes below the kernel
// width WW <= 8 are the gradient: the rest gather what lies right of the window and the
// caller drops them. So `plane` needs 8 - WW readable floats past its last window.
constexpr int64_t kSparseMaxKernel = 8;
void direct_sparse_dw_rows(int64_t HH, int64_t Wp, const float* plane, const int32_t* offsets,
                           const float* gains, int64_t count, float* rows);

}  // namespace graphnet
