// Zeroed float buffers that start on a cache line, in parts (one per thread, say) whose
// sizes are rounded up to whole lines, so each part starts on one too. The AVX-512 kernels
// load and store whole 16-float vectors at multiples of 16 floats into them; where
// std::vector (and the C library's heap) put a buffer, 3 in 4 such accesses straddle two
// lines (docs/performance/kernels.md: the direct weight gradient's scratch, the tap
// kernels' packed weights and outputs).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>

#include "shapes.h"

namespace graphnet {

class CacheLineScratch {
  public:
    static constexpr int64_t kLineFloats = 16;

    // Zeroed, or left as the allocator gives it where the caller writes every float it
    // reads (packed weights: zeroing 295 KB of them before they were written took 7% of a
    // stride-2 layer's forward on one image).
    enum class Fill { zeros, none };

    CacheLineScratch() = default;
    CacheLineScratch(int64_t parts, int64_t floats_per_part, Fill fill = Fill::zeros) {
        assign(parts, floats_per_part, fill);
    }
    // Moving keeps the buffer where it is (so first_ stays in it); a copy would not.
    CacheLineScratch(CacheLineScratch&&) = default;
    CacheLineScratch& operator=(CacheLineScratch&&) = default;
    CacheLineScratch(const CacheLineScratch&) = delete;
    CacheLineScratch& operator=(const CacheLineScratch&) = delete;

    void assign(int64_t parts, int64_t floats_per_part, Fill fill = Fill::zeros) {
        per_part_ = round_up_to_line(floats_per_part);
        const int64_t count = checked_add(checked_mul(parts, per_part_, "cache-line scratch"),
                                          kLineFloats - 1, "cache-line scratch");
        floats_.reset(new float[count]);
        if (fill == Fill::zeros) std::fill(floats_.get(), floats_.get() + count, 0.0f);
        const auto at = reinterpret_cast<std::uintptr_t>(floats_.get()), line = std::uintptr_t(64);
        first_ = floats_.get() + (line - at % line) % line / sizeof(float);
    }
    float* scratch_of(int64_t part) { return first_ + part * per_part_; }
    const float* scratch_of(int64_t part) const { return first_ + part * per_part_; }

    // floats rounded up to whole lines: an offset into a part that starts on a line
    static int64_t round_up_to_line(int64_t floats) {
        return checked_add(floats, kLineFloats - 1, "cache-line scratch") / kLineFloats *
               kLineFloats;
    }

  private:
    std::unique_ptr<float[]> floats_;
    float* first_ = nullptr;
    int64_t per_part_ = 0;
};

}  // namespace graphnet
