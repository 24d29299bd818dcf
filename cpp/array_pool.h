// The memory a graph walk's numpy arrays live in, kept from one training step for the next.
//
// A step allocates its activations, caches and gradients afresh (numpy arrays of 1 to 100+
// MB) and frees them by the next step. Handed to the C library, blocks that large go back
// to the kernel when freed (glibc: over 32 MB, and its heap's top past the trim threshold),
// so the next step faults every page in again and the kernel zeroes it: at batch 64 the
// non-convolution passes of the zoo's CNNs spent more on those faults than on their
// arithmetic (docs/performance/kernels.md). A walk therefore allocates through numpy's
// memory-handler hook (NEP 49) from this pool: a freed block of 256 KB or more is kept, by
// size, for the next array of its size, which in a training loop is the same array of the
// next step. Smaller blocks go to malloc, which keeps them anyway.
//
// The pool keeps no more than the most its blocks were ever in use at once (the step's
// peak): past that, the block kept longest goes back to the system first. So a process
// that trains at one batch and then evaluates at another ends up keeping the new batch's
// sizes, and holds at most twice its peak. Blocks are 64-byte aligned (a cache line, an
// AVX-512 vector).
//
// Only the walks use it (graphnet/core/executor.py sets the handler around each): numpy
// arrays made anywhere else in the process keep numpy's own allocator.
#pragma once

#include <cstddef>

#include <pybind11/pybind11.h>

namespace graphnet {

// numpy's memory handler for the pool: a PyCapsule named "mem_handler".
pybind11::object array_pool_handler();

// Makes `handler` the current context's numpy memory handler (contexts: contextvars, so
// each thread has its own) and returns the one it replaces. None changes nothing and
// returns None, so a caller restores with what it got whether or not it pooled.
pybind11::object set_array_memory_handler(pybind11::object handler);

struct ArrayPoolCounts {
    std::size_t in_use_bytes;   // pooled blocks handed out and not yet freed
    std::size_t kept_bytes;     // freed blocks kept for reuse
    std::size_t peak_bytes;     // the most in_use_bytes has been
    std::size_t reused_blocks;  // allocations served from kept blocks
    std::size_t new_blocks;     // allocations that took a block from the system
};

ArrayPoolCounts array_pool_counts();

// Returns every kept block to the system (what is in use stays).
void release_array_pool();

// Has the C library keep the heap's freed memory for the process's next allocations
// (glibc: blocks under 32 MB from the heap, which keeps up to 64 MB free at its top, the
// values its own adaptive thresholds reach once a 32 MB block was freed), the pool's rule
// for the kernels' scratch and the walks' small arrays. With the defaults, the heap's top
// went back to the system whenever more than 128 KB of it was free, and the buffers of a
// loop of model.loss at batch 1 came back as fresh pages on every call (res_strided: about
// 340 page faults and 0.5 ms of system time a call of 2 ms). Elsewhere than glibc it does
// nothing. Returns whether the C library took the settings.
bool keep_freed_heap();

}  // namespace graphnet
