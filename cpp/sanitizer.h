// AddressSanitizer's manual poisoning, or nothing in a build without it. Memory kept for
// reuse (the array pool's blocks, the kernels' kept scratch) is a block larger than what
// its user asked for: poisoned past the request, an overflow into the rest is still
// reported, as with a block of exactly that size.
#pragma once

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#else
#define ASAN_POISON_MEMORY_REGION(address, bytes) ((void)(address), (void)(bytes))
#define ASAN_UNPOISON_MEMORY_REGION(address, bytes) ((void)(address), (void)(bytes))
#endif
