// One core's read rate from its caches and memory: an array of each size summed with
// AVX-512 loads call after call (four chains of vector adds, no products), in CPU time,
// the fastest of 7 blocks of calls. "forward" reads it front to back every call;
// "alternating" reads it back to front every other call, so that a call starts on the
// lines the call before read last. A kernel that reads each weight once (one sample
// through an affine layer, an LSTM's step) cannot beat this rate for its weights' bytes
// (docs/performance/overhead.md).
//
//     g++ -O2 -mavx512f benchmarks/read_rate.cpp -o /tmp/read_rate && /tmp/read_rate
#include <immintrin.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace {

double cpu_seconds() {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

// n a multiple of 64 floats; backwards: the last 64 floats first.
float sum(const float* p, long n, bool backwards) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (long i = 0; i < n; i += 64) {
        const float* q = backwards ? p + n - 64 - i : p + i;
        a0 = _mm512_add_ps(a0, _mm512_load_ps(q));
        a1 = _mm512_add_ps(a1, _mm512_load_ps(q + 16));
        a2 = _mm512_add_ps(a2, _mm512_load_ps(q + 32));
        a3 = _mm512_add_ps(a3, _mm512_load_ps(q + 48));
    }
    float lanes[16];
    _mm512_storeu_ps(lanes, _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    float total = 0;
    for (float lane : lanes) total += lane;
    return total;
}

// Seconds a call, the fastest of 7 blocks of about 300 MB each.
double seconds_per_read(const float* p, long n, bool alternating, float& checksum) {
    const long calls = 300000000 / (n * 4) + 2;
    double best = 1e9;
    for (int block = 0; block < 7; ++block) {
        const double start = cpu_seconds();
        for (long call = 0; call < calls; ++call) {
            asm volatile("" : : "r"(p) : "memory");  // each call reads the array again
            checksum += sum(p, n, alternating && call % 2 == 1);
        }
        const double seconds = (cpu_seconds() - start) / calls;
        if (seconds < best) best = seconds;
    }
    return best;
}

}  // namespace

int main() {
    const double sizes_mb[] = {0.25, 0.5, 1.0, 2.0, 4.0, 6.3, 9.4, 12.6, 16.0, 24.0, 48.0};
    float checksum = 0;  // used, so the sums are not optimised away
    std::printf("one core, CPU time, fastest of 7 blocks: MB, us a read and GB/s, "
                "forward | alternating\n");
    for (double mb : sizes_mb) {
        const long n = static_cast<long>(mb * 1e6 / 4) / 64 * 64;
        float* p = static_cast<float*>(std::aligned_alloc(64, n * 4));
        std::memset(p, 0, n * 4);
        const double forward = seconds_per_read(p, n, false, checksum);
        const double alternating = seconds_per_read(p, n, true, checksum);
        std::printf("%6.2f  %8.1f %6.1f | %8.1f %6.1f\n", mb, forward * 1e6, n * 4 / forward / 1e9,
                    alternating * 1e6, n * 4 / alternating / 1e9);
        std::free(p);
    }
    std::printf("(checksum %g)\n", checksum);
}
