// The FMA units' peak on one core: 12 independent chains of 8-lane float32 FMAs, enough
// to keep both FMA pipes busy through their latency. The README's "% of the FMA peak"
// figures divide by this.
//
//     g++ -O2 -mavx2 -mfma benchmarks/fma_peak.cpp -o /tmp/fma_peak && /tmp/fma_peak
#include <immintrin.h>

#include <chrono>
#include <cstdio>

int main() {
    constexpr int kChains = 12;
    constexpr long kIterations = 200000000;
    __m256 acc[kChains];
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(0.001f * i);
    const __m256 a = _mm256_set1_ps(0.9999f), b = _mm256_set1_ps(0.0001f);
    const auto start = std::chrono::steady_clock::now();
    for (long it = 0; it < kIterations; ++it) {
#pragma GCC unroll 12
        for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    float sum = 0;  // used, so the loop is not optimised away
    for (int i = 0; i < kChains; ++i) sum += _mm256_cvtss_f32(acc[i]);
    std::printf("one core: %.1f GFLOP/s float32 FMA peak (checksum %.3f)\n",
                kIterations * kChains * 16 / seconds / 1e9, sum);
}
