// AVX-512 kernel of norm_avx512.h. Compiled for AVX-512F, without contracting a product
// and a sum into a fused multiply-add (CMakeLists.txt): the relu's mask is recomputed
// exactly as the forward computed the normalized entry. Includes only the intrinsics.
#pragma GCC target("avx512f")
#include "norm_avx512.h"

#include <immintrin.h>

namespace graphnet {
namespace {

// GCC 12's headers build the halves' conversions and the sums across lanes on a
// deliberately undefined vector, which -Wmaybe-uninitialized flags.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// Rows whose sums run side by side (their dependency chains overlap), as norm_loops.h's.
constexpr int64_t kRowGroup = 8;

__mmask16 first_lanes(int64_t valid) {
    return valid >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << valid) - 1);
}

// The low and high eight float32 lanes of v as float64.
__m512d low_half(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
__m512d high_half(__m512 v) {
    return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

// Entries j .. j + 15 of a row (the valid ones, the rest zero) as the backward reads them:
// x centred, and dout passed through the relu where there is one (beta is read only then).
struct Entries {
    __m512 centred, passed;
};

template <bool relu>
Entries entries(const float* dout_row, const float* x_row, const float* gamma,
                const float* beta, int64_t j, __mmask16 lanes, __m512 m, __m512 inv) {
    const __m512 centred = _mm512_sub_ps(_mm512_maskz_loadu_ps(lanes, x_row + j), m);
    __m512 passed = _mm512_maskz_loadu_ps(lanes, dout_row + j);
    if constexpr (relu) {
        const __m512 y = _mm512_add_ps(
            _mm512_mul_ps(_mm512_mul_ps(centred, inv), _mm512_maskz_loadu_ps(lanes, gamma + j)),
            _mm512_maskz_loadu_ps(lanes, beta + j));
        const __mmask16 positive = _mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_GT_OQ);
        passed = _mm512_mul_ps(passed, _mm512_maskz_mov_ps(positive, _mm512_set1_ps(1.0f)));
    }
    return {centred, passed};
}

template <bool relu>
void rows_backward(int64_t rows, int64_t D, const float* dout, const float* x,
                   const float* mean, const float* inv_std, const float* gamma,
                   const float* beta, float* dx, double* part_g, double* part_b) {
    const double count = static_cast<double>(D);
    for (int64_t first = 0; first < rows; first += kRowGroup) {
        const int64_t group = rows - first < kRowGroup ? rows - first : kRowGroup;
        float c2[kRowGroup], c3[kRowGroup];
        // Each row's sums: dout * gamma exact in float64, times the centred x, in two
        // vectors of eight lanes (a vector's low and high halves) folded at the end.
        for (int64_t r = 0; r < group; ++r) {
            const int64_t n = first + r;
            const __m512 m = _mm512_set1_ps(mean[n]), inv = _mm512_set1_ps(inv_std[n]);
            __m512d s1_low = _mm512_setzero_pd(), s1_high = s1_low;
            __m512d s2_low = s1_low, s2_high = s1_low;
            for (int64_t j = 0; j < D; j += 16) {
                const __mmask16 lanes = first_lanes(D - j);
                const Entries e =
                    entries<relu>(dout + n * D, x + n * D, gamma, beta, j, lanes, m, inv);
                const __m512 ga = _mm512_maskz_loadu_ps(lanes, gamma + j);
                const __m512d gg_low = _mm512_mul_pd(low_half(e.passed), low_half(ga));
                const __m512d gg_high = _mm512_mul_pd(high_half(e.passed), high_half(ga));
                s1_low = _mm512_add_pd(s1_low, gg_low);
                s1_high = _mm512_add_pd(s1_high, gg_high);
                s2_low = _mm512_add_pd(s2_low, _mm512_mul_pd(gg_low, low_half(e.centred)));
                s2_high = _mm512_add_pd(s2_high, _mm512_mul_pd(gg_high, high_half(e.centred)));
            }
            const double s1 = _mm512_reduce_add_pd(_mm512_add_pd(s1_low, s1_high));
            const double s2 = _mm512_reduce_add_pd(_mm512_add_pd(s2_low, s2_high));
            const float scale = inv_std[n];
            c2[r] = static_cast<float>(-scale * scale * s2 / count);
            c3[r] = static_cast<float>(-s1 / count);
        }
        // dx, and the group's shares of dgamma and dbeta sixteen columns at a time: their
        // running sums stay in registers across the group's rows (the products of two
        // floats are exact in float64, so a fused multiply-add adds what mul + add would).
        for (int64_t j = 0; j < D; j += 16) {
            const __mmask16 lanes = first_lanes(D - j);
            const __mmask8 low = static_cast<__mmask8>(lanes);
            const __mmask8 high = static_cast<__mmask8>(lanes >> 8);
            __m512d g_low = _mm512_maskz_loadu_pd(low, part_g + j);
            __m512d g_high = _mm512_maskz_loadu_pd(high, part_g + j + 8);
            __m512d b_low = _mm512_maskz_loadu_pd(low, part_b + j);
            __m512d b_high = _mm512_maskz_loadu_pd(high, part_b + j + 8);
            const __m512 ga = _mm512_maskz_loadu_ps(lanes, gamma + j);
            for (int64_t r = 0; r < group; ++r) {
                const int64_t n = first + r;
                const __m512 m = _mm512_set1_ps(mean[n]), inv = _mm512_set1_ps(inv_std[n]);
                const Entries e =
                    entries<relu>(dout + n * D, x + n * D, gamma, beta, j, lanes, m, inv);
                const __m512 shifted = _mm512_add_ps(
                    _mm512_mul_ps(_mm512_set1_ps(c2[r]), e.centred), _mm512_set1_ps(c3[r]));
                _mm512_mask_storeu_ps(
                    dx + n * D + j, lanes,
                    _mm512_mul_ps(inv, _mm512_add_ps(_mm512_mul_ps(e.passed, ga), shifted)));
                const __m512 x_hat = _mm512_mul_ps(e.centred, inv);
                const __m512d passed_low = low_half(e.passed), passed_high = high_half(e.passed);
                g_low = _mm512_fmadd_pd(passed_low, low_half(x_hat), g_low);
                g_high = _mm512_fmadd_pd(passed_high, high_half(x_hat), g_high);
                b_low = _mm512_add_pd(b_low, passed_low);
                b_high = _mm512_add_pd(b_high, passed_high);
            }
            _mm512_mask_storeu_pd(part_g + j, low, g_low);
            _mm512_mask_storeu_pd(part_g + j + 8, high, g_high);
            _mm512_mask_storeu_pd(part_b + j, low, b_low);
            _mm512_mask_storeu_pd(part_b + j + 8, high, b_high);
        }
    }
}

#pragma GCC diagnostic pop

}  // namespace

void layer_norm_rows_backward_avx512(int64_t rows, int64_t D, bool relu, const float* dout,
                                     const float* x, const float* mean, const float* inv_std,
                                     const float* gamma, const float* beta, float* dx,
                                     double* part_g, double* part_b) {
    (relu ? rows_backward<true> : rows_backward<false>)(rows, D, dout, x, mean, inv_std, gamma,
                                                        beta, dx, part_g, part_b);
}

}  // namespace graphnet
