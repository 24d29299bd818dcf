#include "array_pool.h"

#define NPY_NO_DEPRECATED_API NPY_1_23_API_VERSION
#define NPY_TARGET_VERSION NPY_1_23_API_VERSION  // PyDataMem_SetHandler is numpy 1.22+
#include <numpy/arrayobject.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>  // mallopt, malloc_trim
#endif

#include "sanitizer.h"

namespace graphnet {
namespace {

constexpr std::size_t kPooledBytes = std::size_t{256} << 10;
constexpr std::size_t kPageBytes = 4096;
constexpr std::size_t kLineBytes = 64;

// Every block has its sizes in the 16 bytes before the array's data, so a free knows the
// block's kind without trusting the size numpy passes. A small block (capacity under
// kPooledBytes) is malloc's, its data 16-byte aligned as malloc's; a pooled one is a page
// multiple whose data starts a cache line in.
struct Header {
    std::size_t capacity;  // bytes of data the block holds
    std::size_t bytes;     // of which the array's
    bool pooled() const { return capacity >= kPooledBytes; }
};
static_assert(sizeof(Header) == 16, "the header fills malloc's alignment");

Header* header_of(void* data) { return static_cast<Header*>(data) - 1; }

class ArrayPool {
public:
    void* allocate(std::size_t bytes) {
        if (bytes < kPooledBytes) return allocate_small(bytes);
        const std::size_t capacity = round_up(bytes, kPageBytes);
        if (capacity < bytes) return nullptr;  // overflowed
        std::lock_guard<std::mutex> lock(mutex_);
        char* block = take_kept(capacity);
        if (block == nullptr) {
            block = static_cast<char*>(std::aligned_alloc(kLineBytes, kLineBytes + capacity));
            if (block == nullptr) return nullptr;
            ++counts_.new_blocks;
        } else {
            ++counts_.reused_blocks;
        }
        counts_.in_use_bytes += capacity;
        if (counts_.in_use_bytes > counts_.peak_bytes) counts_.peak_bytes = counts_.in_use_bytes;
        char* data = block + kLineBytes;
        *header_of(data) = Header{capacity, bytes};
        mark_usable(data, bytes, capacity);
        return data;
    }

    // A pooled block that holds `bytes` already is resized where it is, unless that would
    // leave most of it unused.
    bool resize_in_place(void* data, std::size_t bytes) {
        Header& header = *header_of(data);
        if (!header.pooled() || bytes > header.capacity || bytes < header.capacity / 2)
            return false;
        header.bytes = bytes;
        mark_usable(static_cast<char*>(data), bytes, header.capacity);
        return true;
    }

    void free(void* data) {
        if (data == nullptr) return;
        const Header header = *header_of(data);
        if (!header.pooled()) {
            std::free(header_of(data));
            return;
        }
        char* block = static_cast<char*>(data) - kLineBytes;
        std::lock_guard<std::mutex> lock(mutex_);
        counts_.in_use_bytes -= header.capacity;
        if (header.capacity > counts_.peak_bytes) {
            ASAN_UNPOISON_MEMORY_REGION(data, header.capacity);
            std::free(block);
            return;
        }
        while (counts_.kept_bytes + header.capacity > counts_.peak_bytes) release_oldest();
        ASAN_POISON_MEMORY_REGION(data, header.capacity);  // a kept block is no array's
        by_age_.push_back(Kept{block, header.capacity});
        by_capacity_[header.capacity].push_back(std::prev(by_age_.end()));
        counts_.kept_bytes += header.capacity;
    }

    static std::size_t bytes(void* data) { return header_of(data)->bytes; }

    ArrayPoolCounts counts() {
        std::lock_guard<std::mutex> lock(mutex_);
        return counts_;
    }

    void release() {
        std::lock_guard<std::mutex> lock(mutex_);
        while (!by_age_.empty()) release_oldest();
    }

private:
    struct Kept {
        char* block;
        std::size_t capacity;
    };
    using KeptList = std::list<Kept>;

    static std::size_t round_up(std::size_t bytes, std::size_t unit) {
        return (bytes + unit - 1) / unit * unit;
    }

    // Under AddressSanitizer an array's kernels may touch its bytes and nothing past them,
    // as with a block of exactly its size.
    static void mark_usable(char* data, std::size_t bytes, std::size_t capacity) {
        ASAN_UNPOISON_MEMORY_REGION(data, bytes);
        ASAN_POISON_MEMORY_REGION(data + bytes, capacity - bytes);
    }

    static void* allocate_small(std::size_t bytes) {
        if (bytes > SIZE_MAX - sizeof(Header)) return nullptr;
        auto* header = static_cast<Header*>(std::malloc(sizeof(Header) + bytes));
        if (header == nullptr) return nullptr;
        *header = Header{bytes, bytes};
        return header + 1;
    }

    // The most recently freed block of the capacity: the likeliest still in cache.
    char* take_kept(std::size_t capacity) {
        auto found = by_capacity_.find(capacity);
        if (found == by_capacity_.end()) return nullptr;
        const KeptList::iterator newest = found->second.back();
        char* block = newest->block;
        found->second.pop_back();
        if (found->second.empty()) by_capacity_.erase(found);
        by_age_.erase(newest);
        counts_.kept_bytes -= capacity;
        return block;
    }

    // The block kept longest is the least likely to be asked for again (another batch
    // size's, say): it goes back to the system first.
    void release_oldest() {
        const Kept oldest = by_age_.front();
        auto same = by_capacity_.find(oldest.capacity);
        same->second.pop_front();  // its oldest entry is this one: both lists age alike
        if (same->second.empty()) by_capacity_.erase(same);
        by_age_.pop_front();
        counts_.kept_bytes -= oldest.capacity;
        ASAN_UNPOISON_MEMORY_REGION(oldest.block + kLineBytes, oldest.capacity);
        std::free(oldest.block);
    }

    std::mutex mutex_;  // numpy may allocate on any thread
    KeptList by_age_;   // kept blocks, the longest kept first
    std::unordered_map<std::size_t, std::deque<KeptList::iterator>> by_capacity_;
    ArrayPoolCounts counts_{};
};

// Never destroyed: arrays from the pool may be freed while the interpreter shuts down.
ArrayPool& pool() {
    static ArrayPool* instance = new ArrayPool();
    return *instance;
}

void* pool_malloc(void*, std::size_t bytes) { return pool().allocate(bytes); }

void* pool_calloc(void*, std::size_t count, std::size_t item_bytes) {
    if (item_bytes != 0 && count > SIZE_MAX / item_bytes) return nullptr;
    void* data = pool().allocate(count * item_bytes);
    if (data != nullptr) std::memset(data, 0, count * item_bytes);
    return data;
}

void* pool_realloc(void*, void* data, std::size_t bytes) {
    if (data == nullptr) return pool().allocate(bytes);
    if (pool().resize_in_place(data, bytes)) return data;
    const std::size_t old_bytes = ArrayPool::bytes(data);
    void* moved = pool().allocate(bytes);
    if (moved == nullptr) return nullptr;
    std::memcpy(moved, data, bytes < old_bytes ? bytes : old_bytes);
    pool().free(data);
    return moved;
}

void pool_free(void*, void* data, std::size_t) { pool().free(data); }

PyDataMem_Handler pool_handler = {
    "graphnet_array_pool",
    1,
    {nullptr, pool_malloc, pool_calloc, pool_realloc, pool_free},
};

void import_numpy() {
    static const bool imported = [] {
        if (PyArray_ImportNumPyAPI() < 0) throw pybind11::error_already_set();
        return true;
    }();
    (void)imported;
}

}  // namespace

pybind11::object array_pool_handler() {
    return pybind11::reinterpret_steal<pybind11::object>(
        PyCapsule_New(&pool_handler, "mem_handler", nullptr));
}

pybind11::object set_array_memory_handler(pybind11::object handler) {
    if (handler.is_none()) return handler;
    import_numpy();
    PyObject* previous = PyDataMem_SetHandler(handler.ptr());
    if (previous == nullptr) throw pybind11::error_already_set();
    return pybind11::reinterpret_steal<pybind11::object>(previous);
}

ArrayPoolCounts array_pool_counts() { return pool().counts(); }

void release_array_pool() {
    pool().release();
#if defined(__GLIBC__)
    // keep_freed_heap has the heap keep up to 64 MB free at its top: what the pool just
    // freed goes back to the system now, as the call promises.
    malloc_trim(0);
#endif
}

bool keep_freed_heap() {
#if defined(__GLIBC__)
    constexpr int kHeapBelow = 32 << 20, kKeptFree = 64 << 20;
    return mallopt(M_MMAP_THRESHOLD, kHeapBelow) == 1 && mallopt(M_TRIM_THRESHOLD, kKeptFree) == 1;
#else
    return false;
#endif
}

}  // namespace graphnet
