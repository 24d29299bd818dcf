// The max pool's backward of one (H, W) plane on the calling thread (pool.h's windows and
// winners): pool.cpp shares the planes out across the threads; group_norm_loops.h scatters
// a group's planes while they are in cache (a groupnorm -> activation -> max_pool step).
// Compiled into each file that includes it (an anonymous namespace, no library header),
// with the same operations everywhere: the same bits.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace graphnet {
namespace {

// Unsigned integers as wide as T, to blend floats bit by bit.
template <typename T> struct BitsOf;
template <> struct BitsOf<float> { using type = uint32_t; };
template <> struct BitsOf<double> { using type = uint64_t; };

template <typename T, typename U = typename BitsOf<T>::type>
inline U to_bits(T value) {
    U bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
}

template <typename T, typename U>
inline T from_bits(U bits) {
    T value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

// One plane's dx of 2x2 stride-2 pooling, provided each winner lies in its own 2x2 block
// (always so for that pooling): every entry of a block written at once, its gradient's bits
// where the winner lies and +0 elsewhere, so a -0 gradient stays -0 (a scatter would add it
// to +0). Blended bit by bit, without jumps and without stores at addresses read from
// winners, so the compiler vectorises the row: zeroing the blocks with fills of a few
// entries and then storing each gradient at its winner took 1.15x to 2x the time (float32)
// on planes of 7 x 9 to 112 x 112 (5 x 5: 0.85x). Returns false if some winner lies
// elsewhere; the plane is then unfinished and the caller scatters it instead.
template <typename T>
bool unpool_plane_2x2(int64_t H, int64_t W, int64_t Ho, int64_t Wo, const T* __restrict grad,
                      const int32_t* __restrict win, T* __restrict dst) {
    using U = typename BitsOf<T>::type;
    // Unsigned: a hostile winner near INT32_MIN wraps instead of overflowing, and a wrapped
    // value can never land on one of the four small offsets 0, 1, W, W + 1.
    const uint32_t down = static_cast<uint32_t>(W);
    uint32_t elsewhere = 0;
    for (int64_t oh = 0; oh < Ho; ++oh) {
        const int64_t row_start = 2 * oh * W;
        T* __restrict r0 = dst + row_start;
        T* __restrict r1 = r0 + W;
        const T* row_grad = grad + oh * Wo;
        const int32_t* row_win = win + oh * Wo;
        for (int64_t ow = 0; ow < Wo; ++ow) {
            const uint32_t at = static_cast<uint32_t>(row_win[ow]) -
                                static_cast<uint32_t>(row_start + 2 * ow);
            const U bits = to_bits(row_grad[ow]);
            const auto only_at = [&](uint32_t offset) {
                return from_bits<T>(bits & (U(0) - U(at == offset)));
            };
            r0[2 * ow] = only_at(0);
            r0[2 * ow + 1] = only_at(1);
            r1[2 * ow] = only_at(down);
            r1[2 * ow + 1] = only_at(down + 1);
            elsewhere |= static_cast<uint32_t>(at > 1) & static_cast<uint32_t>(at - down > 1);
        }
        // Larger windows (3x3 stride 2) fit blocks too, but their winners soon lie elsewhere.
        if (elsewhere) return false;
        for (int64_t w = 2 * Wo; w < W; ++w) r0[w] = r1[w] = T(0);  // a column no block covers
    }
    std::fill(dst + 2 * Ho * W, dst + H * W, T(0));  // a row no block covers
    return true;
}

// Each of the out_plane grad entries added at its window's winner in dst (in_plane
// entries), in order (a winner of overlapping windows sums theirs). A winner outside the
// plane is never written; the result is then false.
template <typename T>
bool scatter_unpool_plane(int64_t in_plane, int64_t out_plane, const T* grad, const int32_t* win,
                          T* dst) {
    bool outside = false;
    for (int64_t o = 0; o < out_plane; ++o) {
        const bool inside = win[o] >= 0 && win[o] < in_plane;
        outside |= !inside;
        if (inside) dst[win[o]] += grad[o];
    }
    return !outside;
}

// dst (H x W) = zeros with each grad entry (Ho x Wo) added at its window's winner, in
// order (a winner of overlapping windows sums theirs). A winner outside the plane is never
// written; the result is then false (and dst unfinished).
template <typename T>
bool max_unpool_plane(int64_t H, int64_t W, int64_t Ho, int64_t Wo, const T* grad,
                      const int32_t* win, T* dst) {
    if (2 * Ho <= H && 2 * Wo <= W && unpool_plane_2x2(H, W, Ho, Wo, grad, win, dst)) return true;
    std::fill(dst, dst + H * W, T(0));
    return scatter_unpool_plane(H * W, Ho * Wo, grad, win, dst);
}

}  // namespace
}  // namespace graphnet
