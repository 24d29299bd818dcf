// The element loop of dropout.h's kernel, compiled three times: for any CPU in dropout.cpp,
// and for AVX2 and for AVX-512 (with its 64-bit multiply, AVX512DQ) in dropout_x86.cpp,
// where the compiler vectorises it. Integer arithmetic and one product per unit: every copy
// gives the same bits. Each file gets its own copy (an anonymous namespace), always
// inlined into its caller, so no code compiled for AVX2 or AVX-512 is shared with the
// portable code.
#pragma once

#include <cstdint>

namespace graphnet {
namespace {

// Unit i's 64 random bits under `key`: splitmix64_mix(key + (i + 1) * kGoldenGamma), the
// (i + 1)-th output of SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom
// number generators", OOPSLA 2014; the generator of Java's SplittableRandom and of the
// xoshiro generators' seeding) from state key. A counter-based generator: any unit's draw
// without the others'. Its outputs pass BigCrush and PractRand; the mixer's two
// multiply-xorshift rounds (Stafford's Mix13) make every output bit depend on every state
// bit, so neighbouring units (states a gamma apart) are uncorrelated. Keys come from a
// numpy Generator, independent 64-bit words: two calls' units share a state only if their
// keys differ by fewer than n gammas, a chance of about 2n / 2^64 per pair of calls.
constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ull;

// SplitMix64's output at `state`.
inline uint64_t splitmix64_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

template <typename T>
struct DropoutBits;
template <>
struct DropoutBits<float> {
    using type = uint32_t;
};
template <>
struct DropoutBits<double> {
    using type = uint64_t;
};

// Units [begin, end): kept where the hash's top 53 bits are below `threshold`
// (ceil(keep 2^53)). The mask is selected with integer bits (the scale's or zero's): as a
// floating-point select, GCC compiles a jump per unit, mispredicted half the time at p =
// 0.5, 3.6x slower in the portable copy (measured).
template <typename T>
__attribute__((always_inline)) inline void dropout_elements(int64_t begin, int64_t end,
                                                            uint64_t key, uint64_t threshold,
                                                            T scale, const T* x, T* out,
                                                            T* mask) {
    using Bits = typename DropoutBits<T>::type;
    Bits scale_bits;
    __builtin_memcpy(&scale_bits, &scale, sizeof scale);
    // The state advances by the gamma per unit (an addition, where (i + 1) * gamma would
    // cost a vector multiply per unit on top of the mixer's two).
    uint64_t state = key + static_cast<uint64_t>(begin) * kGoldenGamma;
    for (int64_t i = begin; i < end; ++i) {
        state += kGoldenGamma;
        const uint64_t u = splitmix64_mix(state) >> 11;
        const Bits bits = scale_bits & (Bits(0) - Bits(u < threshold));
        T m;
        __builtin_memcpy(&m, &bits, sizeof m);
        mask[i] = m;
        out[i] = x[i] * m;
    }
}

}  // namespace
}  // namespace graphnet
