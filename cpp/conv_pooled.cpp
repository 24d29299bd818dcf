// conv_pooled.h: per image, each filter's gradient positions are listed once (where in
// the padded image their patch starts, and their gradient), then each channel's patches
// are summed into the filter's rows of dw.
#include "conv_pooled.h"

#include <atomic>
#include <type_traits>
#include <vector>

#include "conv_direct.h"
#include "cpu_features.h"
#include "threads.h"

namespace graphnet {
namespace {

// Rows are computed 8 lanes at a time (lanes: WW rounded up to 8), so the compiler can
// vectorise them for any kernel width; the lanes past WW gather what lies right of the
// window and are dropped at the end.
constexpr int64_t kLanes = 8;

// rows (HH x lanes, one filter and one channel) += gains[k] * the patch of `plane` (rows
// Wp apart) that starts at offsets[k], for k < count.
template <typename T>
void add_patches(int64_t HH, int64_t Wp, int64_t lanes, const T* __restrict plane,
                 const int32_t* __restrict offsets, const T* __restrict gains, int64_t count,
                 T* __restrict rows) {
    for (int64_t k = 0; k < count; ++k) {
        const T* patch = plane + offsets[k];
        const T gain = gains[k];
        for (int64_t i = 0; i < HH; ++i) {
            for (int64_t j0 = 0; j0 < lanes; j0 += kLanes) {
                T* row = rows + i * lanes + j0;
                const T* in = patch + i * Wp + j0;
#pragma GCC unroll 8
                for (int64_t j = 0; j < kLanes; ++j) row[j] += gain * in[j];
            }
        }
    }
}

template <typename T>
bool use_avx2(const ConvGeometry& g) {
    return std::is_same_v<T, float> && g.HH <= kSparseMaxKernel && g.WW <= 8 &&
           direct_conv_active();
}

// Lists the windows of one (image, filter) plane whose gradient reaches the convolution:
// where their patch starts (from patch_at, by winner) and their gradient. Returns how many,
// adds their gradients to db, and sets `outside` if a winner lies outside the plane (it is
// then skipped). Branch-free, since whether the relu let a window through is a coin toss;
// with locals only in the loop (stores through the list pointers could otherwise alias db
// and `outside` and keep them in memory); and out of line, so that the loop gets registers
// of its own (inlined into the threads' loop, it spilled its flags to the stack). Each of
// the two took 5-10% off the whole kernel (same-process A/B).
template <typename T>
__attribute__((noinline)) int64_t list_windows(
    int64_t windows, int64_t positions, const int32_t* __restrict patch_at,
    const T* __restrict pooled, const T* __restrict dpool, const int32_t* __restrict winners,
    int32_t* __restrict offsets, T* __restrict gains, T& db, int& outside) {
    int64_t count = 0;
    uint32_t any_outside = 0;
    for (int64_t q = 0; q < windows; ++q) {
        const uint32_t winner = static_cast<uint32_t>(winners[q]);
        const bool inside = winner < static_cast<uint64_t>(positions);
        any_outside |= !inside;
        offsets[count] = patch_at[inside ? winner : 0];
        gains[count] = dpool[q];
        count += inside & (pooled[q] > T(0));
    }
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t k = 0; k < count; ++k) sum += gains[k];
    db += sum;
    outside |= static_cast<int>(any_outside);
    return count;
}

}  // namespace

template <typename T>
bool conv_pooled_backward(const ConvGeometry& g, int64_t windows, const T* x, const T* pooled,
                          const T* dpool, const int32_t* winners, T* dw, T* db) {
    if (g.N == 0) {  // nothing to sum, and no per-thread buffer an empty batch would justify
        std::fill(dw, dw + g.F * g.taps(), T(0));
        std::fill(db, db + g.F, T(0));
        return true;
    }
    const int64_t Hp = g.H + 2 * g.pad, Wp = g.W + 2 * g.pad, P = g.Ho * g.Wo;
    const int64_t lanes = (g.WW + kLanes - 1) / kLanes * kLanes;
    static_assert(kLanes - 1 <= kDirectSlack,
                  "a row's lanes may read kLanes - 1 floats past the image");
    const int64_t padded = g.C * Hp * Wp + kDirectSlack;
    const bool avx2 = use_avx2<T>(g);
    // Where each output position's patch starts in a padded image channel.
    std::vector<int32_t> patch_at(P);
    for (int64_t p = 0; p < P; ++p) {
        patch_at[p] = static_cast<int32_t>(p / g.Wo * g.stride * Wp + p % g.Wo * g.stride);
    }
    constexpr int64_t kChunks = 16;  // fixed, so the sums do not depend on the threads
    const int64_t chunks = std::min<int64_t>(g.N, kChunks);
    const int64_t rows = g.F * g.C * g.HH * lanes, slot = rows + g.F;
    std::vector<T> partial(chunks * slot, T(0));
    const int threads = team_size(chunks);
    std::vector<T> pads(checked_mul(threads, padded, "conv padded images"), T(0));
    std::vector<T> gains(checked_mul(threads, windows, "pool windows"));
    std::vector<int32_t> offsets(gains.size());
    std::atomic<bool> outside{false};  // set by any chunk with a winner outside its plane
    parallel_for_dynamic(threads, chunks, 1, [&](int64_t chunk, int t) {
        int chunk_outside = 0;
        T* pad = pads.data() + t * padded;
        T* my_gains = gains.data() + t * windows;
        int32_t* my_offsets = offsets.data() + t * windows;
        T* my_dw = partial.data() + chunk * slot;
        T* my_db = my_dw + rows;
        for (int64_t n = chunk * g.N / chunks; n < (chunk + 1) * g.N / chunks; ++n) {
            pad_interior(g.C, g.H, g.W, Hp, Wp, g.pad, g.pad, x + n * g.C * g.H * g.W, pad);
            for (int64_t f = 0; f < g.F; ++f) {
                const int64_t at = (n * g.F + f) * windows;
                const int64_t count =
                    list_windows(windows, P, patch_at.data(), pooled + at, dpool + at, winners + at,
                                 my_offsets, my_gains, my_db[f], chunk_outside);
                for (int64_t c = 0; c < g.C; ++c) {
                    T* dw_rows = my_dw + (f * g.C + c) * g.HH * lanes;
                    if constexpr (std::is_same_v<T, float>) {
                        if (avx2) {
                            direct_sparse_dw_rows(g.HH, Wp, pad + c * Hp * Wp, my_offsets, my_gains,
                                                  count, dw_rows);
                            continue;
                        }
                    }
                    add_patches(g.HH, Wp, lanes, pad + c * Hp * Wp, my_offsets, my_gains, count,
                                dw_rows);
                }
            }
        }
        if (chunk_outside) outside = true;
    });
    std::fill(dw, dw + g.F * g.taps(), T(0));
    std::fill(db, db + g.F, T(0));
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        const T* part = partial.data() + chunk * slot;
        for (int64_t r = 0; r < g.F * g.C * g.HH; ++r) {
            for (int64_t j = 0; j < g.WW; ++j) dw[r * g.WW + j] += part[r * lanes + j];
        }
        for (int64_t f = 0; f < g.F; ++f) db[f] += part[rows + f];
    }
    return !outside;
}

template bool conv_pooled_backward<float>(const ConvGeometry&, int64_t, const float*, const float*,
                                          const float*, const int32_t*, float*, float*);
template bool conv_pooled_backward<double>(const ConvGeometry&, int64_t, const double*,
                                           const double*, const double*, const int32_t*, double*,
                                           double*);

}  // namespace graphnet
