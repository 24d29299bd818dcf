// AVX-512 kernels of activations_avx512.h. Compiled for AVX-512: includes only the
// intrinsics.
#pragma GCC target("avx512f,avx2,fma")
// GCC warns that a lambda returning a vector "changes the ABI without AVX512F": it means the
// lambda's unused conversion to a plain function pointer; every call here is inside this
// file, compiled for AVX-512.
#pragma GCC diagnostic ignored "-Wpsabi"
#include "activations_avx512.h"

#include "simd_lanes_avx512.h"
#include "simd_math.h"

namespace graphnet {
namespace {

// top / d for d in [1, 2.5e38]: the estimate r of 1 / d (relative error below 2^-14), one
// Newton step r + r (1 - d r) (then below 2^-27), times top. A NaN d gives NaN.
struct DivideEstimated {
    __m512 operator()(__m512 top, __m512 d) const {
        const __m512 r = _mm512_rcp14_ps(d);
        const __m512 q = _mm512_mul_ps(top, r);
        return _mm512_fmadd_ps(q, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(1.0f)), q);
    }
};

}  // namespace

void sigmoid_avx512(int64_t n, const float* x, const float* bias, float* out) {
    map_with_bias<__m512>(n, x, bias, out,
                          [](__m512 v) { return sigmoid_clamped(v, DivideEstimated()); });
}

void tanh_avx512(int64_t n, const float* x, const float* bias, float* out) {
    map_with_bias<__m512>(n, x, bias, out,
                          [](__m512 v) { return tanh_split(v, DivideEstimated()); });
}

}  // namespace graphnet
