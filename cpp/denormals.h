// Subnormal floats flushed to zero for the lifetime of a guard, on the calling thread.
//
// x86 computes an operation whose input or result is subnormal (below 1.2e-38 in float32)
// in a microcode assist about a hundred times slower than the ordinary path. A training
// step meets them once a network fits its batch: the gradients shrink to 1e-30 and below,
// their squares underflow in adam's second moment, and a first moment that gets no more
// gradient decays into the subnormals and stays there (0.9 times the smallest subnormal
// rounds back to it). Measured: the course FullyConnectedNet at batch 1, float32, went
// from 0.4 ms to 3.7 ms and then 9 ms per adam pass (docs/performance/zoo.md). Flushing
// changes a value by less than 1.2e-38 (2.3e-308 in float64).
//
// The flags live in each thread's MXCSR: construct the guard inside the parallel region.
// Elsewhere than x86 the guard does nothing.
#pragma once

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

namespace graphnet {

class FlushSubnormals {
public:
#if defined(__x86_64__) || defined(_M_X64)
    // FTZ (bit 15): subnormal results become 0; DAZ (bit 6): subnormal inputs read as 0.
    FlushSubnormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040u); }
    ~FlushSubnormals() { _mm_setcsr(saved_); }

private:
    unsigned int saved_;
#else
    FlushSubnormals() {}
#endif
public:
    FlushSubnormals(const FlushSubnormals&) = delete;
    FlushSubnormals& operator=(const FlushSubnormals&) = delete;
};

}  // namespace graphnet
