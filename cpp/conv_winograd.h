// Winograd F(2x2, 3x3), F(4x4, 3x3), F(2x2, 5x5) and F(2x2, 7x7) for float32 3x3
// convolutions with stride 1 and pad 1, 5x5 ones with pad 2 and 7x7 ones with pad 3 (and
// narrower pads), on CPUs with AVX-512 (conv.cpp decides where, and asks cpu_has_avx512f()
// first).
//
// Each m x m block of outputs (a tile) comes from the alpha x alpha patch of padded input
// under it (alpha = m + r - 1 for r x r filters: 4, 6 or 8): transformed, V = B^T d B, each of
// the alpha^2 points of the tile is the product of the filters' transformed weights
// U = G g G^T (F x C) with the channels' V (C x tiles), and the output is A^T M A of the
// products M. That is 16 multiplies per tile and channel pair instead of 36 (F(2x2, 3x3)),
// 36 instead of 144 (F(4x4, 3x3)) or 100 (F(2x2, 5x5)), 64 instead of 196 (F(2x2, 7x7)):
// the products run on the AVX-512
// GEMM (gemm_avx512.h), the transforms are adds (and multiplies by small constants),
// vectorised along 16 tiles of a tile row (or of 2 or 4 short ones: winograd_row_lanes).
// 4x4 tiles interpolate at 0, 1, -1 and infinity; 6x6 ones at 0, 1, -1, 2, -2 and infinity
// (Lavin and Gray's points: both 6x6 tilings share B^T); 8x8 ones at 0, 1, -1, 2, -2, 1/2,
// -1/2 and infinity.
//
// The weight gradient is the same map's adjoint with respect to the weights: each tile's
// output gradient dy (m x m) transformed,
// Q = A dy A^T (alpha x alpha), the transformed weights' gradient dU = the sum over tiles
// of Q (.) V, point by point a product of Q (F x tiles) with V^T (tiles x C) whose inner
// dimension is the tiles, and dw = G^T dU G.
//
// Rounding: V and U sum up to alpha inputs and r weights along each axis (on 6x6 tiles
// scaled by up to 5 and 2/3, and A^T by up to 8), so every product's terms are inputs
// and weights from the whole patch, not just each output's r x r window, and their sum is
// the rounding scale (tests/kernels/test_conv_winograd.py bounds it so); in the weight
// gradient likewise the whole patch's inputs times up to m^2 output gradients (scaled by
// A's up to 8). On 6x6 tiles G^T dU G then takes differences of such sums: its error
// against float64 is 5-13x the direct kernels' (F(4x4, 3x3)), 7.5-19x (F(2x2, 5x5)),
// 24-41x (F(2x2, 7x7): V scaled by up to 21, Q by 3.5, G's weights up to 64 / 90).
//
// Like conv_direct.h: compiled for AVX-512F, includes no library header.
#pragma once

#include <cstdint>

namespace graphnet {

// Tiles per block: a block's V (points x C x tiles) and M (points x F x tiles) stay in L2
// while the products read and write them.
constexpr int64_t kWinogradBlockTiles = 96;
// The transforms and products of a block of n tiles are laid out channel (or filter) by
// channel, winograd_stride(n) floats apart: the points' rows of n tiles one after the
// other, then a line of skew. So a transform writes or reads one stream that the
// prefetchers follow (with the points' blocks apart, each of its 16 stores of a tile
// group missed L1 on its own: the transforms took 2-3x as long), and the skew keeps the
// GEMM's rows, a stride apart, out of each other's L1 sets.
constexpr int64_t kWinogradSkew = 16;

// Floats past the padded image the input transform may read (and drop): up to 68 past a
// tile row's first column (4x4 tiles).
constexpr int64_t kWinogradSlack = 96;

// An r x r, stride-1 convolution of one image of C channels to F, H x W out (its input:
// WinogradInput), on tiles of m x m outputs: F(2x2, 3x3), F(2x2, 5x5), F(2x2, 7x7) or
// F(4x4, 3x3).
struct WinogradConv {
    int64_t m, r;              // the tiles' and the filters' side
    int64_t points;            // of a transformed tile: (m + r - 1)^2
    int64_t C, F, H, W;
    int64_t tiles_h, tiles_w;  // ceil(H / m), ceil(W / m)
    int64_t Hp, Wp;            // the padded input: m tiles + r - 1 (the pad, then at least it after)
    int64_t block_rows;        // tile rows per block of one image
};

inline WinogradConv winograd_geometry(int64_t m, int64_t r, int64_t C, int64_t F, int64_t H,
                                      int64_t W) {
    const int64_t tiles_h = (H + m - 1) / m, tiles_w = (W + m - 1) / m;
    const int64_t rows = kWinogradBlockTiles / tiles_w;
    return {m, r, (m + r - 1) * (m + r - 1), C, F, H, W, tiles_h, tiles_w, m * tiles_h + r - 1,
            m * tiles_w + r - 1, rows < 1 ? 1 : rows < tiles_h ? rows : tiles_h};
}

// Images a call of the forward takes: the fewest whose tiles fill more than 3/4 of the
// vectors of 16 columns the products run on (those of a call make one block). One image of
// 4 tiles made the products read the transformed weights (points x F x C) for 4 columns:
// F(4x4, 3x3) took as long on 4 x 4 as on 8 x 8 images. Per pass, batch 64, one thread,
// 32-256 channels, against 16 tiles a call: 2x2 tiles of 4 x 4 and 4x4 tiles of 8 x 8
// images (4 an image) 1.04-1.3x the time on 24 tiles, 1.0-1.3x on 32, 1.0-1.4x on 96 (one
// image 1.4-1.8x); 2x2 tiles of 6 x 6 images (9) 0.72-0.8x on 27 and on 45-90 against
// 9 and 18; 2x2 tiles of 8 x 8 images (16) 1.0-1.3x on 96.
inline int64_t winograd_forward_images(const WinogradConv& g) {
    const int64_t tiles = g.tiles_h * g.tiles_w;
    for (int64_t images = 1; images * tiles <= kWinogradBlockTiles; ++images) {
        const int64_t vectors = (images * tiles + 15) / 16;
        if (4 * images * tiles > 3 * 16 * vectors) return images;
    }
    return 1;
}

// Tile rows per block of the forward: block_rows of one image, or all of a call's images'.
inline int64_t winograd_forward_block_rows(const WinogradConv& g) {
    const int64_t images = winograd_forward_images(g);
    return images > 1 ? images * g.tiles_h : g.block_rows;
}

inline int64_t winograd_stride(const WinogradConv& g, int64_t tiles) {
    return g.points * tiles + kWinogradSkew;
}

// Floats from one point's transformed weights (F x C) to the next (skewed, as above).
inline int64_t winograd_weights_point(const WinogradConv& g) { return g.F * g.C + kWinogradSkew; }

// The lanes of the transforms a tile row takes: 16 (its tiles run along them, 16 at a
// time), or on rows of up to 8 tiles 8 (on 4x4 tiles, of up to 4, 4): 2 (or 4) rows fill
// them, and the tiles of the lanes that hold one are stored one after another. A load of
// 16 floats holds 8 2x2 tiles of one row, so 2x2 tiles go 2 rows at most. (F(4x4, 3x3)
// 32 -> 32 @32 and 64 -> 64 @16: the weight gradient in 0.90x and 0.84x the time of one
// row at a time; F(2x2, 5x5) 32 -> 64 @16 forward, dx, dw in 0.91x, 0.90x, 0.81x.)
inline int64_t winograd_row_lanes(const WinogradConv& g) {
    if (g.tiles_w > 8) return 16;
    if (g.m == 2) return 8;
    return g.tiles_w > 4 ? 8 : 4;
}

// r x r filters: filter f's weights on channel c at w + f * filter_stride + c *
// channel_stride, tap (kh, kw) at r kh + kw, or turned by 180 degrees, at r^2 - 1 - r kh -
// kw. (16 x r^2 x channel_stride must fit in 32 bits.)
struct WinogradWeights {
    const float* w;
    int64_t filter_stride, channel_stride;
    bool turned;
};

// u (g.points points, winograd_weights_point floats apart, of F x C) = the transformed weights
// of w.
void winograd_weights_avx512(const WinogradConv& g, const WinogradWeights& w, float* u);

// The images a pass reads: C x H x W each, laid `pad` rows and columns into the padded
// input (H + 2 pad = g.H + r - 1: the forward's and dw's pad, or dx's r - 1 - the
// forward's).
struct WinogradInput {
    int64_t H, W, pad;
};

// Floats of one thread's scratch for winograd_forward_images_avx512: its padded images
// (winograd_forward_padded_floats), then a block's V and M.
int64_t winograd_forward_scratch_floats(const WinogradConv& g);

// Floats of the padded images at the start of the forward's scratch: winograd_forward_images
// of C x Hp x Wp, and the slack the input transform reads past them.
int64_t winograd_forward_padded_floats(const WinogradConv& g);

// out (count images of F x H x W, one after another, up to winograd_forward_images) = bias +
// the convolution of `count` images x (of `in`, one after another) with the transformed
// weights u. The images' interiors are copied into the scratch's padded images, whose
// other floats (the pads and the slack) must be zero: written once by the caller, never by
// the forward, so a thread's scratch serves all its calls. Their tile rows, one after
// another, go winograd_forward_block_rows at a time: transformed, multiplied point by
// point, and their outputs transformed back.
void winograd_forward_images_avx512(const WinogradConv& g, const WinogradInput& in,
                                    const float* x, int64_t count, const float* u,
                                    const float* bias, float* out, float* scratch);

// The forward by blocks of filters, for wide layers on small images (conv.cpp: the threads
// share out the images' input transforms, then the blocks of filters): V of `count` images x
// (of `in`) into a block of n tiles (their tiles one after another from column 0 of v, C x
// winograd_stride(g, n) floats), each laid into `padded` first (C x Hp x Wp floats and
// kWinogradSlack, zero but for the interior, which this writes);
void winograd_input_tiles_avx512(const WinogradConv& g, const WinogradInput& in, const float* x,
                                 int64_t count, float* v, int64_t n, float* padded);
// and filters f0 .. f1 - 1 of their outputs (out: count images of F x H x W) = bias + the
// products of those filters' transformed weights (written to scratch:
// winograd_filters_scratch_floats) with V.
inline int64_t winograd_filters_scratch_floats(const WinogradConv& g, int64_t filters,
                                               int64_t n) {
    return g.points * (filters * g.C + kWinogradSkew) + filters * winograd_stride(g, n);
}
void winograd_filters_forward_avx512(const WinogradConv& g, const WinogradWeights& w, int64_t f0,
                                     int64_t f1, const float* v, int64_t n, int64_t count,
                                     const float* bias, float* out, float* scratch);

// Tiles per block of the weight gradient (the inner dimension of its 16 products), in
// whole tile rows (one row where a row is longer): kWinogradGradientBlockFloats over the
// channels in and out, from kWinogradGradientMinTiles to kWinogradGradientMaxTiles (the
// GEMM's depth, gemm_avx512.cpp). Per pass, batch 64, one thread, CPU time, 256 tiles
// against 128 and 64: 32 -> 32 @32 8.7 / 9.4 / 9.8 ms, 64 -> 64 @16 7.9 / 8.0 / 8.1;
// 128 -> 128 @8 7.6 / 7.6 / 7.8, 256 -> 256 @4 9.7 / 9.2 / 9.1 (batch 16, 256 -> 256 @8
// 9.0 / 8.3 / 8.5).
constexpr int64_t kWinogradGradientBlockFloats = int64_t(1) << 15;
constexpr int64_t kWinogradGradientMinTiles = 64;
constexpr int64_t kWinogradGradientMaxTiles = 256;

// The weight gradient's blocks: tile rows of consecutive images, `rows` at a time.
struct WinogradGradientBlocks {
    int64_t rows;    // tile rows per block
    int64_t stride;  // winograd_stride of a whole block's tiles
};

// On 8x8 tiles (F(2x2, 7x7)) a tile's V and Q are 64 points of C + F floats, 4x a 4x4
// tile's, and blocks of kWinogradGradientMinTiles tiles: per pass, batch 64 (fewer on wide
// layers), one thread, CPU time, against the blocks above (128-256 tiles), 16 -> 32 @16
// 0.83, 32 -> 32 @16 0.94, 32 -> 64 @16 0.90, 32 -> 64 @12 0.92, 128 -> 128 @8 0.95,
// 16 -> 16 @32 1.00 (96 tiles 0.85-1.03, 128 0.86-1.01).
constexpr int64_t kWinogradLargeTilePoints = 64;

inline WinogradGradientBlocks winograd_gradient_blocks(const WinogradConv& g) {
    const int64_t wanted = kWinogradGradientBlockFloats / (g.C + g.F);
    const int64_t most =
        g.points >= kWinogradLargeTilePoints ? kWinogradGradientMinTiles : kWinogradGradientMaxTiles;
    const int64_t tiles = wanted < kWinogradGradientMinTiles ? kWinogradGradientMinTiles
                          : wanted > most                    ? most
                                                             : wanted;
    const int64_t rows = tiles / g.tiles_w < 1 ? 1 : tiles / g.tiles_w;
    return {rows, winograd_stride(g, rows * g.tiles_w)};
}

// Floats of one thread's scratch for winograd_weight_gradient_images_avx512: the padded
// strip of input rows under a block (its first winograd_gradient_strip_floats, zeroed once
// by the caller), then its V and Q (written before they are read).
int64_t winograd_gradient_scratch_floats(const WinogradConv& g);

// du (g.points points, winograd_weights_point floats apart, of F x C) = the transformed
// weights' gradient of `count` (1 or more) images x (of `in`) with output gradients dout
// (F x H x W each). Each point's sum runs over a block's tiles in order, and the blocks'
// sums (tile rows of the images one after another, block_rows at a time) are added up in
// order, the first into zeros: du's bits are those of a sum into a zeroed du, which the
// caller need not zero.
void winograd_weight_gradient_images_avx512(const WinogradConv& g, const WinogradInput& in,
                                            const float* x, const float* dout, int64_t count,
                                            float* du, float* scratch);

// The weight gradient by points, for wide layers (conv.cpp: the threads share out the
// images' transforms, then du's points): V and Q of `count` images x (of `in`) and their
// output gradients dout (F x H x W each), their tiles one after another from column 0 of a
// block of n tiles at v (C x winograd_stride(g, n) floats) and q (F x it), as the blocks of
// winograd_weight_gradient_images_avx512; `strip` (winograd_gradient_strip_floats, zeroed
// once by the caller) holds their padded rows on the way.
int64_t winograd_gradient_strip_floats(const WinogradConv& g);
void winograd_gradient_tiles_avx512(const WinogradConv& g, const WinogradInput& in,
                                    const float* x, const float* dout, int64_t count, float* v,
                                    float* q, int64_t n, float* strip);

// The filters f0 .. f1 - 1 and channels c0 .. c1 - 1 of dw that a block of such tiles
// gives: du (the block's points) summed over its n tiles in order, then G^T du G written
// to dw (F x C x r x r), or with `add` added to it. scratch: winograd_pairs_scratch_floats.
struct WinogradPairs {
    int64_t f0, f1, c0, c1;
};
inline WinogradConv winograd_pairs_block(const WinogradConv& g, const WinogradPairs& pairs) {
    WinogradConv block = g;
    block.F = pairs.f1 - pairs.f0;
    block.C = pairs.c1 - pairs.c0;
    return block;
}
inline int64_t winograd_pairs_scratch_floats(const WinogradConv& g, const WinogradPairs& pairs) {
    const WinogradConv block = winograd_pairs_block(g, pairs);
    return g.points * winograd_weights_point(block) + block.F * block.C * g.r * g.r;
}
void winograd_pairs_gradient_avx512(const WinogradConv& g, const float* v, const float* q,
                                    int64_t n, const WinogradPairs& pairs, bool add,
                                    float* scratch, float* dw);

// dw (F x C x r x r) = the weights' gradient G^T du G of the transformed weights' du.
void winograd_weights_gradient_avx512(const WinogradConv& g, const float* du, float* dw);

}  // namespace graphnet
