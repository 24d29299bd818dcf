// Average pooling of (H, W) planes on the calling thread (pool.h's windows): pool.cpp
// shares pieces of a few planes out across the threads; group_norm_loops.h pools a group's
// planes while they are in cache (a groupnorm -> activation -> avg_pool step). Compiled into each
// file that includes it (an anonymous namespace, no library header), with the same
// operations in the same order everywhere: the same bits.
#pragma once

#include <cstdint>

namespace graphnet {

// One plane's windows: H x W in, Ho x Wo out (pool.h's PoolGeometry without N and C).
struct AvgPoolPlane {
    int64_t H, W, pool_height, pool_width, stride, Ho, Wo;
    int64_t in_plane() const { return H * W; }
    int64_t out_plane() const { return Ho * Wo; }
};

// avg_pool_planes_forward's outputs (below) of `planes` planes on the calling thread, on an
// AVX-512 kernel of pool_avx512.h where the average pool takes one (pool.cpp: where it pays
// against these loops, the kernels active): true, else false and nothing written. The
// backward's likewise. Both the pool's gate and the groupnorm kernels' pooling
// (group_norm_loops.h) ask these: one rule, the same bits.
template <typename T>
bool avg_pool_planes_forward_on_avx512(const AvgPoolPlane& g, int64_t planes, const T* src,
                                       T* out);
template <typename T>
bool avg_pool_planes_backward_on_avx512(const AvgPoolPlane& g, int64_t planes, const T* grad,
                                        T* dx);

namespace {

// The sum of x[0..n): kLanes partial sums (independent adds the compiler vectorises), the
// entries past the last full set of lanes added to the first lanes, the lanes pairwise.
template <typename T>
T contiguous_sum(const T* x, int64_t n) {
    constexpr int64_t kLanes = 64 / sizeof(T);  // an AVX-512 vector, four SSE2 ones
    T lanes[kLanes] = {};
    const int64_t full = n / kLanes * kLanes;
    for (int64_t i = 0; i < full; i += kLanes) {
        for (int64_t l = 0; l < kLanes; ++l) lanes[l] += x[i + l];
    }
    for (int64_t i = full; i < n; ++i) lanes[i - full] += x[i];  // independent adds too
    for (int64_t width = kLanes / 2; width > 0; width /= 2) {
        for (int64_t l = 0; l < width; ++l) lanes[l] += lanes[l + width];
    }
    return lanes[0];
}

// Windows wider than the output row is long (a global pooling: one window, the plane):
// each window summed on its own, its rows in contiguous_sum's lanes (one run of rows when
// the window spans whole rows), rather than one output at a time along each window
// offset, a chain of dependent adds through memory (4x PyTorch's time on global pooling).
inline bool wide_windows(const AvgPoolPlane& g) {
    return g.pool_width > g.Wo;
}

// The 2x2 stride-2 windows of the CNNs, whose forward has loops of its own: (0 + the
// window's four entries in row-major order) / 4.
inline bool two_by_two_stride_2(const AvgPoolPlane& g) {
    return g.pool_height == 2 && g.pool_width == 2 && g.stride == 2;
}

template <typename T>
T window_sum(const AvgPoolPlane& g, const T* first) {
    if (g.pool_width == g.W) return contiguous_sum(first, g.pool_height * g.W);
    T sum = T(0);
    for (int64_t i = 0; i < g.pool_height; ++i) sum += contiguous_sum(first + i * g.W, g.pool_width);
    return sum;
}

// The forward of windows not wider than the output row (but the 2x2 stride-2 loop's) and
// the backward of those that do not tile the plane take the sums of all the windows of a
// stack of rows (planes one after another) at stride 1, in passes over the whole stack
// that each add one row or column of the windows (long vectorised loops over a band of
// rows on the stack, rather than loops over one output row of a few windows): each
// column's sum over the window's rows (top to bottom), then each window's sum of its
// columns' sums (left to right). The rows of a window that would cross into the next
// plane are computed and not read. Each window's sum is those operations whatever the
// band, the stack or the thread: the same bits. (64, 32, 32, 32) float32 3x3 stride 1, one thread: 3.4 ms forward and
// 6.1 ms backward on one output row at a time, its windows' offsets the outer loops.
constexpr int64_t kBand = 2048;  // entries of a band of rows, each of its two sums on the stack

// dst[k] = the sum of the `terms` entries at[k * spacing], at[k * spacing + step], ...
// for k < n, added in order, three or two a pass (one pass of one term at a time cost a
// load and a store of dst per add: 20-30% of the stacked loops' time). kSpacing is the
// spacing when it is a constant (1, 2: the compiler vectorises the loads), 0 for spacing.
template <int64_t kSpacing, typename T>
void add_in_order(const T* __restrict at, int64_t step, int64_t terms, int64_t n, T* __restrict dst,
                  int64_t spacing = kSpacing) {
    const int64_t sp = kSpacing ? kSpacing : spacing;
    int64_t i = terms < 3 ? terms : 3;
    if (i == 3) {
        for (int64_t k = 0; k < n; ++k) {
            dst[k] = at[k * sp] + at[k * sp + step] + at[k * sp + 2 * step];
        }
    } else if (i == 2) {
        for (int64_t k = 0; k < n; ++k) dst[k] = at[k * sp] + at[k * sp + step];
    } else {
        for (int64_t k = 0; k < n; ++k) dst[k] = at[k * sp];
    }
    for (; i + 1 < terms; i += 2) {
        const T* __restrict a = at + i * step;
        const T* __restrict b = a + step;
        for (int64_t k = 0; k < n; ++k) dst[k] = dst[k] + a[k * sp] + b[k * sp];
    }
    if (i < terms) {
        const T* __restrict a = at + i * step;
        for (int64_t k = 0; k < n; ++k) dst[k] += a[k * sp];
    }
}

template <typename T>
void stacked_window_sums(const T* src, int64_t pitch, int64_t rows, int64_t ph, int64_t pw,
                         T* column_sums, T* sums) {
    const int64_t n = rows * pitch;
    add_in_order<1>(src, pitch, ph, n, column_sums);
    add_in_order<1>(column_sums, 1, pw, n - pw + 1, sums);  // sums past n - pw are never read
}

// Whether the stacked loops take g's windows: at least a row of windows in a band.
inline bool stacks(const AvgPoolPlane& g, int64_t pitch) {
    return g.pool_height * pitch <= kBand;
}

// The forward at stride 1 of `planes` planes one after another: the sums of the windows
// of the stack of x's rows (a row t of the stack is row t % H of plane t / H).
template <typename T>
void avg_pool_stacked_forward(const AvgPoolPlane& g, int64_t planes, const T* src, T* out) {
    const T count = static_cast<T>(g.pool_height * g.pool_width);
    const int64_t rows = planes * g.H - g.pool_height + 1, band = kBand / g.W;
    T column_sums[kBand], sums[kBand];
    for (int64_t t0 = 0; t0 < rows; t0 += band) {
        const int64_t n = rows - t0 < band ? rows - t0 : band;
        stacked_window_sums(src + t0 * g.W, g.W, n, g.pool_height, g.pool_width, column_sums, sums);
        for (int64_t t = t0; t < t0 + n; ++t) {
            const int64_t r = t % g.H;
            if (r + g.pool_height > g.H) continue;  // a window across two planes
            T* __restrict dst = out + (t / g.H * g.Ho + r) * g.Wo;
            const T* __restrict row = sums + (t - t0) * g.W;
            for (int64_t ow = 0; ow < g.Wo; ++ow) dst[ow] = row[ow] / count;
        }
    }
}

// The forward at a stride of 2 or more: each output row's column sums (its window's rows,
// one after another in x) into a band, each row padded with zeros to a multiple of the
// stride, then the windows' sums of the whole band in one set of passes reading every
// stride-th column sum (those of a row's last windows read into the next row's: computed,
// not read). The stride-1 forward's operations in its order.
template <int64_t kStride, typename T>
void avg_pool_strided_forward(const AvgPoolPlane& g, int64_t planes, const T* src, T* out) {
    const int64_t stride = kStride ? kStride : g.stride;
    const T count = static_cast<T>(g.pool_height * g.pool_width);
    const int64_t pitch = (g.W + stride - 1) / stride * stride, per_row = pitch / stride;
    const int64_t rows = planes * g.Ho, band = (kBand - g.pool_width) / pitch;
    T column_sums[kBand], sums[kBand];
    for (int64_t b0 = 0; b0 < rows; b0 += band) {
        const int64_t n = rows - b0 < band ? rows - b0 : band;
        for (int64_t b = 0; b < n; ++b) {
            const int64_t o = b0 + b;
            const T* top = src + (o / g.Ho * g.H + o % g.Ho * stride) * g.W;
            add_in_order<1>(top, g.W, g.pool_height, g.W, column_sums + b * pitch);
            for (int64_t w = g.W; w < pitch; ++w) column_sums[b * pitch + w] = T(0);
        }
        for (int64_t k = n * pitch; k < n * pitch + g.pool_width; ++k) column_sums[k] = T(0);
        add_in_order<kStride>(column_sums, 1, g.pool_width, n * per_row, sums, stride);
        for (int64_t b = 0; b < n; ++b) {
            T* __restrict dst = out + (b0 + b) * g.Wo;
            const T* __restrict row = sums + b * per_row;
            for (int64_t ow = 0; ow < g.Wo; ++ow) dst[ow] = row[ow] / count;
        }
    }
}

// The backward of `planes` planes: dx's entry (r, w) is the sum of the gradients of the
// windows that cover it / the window's size, which is the sum of the window at (r, w) of
// the gradients spread out with the pad of a full correlation: each plane's gradient as
// a plane P of (H + pool_height - 1) x (W + pool_width - 1) zeros with the gradient of
// output (oh, ow) at (oh * stride + pool_height - 1, ow * stride + pool_width - 1). The
// bands of the stack of those planes are built on the stack and summed as the forward's.
template <typename T>
void avg_pool_stacked_backward(const AvgPoolPlane& g, int64_t planes, const T* grad, T* dx) {
    const T count = static_cast<T>(g.pool_height * g.pool_width);
    const int64_t Hp = g.H + g.pool_height - 1, Wp = g.W + g.pool_width - 1;
    const int64_t rows = planes * Hp - g.pool_height + 1, band = kBand / Wp - g.pool_height + 1;
    T spread[kBand], column_sums[kBand], sums[kBand];
    for (int64_t t0 = 0; t0 < rows; t0 += band) {
        const int64_t n = rows - t0 < band ? rows - t0 : band;
        const int64_t built = n + g.pool_height - 1;  // the rows of P the band's windows read
        for (int64_t k = 0; k < built * Wp; ++k) spread[k] = T(0);
        for (int64_t a = t0; a < t0 + built; ++a) {
            const int64_t shifted = a % Hp - (g.pool_height - 1);
            if (shifted < 0 || shifted % g.stride != 0 || shifted / g.stride >= g.Ho) continue;
            const T* __restrict from = grad + (a / Hp * g.Ho + shifted / g.stride) * g.Wo;
            T* __restrict to = spread + (a - t0) * Wp + g.pool_width - 1;
            if (g.stride == 2) {
                // Each gradient and the 0 after it, a store without gaps (the last one's 0
                // could be past the row: a pool_width of 1).
                for (int64_t ow = 0; ow + 1 < g.Wo; ++ow) {
                    to[2 * ow] = from[ow];
                    to[2 * ow + 1] = T(0);
                }
                to[2 * (g.Wo - 1)] = from[g.Wo - 1];
            } else {
                for (int64_t ow = 0; ow < g.Wo; ++ow) to[ow * g.stride] = from[ow];
            }
        }
        stacked_window_sums(spread, Wp, n, g.pool_height, g.pool_width, column_sums, sums);
        for (int64_t t = t0; t < t0 + n; ++t) {
            const int64_t r = t % Hp;
            if (r >= g.H) continue;  // windows across two planes' P
            T* __restrict dst = dx + (t / Hp * g.H + r) * g.W;
            const T* __restrict row = sums + (t - t0) * Wp;
            for (int64_t w = 0; w < g.W; ++w) dst[w] = row[w] / count;
        }
    }
}

// Rows too long for the stacked loops' bands: within a plane the window's offsets are the
// outer loops and the output row the inner one. The 2x2, stride-2 pooling of the CNNs
// takes a loop of its own, whose constant stride the compiler vectorises (one image
// of 32 x 32 x 32 float32: 12.7 us on the general loop), in the general loop's order of
// additions: the same numbers, and so do 3x3 windows (any stride). Other wide windows:
// window_sum's.
template <typename T>
void avg_pool_plane_forward(const AvgPoolPlane& g, const T* src, T* out) {
    const T count = static_cast<T>(g.pool_height * g.pool_width);
    const bool two_by_two = two_by_two_stride_2(g);
    const bool three_by_three = g.pool_height == 3 && g.pool_width == 3;
    const bool wide = wide_windows(g);
    for (int64_t oh = 0; oh < g.Ho; ++oh) {
        T* dst = out + oh * g.Wo;
        if (three_by_three) {  // the sum's nine loads unrolled, not three loops of Wo
            const T* top = src + oh * g.stride * g.W;
            for (int64_t ow = 0; ow < g.Wo; ++ow) {
                T sum = T(0);
                for (int64_t i = 0; i < 3; ++i) {
                    for (int64_t j = 0; j < 3; ++j) sum += top[i * g.W + ow * g.stride + j];
                }
                dst[ow] = sum / count;
            }
            continue;
        }
        if (two_by_two) {
            const T* __restrict r0 = src + 2 * oh * g.W;
            const T* __restrict r1 = r0 + g.W;
            for (int64_t ow = 0; ow < g.Wo; ++ow) {
                dst[ow] = (T(0) + r0[2 * ow] + r0[2 * ow + 1] + r1[2 * ow] + r1[2 * ow + 1]) / count;
            }
            continue;
        }
        if (wide) {
            for (int64_t ow = 0; ow < g.Wo; ++ow) {
                dst[ow] = window_sum(g, src + oh * g.stride * g.W + ow * g.stride) / count;
            }
            continue;
        }
        for (int64_t ow = 0; ow < g.Wo; ++ow) dst[ow] = T(0);
        for (int64_t i = 0; i < g.pool_height; ++i) {
            const T* row = src + (oh * g.stride + i) * g.W;
            for (int64_t j = 0; j < g.pool_width; ++j) {
                for (int64_t ow = 0; ow < g.Wo; ++ow) dst[ow] += row[ow * g.stride + j];
            }
        }
        for (int64_t ow = 0; ow < g.Wo; ++ow) dst[ow] /= count;
    }
}

// dst (H x W) = each window's gradient / its size added to each of its entries.
template <typename T>
void avg_pool_plane_backward(const AvgPoolPlane& g, const T* grad, T* dst) {
    const T count = static_cast<T>(g.pool_height * g.pool_width);
    if (g.stride == g.pool_height && g.stride == g.pool_width) {
        // The windows tile the plane: every entry written once, no zeroing.
        const int64_t covered = g.Wo * g.stride;
        for (int64_t oh = 0; oh < g.Ho; ++oh) {
            T* __restrict first = dst + oh * g.stride * g.W;
            const T* __restrict shares = grad + oh * g.Wo;
            if (g.pool_width == 2) {
                // 2x2 windows: both rows' pairs stored in one loop, which vectorises (the
                // windows' gradients of 64 images of 32 x 32 x 32 planes in cache: 0.10 ms
                // against 0.30 as a row of pairs and its copy), share / 4 as share * 1/4:
                // the same bits (both are the correctly rounded share * 2^-2).
                T* __restrict second = first + g.W;
                for (int64_t ow = 0; ow < g.Wo; ++ow) {
                    const T share = shares[ow] * T(0.25);
                    first[2 * ow] = share;
                    first[2 * ow + 1] = share;
                    second[2 * ow] = share;
                    second[2 * ow + 1] = share;
                }
                for (int64_t w = covered; w < g.W; ++w) first[w] = second[w] = T(0);
                continue;
            }
            // The window's first row, then copies of it.
            for (int64_t ow = 0; ow < g.Wo; ++ow) {
                const T share = shares[ow] / count;
                for (int64_t j = 0; j < g.pool_width; ++j) first[ow * g.stride + j] = share;
            }
            for (int64_t w = covered; w < g.W; ++w) first[w] = T(0);  // columns no window covers
            for (int64_t i = 1; i < g.pool_height; ++i) {
                for (int64_t w = 0; w < g.W; ++w) first[i * g.W + w] = first[w];
            }
        }
        for (int64_t k = g.Ho * g.stride * g.W; k < g.in_plane(); ++k) dst[k] = T(0);  // rows no window covers
        return;
    }
    // Wide windows and rows too long for the stacked loops' bands: each window's share
    // added to its entries.
    for (int64_t k = 0; k < g.in_plane(); ++k) dst[k] = T(0);
    if (wide_windows(g)) {  // each window's share added along its rows, a vectorised add
        for (int64_t oh = 0; oh < g.Ho; ++oh) {
            for (int64_t ow = 0; ow < g.Wo; ++ow) {
                const T share = grad[oh * g.Wo + ow] / count;
                for (int64_t i = 0; i < g.pool_height; ++i) {
                    T* row = dst + (oh * g.stride + i) * g.W + ow * g.stride;
                    for (int64_t j = 0; j < g.pool_width; ++j) row[j] += share;
                }
            }
        }
        return;
    }
    for (int64_t oh = 0; oh < g.Ho; ++oh) {
        for (int64_t i = 0; i < g.pool_height; ++i) {
            T* row = dst + (oh * g.stride + i) * g.W;
            for (int64_t j = 0; j < g.pool_width; ++j) {
                for (int64_t ow = 0; ow < g.Wo; ++ow) {
                    row[ow * g.stride + j] += grad[oh * g.Wo + ow] / count;
                }
            }
        }
    }
}

// `planes` planes of g one after another as one plane of all their rows, for windows that
// cover every row once (stride = window height dividing H).
inline AvgPoolPlane stacked_planes(const AvgPoolPlane& g, int64_t planes) {
    return {planes * g.H, g.W, g.pool_height, g.pool_width, g.stride, planes * g.Ho, g.Wo};
}

// Whether avg_pool_planes_forward takes the stacked loops' sums (each column's over the
// window's rows, then the window's of its columns': avg_pool_stacked_forward or
// avg_pool_strided_forward), rather than the one-plane loops' (a window's entries in
// row-major order after a +0).
inline bool stacked_sums_forward(const AvgPoolPlane& g) {
    if (two_by_two_stride_2(g) || wide_windows(g)) return false;
    if (g.stride == 1 && stacks(g, g.W)) return true;
    // (H x W < 2^31 entries, and the stride is any positive integer until checked here.)
    const bool short_rows = g.stride <= kBand && g.W <= kBand;
    return short_rows && (g.W + g.stride - 1) / g.stride * g.stride + g.pool_width <= kBand;
}

// `planes` planes one after another (x's, or a group's in the groupnorm kernels).
template <typename T>
void avg_pool_planes_forward(const AvgPoolPlane& g, int64_t planes, const T* src, T* out) {
    if (stacked_sums_forward(g)) {
        if (g.stride == 1 && stacks(g, g.W)) {
            avg_pool_stacked_forward(g, planes, src, out);
        } else if (g.stride == 2) {
            avg_pool_strided_forward<2>(g, planes, src, out);
        } else {
            avg_pool_strided_forward<0>(g, planes, src, out);
        }
        return;
    }
    const bool two_by_two = two_by_two_stride_2(g);
    if (two_by_two && g.H % 2 == 0) {
        // The planes' windows are those of one plane of all their rows: one call, not one
        // per plane (planes of 32 x 32 took ~10% longer one at a time).
        avg_pool_plane_forward(stacked_planes(g, planes), src, out);
        return;
    }
    for (int64_t p = 0; p < planes; ++p) {
        avg_pool_plane_forward(g, src + p * g.in_plane(), out + p * g.out_plane());
    }
}

template <typename T>
void avg_pool_planes_backward(const AvgPoolPlane& g, int64_t planes, const T* grad, T* dst) {
    const bool tiling = g.stride == g.pool_height && g.stride == g.pool_width;
    if (!tiling && !wide_windows(g) && stacks(g, g.W + g.pool_width - 1)) {
        avg_pool_stacked_backward(g, planes, grad, dst);
        return;
    }
    if (tiling && g.H % g.stride == 0) {  // the forward's one plane of all the rows
        avg_pool_plane_backward(stacked_planes(g, planes), grad, dst);
        return;
    }
    for (int64_t p = 0; p < planes; ++p) {
        avg_pool_plane_backward(g, grad + p * g.out_plane(), dst + p * g.in_plane());
    }
}

}  // namespace
}  // namespace graphnet
