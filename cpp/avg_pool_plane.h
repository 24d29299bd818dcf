// Average pooling of one (H, W) plane on the calling thread (pool.h's windows): pool.cpp
// shares the planes out across the threads; group_norm_loops.h pools a group's planes
// while they are in cache (a groupnorm -> activation -> avg_pool step). Compiled into each
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

template <typename T>
T window_sum(const AvgPoolPlane& g, const T* first) {
    if (g.pool_width == g.W) return contiguous_sum(first, g.pool_height * g.W);
    T sum = T(0);
    for (int64_t i = 0; i < g.pool_height; ++i) sum += contiguous_sum(first + i * g.W, g.pool_width);
    return sum;
}

// Within a plane the window's offsets are the outer loops and the output row the inner
// one, so a stride-1 row is a contiguous, vectorised add. The 2x2, stride-2 pooling of the
// CNNs takes a loop of its own, whose constant stride the compiler vectorises (one image
// of 32 x 32 x 32 float32: 12.7 us on the general loop), in the general loop's order of
// additions: the same numbers, and so do 3x3 windows (any stride). Other wide windows:
// window_sum's.
template <typename T>
void avg_pool_plane_forward(const AvgPoolPlane& g, const T* src, T* out) {
    const T count = static_cast<T>(g.pool_height * g.pool_width);
    const bool two_by_two = g.pool_height == 2 && g.pool_width == 2 && g.stride == 2;
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

}  // namespace
}  // namespace graphnet
