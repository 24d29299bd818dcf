// AVX-512 kernels of conv_winograd.h. Compiled for AVX-512F: includes only the intrinsics
// and the project's kernel headers.
#pragma GCC target("avx512f,avx2,fma")
#include <immintrin.h>

#include "conv_taps.h"
#include "conv_winograd.h"
#include "gemm_avx512.h"

namespace graphnet {
namespace {

__mmask16 first_lanes(int64_t count) {
    return count >= 16 ? static_cast<__mmask16>(0xffff)
           : count <= 0 ? static_cast<__mmask16>(0)
                        : static_cast<__mmask16>((1u << count) - 1u);
}

// Indices of the even and the odd floats of two vectors (32 floats): of a row of 16
// tiles, their first and second columns.
__m512i even_floats() {
    return _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
}
__m512i odd_floats() {
    return _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
}

// The one-axis transforms of a tile, on 16 tiles at once: input (alpha floats -> B^T d),
// weights (r taps -> G g) and output (alpha products -> A^T m, kOut outputs). A tile's
// 2-D transforms apply them along its columns, then along its rows.
//
// F(2x2, 3x3): B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
// G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], A^T = [1 1 1 0; 0 1 -1 -1].
struct F2x2_3x3 {
    static constexpr int kOut = 2, kAlpha = 4, kTaps = 3;
    static void input(const __m512 (&d)[4], __m512 (&v)[4]) {
        v[0] = _mm512_sub_ps(d[0], d[2]);
        v[1] = _mm512_add_ps(d[1], d[2]);
        v[2] = _mm512_sub_ps(d[2], d[1]);
        v[3] = _mm512_sub_ps(d[1], d[3]);
    }
    static void weights(const __m512 (&k)[3], __m512 (&u)[4]) {
        const __m512 half = _mm512_set1_ps(0.5f);
        u[0] = k[0];
        u[1] = _mm512_mul_ps(half, _mm512_add_ps(_mm512_add_ps(k[0], k[1]), k[2]));
        u[2] = _mm512_mul_ps(half, _mm512_add_ps(_mm512_sub_ps(k[0], k[1]), k[2]));
        u[3] = k[2];
    }
    static void output(const __m512 (&m)[4], __m512 (&y)[2]) {
        y[0] = _mm512_add_ps(_mm512_add_ps(m[0], m[1]), m[2]);
        y[1] = _mm512_sub_ps(_mm512_sub_ps(m[1], m[2]), m[3]);
    }
    // The weight gradient's adjoints: A y (alpha from the m output gradients) and G^T u
    // (r taps from alpha points).
    static void output_adjoint(const __m512 (&y)[2], __m512 (&m)[4]) {
        m[0] = y[0];
        m[1] = _mm512_add_ps(y[0], y[1]);
        m[2] = _mm512_sub_ps(y[0], y[1]);
        m[3] = _mm512_sub_ps(_mm512_setzero_ps(), y[1]);
    }
    static void weights_adjoint(const __m512 (&u)[4], __m512 (&k)[3]) {
        const __m512 half = _mm512_set1_ps(0.5f);
        const __m512 sum = _mm512_mul_ps(half, _mm512_add_ps(u[1], u[2]));
        k[0] = _mm512_add_ps(u[0], sum);
        k[1] = _mm512_mul_ps(half, _mm512_sub_ps(u[1], u[2]));
        k[2] = _mm512_add_ps(sum, u[3]);
    }
};

// F(2x2, 5x5) and F(4x4, 3x3) on 6x6 tiles, points 0, 1, -1, 2, -2, infinity: B^T's row
// of a finite point p holds the coefficients of the product of (x - q) over the other
// finite points q (infinity's row: over all of them), G's row of p is 1, p, ..., p^(r-1)
// over the product of (p - q), and A^T's rows are 1, p, ..., p^(m-1) (with infinity's 1
// in the last):
// B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
//        0 4 0 -5 0 1].
struct SixPoints {
    static constexpr int kAlpha = 6;
    static void input(const __m512 (&d)[6], __m512 (&v)[6]) {
        const __m512 two = _mm512_set1_ps(2.0f), four = _mm512_set1_ps(4.0f);
        const __m512 five = _mm512_set1_ps(5.0f);
        const __m512 odd = _mm512_sub_ps(d[3], d[1]), even = _mm512_sub_ps(d[4], d[2]);
        v[0] = _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4]));
        v[1] = _mm512_fnmadd_ps(four, _mm512_add_ps(d[1], d[2]), _mm512_add_ps(d[3], d[4]));
        v[2] = _mm512_fmadd_ps(four, _mm512_sub_ps(d[1], d[2]), _mm512_sub_ps(d[4], d[3]));
        v[3] = _mm512_fmadd_ps(two, odd, even);
        v[4] = _mm512_fnmadd_ps(two, odd, even);
        v[5] = _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5]));
    }
};

// G = [1/4 0 0 0 0; -1/6 (1 1 1 1 1); -1/6 (1 -1 1 -1 1); 1/24 (1 2 4 8 16);
//      1/24 (1 -2 4 -8 16); 0 0 0 0 1], A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 1].
struct F2x2_5x5 : SixPoints {
    static constexpr int kOut = 2, kTaps = 5;
    static void weights(const __m512 (&k)[5], __m512 (&u)[6]) {
        const __m512 four = _mm512_set1_ps(4.0f), sixteen = _mm512_set1_ps(16.0f);
        const __m512 even = _mm512_add_ps(_mm512_add_ps(k[0], k[2]), k[4]);
        const __m512 odd = _mm512_add_ps(k[1], k[3]);
        const __m512 even4 = _mm512_fmadd_ps(sixteen, k[4], _mm512_fmadd_ps(four, k[2], k[0]));
        const __m512 odd4 = _mm512_fmadd_ps(four, k[3], k[1]);  // (2 k1 + 8 k3) / 2
        const __m512 sixth = _mm512_set1_ps(-1.0f / 6.0f);
        const __m512 twelfth = _mm512_set1_ps(1.0f / 12.0f), twenty_fourth = _mm512_set1_ps(1.0f / 24.0f);
        u[0] = _mm512_mul_ps(_mm512_set1_ps(0.25f), k[0]);
        u[1] = _mm512_mul_ps(sixth, _mm512_add_ps(even, odd));
        u[2] = _mm512_mul_ps(sixth, _mm512_sub_ps(even, odd));
        u[3] = _mm512_fmadd_ps(twelfth, odd4, _mm512_mul_ps(twenty_fourth, even4));
        u[4] = _mm512_fnmadd_ps(twelfth, odd4, _mm512_mul_ps(twenty_fourth, even4));
        u[5] = k[4];
    }
    static void output(const __m512 (&m)[6], __m512 (&y)[2]) {
        const __m512 two = _mm512_set1_ps(2.0f);
        y[0] = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(m[0], m[1]), _mm512_add_ps(m[2], m[3])),
                             m[4]);
        y[1] = _mm512_add_ps(_mm512_fmadd_ps(two, _mm512_sub_ps(m[3], m[4]), _mm512_sub_ps(m[1], m[2])),
                             m[5]);
    }
    static void output_adjoint(const __m512 (&y)[2], __m512 (&m)[6]) {
        const __m512 two = _mm512_set1_ps(2.0f);
        m[0] = y[0];
        m[1] = _mm512_add_ps(y[0], y[1]);
        m[2] = _mm512_sub_ps(y[0], y[1]);
        m[3] = _mm512_fmadd_ps(two, y[1], y[0]);
        m[4] = _mm512_fnmadd_ps(two, y[1], y[0]);
        m[5] = y[1];
    }
    // G^T u: of the points' sums and differences (e, o for +-1, e2, o2 for +-2),
    // k = [u0 / 4 - e / 6 + e2 / 24, -o / 6 + o2 / 12, (e2 - e) / 6, -o / 6 + o2 / 3,
    //      -e / 6 + 2 e2 / 3 + u5].
    static void weights_adjoint(const __m512 (&u)[6], __m512 (&k)[5]) {
        const __m512 e = _mm512_add_ps(u[1], u[2]), o = _mm512_sub_ps(u[1], u[2]);
        const __m512 e2 = _mm512_add_ps(u[3], u[4]), o2 = _mm512_sub_ps(u[3], u[4]);
        const __m512 sixth = _mm512_set1_ps(1.0f / 6.0f);
        const __m512 e6 = _mm512_mul_ps(sixth, e), o6 = _mm512_mul_ps(sixth, o);
        k[0] = _mm512_fmadd_ps(_mm512_set1_ps(1.0f / 24.0f), e2,
                               _mm512_fmsub_ps(_mm512_set1_ps(0.25f), u[0], e6));
        k[1] = _mm512_fmsub_ps(_mm512_set1_ps(1.0f / 12.0f), o2, o6);
        k[2] = _mm512_mul_ps(sixth, _mm512_sub_ps(e2, e));
        k[3] = _mm512_fmsub_ps(_mm512_set1_ps(1.0f / 3.0f), o2, o6);
        k[4] = _mm512_add_ps(_mm512_fmsub_ps(_mm512_set1_ps(2.0f / 3.0f), e2, e6), u[5]);
    }
};

// G = [1/4 0 0; -1/6 (1 1 1); -1/6 (1 -1 1); 1/24 (1 2 4); 1/24 (1 -2 4); 0 0 1],
// A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1].
struct F4x4_3x3 : SixPoints {
    static constexpr int kOut = 4, kTaps = 3;
    static void weights(const __m512 (&k)[3], __m512 (&u)[6]) {
        const __m512 even = _mm512_add_ps(k[0], k[2]);
        const __m512 even4 = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), k[2], k[0]);
        const __m512 sixth = _mm512_set1_ps(-1.0f / 6.0f);
        const __m512 twelfth = _mm512_set1_ps(1.0f / 12.0f), twenty_fourth = _mm512_set1_ps(1.0f / 24.0f);
        u[0] = _mm512_mul_ps(_mm512_set1_ps(0.25f), k[0]);
        u[1] = _mm512_mul_ps(sixth, _mm512_add_ps(even, k[1]));
        u[2] = _mm512_mul_ps(sixth, _mm512_sub_ps(even, k[1]));
        u[3] = _mm512_fmadd_ps(twelfth, k[1], _mm512_mul_ps(twenty_fourth, even4));
        u[4] = _mm512_fnmadd_ps(twelfth, k[1], _mm512_mul_ps(twenty_fourth, even4));
        u[5] = k[2];
    }
    static void output(const __m512 (&m)[6], __m512 (&y)[4]) {
        const __m512 odd = _mm512_sub_ps(m[1], m[2]), even = _mm512_add_ps(m[1], m[2]);
        const __m512 odd2 = _mm512_sub_ps(m[3], m[4]), even2 = _mm512_add_ps(m[3], m[4]);
        y[0] = _mm512_add_ps(_mm512_add_ps(m[0], even), even2);
        y[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), odd2, odd);
        y[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), even2, even);
        y[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), odd2, odd), m[5]);
    }
    // A y: m = [y0, e + o, e - o, e4 + o4, e4 - o4, y3] of the even and odd outputs'
    // sums at 1 (e = y0 + y2, o = y1 + y3) and at 2 (e4 = y0 + 4 y2, o4 = 2 y1 + 8 y3).
    static void output_adjoint(const __m512 (&y)[4], __m512 (&m)[6]) {
        const __m512 two = _mm512_set1_ps(2.0f), four = _mm512_set1_ps(4.0f);
        const __m512 e = _mm512_add_ps(y[0], y[2]), o = _mm512_add_ps(y[1], y[3]);
        const __m512 e4 = _mm512_fmadd_ps(four, y[2], y[0]);
        const __m512 o4 = _mm512_mul_ps(two, _mm512_fmadd_ps(four, y[3], y[1]));
        m[0] = y[0];
        m[1] = _mm512_add_ps(e, o);
        m[2] = _mm512_sub_ps(e, o);
        m[3] = _mm512_add_ps(e4, o4);
        m[4] = _mm512_sub_ps(e4, o4);
        m[5] = y[3];
    }
    // G^T u: of the points' sums and differences (e, o for +-1, e2, o2 for +-2),
    // k = [u0 / 4 - e / 6 + e2 / 24, -o / 6 + o2 / 12, (e2 - e) / 6 + u5].
    static void weights_adjoint(const __m512 (&u)[6], __m512 (&k)[3]) {
        const __m512 e = _mm512_add_ps(u[1], u[2]), o = _mm512_sub_ps(u[1], u[2]);
        const __m512 e2 = _mm512_add_ps(u[3], u[4]), o2 = _mm512_sub_ps(u[3], u[4]);
        const __m512 sixth = _mm512_set1_ps(1.0f / 6.0f);
        const __m512 e6 = _mm512_mul_ps(sixth, e);
        k[0] = _mm512_fmadd_ps(_mm512_set1_ps(1.0f / 24.0f), e2,
                               _mm512_fmsub_ps(_mm512_set1_ps(0.25f), u[0], e6));
        k[1] = _mm512_fmsub_ps(_mm512_set1_ps(1.0f / 12.0f), o2, _mm512_mul_ps(sixth, o));
        k[2] = _mm512_fmadd_ps(sixth, _mm512_sub_ps(e2, e), u[5]);
    }
};

// F(2x2, 7x7) on 8x8 tiles, points 0, 1, -1, 2, -2, 1/2, -1/2, infinity (the construction
// above; row 0 of B^T and of G negated, which leaves U V the same):
// B^T = [1 0 -21/4 0 21/4 0 -1 0; 0 1 1 -17/4 -17/4 1 1 0; 0 -1 1 17/4 -17/4 -1 1 0;
//        0 1/2 1/4 -5/2 -5/4 2 1 0; 0 -1/2 1/4 5/2 -5/4 -2 1 0;
//        0 2 4 -5/2 -5 1/2 1 0; 0 -2 4 5/2 -5 -1/2 1 0; 0 -1 0 21/4 0 -21/4 0 1],
// G = [1 0 0 0 0 0 0; -2/9 (1 1 1 1 1 1 1); -2/9 (1 -1 1 -1 1 -1 1);
//      1/90 (1 2 4 8 16 32 64); 1/90 (1 -2 4 -8 16 -32 64);
//      1/90 (64 32 16 8 4 2 1); 1/90 (64 -32 16 -8 4 -2 1); 0 0 0 0 0 0 1],
// A^T = [1 1 1 1 1 1 1 0; 0 1 -1 2 -2 1/2 -1/2 1].
struct F2x2_7x7 {
    static constexpr int kOut = 2, kAlpha = 8, kTaps = 7;
    static void input(const __m512 (&d)[8], __m512 (&v)[8]) {
        const __m512 quarter = _mm512_set1_ps(0.25f), half = _mm512_set1_ps(0.5f);
        const __m512 two = _mm512_set1_ps(2.0f), four = _mm512_set1_ps(4.0f);
        const __m512 five = _mm512_set1_ps(5.0f), five_halves = _mm512_set1_ps(2.5f);
        const __m512 five_quarters = _mm512_set1_ps(1.25f);
        const __m512 seventeen_quarters = _mm512_set1_ps(4.25f);
        const __m512 twenty_one_quarters = _mm512_set1_ps(5.25f);
        v[0] = _mm512_fmadd_ps(twenty_one_quarters, _mm512_sub_ps(d[4], d[2]),
                               _mm512_sub_ps(d[0], d[6]));
        v[7] = _mm512_fmadd_ps(twenty_one_quarters, _mm512_sub_ps(d[3], d[5]),
                               _mm512_sub_ps(d[7], d[1]));
        // each pair of points +-p: the even powers' sum and the odd powers' sum
        __m512 even = _mm512_fnmadd_ps(seventeen_quarters, d[4], _mm512_add_ps(d[2], d[6]));
        __m512 odd = _mm512_fnmadd_ps(seventeen_quarters, d[3], _mm512_add_ps(d[1], d[5]));
        v[1] = _mm512_add_ps(even, odd);
        v[2] = _mm512_sub_ps(even, odd);
        even = _mm512_fmadd_ps(quarter, d[2], _mm512_fnmadd_ps(five_quarters, d[4], d[6]));
        odd = _mm512_fmadd_ps(half, d[1], _mm512_fmsub_ps(two, d[5], _mm512_mul_ps(five_halves, d[3])));
        v[3] = _mm512_add_ps(even, odd);
        v[4] = _mm512_sub_ps(even, odd);
        even = _mm512_fmadd_ps(four, d[2], _mm512_fnmadd_ps(five, d[4], d[6]));
        odd = _mm512_fmadd_ps(two, d[1], _mm512_fmsub_ps(half, d[5], _mm512_mul_ps(five_halves, d[3])));
        v[5] = _mm512_add_ps(even, odd);
        v[6] = _mm512_sub_ps(even, odd);
    }
    static void weights(const __m512 (&k)[7], __m512 (&u)[8]) {
        const __m512 two = _mm512_set1_ps(2.0f), four = _mm512_set1_ps(4.0f);
        const __m512 ninetieth = _mm512_set1_ps(1.0f / 90.0f);
        const __m512 minus_two_ninths = _mm512_set1_ps(-2.0f / 9.0f);
        const __m512 even = _mm512_add_ps(_mm512_add_ps(k[0], k[2]), _mm512_add_ps(k[4], k[6]));
        const __m512 odd = _mm512_add_ps(_mm512_add_ps(k[1], k[3]), k[5]);
        // at 2: k0 + 4 k2 + 16 k4 + 64 k6 and 2 (k1 + 4 k3 + 16 k5); at 1/2, times 64
        const __m512 even2 = _mm512_fmadd_ps(four, _mm512_fmadd_ps(four, _mm512_fmadd_ps(four, k[6], k[4]), k[2]), k[0]);
        const __m512 odd2 = _mm512_mul_ps(two, _mm512_fmadd_ps(four, _mm512_fmadd_ps(four, k[5], k[3]), k[1]));
        const __m512 even_half = _mm512_fmadd_ps(four, _mm512_fmadd_ps(four, _mm512_fmadd_ps(four, k[0], k[2]), k[4]), k[6]);
        const __m512 odd_half = _mm512_mul_ps(two, _mm512_fmadd_ps(four, _mm512_fmadd_ps(four, k[1], k[3]), k[5]));
        u[0] = k[0];
        u[1] = _mm512_mul_ps(minus_two_ninths, _mm512_add_ps(even, odd));
        u[2] = _mm512_mul_ps(minus_two_ninths, _mm512_sub_ps(even, odd));
        u[3] = _mm512_mul_ps(ninetieth, _mm512_add_ps(even2, odd2));
        u[4] = _mm512_mul_ps(ninetieth, _mm512_sub_ps(even2, odd2));
        u[5] = _mm512_mul_ps(ninetieth, _mm512_add_ps(even_half, odd_half));
        u[6] = _mm512_mul_ps(ninetieth, _mm512_sub_ps(even_half, odd_half));
        u[7] = k[6];
    }
    static void output(const __m512 (&m)[8], __m512 (&y)[2]) {
        const __m512 e1 = _mm512_add_ps(m[1], m[2]), o1 = _mm512_sub_ps(m[1], m[2]);
        const __m512 e2 = _mm512_add_ps(m[3], m[4]), o2 = _mm512_sub_ps(m[3], m[4]);
        const __m512 e3 = _mm512_add_ps(m[5], m[6]), o3 = _mm512_sub_ps(m[5], m[6]);
        y[0] = _mm512_add_ps(_mm512_add_ps(m[0], e1), _mm512_add_ps(e2, e3));
        y[1] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(2.0f), o2, o1),
                             _mm512_fmadd_ps(_mm512_set1_ps(0.5f), o3, m[7]));
    }
    static void output_adjoint(const __m512 (&y)[2], __m512 (&m)[8]) {
        const __m512 two = _mm512_mul_ps(_mm512_set1_ps(2.0f), y[1]);
        const __m512 half = _mm512_mul_ps(_mm512_set1_ps(0.5f), y[1]);
        m[0] = y[0];
        m[1] = _mm512_add_ps(y[0], y[1]);
        m[2] = _mm512_sub_ps(y[0], y[1]);
        m[3] = _mm512_add_ps(y[0], two);
        m[4] = _mm512_sub_ps(y[0], two);
        m[5] = _mm512_add_ps(y[0], half);
        m[6] = _mm512_sub_ps(y[0], half);
        m[7] = y[1];
    }
    // G^T u: of the points' sums and differences (e1, o1 at +-1, e2, o2 at +-2, e3, o3 at
    // +-1/2), k_j = [j = 0] u0 - 2/9 (e1 or o1) + 2^j / 90 (e2 or o2) + 2^(6 - j) / 90 (e3 or
    // o3) + [j = 6] u7, the sums at even taps and the differences at odd ones.
    static void weights_adjoint(const __m512 (&u)[8], __m512 (&k)[7]) {
        const __m512 two_ninths = _mm512_set1_ps(2.0f / 9.0f);
        const __m512 e1 = _mm512_mul_ps(two_ninths, _mm512_add_ps(u[1], u[2]));
        const __m512 o1 = _mm512_mul_ps(two_ninths, _mm512_sub_ps(u[1], u[2]));
        const __m512 ninetieth = _mm512_set1_ps(1.0f / 90.0f);
        const __m512 e2 = _mm512_mul_ps(ninetieth, _mm512_add_ps(u[3], u[4]));
        const __m512 o2 = _mm512_mul_ps(ninetieth, _mm512_sub_ps(u[3], u[4]));
        const __m512 e3 = _mm512_mul_ps(ninetieth, _mm512_add_ps(u[5], u[6]));
        const __m512 o3 = _mm512_mul_ps(ninetieth, _mm512_sub_ps(u[5], u[6]));
#pragma GCC unroll 7
        for (int j = 0; j < 7; ++j) {
            const bool even = j % 2 == 0;
            const __m512 at2 = _mm512_set1_ps(static_cast<float>(1 << j));
            const __m512 at_half = _mm512_set1_ps(static_cast<float>(1 << (6 - j)));
            k[j] = _mm512_fmadd_ps(at_half, even ? e3 : o3,
                                   _mm512_fmsub_ps(at2, even ? e2 : o2, even ? e1 : o1));
        }
        k[0] = _mm512_add_ps(k[0], u[0]);
        k[6] = _mm512_add_ps(k[6], u[7]);
    }
};

// Where a group of 16 tiles reads or writes one row of its values (of their patches,
// outputs or output gradients), 16 floats at a time (8 tiles of 2x2, 4 of 4x4): load or
// store i at q + offset[i] (tile row `row[i]` of the group's), of which the first
// columns[i] floats are in the plane's row (masked loads read the rest as zeros, stores
// write those only).
struct GroupLoads {
    int64_t offset[4], columns[4], row[4];
};

// The m loads of a group of 16 tiles from its first tile's row at q: `per_row` lanes a tile
// row (16: the group runs along one tile row), tile rows row_floats apart, `rows` of them
// there (loads of the rows past them read the first again, and masked, nothing),
// `columns` floats of a row from q on.
template <int m>
GroupLoads group_loads(int64_t per_row, int64_t rows, int64_t row_floats, int64_t columns) {
    GroupLoads at{};
    for (int i = 0; i < m; ++i) {
        const int64_t lane = i * 16 / m, in_row = lane % per_row * m;
        const bool there = lane / per_row < rows;
        at.row[i] = there ? lane / per_row : 0;
        at.offset[i] = at.row[i] * row_floats + in_row;
        at.columns[i] = there ? columns - in_row : 0;
    }
    return at;
}

// `at` of plane row `row` of the group's first tile row, its tile rows m rows apart: the
// loads and stores of rows from `height` on reading zeros and writing nothing.
template <int m>
GroupLoads within_height(GroupLoads at, int64_t row, int64_t height) {
    for (int i = 0; i < m; ++i) {
        if (row + m * at.row[i] >= height) at.columns[i] = 0;
    }
    return at;
}

// 16 floats of load i (GroupLoads) from j floats on; masked: those past its columns as
// zeros, else read (and dropped) as they are.
template <bool masked>
__m512 load_floats(const float* q, const GroupLoads& at, int i, int64_t j) {
    if constexpr (masked) {
        return _mm512_maskz_loadu_ps(first_lanes(at.columns[i] - j), q + at.offset[i] + j);
    }
    return _mm512_loadu_ps(q + at.offset[i] + j);
}

// Row k of 16 tiles' n x n values, from q (the first tile's row, tiles m floats apart, read
// as `at` says): d[j][k] = column j of each tile, j < n.
template <int m, int n, bool masked>
void load_tile_row(const float* q, const GroupLoads& at, int k, __m512 (&d)[n][n]) {
    if constexpr (m == 2) {  // even and odd floats of 32 from 0, 2, 4 (6) floats on
        const __m512i even = even_floats(), odd = odd_floats();
#pragma GCC unroll 4
        for (int j = 0; j < n; j += 2) {
            const __m512 lo = load_floats<masked>(q, at, 0, j), hi = load_floats<masked>(q, at, 1, j);
            d[j][k] = _mm512_permutex2var_ps(lo, even, hi);
            d[j + 1][k] = _mm512_permutex2var_ps(lo, odd, hi);
        }
    } else {  // every fourth float of 64 from j on: two halves of 8 tiles
        static_assert(m == 4);
        const __m512i fourth = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 28, 24, 20, 16, 12, 8, 4, 0);
#pragma GCC unroll 8
        for (int j = 0; j < n; ++j) {
            const __m512 low = _mm512_permutex2var_ps(load_floats<masked>(q, at, 0, j), fourth,
                                                      load_floats<masked>(q, at, 1, j));
            const __m512 high = _mm512_permutex2var_ps(load_floats<masked>(q, at, 2, j), fourth,
                                                       load_floats<masked>(q, at, 3, j));
            d[j][k] = _mm512_shuffle_f32x4(low, high, 0x44);
        }
    }
}

// One output row of 16 tiles from y[c] (column c of each tile), interleaved: row[m i + c]
// = lane i of y[c], from the first tile's row at `row`, stored as `at` says.
template <int m>
void store_tile_row(const __m512 (&y)[m], const GroupLoads& at, float* row) {
    // pairs: [a0 b0 a1 b1 ...] of the first and the last 8 lanes of two vectors
    const __m512i first = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i second = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    if constexpr (m == 2) {
        _mm512_mask_storeu_ps(row + at.offset[0], first_lanes(at.columns[0]),
                              _mm512_permutex2var_ps(y[0], first, y[1]));
        _mm512_mask_storeu_ps(row + at.offset[1], first_lanes(at.columns[1]),
                              _mm512_permutex2var_ps(y[0], second, y[1]));
    } else {  // pairs of y0, y1 and of y2, y3, then pairs of those pairs
        static_assert(m == 4);
        const __m512i quads_first =
            _mm512_set_epi32(23, 22, 7, 6, 21, 20, 5, 4, 19, 18, 3, 2, 17, 16, 1, 0);
        const __m512i quads_second =
            _mm512_set_epi32(31, 30, 15, 14, 29, 28, 13, 12, 27, 26, 11, 10, 25, 24, 9, 8);
        const __m512 a[2] = {_mm512_permutex2var_ps(y[0], first, y[1]),
                             _mm512_permutex2var_ps(y[0], second, y[1])};
        const __m512 b[2] = {_mm512_permutex2var_ps(y[2], first, y[3]),
                             _mm512_permutex2var_ps(y[2], second, y[3])};
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
            _mm512_mask_storeu_ps(row + at.offset[2 * h], first_lanes(at.columns[2 * h]),
                                  _mm512_permutex2var_ps(a[h], quads_first, b[h]));
            _mm512_mask_storeu_ps(row + at.offset[2 * h + 1], first_lanes(at.columns[2 * h + 1]),
                                  _mm512_permutex2var_ps(a[h], quads_second, b[h]));
        }
    }
}

// The 2-D transform of 16 tiles from their n x n values (columns[j][i]: row i, column j):
// `along` (a Tile's input or weights transform, n values to alpha) applied to each column,
// then to each row of the result; point (i, j) of the tiles of lanes `lanes` stored at to +
// (alpha i + j) * point_stride on, one after another.
template <int alpha, int n, auto along>
void transform_tiles(const __m512 (&columns)[n][n], __mmask16 lanes, float* to,
                     int64_t point_stride) {
    const bool gaps = (lanes & (lanes + 1)) != 0;  // not the first lanes only
    const __mmask16 stored = first_lanes(__builtin_popcount(lanes));
    __m512 t[alpha][n];  // along the columns: t[row][column]
#pragma GCC unroll 8
    for (int j = 0; j < n; ++j) {
        __m512 column[alpha];
        along(columns[j], column);
#pragma GCC unroll 8
        for (int i = 0; i < alpha; ++i) t[i][j] = column[i];
    }
#pragma GCC unroll 8
    for (int i = 0; i < alpha; ++i) {  // and along the rows
        __m512 row[alpha];
        along(t[i], row);
#pragma GCC unroll 8
        for (int j = 0; j < alpha; ++j) {
            float* point = to + (alpha * i + j) * point_stride;
            if (gaps) {
                _mm512_mask_storeu_ps(point, stored, _mm512_maskz_compress_ps(lanes, row[j]));
            } else {
                _mm512_mask_storeu_ps(point, lanes, row[j]);
            }
        }
    }
}

// V for 16 tiles from tile row ty, column tx0 (lanes below `lanes` kept), per_row lanes a
// tile row of the `rows` there (group_loads), of one channel plane: alpha padded rows, each
// read as the tiles' columns 0 .. alpha - 1.
template <typename Tile>
void input_tiles(const WinogradConv& g, const float* plane, int64_t ty, int64_t tx0,
                 int64_t per_row, int64_t rows, __mmask16 lanes, float* to, int64_t point_stride) {
    constexpr int m = Tile::kOut, alpha = Tile::kAlpha;
    const GroupLoads at = group_loads<m>(per_row, rows, m * g.Wp, 0);
    __m512 d[alpha][alpha];  // d[column][row]
#pragma GCC unroll 8
    for (int k = 0; k < alpha; ++k) {
        load_tile_row<m, alpha, false>(plane + (m * ty + k) * g.Wp + m * tx0, at, k, d);
    }
    transform_tiles<alpha, alpha, Tile::input>(d, lanes, to, point_stride);  // B^T d B
}

// The first half of a 2-D transform that reduces 16 tiles' alpha x alpha points (point
// (i, j) of the tiles of lanes `lanes` at from + (alpha i + j) * point_stride on, one after
// another: transform_tiles' layout) to n x n: `along` (alpha values to n) applied to each
// column, s[row][column] = its result.
template <int alpha, int n, auto along>
void transform_point_columns(const float* from, int64_t point_stride, __mmask16 lanes,
                             __m512 (&s)[n][alpha]) {
    const bool gaps = (lanes & (lanes + 1)) != 0;  // not the first lanes only
    const __mmask16 stored = first_lanes(__builtin_popcount(lanes));
#pragma GCC unroll 8
    for (int j = 0; j < alpha; ++j) {
        __m512 column[alpha], out[n];
#pragma GCC unroll 8
        for (int i = 0; i < alpha; ++i) {
            const float* point = from + (alpha * i + j) * point_stride;
            column[i] = gaps ? _mm512_maskz_expand_ps(lanes, _mm512_maskz_loadu_ps(stored, point))
                             : _mm512_maskz_loadu_ps(lanes, point);
        }
        along(column, out);
#pragma GCC unroll 7
        for (int i = 0; i < n; ++i) s[i][j] = out[i];
    }
}

// The outputs (those within H x W) of one filter from its products (point p at products +
// p * point_stride, transform_tiles' layout) for 16 tiles from tile row ty, column tx0
// (lanes `lanes`), per_row lanes a tile row of the `rows` there (group_loads).
template <typename Tile>
void output_tiles(const WinogradConv& g, const float* products, int64_t point_stride,
                  __mmask16 lanes, int64_t per_row, int64_t rows, float bias, int64_t ty,
                  int64_t tx0, float* plane) {
    constexpr int m = Tile::kOut, alpha = Tile::kAlpha;
    __m512 s[m][alpha];  // A^T M
    transform_point_columns<alpha, m, Tile::output>(products, point_stride, lanes, s);
    const GroupLoads at = group_loads<m>(per_row, rows, m * g.W, g.W - m * tx0);
    const __m512 b = _mm512_set1_ps(bias);
    for (int r = 0; r < m && m * ty + r < g.H; ++r) {  // (A^T M) A
        __m512 out[m];
        Tile::output(s[r], out);
#pragma GCC unroll 4
        for (int c = 0; c < m; ++c) out[c] = _mm512_add_ps(out[c], b);
        store_tile_row<m>(out, within_height<m>(at, m * ty + r, g.H),
                          plane + (m * ty + r) * g.W + m * tx0);
    }
}

// Calls tiles(r, tx0, lanes, column) for the groups of 16 tiles of `rows` tile rows, per_row
// lanes a tile row (group_loads): from row r, column tx0, the tiles of lanes `lanes` to the
// block's columns from `column` on, one after another.
template <typename Tiles>
void for_each_group(const WinogradConv& g, int64_t rows, int64_t per_row, Tiles&& tiles) {
    if (per_row == 16) {
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t tx0 = 0; tx0 < g.tiles_w; tx0 += 16) {
                tiles(r, tx0, first_lanes(g.tiles_w - tx0), r * g.tiles_w + tx0);
            }
        }
        return;
    }
    const int64_t group_rows = 16 / per_row;
    for (int64_t r = 0; r < rows; r += group_rows) {
        __mmask16 lanes = 0;  // each row's tiles_w of its per_row lanes
        for (int64_t i = 0; i < group_rows && r + i < rows; ++i) {
            lanes |= static_cast<__mmask16>(first_lanes(g.tiles_w) << (i * per_row));
        }
        tiles(r, 0, lanes, r * g.tiles_w);
    }
}

// V of the tiles of tile rows ty0 .. ty0 + rows - 1 of padded planes `plane` floats apart
// (g.Wp wide), per_row lanes a tile row (group_loads), into a block of n tiles: channel c's
// point p at v + c * winograd_stride(g, n) + p * n, from the block's column at v on.
template <typename Tile>
void input_rows(const WinogradConv& g, const float* xpad, int64_t plane, int64_t ty0,
                int64_t rows, int64_t per_row, float* v, int64_t n) {
    const int64_t stride = winograd_stride(g, n);
    for (int64_t c = 0; c < g.C; ++c) {
        for_each_group(g, rows, per_row, [&](int64_t r, int64_t tx0, __mmask16 lanes, int64_t column) {
            input_tiles<Tile>(g, xpad + c * plane, ty0 + r, tx0, per_row, rows - r, lanes,
                              v + c * stride + column, n);
        });
    }
}

// Q = A dy A^T for 16 tiles from tile row ty, column tx0 (lanes below `lanes` kept), per_row
// lanes a tile row of the `rows` there (group_loads), of one filter's output gradient plane
// (H x W, unpadded: the rows and columns past it are zeros), A the tile's output
// transform's transpose: the adjoint of output_tiles.
template <typename Tile>
void output_gradient_tiles(const WinogradConv& g, const float* plane, int64_t ty, int64_t tx0,
                           int64_t per_row, int64_t rows, __mmask16 lanes, float* to,
                           int64_t point_stride) {
    constexpr int m = Tile::kOut;
    const GroupLoads at = group_loads<m>(per_row, rows, m * g.W, g.W - m * tx0);
    __m512 dy[m][m];  // dy[column][row]
#pragma GCC unroll 4
    for (int k = 0; k < m; ++k) {
        load_tile_row<m, m, true>(plane + (m * ty + k) * g.W + m * tx0,
                                  within_height<m>(at, m * ty + k, g.H), k, dy);
    }
    transform_tiles<Tile::kAlpha, m, Tile::output_adjoint>(dy, lanes, to, point_stride);
}

// Q of the tiles of tile rows ty0 .. ty0 + rows - 1 of an image's output gradient
// (F x H x W), laid out as input_rows lays out V.
template <typename Tile>
void output_gradient_rows(const WinogradConv& g, const float* dout, int64_t ty0, int64_t rows,
                          int64_t per_row, float* q, int64_t n) {
    const int64_t stride = winograd_stride(g, n);
    for (int64_t f = 0; f < g.F; ++f) {
        for_each_group(g, rows, per_row, [&](int64_t r, int64_t tx0, __mmask16 lanes, int64_t column) {
            output_gradient_tiles<Tile>(g, dout + f * g.H * g.W, ty0 + r, tx0, per_row, rows - r,
                                        lanes, q + f * stride + column, n);
        });
    }
}

// Padded rows of a strip under tile rows ty0 .. ty0 + rows - 1: m a row and r - 1 more.
int64_t strip_rows(const WinogradConv& g, int64_t rows) { return g.m * rows + g.r - 1; }

// The padded rows under tile rows ty0 .. ty0 + rows - 1 of an image x (of `in`): padded
// rows m ty0 on (strip_rows) of each channel, into planes of g.Wp floats at strip. The
// pad's columns, before the image's and from in.W + in.pad on, are never written: zeros
// from the caller.
void pad_rows(const WinogradConv& g, const WinogradInput& in, const float* x, int64_t ty0,
              int64_t rows, float* strip) {
    const int64_t planes_rows = strip_rows(g, rows);
    for (int64_t c = 0; c < g.C; ++c) {
        for (int64_t s = 0; s < planes_rows; ++s) {
            const int64_t h = g.m * ty0 + s - in.pad;  // the image row under padded row m ty0 + s
            float* to = strip + (c * planes_rows + s) * g.Wp + in.pad;
            if (h >= 0 && h < in.H) {
                const float* from = x + (c * in.H + h) * in.W;
                for (int64_t i = 0; i < in.W; ++i) to[i] = from[i];
            } else {
                for (int64_t i = 0; i < in.W; ++i) to[i] = 0.0f;
            }
        }
    }
}

// The images x (count of `in`) laid into padded images of C x g.Hp x g.Wp one after another
// at xpad, `in.pad` rows and columns in: their interiors only, the zeros around them left.
void pad_interiors(const WinogradConv& g, const WinogradInput& in, const float* x, int64_t count,
                   float* xpad) {
    for (int64_t plane = 0; plane < count * g.C; ++plane) {
        for (int64_t h = 0; h < in.H; ++h) {
            const float* from = x + (plane * in.H + h) * in.W;
            float* to = xpad + (plane * g.Hp + in.pad + h) * g.Wp + in.pad;
            for (int64_t i = 0; i < in.W; i += 16) {  // 16 floats at a time
                const __mmask16 lanes = first_lanes(in.W - i);
                _mm512_mask_storeu_ps(to + i, lanes, _mm512_maskz_loadu_ps(lanes, from + i));
            }
        }
    }
}

// Tile rows the weight gradient's strip of padded rows holds: a block's, at most an image's.
int64_t strip_capacity_rows(const WinogradConv& g) {
    const WinogradGradientBlocks blocks = winograd_gradient_blocks(g);
    return blocks.rows < g.tiles_h ? blocks.rows : g.tiles_h;
}

// Floats of the weight gradient's strip of padded rows (pad_rows) and its slack, in
// whole cache lines: V and Q after it start on one.
int64_t strip_floats(const WinogradConv& g) {
    return (g.C * strip_rows(g, strip_capacity_rows(g)) * g.Wp + kWinogradSlack + 15) / 16 * 16;
}

// Calls segment(image, ty0, rows, column) for the tile rows row0 .. row1 - 1 of images
// one after another (tiles_h rows each), image by image: `rows` of them from tile row ty0
// of `image`, from the block's column `column` on.
template <typename Segment>
void for_each_image_rows(const WinogradConv& g, int64_t row0, int64_t row1, Segment&& segment) {
    for (int64_t row = row0; row < row1;) {
        const int64_t image = row / g.tiles_h, ty0 = row % g.tiles_h;
        const int64_t rows = g.tiles_h - ty0 < row1 - row ? g.tiles_h - ty0 : row1 - row;
        segment(image, ty0, rows, (row - row0) * g.tiles_w);
        row += rows;
    }
}

// The transformed weights of `count` (at most 16) channels' filters from k on, as
// winograd_weights_avx512. The channels' taps are transposed in registers into a vector a
// tap (`by_tap`) and read from there, since a gather a tap costs more than the whole
// transpose and every call pays this whatever the batch (docs/performance/kernels.md,
// Winograd).
template <typename Tile>
void weight_tiles(const WinogradWeights& w, const float* k, int64_t count, float* to,
                  int64_t point) {
    constexpr int r = Tile::kTaps;
    float by_tap[r * r * 16];  // tap t's channels at 16 t
    tap_transpose_avx512(count, r * r, k, w.channel_stride, by_tap, 16);
    const __mmask16 lanes = first_lanes(count);
    __m512 taps[r][r];  // taps[j][i]: tap (i, j) of the channels' filters, 0 past them
#pragma GCC unroll 7
    for (int i = 0; i < r; ++i) {
#pragma GCC unroll 7
        for (int j = 0; j < r; ++j) {
            const int t = r * i + j;
            const int tap = w.turned ? r * r - 1 - t : t;
            taps[j][i] = _mm512_maskz_loadu_ps(lanes, by_tap + 16 * tap);
        }
    }
    transform_tiles<Tile::kAlpha, r, Tile::weights>(taps, lanes, to, point);  // G g G^T
}

template <typename Tile>
void forward_images(const WinogradConv& g, const WinogradInput& in, const float* x,
                    int64_t count, const float* u, const float* bias, float* out,
                    float* scratch) {
    const int64_t block_rows = winograd_forward_block_rows(g);
    const int64_t padded_image = g.C * g.Hp * g.Wp;
    float* xpad = scratch;
    float* v = xpad + winograd_forward_padded_floats(g);
    float* m = v + g.C * winograd_stride(g, block_rows * g.tiles_w);
    pad_interiors(g, in, x, count, xpad);
    const int64_t per_row = winograd_row_lanes(g);
    const int64_t total_rows = count * g.tiles_h;  // the images' tile rows, one after another
    for (int64_t row0 = 0; row0 < total_rows; row0 += block_rows) {
        const int64_t row1 = total_rows - row0 < block_rows ? total_rows : row0 + block_rows;
        const int64_t n = (row1 - row0) * g.tiles_w;  // tiles in this block
        const int64_t stride = winograd_stride(g, n);
        for_each_image_rows(g, row0, row1, [&](int64_t image, int64_t ty0, int64_t rows, int64_t column) {
            input_rows<Tile>(g, xpad + image * padded_image, g.Hp * g.Wp, ty0, rows, per_row,
                             v + column, n);
        });
        for (int64_t p = 0; p < g.points; ++p) {  // m = u . v, point by point
            gemm_rows_avx512(0, g.F, n, g.C, u + p * winograd_weights_point(g), g.C, v + p * n,
                             stride, m + p * n, stride);
        }
        for_each_image_rows(g, row0, row1, [&](int64_t image, int64_t ty0, int64_t rows, int64_t column) {
            for (int64_t f = 0; f < g.F; ++f) {
                float* plane = out + (image * g.F + f) * g.H * g.W;
                const float* products = m + f * stride + column;
                for_each_group(g, rows, per_row, [&](int64_t r, int64_t tx0, __mmask16 lanes, int64_t at) {
                    output_tiles<Tile>(g, products + at, n, lanes, per_row, rows - r, bias[f],
                                       ty0 + r, tx0, plane);
                });
            }
        });
    }
}

// V and Q of the tile rows row0 .. row1 - 1 of images one after another (x of `in`, dout)
// into a block of n tiles from its column at v and q on (input_rows' layout), each image's
// rows padded into the strip (strip_floats) on the way.
template <typename Tile>
void gradient_tiles(const WinogradConv& g, const WinogradInput& in, const float* x,
                    const float* dout, int64_t row0, int64_t row1, float* strip, float* v,
                    float* q, int64_t n) {
    const int64_t per_row = winograd_row_lanes(g);
    for_each_image_rows(g, row0, row1, [&](int64_t image, int64_t ty0, int64_t rows, int64_t column) {
        pad_rows(g, in, x + image * g.C * in.H * in.W, ty0, rows, strip);
        input_rows<Tile>(g, strip, strip_rows(g, rows) * g.Wp, 0, rows, per_row, v + column, n);
        output_gradient_rows<Tile>(g, dout + image * g.F * g.H * g.W, ty0, rows, per_row,
                                   q + column, n);
    });
}

// V of `count` whole images x (of `in`) into a block of n tiles from its column 0 on, each
// laid into `padded` (one padded image, its pads zero) first.
template <typename Tile>
void input_tiles_of_images(const WinogradConv& g, const WinogradInput& in, const float* x,
                           int64_t count, float* v, int64_t n, float* padded) {
    const int64_t per_row = winograd_row_lanes(g), image_tiles = g.tiles_h * g.tiles_w;
    for (int64_t i = 0; i < count; ++i) {
        pad_interiors(g, in, x + i * g.C * in.H * in.W, 1, padded);
        input_rows<Tile>(g, padded, g.Hp * g.Wp, 0, g.tiles_h, per_row, v + i * image_tiles, n);
    }
}

// Filters f0 .. f1 - 1 of `count` images' outputs from their V (a block of n tiles): the
// filters' transformed weights, their products point by point, their output transforms.
template <typename Tile>
void filters_forward(const WinogradConv& g, const WinogradWeights& w, int64_t f0, int64_t f1,
                     const float* v, int64_t n, int64_t count, const float* bias, float* out,
                     float* scratch) {
    WinogradConv block = g;
    block.F = f1 - f0;
    WinogradWeights filters = w;
    filters.w = w.w + f0 * w.filter_stride;
    float* u = scratch;
    float* m = u + g.points * winograd_weights_point(block);
    winograd_weights_avx512(block, filters, u);
    const int64_t stride = winograd_stride(g, n);
    for (int64_t p = 0; p < g.points; ++p) {  // m = u . v, point by point
        gemm_rows_avx512(0, block.F, n, g.C, u + p * winograd_weights_point(block), g.C,
                         v + p * n, stride, m + p * n, stride);
    }
    const int64_t per_row = winograd_row_lanes(g), image_tiles = g.tiles_h * g.tiles_w;
    for (int64_t i = 0; i < count; ++i) {
        for (int64_t f = f0; f < f1; ++f) {
            float* plane = out + (i * g.F + f) * g.H * g.W;
            const float* products = m + (f - f0) * stride + i * image_tiles;
            for_each_group(g, g.tiles_h, per_row, [&](int64_t r, int64_t tx0, __mmask16 lanes, int64_t at) {
                output_tiles<Tile>(g, products + at, n, lanes, per_row, g.tiles_h - r, bias[f], r,
                                   tx0, plane);
            });
        }
    }
}

template <typename Tile>
void weight_gradient_images(const WinogradConv& g, const WinogradInput& in, const float* x,
                            const float* dout, int64_t count, float* du, float* scratch) {
    const WinogradGradientBlocks blocks = winograd_gradient_blocks(g);
    float* strip = scratch;
    float* v = strip + strip_floats(g);
    float* q = v + g.C * blocks.stride;
    // Each point's sum over a block, added to du's: summed in one run over all the tiles,
    // its rounding grew with them (on 224 x 224 images 10x the direct kernels').
    float* sum = q + g.F * blocks.stride;
    const int64_t point = winograd_weights_point(g);
    const int64_t total_rows = count * g.tiles_h;  // the images' tile rows, one after another
    for (int64_t row0 = 0; row0 < total_rows; row0 += blocks.rows) {
        const int64_t row1 = total_rows - row0 < blocks.rows ? total_rows : row0 + blocks.rows;
        const int64_t n = (row1 - row0) * g.tiles_w;  // tiles in this block
        const int64_t stride = winograd_stride(g, n);
        gradient_tiles<Tile>(g, in, x, dout, row0, row1, strip, v, q, n);
        for (int64_t p = 0; p < g.points; ++p) {  // du += q . v^T, point by point
            gemm_rows_avx512(0, g.F, g.C, n, q + p * n, stride, v + p * n, stride, sum, g.C,
                             /*accumulate=*/false, GemmTransposes{false, true});
            float* to = du + p * point;
            if (row0 == 0) {  // 0 + sum, not sum: a -0 sum becomes +0 as in zeros
                for (int64_t i = 0; i < g.F * g.C; ++i) to[i] = 0.0f + sum[i];
            } else {
                for (int64_t i = 0; i < g.F * g.C; ++i) to[i] += sum[i];
            }
        }
    }
}

// gradient_tiles of `count` whole images, the strip's rows at a time.
template <typename Tile>
void gradient_tiles_of_images(const WinogradConv& g, const WinogradInput& in, const float* x,
                              const float* dout, int64_t count, float* v, float* q, int64_t n,
                              float* strip) {
    const int64_t strip_tile_rows = strip_capacity_rows(g);
    const int64_t total_rows = count * g.tiles_h;
    for (int64_t row0 = 0; row0 < total_rows; row0 += strip_tile_rows) {
        const int64_t row1 =
            total_rows - row0 < strip_tile_rows ? total_rows : row0 + strip_tile_rows;
        gradient_tiles<Tile>(g, in, x, dout, row0, row1, strip, v + row0 * g.tiles_w,
                             q + row0 * g.tiles_w, n);
    }
}

// dw (F x C x r x r) from du, 16 filter-channel pairs at once: G^T du G. The pairs' taps,
// a vector a tap, go through a buffer on the stack and a transpose in registers into
// dw's rows, as weight_tiles reads them (cheaper than a scatter a tap).
template <typename Tile>
void weights_gradient(const WinogradConv& g, const float* du, float* dw) {
    constexpr int alpha = Tile::kAlpha, r = Tile::kTaps;
    const int64_t point = winograd_weights_point(g), pairs = g.F * g.C;
    for (int64_t i = 0; i < pairs; i += 16) {
        const int64_t count = pairs - i < 16 ? pairs - i : 16;
        const __mmask16 lanes = first_lanes(count);
        __m512 h[r][alpha];  // G^T du
        transform_point_columns<alpha, r, Tile::weights_adjoint>(du + i, point, lanes, h);
        float by_tap[r * r * 16];  // tap (t, l) of the pairs at 16 (r t + l)
#pragma GCC unroll 7
        for (int t = 0; t < r; ++t) {  // (G^T du) G
            __m512 k[r];
            Tile::weights_adjoint(h[t], k);
#pragma GCC unroll 7
            for (int l = 0; l < r; ++l) _mm512_storeu_ps(by_tap + 16 * (r * t + l), k[l]);
        }
        tap_transpose_avx512(r * r, count, by_tap, 16, dw + i * r * r, r * r);
    }
}

// fn(Tile{}) for g's tiles: F(2x2, 7x7), F(2x2, 5x5), F(4x4, 3x3) or F(2x2, 3x3).
template <typename Fn>
void with_tiles(const WinogradConv& g, Fn&& fn) {
    if (g.r == 7) {
        fn(F2x2_7x7{});
    } else if (g.r == 5) {
        fn(F2x2_5x5{});
    } else if (g.m == 4) {
        fn(F4x4_3x3{});
    } else {
        fn(F2x2_3x3{});
    }
}

}  // namespace

void winograd_weights_avx512(const WinogradConv& g, const WinogradWeights& w, float* u) {
    const int64_t point = winograd_weights_point(g);
    for (int64_t f = 0; f < g.F; ++f) {
        for (int64_t c0 = 0; c0 < g.C; c0 += 16) {  // 16 channels at once
            const int64_t count = g.C - c0 < 16 ? g.C - c0 : 16;
            const float* k = w.w + f * w.filter_stride + c0 * w.channel_stride;
            float* to = u + f * g.C + c0;
            with_tiles(g, [&](auto tiles) {
                weight_tiles<decltype(tiles)>(w, k, count, to, point);
            });
        }
    }
}

int64_t winograd_forward_padded_floats(const WinogradConv& g) {
    return (winograd_forward_images(g) * g.C * g.Hp * g.Wp + kWinogradSlack + 15) / 16 * 16;
}

int64_t winograd_forward_scratch_floats(const WinogradConv& g) {
    const int64_t rows = winograd_forward_block_rows(g);
    return winograd_forward_padded_floats(g) + (g.C + g.F) * winograd_stride(g, rows * g.tiles_w);
}

void winograd_forward_images_avx512(const WinogradConv& g, const WinogradInput& in,
                                    const float* x, int64_t count, const float* u,
                                    const float* bias, float* out, float* scratch) {
    with_tiles(g, [&](auto tiles) {
        forward_images<decltype(tiles)>(g, in, x, count, u, bias, out, scratch);
    });
}

int64_t winograd_gradient_scratch_floats(const WinogradConv& g) {
    return strip_floats(g) + (g.C + g.F) * winograd_gradient_blocks(g).stride + g.F * g.C;
}

void winograd_weight_gradient_images_avx512(const WinogradConv& g, const WinogradInput& in,
                                            const float* x, const float* dout, int64_t count,
                                            float* du, float* scratch) {
    with_tiles(g, [&](auto tiles) {
        weight_gradient_images<decltype(tiles)>(g, in, x, dout, count, du, scratch);
    });
}

void winograd_input_tiles_avx512(const WinogradConv& g, const WinogradInput& in, const float* x,
                                 int64_t count, float* v, int64_t n, float* padded) {
    with_tiles(g, [&](auto tiles) {
        input_tiles_of_images<decltype(tiles)>(g, in, x, count, v, n, padded);
    });
}

void winograd_filters_forward_avx512(const WinogradConv& g, const WinogradWeights& w, int64_t f0,
                                     int64_t f1, const float* v, int64_t n, int64_t count,
                                     const float* bias, float* out, float* scratch) {
    with_tiles(g, [&](auto tiles) {
        filters_forward<decltype(tiles)>(g, w, f0, f1, v, n, count, bias, out, scratch);
    });
}

int64_t winograd_gradient_strip_floats(const WinogradConv& g) { return strip_floats(g); }

void winograd_gradient_tiles_avx512(const WinogradConv& g, const WinogradInput& in,
                                    const float* x, const float* dout, int64_t count, float* v,
                                    float* q, int64_t n, float* strip) {
    with_tiles(g, [&](auto tiles) {
        gradient_tiles_of_images<decltype(tiles)>(g, in, x, dout, count, v, q, n, strip);
    });
}

void winograd_pairs_gradient_avx512(const WinogradConv& g, const float* v, const float* q,
                                    int64_t n, const WinogradPairs& pairs, bool add,
                                    float* scratch, float* dw) {
    const WinogradConv block = winograd_pairs_block(g, pairs);
    const int64_t stride = winograd_stride(g, n), point = winograd_weights_point(block);
    float* du = scratch;
    float* sums = du + g.points * point;  // the block's dw, r x r a pair
    for (int64_t p = 0; p < g.points; ++p) {  // du = q . v^T over the n tiles, point by point
        gemm_rows_avx512(0, block.F, block.C, n, q + pairs.f0 * stride + p * n, stride,
                         v + pairs.c0 * stride + p * n, stride, du + p * point, block.C,
                         /*accumulate=*/false, GemmTransposes{false, true});
    }
    winograd_weights_gradient_avx512(block, du, sums);
    const int64_t taps = g.r * g.r, row = block.C * taps;
    for (int64_t f = 0; f < block.F; ++f) {
        const float* from = sums + f * row;
        float* to = dw + ((pairs.f0 + f) * g.C + pairs.c0) * taps;
        for (int64_t i = 0; i < row; ++i) to[i] = add ? to[i] + from[i] : from[i];
    }
}

void winograd_weights_gradient_avx512(const WinogradConv& g, const float* du, float* dw) {
    with_tiles(g, [&](auto tiles) { weights_gradient<decltype(tiles)>(g, du, dw); });
}

}  // namespace graphnet
