// Zeroed float buffers that start on a cache line, in parts (one per thread, say) whose
// sizes are rounded up to whole lines, so each part starts on one too. The AVX-512 kernels
// load and store whole 16-float vectors at multiples of 16 floats into them; where
// std::vector (and the C library's heap) put a buffer, 3 in 4 such accesses straddle two
// lines (docs/performance/kernels.md: the direct weight gradient's scratch, the tap
// kernels' packed weights and outputs).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "sanitizer.h"
#include "shapes.h"

namespace graphnet {

// How many times the kernels' kept scratch was released (release_kept_scratch). Each
// thread keeps its own, and frees it when it next takes or returns some after a release:
// another thread's cannot be freed from the releasing one, whose kernel may be using it.
inline std::atomic<std::uint64_t> kept_scratch_releases{0};

// A buffer of at least `floats` floats, which goes back on destruction to its thread's
// few kept buffers, of which the next large enough one is taken: at batch 1 a conv's
// packed weights and scratch (hundreds of KB a call) otherwise came as fresh pages from
// the system on every call, whose faults and zeroing in the kernel took 47% of a 3x3
// stride-2 layer's forward on one image (64 -> 128 channels on 16 x 16). Buffers under
// kMinKept floats stay with the C library's heap, over kMaxKept are not kept. Under
// AddressSanitizer a kept buffer is poisoned, and a taken one past the floats asked for.
class KeptBuffer {
  public:
    static constexpr int64_t kMinKept = 16 * 1024;       // 64 KB
    static constexpr int64_t kMaxKept = 2 * 1024 * 1024;  // 8 MB
    static constexpr int kSlots = 6;

    KeptBuffer() = default;
    explicit KeptBuffer(int64_t floats) {
        if (floats >= kMinKept && floats <= kMaxKept) {
            Slot* best = nullptr;  // the smallest kept buffer that holds `floats`
            for (Slot& slot : slots()) {
                if (slot.floats >= floats && (!best || slot.floats < best->floats)) best = &slot;
            }
            if (best) {
                std::swap(floats_, best->floats);
                std::swap(data_, best->data);
                ASAN_UNPOISON_MEMORY_REGION(data_, bytes(floats));
                return;
            }
        }
        data_ = new float[floats];
        floats_ = floats;
    }
    KeptBuffer(KeptBuffer&& other) noexcept
        : data_(std::exchange(other.data_, nullptr)), floats_(std::exchange(other.floats_, 0)) {}
    KeptBuffer& operator=(KeptBuffer&& other) noexcept {
        std::swap(data_, other.data_);
        std::swap(floats_, other.floats_);
        return *this;
    }
    KeptBuffer(const KeptBuffer&) = delete;
    KeptBuffer& operator=(const KeptBuffer&) = delete;
    ~KeptBuffer() {
        if (floats_ >= kMinKept && floats_ <= kMaxKept) {
            Slot* smallest = &slots()[0];  // an empty slot, else the smallest buffer if smaller
            for (Slot& slot : slots()) {
                if (slot.floats < smallest->floats) smallest = &slot;
            }
            if (smallest->floats < floats_) {
                ASAN_POISON_MEMORY_REGION(data_, bytes(floats_));
                std::swap(floats_, smallest->floats);
                std::swap(data_, smallest->data);
            }
        }
        free(data_, floats_);
    }
    float* get() const { return data_; }

    // Bytes the calling thread keeps for its next buffers.
    static int64_t kept_bytes() {
        int64_t floats = 0;
        for (const Slot& slot : slots()) floats += slot.floats;
        return floats * static_cast<int64_t>(sizeof(float));
    }

  private:
    static std::size_t bytes(int64_t floats) { return std::size_t(floats) * sizeof(float); }
    static void free(float* data, int64_t floats) {
        if (data) ASAN_UNPOISON_MEMORY_REGION(data, bytes(floats));
        delete[] data;
    }
    struct Slot {
        float* data = nullptr;
        int64_t floats = 0;
    };
    struct Slots {
        Slot slot[kSlots];
        std::uint64_t releases_seen = 0;
        Slot* begin() { return slot; }
        Slot* end() { return slot + kSlots; }
        Slot& operator[](int k) { return slot[k]; }
        void free_all() {
            for (Slot& s : slot) {
                free(s.data, s.floats);
                s = Slot{};
            }
        }
        ~Slots() { free_all(); }
    };
    // Per thread: two Python threads may run kernels at once. A buffer in use is never in
    // a slot (taking one moves it out), so freeing the slots after a release is safe.
    static Slots& slots() {
        thread_local Slots kept;
        const std::uint64_t releases = kept_scratch_releases.load(std::memory_order_relaxed);
        if (kept.releases_seen != releases) {
            kept.free_all();
            kept.releases_seen = releases;
        }
        return kept;
    }
    float* data_ = nullptr;
    int64_t floats_ = 0;
};

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
        floats_ = KeptBuffer(count);
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
    KeptBuffer floats_;
    float* first_ = nullptr;
    int64_t per_part_ = 0;
};

}  // namespace graphnet
