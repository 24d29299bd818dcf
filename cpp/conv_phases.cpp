// The phase-plane convolution of conv_phases.h: the layouts (planes, packed weights,
// offsets, transposes) here in portable C++, the arithmetic in conv_taps_*.cpp.
#include "conv_phases.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "conv_taps.h"

namespace graphnet {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// First i >= 0 with s*i + phase - pad >= 0, and the end of the i with s*i + phase - pad < size:
// the rows (or columns) of a phase plane that hold real pixels.
int64_t first_real(int64_t s, int64_t phase, int64_t pad) {
    return phase >= pad ? 0 : ceil_div(pad - phase, s);
}
int64_t end_real(int64_t s, int64_t phase, int64_t pad, int64_t size) {
    return std::max(first_real(s, phase, pad), ceil_div(size + pad - phase, s));
}

// Images per call of the kernels: enough that a call has kGroupPositions output positions
// (a tile's accumulators are loaded, stored and added to dw once per call: on a 4 x 4
// output, once per 16 positions), as long as the group's scratch (floats_per_image each)
// stays within kGroupFloats, a part of L2, and no more than the batch has: each thread's
// scratch holds a group, zeroed on every call (at batch 1 on 8-pixel images six images'
// planes, 150-200 KB for 64 -> 128 channels, where one image reads 26).
constexpr int64_t kGroupPositions = 96;
constexpr int64_t kGroupFloats = 128 * 1024;

// The packed weight gradient's (TapConv::pack) calls run over more positions: its tiles of
// 6 taps x 1 vector add their sums to dw_t once a call, 6 rows F floats apart, with masked
// loads and stores that wait on the last tile's (per pass, batch 64, one thread, against
// 96: 45 -> 6 7x7 stride 2 @14x19 0.88x the time, 3 -> 6 7x7 @26x20 0.93x, 8 -> 8 3x3 @16
// 0.92x; 768 a little faster on these, but 1.1x slower on images of 6 positions, 128 a call).
constexpr int64_t kPackedDwGroupPositions = 384;

// The lane weight gradient's calls (lane_conv_dw_avx512) run over this many positions of
// the grid: each tile's accumulators are reduced and added to dw_t once a call.
constexpr int64_t kLaneDwGroupPositions = 768;

int64_t images_per_call(int64_t positions, int64_t floats_per_image, int64_t batch,
                        int64_t group_positions = kGroupPositions) {
    const int64_t wanted = std::min(ceil_div(group_positions, positions), batch);
    return std::max<int64_t>(1, std::min(wanted, kGroupFloats / floats_per_image));
}

// The tap kernels compute a stride-1 sum on a grid as wide as its input's rows, whose
// columns past the real ones are computed and dropped, unless given a map (TapConv::at)
// of the real positions, which the forward also needs to run several images in one call.
// Those columns are 1 in 17 of the forward's positions on 16-pixel rows, 1 in 9 on 8, 1
// in 5 on 4, and 1 in 5 of a 3x3 stride-2 dx's on 16-pixel inputs. A map is used where
// the kernel takes one (tap_map_fits) and the grid has such columns, except with 2
// vectors of channels alone: their tile's 12 pointers do not fit the registers, and it
// lost to the grid on images of 16+ pixels (per pass, batch 64, one thread: 16->32 @32
// forward, 32->64 @16 and @32 dx, 0.85-0.95x the grid's rate) while it gained where it
// lets the forward run several small images a call (64->32 @7 forward 1.8x).
bool maps_positions(int64_t channels_padded, int64_t cols, int64_t row, bool small_images) {
    return tap_map_fits(channels_padded) && (channels_padded != 2 * kTapLanes || small_images) &&
           cols < row;
}

// The map of positions (r, first + c), r < rows, c < cols, on a grid `row` wide: position
// r * cols + c reads at r * row + first + c. The tiles past them read position 0, unused.
std::vector<int64_t> grid_positions(int64_t rows, int64_t cols, int64_t row, int64_t first) {
    std::vector<int64_t> at(round_up(rows * cols, kTapRows), 0);
    for (int64_t q = 0; q < rows * cols; ++q) at[q] = q / cols * row + first + q % cols;
    return at;
}

// Where tap (c, kh, kw) of a stride-s filter starts in the phase planes of an image.
std::vector<int64_t> phase_offsets(const ConvGeometry& g, int64_t Hs, int64_t Ws) {
    const int64_t s = g.stride;
    std::vector<int64_t> offsets;
    offsets.reserve(g.taps());
    for (int64_t c = 0; c < g.C; ++c) {
        for (int64_t kh = 0; kh < g.HH; ++kh) {
            for (int64_t kw = 0; kw < g.WW; ++kw) {
                const int64_t plane = ((kh % s) * s + kw % s) * g.C + c;
                offsets.push_back((plane * Hs + kh / s) * Ws + kw / s);
            }
        }
    }
    return offsets;
}

// Filter f's outputs at positions q0 .. q0 + n - 1 of a grid packed Pack positions a row
// of out_t (TapConv::pack: position q in lane Pack * f + q % Pack of row q / Pack, rows
// `stride` floats apart) into to[0 .. n - 1]. (Pack a constant: a division by the member
// cost more than the kernel's products on 3 -> 8 channels 3x3 stride 2.)
template <int64_t Pack>
void unpack_positions(const float* out_t, int64_t stride, int64_t f, int64_t q0, int64_t n,
                      float* to) {
    const auto at = [&](int64_t q) { return out_t[q / Pack * stride + Pack * f + q % Pack]; };
    int64_t q = q0;
    const int64_t end = q0 + n;
    for (; q < end && q % Pack != 0; ++q) *to++ = at(q);
    for (; q + Pack <= end; q += Pack, to += Pack) {
        const float* row = out_t + q / Pack * stride + Pack * f;
        for (int64_t j = 0; j < Pack; ++j) to[j] = row[j];
    }
    for (; q < end; ++q) *to++ = at(q);
}

}  // namespace

void split_phases(const ConvGeometry& g, int64_t Hs, int64_t Ws, const float* x, float* planes) {
    // Input row h is row (h + pad) / s of the planes of phase a = (h + pad) % s, and its
    // pixel w goes to phase b = (w + pad) % s, column (w + pad) / s.
    const int64_t s = g.stride, p = g.pad, W = g.W;
    const auto plane_row = [&](int64_t a, int64_t b, int64_t c, int64_t i) {
        return planes + ((a * s + b) * g.C + c) * Hs * Ws + i * Ws;
    };
    // The rows of each phase a at once, s W floats apart in x (only AVX-512 CPUs take this
    // path: conv.cpp): the compiler's SSE2 loop spent 7-10% of a stride-2 layer's forward
    // on one image here (32 -> 64 channels on 32 x 32), a call per row 15% on 8 x 8 images;
    // a scalar loop on strides 3 and 4 took longer than the tap kernel's products on layers
    // of 16 filters or fewer (batch 16, one thread, 3x3 stride 3 13 -> 13 channels @28
    // forward 0.165 -> 0.096 ms, 4x4 stride 4 @32 0.200 -> 0.113).
    float* phases[kPhaseMaxStride];
    for (int64_t c = 0; c < g.C; ++c) {
        for (int64_t a = 0; a < s; ++a) {
            const int64_t h = ((a - p) % s + s) % s;  // the first row of phase a
            if (h >= g.H) continue;
            const int64_t i = (h + p) / s, rows = (g.H - h + s - 1) / s;
            const float* first = x + (c * g.H + h) * W;
            if (s == 2) {
                deinterleave_avx512(rows, W, first, 2 * W, plane_row(a, p % 2, c, i) + p / 2,
                                    plane_row(a, (p + 1) % 2, c, i) + (p + 1) / 2, Ws);
                continue;
            }
            for (int64_t r = 0; r < s; ++r) {  // pixel s*k + r: phase (r + p) % s
                phases[r] = plane_row(a, (r + p) % s, c, i) + (r + p) / s;
            }
            split_columns_avx512(rows, W, s, first, s * W, phases, Ws);
        }
    }
}

PhaseForward::PhaseForward(const ConvGeometry& g, const float* w, const float* b)
    : g_(g),
      s_(g.stride),
      Hs_(ceil_div(g.H + 2 * g.pad, g.stride)),
      Ws_(ceil_div(g.W + 2 * g.pad, g.stride)),
      F_padded_(round_up(g.F, kTapLanes)),
      planes_floats_(checked_mul(s_ * s_ * g.C, Hs_ * Ws_, "conv phase planes")),
      at_(maps_positions(F_padded_, g.Wo, Ws_, g.positions() < kGroupPositions)
              ? grid_positions(g.Ho, g.Wo, Ws_, 0)
              : std::vector<int64_t>()),
      group_(at_.empty() ? 1
                         : images_per_call(g.positions(),
                                           checked_add(planes_floats_, g.positions() * F_padded_,
                                                       "conv phase planes"),
                                           g.N)),
      pack_(at_.empty() && F_padded_ == kTapLanes ? tap_pack(g.F) : 1),
      Q_(at_.empty() ? g.Ho * Ws_ : g.positions()),
      rows_(round_up(ceil_div(group_ * Q_, pack_), kTapRows)),
      offsets_(phase_offsets(g, Hs_, Ws_)),
      wpack_(1, checked_mul(g.taps(), F_padded_, "conv phase weights"),
             CacheLineScratch::Fill::none),
      bias_(1, F_padded_) {
    if (group_ > 1) {  // image i's positions read its own planes, planes_floats_ further on
        at_.resize(rows_, 0);
        for (int64_t q = Q_; q < group_ * Q_; ++q) at_[q] = q / Q_ * planes_floats_ + at_[q % Q_];
    }
    const int64_t taps = g.taps();  // w is F x taps, wpack taps x F_padded
    if (pack_ > 1) {  // filter f's weights and bias in lanes pack f .. pack f + pack - 1
        std::vector<float> spread(F_padded_ * taps, 0.0f);  // (checked with wpack_'s size)
        for (int64_t lane = 0; lane < g.F * pack_; ++lane) {
            std::copy_n(w + lane / pack_ * taps, taps, spread.data() + lane * taps);
            bias_.scratch_of(0)[lane] = b[lane / pack_];
        }
        tap_transpose_avx512(F_padded_, taps, spread.data(), taps, wpack_.scratch_of(0), F_padded_);
        return;
    }
    // (a scalar loop writing one float per tap row took as long as a small batch's forward)
    tap_transpose_avx512(g.F, taps, w, taps, wpack_.scratch_of(0), F_padded_);
    if (F_padded_ > g.F) {  // the padding filters' weights, which the transpose leaves
        for (int64_t t = 0; t < taps; ++t) {
            float* row = wpack_.scratch_of(0) + t * F_padded_;
            std::fill(row + g.F, row + F_padded_, 0.0f);
        }
    }
    std::copy(b, b + g.F, bias_.scratch_of(0));
}

// The wide output follows the planes and the reads of the last tile past them (pack_ a row
// of it), on a cache line: the kernel loads and stores its rows as whole vectors.
int64_t PhaseForward::out_t_offset() const {
    return CacheLineScratch::round_up_to_line(
        checked_add(checked_mul(group_, planes_floats_, "conv phase planes"),
                    g_.WW + (kTapRows + 1) * pack_, "conv phase planes"));
}

int64_t PhaseForward::scratch_floats() const {
    // the planes, the reads of the last tile past them, the wide output (transposed)
    return checked_add(out_t_offset(), checked_mul(rows_, F_padded_, "conv phase output"),
                       "conv phase output");
}

void PhaseForward::clear(float* scratch) const {
    std::fill(scratch, scratch + out_t_offset(), 0.0f);
}

void PhaseForward::images(const float* x, int64_t count, float* scratch, const float* next,
                          int64_t next_count, const float* out, int64_t out_floats) const {
    const int64_t image = g_.C * g_.H * g_.W;
    for (int64_t i = 0; i < count; ++i) {
        split_phases(g_, Hs_, Ws_, x + i * image, scratch + i * planes_floats_);
    }
    const TapConv t{g_.taps(),
                    g_.F,
                    F_padded_,
                    ceil_div(count * Q_, pack_),
                    tap_conv_block(F_padded_, count * s_ * s_ * Hs_ * Ws_ / (g_.HH * g_.WW)),
                    at_.empty() ? nullptr : at_.data(),
                    {{next, next ? next_count * image : 0}, {out, out_floats}},
                    pack_};
    tap_conv_forward_avx512(t, offsets_.data(), scratch, wpack_.scratch_of(0), bias_.scratch_of(0),
                            scratch + out_t_offset());
}

void PhaseForward::output(int64_t i, const float* scratch, float* out) const {
    const float* out_t = scratch + out_t_offset() + i * Q_ * F_padded_;
    if (pack_ > 1) {
        const auto unpack = pack_ == 2 ? unpack_positions<2> : unpack_positions<4>;
        for (int64_t f = 0; f < g_.F; ++f) {
            for (int64_t oy = 0; oy < g_.Ho; ++oy) {
                unpack(out_t, F_padded_, f, oy * Ws_, g_.Wo, out + (f * g_.Ho + oy) * g_.Wo);
            }
        }
        return;
    }
    if (!at_.empty()) {  // out_t holds the real positions only
        tap_transpose_avx512(Q_, g_.F, out_t, F_padded_, out, Q_);
        return;
    }
    for (int64_t oy = 0; oy < g_.Ho; ++oy) {
        tap_transpose_avx512(g_.Wo, g_.F, out_t + oy * Ws_ * F_padded_, F_padded_,
                             out + oy * g_.Wo, g_.positions());
    }
}

// Over 80 random layers (1-16 channels, 1-24 filters, 3x3-7x7, stride 2-3, 12-40 px,
// batch 1-64; per pass, one thread, CPU time) the lane kernel's time / the tap kernel's
// tracked this ratio of work: 0.4-0.8 below 0.7, 0.6-0.9 at 0.7-1.0, 0.7-1.0 at 1.0-1.1,
// 1.03-1.26 from 1.2 on (narrow images of 17-24 filters, where the tap kernel maps the
// real positions).
// On 64+ filters it lost where that ratio let it in (batch 16: 32 -> 64 3x3 @32 1.05x the
// tap kernel's time, 64 -> 128 @16 1.20x, 8 -> 64 @16 1.17x; 3 -> 48 @32 at batch 64
// 0.84x, 4 -> 40 @24 0.80x): kLaneForwardMaxFilters (conv_phases.h).
// The tap kernel's work counts the rows its last tile computes past the output's
// (tap_rest_step): on outputs of a few rows they are a large part of it (random-0-35's
// 19 -> 8 3x3 stride 2 @9x11: 35 positions, 18 rows of 2, computed as 24), and without
// them the rule kept small images of 1-8 filters on the packed tap kernel where the lane
// kernel took 0.5-0.75x its time. Over 60 random layers of 6-14 px (1-24 channels, 3-24
// filters, 3x3-7x7 stride 2, batch 1-16), the forward's time / the tap kernel's 0.836 ->
// 0.809, geomean (the better kernel each time: 0.808); on 60 others 0.842 -> 0.820 (0.813);
// on 60 of 6-40 px 0.699 -> 0.694 (0.697).
constexpr double kLaneForwardMaxWork = 1.15;

bool lane_forward_pays(const ConvGeometry& g) {
    // (in doubles: products of hostile sizes need not fit)
    const int64_t Ws = ceil_div(g.W + 2 * g.pad, g.stride), F_padded = round_up(g.F, kTapLanes);
    const bool mapped = maps_positions(F_padded, g.Wo, Ws, g.positions() < kGroupPositions);
    const double pack = !mapped && F_padded == kTapLanes ? double(tap_pack(g.F)) : 1.0;
    const double computed = mapped ? double(g.Ho) * double(g.Wo) : double(g.Ho) * double(Ws);
    const int64_t vectors = F_padded / kTapLanes;
    const double step = double(tap_rest_step(vectors));  // the last tile's rows
    const double taps_work = std::ceil(computed / pack / step) * step * double(vectors);
    const double grid = (double(g.Ho) - 1) * double(Ws) + double(g.Wo);
    const double lanes_work = std::ceil(grid / kTapLanes) * double(g.F);
    return g.F <= kLaneForwardMaxFilters && lanes_work <= kLaneForwardMaxWork * taps_work;
}

LaneGrid::LaneGrid(int64_t rows, int64_t row, int64_t first, int64_t cols)
    : Q(rows > 0 && cols > 0 ? (rows - 1) * row + first + cols : 0) {
    for (int64_t q0 = 0; q0 < Q; q0 += kTapLanes) {
        uint16_t lanes = 0;
        for (int64_t l = 0; l < kTapLanes && q0 + l < Q; ++l) {
            const int64_t column = (q0 + l) % row - first;
            if (column >= 0 && column < cols) lanes = static_cast<uint16_t>(lanes | 1u << l);
        }
        keep.push_back(lanes);
        dest.push_back(q0 / row * cols + std::clamp<int64_t>(q0 % row - first, 0, cols));
    }
}

// dx on the lane kernel against im2col + GEMM (where conv.cpp sends the dx of 1-7 channels
// from 2C+ filters) and the tap kernel (the channels along its lanes), per pass (dx, dw,
// db), one thread, CPU time, 40 random layers (1-12 channels, 1-24 filters, 3x3-7x7,
// stride 2-3, 12-40 px, batch 1-64): on 4-8 channels 0.57-0.94x the time, on 1-3 channels
// at batch 16-64 0.49-0.85x, on 9-12 channels 0.99-1.02x; 12 -> 24 and 16 -> 32 3x3
// stride 2 @16 0.9-1.1x. Where the batch holds under 16 channels (1-4 images), against
// either: on under 2C filters (the tap kernel) 0.32-1.04x, on 2C-3C (im2col + GEMM)
// 0.32-1.31x, on more 0.42-2.43x, most over 1 (the GEMM's inner dimension, the filters,
// long against the lane kernel's few us of work a call); over 70 random layers of
// 1-8 channels, 3-24 filters, 3x3-7x7 stride 2, 6-40 px, batch 1-4, the time with this rule
// 0.82x the old rule's (geomean; 0.79x for the better path each time), and on 94 others
// (checked) 0.87-0.91x (0.82-0.84x).
constexpr int64_t kLaneInputGradientMaxChannels = 8;
constexpr int64_t kLaneInputGradientMinBatchChannels = 16;
constexpr int64_t kLaneInputGradientSmallBatchFiltersPerChannel = 3;
// On 9-24 channels (two or three groups of channels in registers) against the tap kernel,
// 40 random layers (1-64 images, 1-48 filters, windows 2-7, strides 2-3, 8-40 px): where
// the channels fill at most 3/4 of the tap kernel's vectors (9-12, 17-24) and a phase has
// 20+ taps (filters x window / stride^2), 0.69-0.98x the time (the most on layers of many
// taps, whose tap kernel computes a quarter of the lanes for nothing); 13-16 channels
// 0.94-1.73x, and on fewer taps (2 filters 3x3 stride 2, 1 filter 5x5, 16 filters 2x2
// stride 2) 1.18-1.73x, where the lane kernel's compressed stores of each channel's
// vectors weigh as much as its taps.
constexpr int64_t kLaneInputGradientMaxWideChannels = 24;
constexpr int64_t kLaneInputGradientMinPhaseTaps = 20;

bool lane_input_gradient_pays(const ConvGeometry& g) {
    if (g.C <= kLaneInputGradientMaxChannels) {
        return g.N * g.C >= kLaneInputGradientMinBatchChannels ||
               g.F <= kLaneInputGradientSmallBatchFiltersPerChannel * g.C;
    }
    // (in doubles where products of hostile sizes need not fit)
    const double phase_taps = double(g.F) * double(g.HH) * double(g.WW) /
                              (double(g.stride) * double(g.stride));
    return g.C <= kLaneInputGradientMaxWideChannels &&
           4 * g.C <= 3 * round_up(g.C, kTapLanes) && phase_taps >= kLaneInputGradientMinPhaseTaps;
}

// The lane weight gradient against the tap kernel's, per pass (dw and db), one thread, CPU
// time, over 220 random layers (1-24 channels, 1-40 filters, windows 1-7, strides 1-3,
// 8-40 px, batch 1-64; two sweeps, the rule fitted on one and checked on the other): the
// time tracks its vectors of work (grid positions / 16 x filters) over the tap kernel's
// (positions / positions a vector x vectors of filters), the tap kernel's packed tiles
// (1-8 filters) taking 1.4x as long per vector, its wider tiles no longer; and each call's
// reduction of a tile's sums costs about 4 vectors of positions (a batch of 1-2 images of
// 8-16 vectors: 1.1-1.4x the tap kernel's time at a work ratio of 0.65-0.8). Geomean of the
// time with this rule 0.90x the tap kernel's (the better of the two each time: 0.90x).
constexpr double kLaneDwMaxWorkPacked = 1.5;
constexpr double kLaneDwMaxWork = 1.0;
constexpr double kLaneDwCallVectors = 4.0;
constexpr int64_t kLaneDwMaxFilters = 40;

namespace {

// Floats of a filter's dout on the lane weight gradient's grid: whole rows (which
// lane_dw_dout_avx512 writes) and the last vector's.
int64_t lane_dw_grid_floats(const ConvGeometry& g, int64_t Ws) {
    return round_up(checked_mul(g.Ho, Ws, "conv phase dw"), kTapLanes);
}

int64_t lane_dw_group(const ConvGeometry& g, int64_t planes_floats, int64_t grid_floats) {
    return images_per_call(
        grid_floats,
        checked_add(planes_floats, checked_mul(g.F, grid_floats, "conv phase dw"), "conv phase dw"),
        g.N, kLaneDwGroupPositions);
}

}  // namespace

bool lane_weight_gradient_pays(const ConvGeometry& g) {
    if (g.F > kLaneDwMaxFilters) return false;
    // (in doubles where products of hostile sizes need not fit)
    const int64_t Hs = ceil_div(g.H + 2 * g.pad, g.stride), Ws = ceil_div(g.W + 2 * g.pad, g.stride);
    const int64_t planes_floats =
        round_up(checked_mul(g.stride * g.stride * g.C, Hs * Ws, "conv phase planes"), kTapLanes);
    const int64_t F_padded = round_up(g.F, kTapLanes);
    const double pack = F_padded == kTapLanes ? double(tap_pack(g.F)) : 1.0;
    const double Ho = double(g.Ho);
    const double taps_work = Ho * std::ceil(double(g.Wo) / pack) * double(F_padded / kTapLanes);
    const double vectors = std::ceil(((Ho - 1) * double(Ws) + double(g.Wo)) / kTapLanes);
    const int64_t grid_floats = lane_dw_grid_floats(g, Ws);
    const double call_vectors =
        double(std::min(g.N, lane_dw_group(g, planes_floats, grid_floats))) * vectors;
    const double lanes_work = vectors * double(g.F) * (1.0 + kLaneDwCallVectors / call_vectors);
    return lanes_work <= (pack > 1.0 ? kLaneDwMaxWorkPacked : kLaneDwMaxWork) * taps_work;
}

PhaseLaneForward::PhaseLaneForward(const ConvGeometry& g, const float* w, const float* b)
    : g_(g),
      Hs_(ceil_div(g.H + 2 * g.pad, g.stride)),
      Ws_(ceil_div(g.W + 2 * g.pad, g.stride)),
      planes_floats_(checked_mul(g.stride * g.stride * g.C, Hs_ * Ws_, "conv phase planes")),
      offsets_(phase_offsets(g, Hs_, Ws_)),
      w_t_(checked_mul(g.taps(), g.F, "conv phase weights")),
      bias_(b, b + g.F),
      grid_(g.Ho, Ws_, 0, g.Wo) {
    tap_transpose_avx512(g.F, g.taps(), w, g.taps(), w_t_.data(), g.F);
}

// The phase planes, then the floats the kernel's last vector reads past them (up to 15
// past the last plane's last pixel).
int64_t PhaseLaneForward::scratch_floats() const {
    return checked_add(planes_floats_, kTapLanes, "conv phase planes");
}

void PhaseLaneForward::clear(float* scratch) const {
    std::fill(scratch, scratch + scratch_floats(), 0.0f);
}

void PhaseLaneForward::image(const float* x, float* scratch, float* out) const {
    split_phases(g_, Hs_, Ws_, x, scratch);
    const LaneConv t{g_.taps(), g_.F, grid_.Q, g_.positions(), grid_.keep.data(),
                     grid_.dest.data()};
    lane_conv_forward_avx512(t, offsets_.data(), scratch, w_t_.data(), bias_.data(), out);
}

PhaseWeightGradient::PhaseWeightGradient(const ConvGeometry& g, bool lanes)
    : g_(g),
      s_(g.stride),
      Hs_(ceil_div(g.H + 2 * g.pad, g.stride)),
      Ws_(ceil_div(g.W + 2 * g.pad, g.stride)),
      F_padded_(round_up(g.F, kTapLanes)),
      planes_floats_(round_up(checked_mul(s_ * s_ * g.C, Hs_ * Ws_, "conv phase planes"),
                              kTapLanes)),
      lanes_(lanes),
      dout_grid_(lane_dw_grid_floats(g, Ws_)),
      group_(lanes ? lane_dw_group(g, planes_floats_, dout_grid_)
                   : images_per_call(g.positions(),
                                     checked_add(planes_floats_,
                                                 checked_mul(g.positions(), F_padded_,
                                                             "conv phase dw"),
                                                 "conv phase dw"),
                                     g.N,
                                     F_padded_ == kTapLanes && tap_pack(g.F) > 1
                                         ? kPackedDwGroupPositions
                                         : kGroupPositions)),
      offsets_(phase_offsets(g, Hs_, Ws_)),
      pack_(F_padded_ == kTapLanes ? tap_pack(g.F) : 1),
      grid_(lanes ? LaneGrid(g.Ho, Ws_, 0, g.Wo) : LaneGrid(0, 1, 0, 0)) {}

int64_t PhaseWeightGradient::image_floats() const {
    // an image's planes, then its output gradient: on the lane kernel's grid (F rows of
    // dout_grid_), else transposed (positions x F_padded)
    return checked_add(planes_floats_,
                       lanes_ ? checked_mul(g_.F, dout_grid_, "conv phase dw")
                              : checked_mul(g_.positions(), F_padded_, "conv phase dw"),
                       "conv phase dw");
}

int64_t PhaseWeightGradient::scratch_floats() const {
    return checked_mul(group_, image_floats(), "conv phase dw");
}

void PhaseWeightGradient::images(const float* x, const float* dout, int64_t count, float* dw_t,
                                 float* db, float* scratch, const float* after,
                                 const float* after_dout) const {
    if (lanes_) return lane_images(x, dout, count, dw_t, db, scratch);
    const int64_t P = g_.positions();
    float* dout_t = scratch + group_ * planes_floats_;  // its padding columns stay zero
    const int64_t image = g_.C * g_.H * g_.W;
    for (int64_t first = 0; first < count; first += group_) {
        const int64_t images = std::min(group_, count - first);
        // the next group's input and output gradient, or the image after them
        const int64_t later = std::min(group_, count - first - images);
        const int64_t next_images = later > 0 ? later : 1;
        const float* next_x = later > 0 ? x + (first + images) * image : after;
        const float* next_dout = later > 0 ? dout + (first + images) * g_.F * P : after_dout;
        const TapConv t{g_.taps(), g_.F, F_padded_, g_.Ho * Ws_, g_.taps(), nullptr,
                        {{next_x, next_x ? next_images * image : 0},
                         {next_dout, next_dout ? next_images * g_.F * P : 0}},
                        pack_};
        const int64_t packed_floats = g_.Ho * ceil_div(g_.Wo, pack_) * kTapLanes;  // an image's
        for (int64_t i = 0; i < images; ++i) {
            const int64_t n = first + i;
            split_phases(g_, Hs_, Ws_, x + n * image, scratch + i * planes_floats_);
            float* image_t = dout_t + i * P * F_padded_;
            tap_transpose_avx512(g_.F, P, dout + n * g_.F * P, P, image_t, F_padded_);
            column_sums_avx512(P, g_.F, image_t, F_padded_, db);
            if (pack_ > 1) {
                pack_dw_positions_avx512(g_.Ho, g_.Wo, g_.F, pack_, image_t,
                                         dout_t + i * packed_floats);
            }
        }
        tap_conv_dw_avx512(t, {images, planes_floats_, g_.Ho, g_.Wo, Ws_}, offsets_.data(),
                           scratch, dout_t, dw_t);
    }
}

void PhaseWeightGradient::lane_images(const float* x, const float* dout, int64_t count,
                                      float* dw_t, float* db, float* scratch) const {
    const int64_t image = g_.C * g_.H * g_.W, dout_image = g_.F * g_.positions();
    const int64_t dout_floats = g_.F * dout_grid_;
    float* douts = scratch + group_ * planes_floats_;  // their columns past Wo stay zero
    for (int64_t first = 0; first < count; first += group_) {
        const int64_t images = std::min(group_, count - first);
        for (int64_t i = 0; i < images; ++i) {
            const int64_t n = first + i;
            split_phases(g_, Hs_, Ws_, x + n * image, scratch + i * planes_floats_);
            lane_dw_dout_avx512(g_.F, g_.Ho, g_.Wo, Ws_, dout + n * dout_image,
                                douts + i * dout_floats, dout_grid_, db);
        }
        const LaneDw t{g_.taps(), g_.F, images, planes_floats_,
                       static_cast<int64_t>(grid_.keep.size()), dout_grid_, dout_floats,
                       grid_.keep.data()};
        lane_conv_dw_avx512(t, offsets_.data(), scratch, douts, dw_t);
    }
}

namespace {

// The padded output gradient that dx's phases read: dout with `top` rows and `left`
// columns of zeros before it, one fewer than the most taps a phase has, in rows as wide
// as a phase plane's or as the output's and the left pad, and no wider: a read past a
// row's end, by a tap of a column of the phase, lands in the zeros of its tail or of the
// next row's left pad (32-pixel rows, 3x3 stride 2: 17 columns, 1 of them computed and
// dropped where a pad on each side would make it 2 of 18).
struct PaddedDout {
    explicit PaddedDout(const ConvGeometry& g)
        : top(ceil_div(g.HH, g.stride) - 1),
          left(ceil_div(g.WW, g.stride) - 1),
          Hd(ceil_div(g.H + 2 * g.pad, g.stride) + top),
          Wd(std::max(ceil_div(g.W + 2 * g.pad, g.stride), g.Wo + left)),
          floats(CacheLineScratch::round_up_to_line(
              checked_add(checked_mul(g.F, Hd * Wd, "conv phase dout"), g.WW + kTapRows,
                          "conv phase dout"))) {}
    // Image dout_n's interior into padded (whose borders stay zero).
    void copy(const ConvGeometry& g, const float* dout_n, float* padded) const {
        for (int64_t f = 0; f < g.F; ++f) {
            copy_rows_avx512(g.Ho, g.Wo, dout_n + f * g.Ho * g.Wo, g.Wo,
                             padded + (f * Hd + top) * Wd + left, Wd);
        }
    }
    int64_t top, left, Hd, Wd, floats;
};

// dx on the lane kernel: each phase (a, b) of dx, rows i0 .. i1 - 1 and columns j0 .. j1 - 1
// of its plane, is a stride-1 sum over the padded dout of the taps (f, m, n) = filter f's
// (s m + a, s n + b) turned around, in the order the tap kernel sums them (the same bits),
// with the channels in registers; its rows then go to every s-th pixel of dx's. Only what
// the lane kernel reads is set up (per call a few us on a batch of 1-4 small images).
void lane_input_gradient(const ConvGeometry& g, const float* dout, const float* w, float* dx) {
    const int64_t s = g.stride, C = g.C, F = g.F, p = g.pad, kernel = g.HH * g.WW;
    const PaddedDout pd(g);
    struct Phase {
        int64_t a, b, i0, i1, j0, j1;
        std::vector<int64_t> offsets;
        std::vector<float> w_t;  // taps x C
        LaneGrid grid;
    };
    std::vector<Phase> phases;
    int64_t largest = 0;  // positions of the largest phase
    for (int64_t a = 0; a < s; ++a) {
        for (int64_t b = 0; b < s; ++b) {
            const int64_t i0 = first_real(s, a, p), i1 = end_real(s, a, p, g.H);
            const int64_t j0 = first_real(s, b, p), j1 = end_real(s, b, p, g.W);
            if (i1 <= i0 || j1 <= j0) continue;
            Phase ph{a, b, i0, i1, j0, j1, {}, {}, LaneGrid(i1 - i0, pd.Wd, j0, j1 - j0)};
            const int64_t M = a < g.HH ? ceil_div(g.HH - a, s) : 0;
            const int64_t Nw = b < g.WW ? ceil_div(g.WW - b, s) : 0;
            ph.offsets.reserve(F * M * Nw);
            ph.w_t.reserve(F * M * Nw * C);
            for (int64_t f = 0; f < F; ++f) {
                for (int64_t m = 0; m < M; ++m) {
                    for (int64_t n = 0; n < Nw; ++n) {
                        ph.offsets.push_back((f * pd.Hd + pd.top - m) * pd.Wd + pd.left - n);
                        const float* tap = w + f * C * kernel + (s * m + a) * g.WW + s * n + b;
                        for (int64_t c = 0; c < C; ++c) ph.w_t.push_back(tap[c * kernel]);
                    }
                }
            }
            largest = std::max(largest, (i1 - i0) * (j1 - j0));
            phases.push_back(std::move(ph));
        }
    }
    // per thread, on a cache line: the padded dout, then a phase's dx (C x rows x columns)
    const int64_t out_at = pd.floats;
    const int64_t scratch = checked_add(out_at, checked_mul(C, largest, "conv phase dx"), "conv phase dx");
    const int threads = team_size(g.N);
    CacheLineScratch scratches(threads, scratch);
    const std::vector<float> no_bias(C, 0.0f);
    parallel_for_dynamic(threads, g.N, 1, [&](int64_t n, int t) {
        float* doutp = scratches.scratch_of(t);
        float* out = doutp + out_at;
        pd.copy(g, dout + n * F * g.Ho * g.Wo, doutp);
        float* dx_n = dx + n * C * g.H * g.W;
        for (const Phase& ph : phases) {
            const int64_t rows = ph.i1 - ph.i0, cols = ph.j1 - ph.j0;
            if (ph.offsets.empty()) {  // no tap reaches this phase: its dx is 0
                std::fill(out, out + C * rows * cols, 0.0f);
            } else {
                const LaneConv lc{static_cast<int64_t>(ph.offsets.size()), C, ph.grid.Q,
                                  rows * cols, ph.grid.keep.data(), ph.grid.dest.data()};
                lane_conv_forward_avx512(lc, ph.offsets.data(), doutp + ph.i0 * pd.Wd,
                                         ph.w_t.data(), no_bias.data(), out);
            }
            for (int64_t c = 0; c < C; ++c) {
                for (int64_t i = ph.i0; i < ph.i1; ++i) {
                    const float* src = out + (c * rows + i - ph.i0) * cols;
                    float* row = dx_n + (c * g.H + s * i + ph.a - p) * g.W + ph.b - p;
                    for (int64_t j = ph.j0; j < ph.j1; ++j) row[s * j] = src[j - ph.j0];
                }
            }
        }
    });
}

}  // namespace

namespace {

// A window of a plane: its first pixel's offset in the plane (outside it where the window
// is clipped at the top or left) and its taps inside the image, rows kh0 .. kh1 - 1 and
// columns kw0 .. kw1 - 1 (whole: all of them).
struct WindowInside {
    int64_t at, kh0, kh1, kw0, kw1;
    bool whole;
};

// The floats a copy of a whole window's row of K taps moves at once (CopyRows below): 3
// and 5 as 4 and 8 (one 16- or 32-byte move each way instead of 3 or 5 of a float), the
// floats past the row's taps the next row's, written after. 0: a float at a time.
constexpr int row_copy_floats(int K) { return K == 3 ? 4 : K == 5 ? 8 : 0; }

// inside(column float, pixel) for each tap of a window of K x K inside the image: the
// loops of constant length unrolled, and in a clipped window the taps outside skipped by
// branches that go the same way on every channel (through loops of the clipped rows'
// length, the col2im took 1.5x as long on 16-pixel 3x3 layers, and dx as columns 1.06x on
// random padded layers). CopyRows (im2col: inside copies the pixel into the column): a
// whole window's rows of 3 or 5 taps copied row_copy_floats at a time, but for its last
// row (the last channel's), so no float past the column is written nor past the image
// read; the column then holds the same floats (the weight gradient of 32 -> 64 3x3 @16
// at batch 1 in 0.90x the time of a float at a time).
template <int K, bool Clipped, bool CopyRows, class Column, class Pixel, class Inside>
void window_taps(int64_t C, int64_t plane, int64_t W, Column* col, Pixel* image,
                 const WindowInside& window, Inside inside) {
    constexpr int run = row_copy_floats(K);
    if constexpr (CopyRows && run > 0 && !Clipped) {
        for (int64_t c = 0; c < C; ++c, col += K * K, image += plane) {
#pragma GCC unroll 5
            for (int kh = 0; kh < K; ++kh) {
                if (c + 1 < C || kh + 1 < K) {
                    std::memcpy(col + kh * K, image + window.at + kh * W, run * sizeof(float));
                    continue;
                }
#pragma GCC unroll 5
                for (int kw = 0; kw < K; ++kw) {
                    inside(col[kh * K + kw], image[window.at + kh * W + kw]);
                }
            }
        }
        return;
    }
    for (int64_t c = 0; c < C; ++c, col += K * K, image += plane) {
#pragma GCC unroll 5
        for (int kh = 0; kh < K; ++kh) {
            if constexpr (Clipped) {
                if (kh < window.kh0 || kh >= window.kh1) continue;
            }
#pragma GCC unroll 5
            for (int kw = 0; kw < K; ++kw) {
                if constexpr (Clipped) {
                    if (kw < window.kw0 || kw >= window.kw1) continue;
                }
                inside(col[kh * K + kw], image[window.at + kh * W + kw]);
            }
        }
    }
}

template <int K, bool CopyRows, class Column, class Pixel, class Inside>
void square_window_taps(int64_t C, int64_t plane, int64_t W, Column* col, Pixel* image,
                        const WindowInside& window, Inside inside) {
    if (window.whole) {
        window_taps<K, false, CopyRows>(C, plane, W, col, image, window, inside);
    } else {
        window_taps<K, true, CopyRows>(C, plane, W, col, image, window, inside);
    }
}

// The columns of one image (positions x C k k, cols_t: position (oy, ox)'s at row
// oy * Wo + ox, `row` floats apart, its tap (c, kh, kw) at (c * HH + kh) * WW + kw)
// against the pixels their taps read: position after position, each window's taps in a
// column's order, inside(column float, pixel) for the taps inside the image (none for
// those in the padding); CopyRows where inside copies the pixel into the column
// (window_taps).
template <bool CopyRows = false, class Column, class Pixel, class Inside>
void for_each_window_tap(const ConvGeometry& g, Column* cols_t, int64_t row, Pixel* image,
                         Inside inside) {
    const int64_t plane = g.H * g.W;
    for (int64_t oy = 0; oy < g.Ho; ++oy) {
        const int64_t y0 = oy * g.stride - g.pad;  // the window's rows y0 + kh, in the image
        const int64_t kh0 = std::max<int64_t>(0, -y0), kh1 = std::min(g.HH, g.H - y0);
        for (int64_t ox = 0; ox < g.Wo; ++ox) {
            const int64_t x0 = ox * g.stride - g.pad;
            const int64_t kw0 = std::max<int64_t>(0, -x0), kw1 = std::min(g.WW, g.W - x0);
            Column* col = cols_t + (oy * g.Wo + ox) * row;
            const WindowInside window{y0 * g.W + x0, kh0, kh1, kw0, kw1,
                                      kh1 - kh0 == g.HH && kw1 - kw0 == g.WW};
            const auto square = [&](auto K) {
                square_window_taps<decltype(K)::value, CopyRows>(g.C, plane, g.W, col, image,
                                                                 window, inside);
            };
            switch (g.HH == g.WW ? g.HH : 0) {  // square windows of 2-5, unrolled
                case 2: square(std::integral_constant<int, 2>{}); continue;
                case 3: square(std::integral_constant<int, 3>{}); continue;
                case 4: square(std::integral_constant<int, 4>{}); continue;
                case 5: square(std::integral_constant<int, 5>{}); continue;
                default: break;
            }
            // else (not square, or past 5x5) through loops of the clipped rows' length
            for (int64_t c = 0; c < g.C; ++c) {
                for (int64_t kh = kh0; kh < kh1; ++kh) {
                    Pixel* pixels = image + (c * g.H + y0 + kh) * g.W + x0 + kw0;
                    Column* taps = col + (c * g.HH + kh) * g.WW + kw0;
                    for (int64_t kw = 0; kw < kw1 - kw0; ++kw) inside(taps[kw], pixels[kw]);
                }
            }
        }
    }
}

}  // namespace

// dx of one image as columns: cols_t (positions x C k k) = dout^T w on the tap kernel, whose
// lanes are then the weights' own rows (filter f's C x k x k floats: tap f of the kernel) and
// whose input is dout (tap f at f * positions, the positions consecutive), so nothing of the
// weights is packed but where a row does not fill whole vectors of 16 (24 channels of 3x3:
// 216 floats): then the rows are copied, each ending in zeros up to the next vector (224),
// and the columns' floats past the row are never read. Then each column's float is added
// to the dx pixel its tap reads (col2im), position after position. Per image the kernel's
// work is the phases' (every output position times every tap), the col2im's a float per
// position and tap where the phases pack the whole weight tensor once per call
// (column_input_gradient_pays).
void column_input_gradient(const ConvGeometry& g, const float* dout, const float* w, float* dx) {
    const int64_t P = g.positions(), kernel = g.HH * g.WW;
    const int64_t row = g.C * kernel;                // a filter's weights: a column's floats
    const int64_t lanes = round_up(row, kTapLanes);  // and the zeros after them
    std::vector<float> padded_w;
    if (lanes > row) {
        padded_w.assign(checked_mul(g.F, lanes, "conv column dx"), 0.0f);
        for (int64_t f = 0; f < g.F; ++f) std::copy_n(w + f * row, row, &padded_w[f * lanes]);
        w = padded_w.data();
    }
    // per thread, on cache lines: dout and the floats the kernel's last tile reads past it,
    // then cols_t (P rounded up to kTapRows rows)
    const int64_t dout_floats = CacheLineScratch::round_up_to_line(
        checked_add(checked_mul(g.F, P, "conv column dx"), kTapRows, "conv column dx"));
    const int64_t scratch = checked_add(
        dout_floats, checked_mul(round_up(P, kTapRows), lanes, "conv column dx"), "conv column dx");
    std::vector<int64_t> offsets(g.F);
    for (int64_t f = 0; f < g.F; ++f) offsets[f] = f * P;
    const std::vector<float> no_bias(lanes, 0.0f);
    const TapConv t{g.F, lanes, lanes, P, tap_conv_block(lanes, P), nullptr, {}, 1};
    const int threads = team_size(g.N);
    CacheLineScratch scratches(threads, scratch);  // zeroed: the reads past dout
    parallel_for_dynamic(threads, g.N, 1, [&](int64_t n, int th) {
        float* dout_n = scratches.scratch_of(th);
        float* cols_t = dout_n + dout_floats;
        std::copy_n(dout + n * g.F * P, g.F * P, dout_n);
        tap_conv_forward_avx512(t, offsets.data(), dout_n, w, no_bias.data(), cols_t);
        float* dx_n = dx + n * g.C * g.H * g.W;
        std::fill_n(dx_n, g.C * g.H * g.W, 0.0f);
        for_each_window_tap(g, static_cast<const float*>(cols_t), lanes, dx_n,
                            [](const float& col, float& pixel) { pixel += col; });
    });
}

// The kernel's tiles write the rows of filters up to the next multiple of 2, 4 or 8 (its
// last tile's step): a part of dw's filters, or dw itself, takes the kernel's rows
// straight where it is a whole number of these (and the columns fill whole vectors).
constexpr int64_t kColumnDwRowStep = 8;

// dw (F x C k k, its own layout) of the whole batch as columns: the rows of im2col (each
// output position's C x k x k pixels, 0 in the padding: cols_t, positions x C k k) are the
// tap kernel's weights, a tap per position of the batch, and the output gradient
// transposed (positions x F) its input, the filters its positions. So dw's row f is the
// sum over the batch's positions, in order, of dout[f] at the position times its column:
// nothing is packed, no slot zeroed, nothing transposed after (the phases transpose their
// taps x F sums into dw). A column of C k k floats not filling whole vectors of 16 ends in
// zeros up to the next one (the kernel's lanes), and the kernel's rows of dw are then
// copied into dw's. The rows of im2col are read from a padded copy of the image, so
// every window is whole (through windows clipped at the borders, 3x3 on 8-pixel images,
// they took 15% of dw's time at batch 4). db is summed from dout transposed. Threads
// split the images for the columns, then the filters.
void column_weight_gradient(const ConvGeometry& g, const float* dout, const float* x, float* dw,
                            float* db) {
    const int64_t P = g.positions(), row = g.C * g.HH * g.WW;
    const int64_t lanes = round_up(row, kTapLanes);  // a column's floats and zeros after
    const int64_t taps = checked_mul(g.N, P, "conv column dw");
    // on cache lines: cols_t, then dout_t and the floats the kernel's last tile reads past
    // it, then (where F is not a whole number of row steps, or the columns' lanes not
    // filled) the kernel's rows of dw
    const int64_t cols_floats =
        CacheLineScratch::round_up_to_line(checked_mul(taps, lanes, "conv column dw"));
    const int64_t dout_floats = CacheLineScratch::round_up_to_line(
        checked_add(checked_mul(taps, g.F, "conv column dw"), kTapRows, "conv column dw"));
    const bool straight = g.F % kColumnDwRowStep == 0 && lanes == row;
    const int64_t out_floats =
        straight ? 0 : checked_mul(round_up(g.F, kColumnDwRowStep), lanes, "conv column dw");
    CacheLineScratch scratch(
        1, checked_add(checked_add(cols_floats, dout_floats, "conv column dw"), out_floats,
                       "conv column dw"),
        CacheLineScratch::Fill::none);
    float* cols_t = scratch.scratch_of(0);
    float* dout_t = cols_t + cols_floats;
    float* out = straight ? dw : dout_t + dout_floats;
    std::fill(dout_t + taps * g.F, dout_t + dout_floats, 0.0f);
    // the images padded: the same windows, none clipped (each thread's, borders zeroed once)
    ConvGeometry padded = g;
    padded.H = g.H + 2 * g.pad;
    padded.W = g.W + 2 * g.pad;
    padded.pad = 0;
    const int64_t image = g.C * g.H * g.W;
    const int threads = team_size(g.N);
    CacheLineScratch pads(g.pad > 0 ? threads : 0,
                          checked_mul(g.C, padded.H * padded.W, "conv column dw"));
    parallel_for_dynamic(threads, g.N, 1, [&](int64_t n, int th) {
        const float* x_n = x + n * image;
        if (g.pad > 0) {
            float* pad_n = pads.scratch_of(th);
            pad_interior(g.C, g.H, g.W, padded.H, padded.W, g.pad, g.pad, x_n, pad_n);
            x_n = pad_n;
        }
        float* cols_n = cols_t + n * P * lanes;
        for_each_window_tap<true>(padded, cols_n, lanes, x_n,
                                  [](float& col, const float& pixel) { col = pixel; });
        for (int64_t q = 0; q < P && lanes > row; ++q) {
            std::fill(cols_n + q * lanes + row, cols_n + (q + 1) * lanes, 0.0f);
        }
        tap_transpose_avx512(g.F, P, dout + n * g.F * P, P, dout_t + n * P * g.F, g.F);
    });
    std::fill_n(db, g.F, 0.0f);
    column_sums_avx512(taps, g.F, dout_t, g.F, db);
    std::vector<int64_t> offsets(taps);
    for (int64_t t = 0; t < taps; ++t) offsets[t] = t * g.F;
    const std::vector<float> no_bias(lanes, 0.0f);
    const int parts = team_size(ceil_div(g.F, kColumnDwRowStep));
    const int64_t part_rows = round_up(ceil_div(g.F, parts), kColumnDwRowStep);
    parallel_for(parts, parts, [&](int64_t part) {
        const int64_t f0 = part * part_rows, f1 = std::min(g.F, f0 + part_rows);
        if (f1 <= f0) return;
        const TapConv t{taps, lanes, lanes, f1 - f0, tap_conv_block(lanes, g.F), nullptr, {}, 1};
        tap_conv_forward_avx512(t, offsets.data(), dout_t + f0, cols_t, no_bias.data(),
                                out + f0 * lanes);
    });
    if (!straight) {
        for (int64_t f = 0; f < g.F; ++f) std::copy_n(out + f * lanes, row, dw + f * row);
    }
}

namespace {

// The share of a row's (or column's) window taps that land inside the image: the columns
// compute the others too, into the padding (3x3 stride 2 pad 1 on 8 pixels: 11 of 12).
double taps_inside(int64_t size, int64_t outputs, int64_t window, int64_t stride, int64_t pad) {
    int64_t inside = 0;
    for (int64_t o = 0; o < outputs; ++o) {
        const int64_t first = o * stride - pad;
        const int64_t last = std::min(window, size - first);  // past the window's last inside
        inside += std::max<int64_t>(0, last - std::max<int64_t>(0, -first));
    }
    return outputs > 0 ? double(inside) / (double(outputs) * double(window)) : 1.0;
}

}  // namespace

// dx alone against the phases (bench_lane_rules.py --path columns: the layers students
// build, 1-256 channels and filters, half of each 1-48, odd counts too; 1x1-7x7 windows,
// stride 2-3, pad 0-3, 2-64 px; batches 1, 1, 2, 4, 16, 64; one thread, thread CPU time,
// the fastest of 5 blocks, two turns in one process): the columns pay where the batch's
// output positions are few against the filters (the col2im, a float per position and
// tap, grows with the positions; the phases' packing of the weights with the filters)
// and their windows lie inside the image (the taps in the padding are computed for
// nothing): positions at most twice the filters, weighed by 1 / (the share of the taps
// inside)^4. And at any batch where an image has at most 25 output positions, weighed by
// that share, on 8+ filters: there the phases run s x s calls of the tap kernel an image
// over a handful of positions each (16 x 37 -> 116 3x3 @12: the columns 0.68x, 64 x 26 ->
// 48 3x3 pad 0 @10 0.61x), but on fewer filters the col2im, which does not shrink with
// them, outweighs the phases' work (the random networks' 43 -> 3 5x5 @9x12 1.3-1.85x,
// 32 -> 6 3x3 @6 1.2-1.3x at batch 16-64). Fitted on --seed 1 and 2, 80 layers each:
// 0.808x, 0.839x the phases' time; on --seed 3, 4 and 5 (batches 1-4) held out 0.836x,
// 0.873x, 0.817x (the batch's positions alone 0.864x, 0.899x, 0.875x, 0.893x, 0.822x;
// the better path each time 0.781x, 0.812x, 0.794x, 0.842x, 0.798x;
// docs/performance/kernels.md, "dx as columns").
// And where every window lies inside the image (pad 0) at up to 100 output positions an
// image, on at least a filter per 4 channels: there the phases' s x s calls still run
// over few positions each, and no tap of the columns falls in the padding (33 -> 39 3x3
// @21 0.76-0.82x at batches 1-64, 39 -> 32 5x5 @16x15 0.80x); but the col2im adds a float
// per position and tap of every channel whatever the filters, so on many channels and few
// filters the columns lose (4 x 205 -> 28 6x6 @20 1.34x, 4 x 210 -> 14 2x2 @20 1.24x).
// Fitted on the pad-0 layers of at most 200 positions an image the rule before left to
// the phases, of 1500 draws of --seed 11 (131 layers): 1.000x -> 0.923x the phases' time
// (the better path 0.873x); held out, those of --seed 12 and 13 (148, 124 layers) 0.943x
// and 0.982x (0.882x, 0.904x), the random networks' layers (--networks 0,1,2: 135)
// 0.958x -> 0.947x (0.934x), --seed 1-5 (80 layers each) within 0.007.
constexpr double kColumnDxMostPositionsPerFilter = 2.0, kColumnDxMostImagePositions = 25.0;
constexpr int64_t kColumnDxImageLeastFilters = 8;
constexpr int64_t kColumnDxInsideMostImagePositions = 100, kColumnDxInsideChannelsPerFilter = 4;

bool column_input_gradient_pays(const ConvGeometry& g) {
    const double inside = taps_inside(g.H, g.Ho, g.HH, g.stride, g.pad) *
                          taps_inside(g.W, g.Wo, g.WW, g.stride, g.pad);
    const double squared = inside * inside;
    return double(g.N) * double(g.positions()) <=
               kColumnDxMostPositionsPerFilter * double(g.F) * squared * squared ||
           (g.F >= kColumnDxImageLeastFilters &&
            double(g.positions()) <= kColumnDxMostImagePositions * inside) ||
           (g.pad == 0 && g.positions() <= kColumnDxInsideMostImagePositions &&
            g.C <= kColumnDxInsideChannelsPerFilter * g.F);
}

// dw and db alone against the phases, one thread, thread CPU time, min of 5 blocks, two
// turns in one process (set_column_dw; bench_lane_rules.py --path columns --pass dw), over
// random layers of any channel and filter count (3-256, half of each 3-48; 2x2-5x5,
// stride 2-3, 4-32 px, batch 1-4): the columns pay where the batch's output positions are
// few against the filters (the im2col rows, a float per position and tap, grow with the
// positions; what the phases add per call, taps x F sums zeroed, added and transposed,
// with the filters), and on layers of few filters at up to 64 positions more. Fitted on 70
// layers (--seed 2 --batches 1,1,2,3,4): under twice the filters and 64 more, 0.694x the
// phases' time over all (the better path each time 0.690x; fewer positions than filters,
// as fitted before on multiples of 16 channels and filters, 0.769x). Checked on 80 and 60
// held out (--seed 1, --seed 3): 0.712x and 0.689x (0.702x, 0.683x; before 0.746x,
// 0.762x); on 50 more (--seed 4) as the rule picks 0.740x (before 0.802x), 0.30-1.16x
// where it runs. The zoo's 32 -> 64 3x3 stride 2 @16 at batch 1 takes it at 1.01-1.02x.
// Off the layers it was fitted on (1x1 and 7x7 windows, 1-2 channels), the random student
// networks' strided layers at batch 1 that it took lost to the phases (1.15-1.50x: 3 -> 30
// 1x1 @18x23, 45 -> 6 7x7 @14x19, 2 -> 19 5x5 @19x23), so there the rule stays the one
// before: fewer positions than filters.
// And at any batch where an image's output positions times the window's taps are at most
// 256 (3x3 on 5x5 outputs, 5x5 on 3x3, 7x7 on 2x2), on 2x2 and wider windows of 3+
// channels: there the phases' planes are a handful of positions each, and the columns won
// on the random networks' layers at batches 16 and 64 (64 x 33 -> 35 3x3 @7x5 0.53x,
// 16 x 35 -> 42 3x3 @9x11 0.71x, 16 x 3 -> 32 5x5 @9 0.91x) and on layers of any batch
// of bench_lane_rules.py's draws (1-256 channels, 1x1-7x7, batches 1-64); on 1x1 windows
// they lose (16 x 5 -> 24 1x1 @6 1.16x), as on images past the bound (16 x 6 -> 14 5x5
// @10x7, 20 positions of 25 taps, 1.04x; 16 x 12 -> 43 7x7 @11x16 1.19x); 1-2 channels
// stay out, as in the batch's term. Fitted on --seed 1 --batches 1,1,2,4,16,64 (80 layers) and the networks'
// strided layers (--networks 0,1,2 --batches 1,16,64, 603): the phases' time 0.786x ->
// 0.754x and 0.977x -> 0.972x (the better path each time 0.736x, 0.960x); held out,
// --seed 2, 3 and 4: 0.804x -> 0.779x, 0.848x -> 0.826x, 0.823x -> 0.796x
// (docs/performance/kernels.md, "dw as columns").
constexpr int64_t kColumnDwPositionsPerFilter = 2, kColumnDwPositionsBeyond = 64;
constexpr double kColumnDwMostImageWindowTaps = 256.0;

bool column_weight_gradient_pays(const ConvGeometry& g) {
    const bool fitted = g.HH == g.WW && g.HH >= 2 && g.HH <= 5 && g.C >= 3;
    const int64_t positions = g.N * g.positions();
    const bool few_positions =
        fitted ? positions < kColumnDwPositionsPerFilter * g.F + kColumnDwPositionsBeyond
               : positions < g.F;
    const bool small_images = g.C >= 3 && g.HH >= 2 && g.WW >= 2 &&
                              double(g.positions()) * double(g.HH) * double(g.WW) <=
                                  kColumnDwMostImageWindowTaps;
    return few_positions || small_images;
}

void phase_input_gradient(const ConvGeometry& g, const float* dout, const float* w, float* dx,
                          bool lanes) {
    if (lanes) {
        lane_input_gradient(g, dout, w, dx);
        return;
    }
    const int64_t s = g.stride, C = g.C, F = g.F;
    const PaddedDout pd(g);
    const int64_t top = pd.top, left = pd.left, Hd = pd.Hd, Wd = pd.Wd;
    const int64_t C_padded = round_up(C, kTapLanes);
    struct Phase {
        int64_t a, b, i0, i1, j0, j1;
        int64_t M, Nw;  // the filters' taps (s m + a, s n + b) in this phase: m < M, n < Nw
        std::vector<int64_t> offsets;
        CacheLineScratch wpack;  // taps (f, m, n) x C_padded
        // The columns computed, j0 .. j1-1 through the map `at`, or without one all Wd of
        // the padded dout (from 0); the positions, (i1 - i0) rows of `width`.
        std::vector<int64_t> at;
        int64_t first, width;
        int64_t positions() const { return (i1 - i0) * width; }
    };
    const int64_t kernel = g.HH * g.WW;
    std::vector<Phase> phases;
    int64_t widest = 0;  // rows of the largest phase's output
    for (int64_t a = 0; a < s; ++a) {
        for (int64_t b = 0; b < s; ++b) {
            Phase ph{a,
                     b,
                     first_real(s, a, g.pad),
                     end_real(s, a, g.pad, g.H),
                     first_real(s, b, g.pad),
                     end_real(s, b, g.pad, g.W),
                     a < g.HH ? ceil_div(g.HH - a, s) : 0,
                     b < g.WW ? ceil_div(g.WW - b, s) : 0,
                     {},
                     {},
                     {},
                     0,
                     Wd};
            if (maps_positions(C_padded, ph.j1 - ph.j0, Wd, false)) {
                ph.at = grid_positions(ph.i1 - ph.i0, ph.j1 - ph.j0, Wd, ph.j0);
                ph.first = ph.j0;
                ph.width = ph.j1 - ph.j0;
            }
            // (every float written below, the padding lanes too)
            ph.wpack.assign(1, F * ph.M * ph.Nw * C_padded, CacheLineScratch::Fill::none);
            for (int64_t f = 0; f < F; ++f) {
                for (int64_t m = 0; m < ph.M; ++m) {
                    for (int64_t n = 0; n < ph.Nw; ++n) {
                        ph.offsets.push_back((f * Hd + top - m) * Wd + left - n);
                    }
                }
            }
            widest = std::max(widest, round_up(ph.positions(), kTapRows));
            phases.push_back(std::move(ph));
        }
    }
    // The phases' packed weights, a filter at a time: its taps transposed in registers into
    // rows of channels (C_padded floats, the padding lanes zero), each stored straight to
    // its phase: tap (kh, kw) is row (f, kh / s, kw / s) of phase (kh % s, kw % s).
    // Straight to the phases because at batch 1 the packing is a fifth of dx: gathered
    // float by float from w it cost as much as a small batch's dx, and through any buffer
    // (all the weights', or a filter's in L1) 1.02-1.5x this dx's time (3x3 and 5x5
    // stride 2, 16-128 channels on 4-32 pixels).
    std::vector<float*> tap_rows(kernel);        // the rows of the filter being packed
    std::vector<int64_t> filter_floats(kernel);  // between two filters' rows of a tap
    for (int64_t kh = 0; kh < g.HH; ++kh) {
        for (int64_t kw = 0; kw < g.WW; ++kw) {
            Phase& ph = phases[(kh % s) * s + kw % s];
            tap_rows[kh * g.WW + kw] =
                ph.wpack.scratch_of(0) + (kh / s * ph.Nw + kw / s) * C_padded;
            filter_floats[kh * g.WW + kw] = ph.M * ph.Nw * C_padded;
        }
    }
    for (int64_t f = 0; f < F; ++f) {
        tap_transpose_to_rows_avx512(C, kernel, w + f * C * kernel, kernel, tap_rows.data());
        for (int64_t t = 0; t < kernel; ++t) tap_rows[t] += filter_floats[t];
    }
    const int64_t padded = pd.floats;
    // per thread, each on a cache line (the kernel loads and stores out_t's rows as whole
    // vectors): the padded dout, then with stride 2 the two column phases' outputs
    // (positions x channels) of a row phase, merged from there into dx rows; with larger
    // strides a phase's output, and the s phases of a row phase transposed (channels x
    // positions), merged from those
    const int64_t p = g.pad, W = g.W, buffers = s == 2 ? 2 : s + 1;
    const int64_t wide_floats = checked_mul(widest, C_padded, "conv phase dx");
    const int64_t scratch = checked_add(
        padded, checked_mul(buffers, wide_floats, "conv phase dx"), "conv phase dx");
    // With stride 2, row phase a's pixel pairs: dx pixel (2i + a - pad, 2k) from column
    // k + pad / 2 of column phase pad % 2 and the pixel after it (where the row has one)
    // from column k + (pad + 1) / 2 of the other, at their positions in the phases' outputs.
    std::vector<int64_t> pair_at[2][3];  // [a][first, second, dst]
    for (int64_t a = 0; a < 2 && s == 2; ++a) {
        const Phase& first = phases[a * 2 + p % 2];
        const Phase& second = phases[a * 2 + (p + 1) % 2];
        for (int64_t i = first.i0; i < first.i1; ++i) {
            for (int64_t k = 0; 2 * k < W; ++k) {
                pair_at[a][0].push_back((i - first.i0) * first.width + k + p / 2 - first.first);
                pair_at[a][1].push_back(2 * k + 1 < W ? (i - second.i0) * second.width + k +
                                                            (p + 1) / 2 - second.first
                                                      : -1);
                pair_at[a][2].push_back((2 * i + a - p) * W + 2 * k);
            }
        }
    }
    const int threads = team_size(g.N);
    // Only the padded dout's borders need zeros: the phases' outputs are written before they
    // are read.
    CacheLineScratch scratches(threads, scratch, CacheLineScratch::Fill::none);
    for (int t = 0; t < threads; ++t) std::fill_n(scratches.scratch_of(t), padded, 0.0f);
    const CacheLineScratch no_bias(1, C_padded);
    const int64_t image = C * g.H * W;
    // phase ph's output into out_t (positions x C_padded), from the padded dout, bringing
    // `prefetch` into L2 meanwhile
    const auto phase_output = [&](const Phase& ph, const float* doutp, float* out_t,
                                  TapPrefetch prefetch) {
        const int64_t taps = static_cast<int64_t>(ph.offsets.size());
        if (taps == 0) {  // no tap of the filters reaches this phase: its dx is 0
            std::fill(out_t, out_t + ph.positions() * C_padded, 0.0f);
            return;
        }
        const TapConv t{taps,
                        C,
                        C_padded,
                        ph.positions(),
                        tap_conv_block(C_padded, Hd * Wd * F / taps),
                        ph.at.empty() ? nullptr : ph.at.data(),
                        {prefetch}};
        tap_conv_forward_avx512(t, ph.offsets.data(), doutp + ph.i0 * Wd, ph.wpack.scratch_of(0),
                                no_bias.scratch_of(0), out_t);
    };
    parallel_for_dynamic(threads, g.N, 1, [&](int64_t n, int t) {
        float* doutp = scratches.scratch_of(t);
        float* out_t = doutp + padded;
        const float* dout_n = dout + n * F * g.Ho * g.Wo;
        pd.copy(g, dout_n, doutp);
        float* dx_n = dx + n * image;
        // With stride 2, row phase 0's kernels bring dx's lines into L2 for the merges'
        // stores, and row phase 1's the next image's dout for its copy.
        const int64_t dout_image = F * g.Ho * g.Wo;
        const float* next = n + 1 < g.N ? dout_n + dout_image : nullptr;
        const TapPrefetch prefetches[4] = {{dx_n, image / 2},
                                           {dx_n + image / 2, image - image / 2},
                                           {next, next ? dout_image / 2 : 0},
                                           {next ? next + dout_image / 2 : nullptr,
                                            dout_image - dout_image / 2}};
        for (int64_t a = 0; a < s; ++a) {
            if (s == 2) {
                phase_output(phases[a * 2], doutp, out_t, prefetches[a * 2]);
                phase_output(phases[a * 2 + 1], doutp, out_t + wide_floats, prefetches[a * 2 + 1]);
                const PhasePairs pairs{static_cast<int64_t>(pair_at[a][0].size()),
                                       pair_at[a][0].data(), pair_at[a][1].data(),
                                       pair_at[a][2].data()};
                merge_phase_pairs_avx512(pairs, C, out_t + (p % 2) * wide_floats,
                                         out_t + (p + 1) % 2 * wide_floats, C_padded, dx_n,
                                         g.H * W);
                continue;
            }
            float* planes = out_t + wide_floats;  // phase b at planes + b * wide_floats
            const int64_t i0 = phases[a * s].i0, i1 = phases[a * s].i1;
            for (int64_t b = 0; b < s; ++b) {
                const Phase& ph = phases[a * s + b];
                phase_output(ph, doutp, out_t, TapPrefetch{});
                tap_transpose_avx512(ph.positions(), C, out_t, C_padded, planes + b * wide_floats,
                                     ph.positions());
            }
            // dx row h = s*i + a - pad: its pixel w = s*k + r comes from phase
            // b = (r + pad) % s, column j = k + (r + pad) / s (split_phases the other way),
            // which that phase's plane holds at (channel c, row i, column j - first)
            for (int64_t c = 0; c < C; ++c) {
                for (int64_t i = i0; i < i1; ++i) {
                    float* row = dx_n + (c * g.H + s * i + a - p) * W;
                    for (int64_t r = 0; r < s && r < W; ++r) {
                        const Phase& ph = phases[a * s + (r + p) % s];
                        const float* src = planes + (r + p) % s * wide_floats +
                                           (c * (i1 - i0) + i - i0) * ph.width + (r + p) / s -
                                           ph.first;
                        for (int64_t k = 0; s * k + r < W; ++k) row[s * k + r] = src[k];
                    }
                }
            }
        }
    });
}

}  // namespace graphnet
