// The C library's allocator told to keep the memory a training step frees, for the next.
//
// A step allocates its activations and gradients afresh (numpy arrays of 1 to 100+ MB)
// and frees them by its end. glibc hands blocks over 32 MB (and, once the top of its heap
// is free past its trim threshold, smaller ones too) straight back to the kernel, so the
// next step faults every page in again and the kernel zeroes it: at batch 64 the
// non-convolution passes of the zoo's CNNs spent more on those faults than on their
// arithmetic (docs/performance/kernels.md). Raising both thresholds to 1 GiB keeps the
// freed blocks in the process, where the next step's arrays of the same sizes reuse them.
// The process's resident memory then stays at its peak, as it would in the next step anyway;
// GRAPHNET_RETURN_FREED_MEMORY=1 in the environment leaves the allocator as it was.
#pragma once

namespace graphnet {

// Whether the allocator took the setting (glibc only, and not asked otherwise by the
// environment; elsewhere nothing changes).
bool keep_freed_memory();

}  // namespace graphnet
