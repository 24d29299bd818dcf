// Batchnorm, spatial batchnorm, layernorm and groupnorm on the arrays' own layout, with
// no transposes: every one of them normalizes the slices of an array viewed as
// (outer, K, inner), one mean and variance per k over its outer x inner entries.
//
//   batchnorm (N, D)              outer N, K = D,     inner 1
//   spatial batchnorm (N, C, H, W) outer N, K = C,     inner H * W
//   layernorm (N, D)              outer 1, K = N,     inner D
//   groupnorm (N, C, H, W), G      outer 1, K = N * G, inner C / G * H * W
//
// Statistics take one pass over the data: blocks of about 2k entries (in L1) give their
// mean and centred sum of squares in float64, merged with Chan's formula, so a mean far
// from zero costs no precision (unlike sum of squares minus squared mean). Backward takes
// one reduction pass (sum of dout and of dout * x_hat, in float64) and one writing pass;
// the gamma and beta gradients are those sums. Each k is reduced by one thread in a fixed
// order, so results are bitwise the same for any number of threads.
#pragma once

#include <cstdint>

namespace graphnet {

struct NormShape {
    int64_t outer, K, inner;
    int64_t count() const { return outer * inner; }  // entries per k (sizes checked by caller)
};

// mean[k] and the biased variance var[k] of each slice, in float64.
template <typename T>
void norm_moments(const NormShape& s, const T* x, double* mean, double* var);

// out = (x - mean[k]) * scale[k] + shift[k] with scale = gamma * inv_std: batchnorm's
// output for its per-k gamma and beta.
template <typename T>
void channel_norm_apply(const NormShape& s, const T* x, const T* mean, const T* scale,
                        const T* shift, T* out);

// Gradients of channel_norm_apply with scale = gamma[k] * inv_std[k]. train: mean and
// inv_std came from this batch (so they depend on x); else they were constants.
// dgamma[k] = sum dout * x_hat, dbeta[k] = sum dout.
template <typename T>
void channel_norm_backward(const NormShape& s, bool train, const T* dout, const T* x,
                           const T* mean, const T* inv_std, const T* gamma, T* dx, T* dgamma,
                           T* dbeta);

// Layernorm of rows (N, D): out = (x - mean[n]) * inv_std[n] * gamma[d] + beta[d].
template <typename T>
void row_norm_apply(int64_t N, int64_t D, const T* x, const T* mean, const T* inv_std,
                    const T* gamma, const T* beta, T* out);

// Its gradients; dgamma and dbeta (D,) are summed over rows in fixed blocks of rows, in
// order, whatever the number of threads.
template <typename T>
void row_norm_backward(int64_t N, int64_t D, const T* dout, const T* x, const T* mean,
                       const T* inv_std, const T* gamma, T* dx, T* dgamma, T* dbeta);

// Groupnorm of (N, C, H, W) in G groups: group (n, g) has mean[n * G + g], inv_std likewise,
// and channel c its gamma[c], beta[c]. planes = H * W.
template <typename T>
void group_norm_apply(int64_t N, int64_t C, int64_t planes, int64_t G, const T* x,
                      const T* mean, const T* inv_std, const T* gamma, const T* beta, T* out);

template <typename T>
void group_norm_backward(int64_t N, int64_t C, int64_t planes, int64_t G, const T* dout,
                         const T* x, const T* mean, const T* inv_std, const T* gamma, T* dx,
                         T* dgamma, T* dbeta);

}  // namespace graphnet
