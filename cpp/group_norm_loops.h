// The loops of the groupnorm kernels (group_norm.h), compiled twice as norm_loops.h's are:
// for any CPU in group_norm.cpp, for AVX2 in group_norm_avx2.cpp. Each group is one
// thread's, its sums (block_sums) in an order fixed by the shapes.
#pragma once

#include <cstdint>

#include "group_norm.h"
#include "norm_loops.h"
#include "pool.h"

namespace graphnet {

int thread_index();  // threads.h

namespace {

// y = (x - m) * (inv * gamma[c]) + beta[c] over one group's channels (planes entries
// each), act(y) written: the forward's normalized entries (act the identity or a plain
// activation), and the backward's recomputation of them (the same operations, so the same
// bits: these files are compiled without FMA contraction).
template <typename T, typename Act>
void normalize_group(int64_t per_group, int64_t planes, T m, T inv, const T* gamma,
                     const T* beta, const T* x, T* y, Act act) {
    for (int64_t c = 0; c < per_group; ++c) {
        const T a = inv * gamma[c], b = beta[c];
        const T* p = x + c * planes;
        T* o = y + c * planes;
#pragma omp simd
        for (int64_t i = 0; i < planes; ++i) o[i] = act((p[i] - m) * a + b);
    }
}

template <typename T>
void normalize_group(int64_t per_group, int64_t planes, T m, T inv, const T* gamma,
                     const T* beta, const T* x, T* y) {
    normalize_group(per_group, planes, m, inv, gamma, beta, x, y, [](T v) { return v; });
}

// dy = the gradient through a plain activation (relu, or leaky relu of slope alpha) of dout
// at a group's normalized entries, recomputed as normalize_group's, in one loop.
template <bool kRelu, typename T>
void plain_group_backward(int64_t per_group, int64_t planes, T m, T inv, const T* gamma,
                          const T* beta, const T* x, const T* dout, T alpha, T* dy) {
    for (int64_t c = 0; c < per_group; ++c) {
        const T a = inv * gamma[c], b = beta[c];
        const T *p = x + c * planes, *g = dout + c * planes;
        T* d = dy + c * planes;
#pragma omp simd
        for (int64_t i = 0; i < planes; ++i) {
            d[i] = plain_backward<kRelu>(g[i], (p[i] - m) * a + b, alpha);
        }
    }
}

// Which plain activation (pointwise.h: relu or leaky relu) the loops below take inside
// their normalizing loop, known at compile time. (A tag of this file's own: these files
// include no library header.)
template <bool kRelu>
struct PlainActivation {
    static constexpr bool relu = kRelu;
};

// g(PlainActivation<op is relu>()).
template <typename G>
void with_plain(Pointwise op, G g) {
    if (op == Pointwise::relu) {
        g(PlainActivation<true>());
    } else {
        g(PlainActivation<false>());
    }
}

// A group's sums: kSumLanes interleaved partial sums in T add kBlockRows terms each, then
// go into float64 partial sums, folded in a fixed order (fixed by the shapes alone). In
// float32, a block's sum of k = kBlockRows terms is within (k - 1) 2^-24 of the terms'
// absolute sum (7 roundings at most), and the float64 sums after add nothing of note; the
// float32 terms cost a quarter of float64 terms' conversions and adds (float64 entries:
// the same scheme, all in float64). Thirty-two lanes keep four AVX2 vectors adding side by
// side (sixteen: the forward's statistics a third slower).
constexpr int kSumLanes = 32;
constexpr int64_t kBlockRows = 8;
constexpr int64_t kSumBlock = kSumLanes * kBlockRows;

// K terms of the sums below at one index.
template <typename T, int K>
struct Terms {
    T of[K];
};

// Into lanes[s][kSumLanes], s < K: the sums of the terms f(i).of[s], i in [0, len), of
// type T, the K sums in one pass over their inputs. The entries after the last full block
// make a block of fewer rows, its last row of fewer lanes: every term goes through a
// block's sums in T (added to the float64 lanes one by one, they took the forward on
// groups of small planes, under a block or two, 1.3x-1.9x this time).
template <typename T, int K, typename F>
void block_sums(int64_t len, double (*lanes)[kSumLanes], F f) {
    T part[K][kSumLanes];
    const auto begin_block = [&part] {
        for (int s = 0; s < K; ++s) {
            for (int l = 0; l < kSumLanes; ++l) part[s][l] = T(0);
        }
    };
    const auto end_block = [&part, lanes] {
        for (int s = 0; s < K; ++s) {
            for (int l = 0; l < kSumLanes; ++l) lanes[s][l] += part[s][l];
        }
    };
    int64_t i = 0;
    for (; i + kSumBlock <= len; i += kSumBlock) {
        begin_block();
        for (int64_t r = 0; r < kSumBlock; r += kSumLanes) {
            for (int l = 0; l < kSumLanes; ++l) {
                const Terms<T, K> terms = f(i + r + l);
                for (int s = 0; s < K; ++s) part[s][l] += terms.of[s];
            }
        }
        end_block();
    }
    if (i == len) return;
    begin_block();
    for (; i + kSumLanes <= len; i += kSumLanes) {
        for (int l = 0; l < kSumLanes; ++l) {
            const Terms<T, K> terms = f(i + l);
            for (int s = 0; s < K; ++s) part[s][l] += terms.of[s];
        }
    }
    for (int l = 0; i + l < len; ++l) {
        const Terms<T, K> terms = f(i + l);
        for (int s = 0; s < K; ++s) part[s][l] += terms.of[s];
    }
    end_block();
}

// The lanes added pairwise, halves first (lane l with lane l + half).
inline double fold_lanes(const double* lane) {
    double sums[kSumLanes];
    for (int l = 0; l < kSumLanes; ++l) sums[l] = lane[l];
    for (int half = kSumLanes / 2; half >= 1; half /= 2) {
        for (int l = 0; l < half; ++l) sums[l] += sums[l + half];
    }
    return sums[0];
}

// The mean and inv_std of a group's len entries p: the mean mu of the block sums, then the
// squares around m = mu rounded to T (x - m in T: exact or within half a unit of its last
// place), and sum (x - mu)^2 = sum (x - m)^2 - len (mu - m)^2. NaN for no entries.
template <typename T>
void group_statistics(int64_t len, const T* p, double eps, T& mean, T& inv_std) {
    const double count = static_cast<double>(len);
    double sums[1][kSumLanes] = {}, squares[1][kSumLanes] = {};
    block_sums<T, 1>(len, sums, [p](int64_t i) { return Terms<T, 1>{{p[i]}}; });
    const double mu = fold_lanes(sums[0]) / count;
    const T m = static_cast<T>(mu);
    block_sums<T, 1>(len, squares, [p, m](int64_t i) {
        const T d = p[i] - m;
        return Terms<T, 1>{{d * d}};
    });
    const double shift = mu - static_cast<double>(m);
    double var = fold_lanes(squares[0]) / count - shift * shift;
    if (var < 0) var = 0;  // (rounding, for entries all about equal; a NaN stays)
    mean = m;
    inv_std = T(1) / root(static_cast<T>(var) + static_cast<T>(eps));
}

// Entries of a group per call of its activation: between two calls the loops prefetch a
// share of the next group's inputs (below).
constexpr int64_t kActivationChunk = 256;

// A region of the next group's to bring into L2 while this group's activation computes:
// `write` for one the loops will write first (its lines then come owned, and the stores
// do not wait for them).
struct Prefetched {
    const void* at;
    int64_t bytes;
    bool write;
};

// f(begin, end) over [0, len) in chunks of kActivationChunk, with each of the `count`
// regions in `next` prefetched into L2 in equal shares before each chunk. The activations
// (gelu: an exponential and a division per entry) keep the core busy while nothing is read
// from memory, and the next group's statistics or sums then find its x (and dout) in L2,
// and its first stores their lines, instead of waiting for them: the memory time hides
// behind the arithmetic. Prefetching touches no value: the results are the same bits.
template <typename F>
void with_next_prefetched(int64_t len, const Prefetched* next, int count, F f) {
    constexpr int64_t kLine = 64;
    const int64_t chunks = (len + kActivationChunk - 1) / kActivationChunk;
    for (int64_t c = 0; c < chunks; ++c) {
        for (int i = 0; i < count; ++i) {
            const char* at = static_cast<const char*>(next[i].at);
            const int64_t lines = (next[i].bytes + kLine - 1) / kLine;
            for (int64_t l = c * lines / chunks; l < (c + 1) * lines / chunks; ++l) {
                if (next[i].write) {
                    __builtin_prefetch(at + l * kLine, 1, 2);
                } else {
                    __builtin_prefetch(at + l * kLine, 0, 2);
                }
            }
        }
        f(c * kActivationChunk, lesser(len, (c + 1) * kActivationChunk));
    }
}

// The threads of the kernels' team: a group each at a time. Pooled, the team the caller
// sized the scratch for.
template <typename T>
int group_team(const GroupPool<T>& pool, int64_t N, int64_t C, int64_t planes, int64_t G) {
    return pool.plane ? pool.threads : team_for(N * G, N * C * planes);
}

template <typename T>
void group_norm_forward_loops(int64_t N, int64_t C, int64_t planes, int64_t G, double eps,
                              const PointwiseAct<T>& act, const GroupPool<T>& pool, const T* x,
                              const T* gamma, const T* beta, T* mean, T* inv_std, T* out) {
    const int64_t per_group = C / G, groups = N * G, len = per_group * planes;
    parallel_for(group_team(pool, N, C, planes, G), groups, [&](int64_t ng) {
        group_statistics(len, x + ng * len, eps, mean[ng], inv_std[ng]);
        const int64_t c0 = ng % G * per_group;
        // The group's values: in out, or where pooled in this thread's scratch.
        T* o = pool.plane ? pool.scratch + thread_index() * len : out + ng * len;
        const T *p0 = x + ng * len, *gam = gamma + c0, *bet = beta + c0;
        const bool plain = act.active && pointwise_is_plain(act.op);
        if (plain) {  // the activation in the same loop
            with_plain(act.op, [&](auto relu) {
                constexpr bool kRelu = decltype(relu)::relu;
                const T alpha = act.alpha;
                normalize_group(per_group, planes, mean[ng], inv_std[ng], gam, bet, p0, o,
                                [alpha](T y) { return plain_forward<kRelu>(y, alpha); });
            });
        } else {
            normalize_group(per_group, planes, mean[ng], inv_std[ng], gam, bet, p0, o);
        }
        // In place, while the group is in cache (the last group prefetches itself again).
        const int64_t pooled = pool.plane ? pool.plane->out_plane() : 0;
        if (act.active && !plain) {
            const int64_t after = ng + 1 < groups ? ng + 1 : ng;
            // The next group's x, and the part of out it writes (pooled: its share).
            const int64_t written = pool.plane ? per_group * pooled : len;
            const int64_t size = sizeof(T);
            const Prefetched next[] = {{x + after * len, len * size, false},
                                       {out + after * written, written * size, true}};
            with_next_prefetched(len, next, 2, [&](int64_t b, int64_t e) {
                pointwise_forward_serial(act.op, e - b, o + b, act.alpha, o + b);
            });
        }
        if (!pool.plane) return;
        if (pool.winners) {
            const AvgPoolPlane& w = *pool.plane;
            const NormPool<T> maxima{w.H,  w.W,  w.pool_height, w.pool_width, w.stride,
                                     w.Ho, w.Wo, out,           pool.winners, nullptr};
            max_pool_norm_planes(maxima, o, ng * per_group, per_group);
        } else {  // on the pool gate's AVX-512 kernels where it takes them, else the loops here
            T* pooled_out = out + ng * per_group * pooled;
            if (!avg_pool_planes_forward_on_avx512(*pool.plane, per_group, o, pooled_out)) {
                avg_pool_planes_forward(*pool.plane, per_group, o, pooled_out);
            }
        }
    });
}

template <typename T>
void group_norm_backward_loops(int64_t N, int64_t C, int64_t planes, int64_t G,
                               const PointwiseAct<T>& act, const GroupPool<T>& pool, const T* dout,
                               const T* x, const T* mean, const T* inv_std, const T* gamma,
                               const T* beta, T* dx, T* dgamma, T* dbeta, double* plane_d,
                               double* plane_dx) {
    const int64_t per_group = C / G, groups = N * G, len = per_group * planes;
    const double count = static_cast<double>(len);
    parallel_for(group_team(pool, N, C, planes, G), groups, [&](int64_t ng) {
        const T m = mean[ng], inv = inv_std[ng];
        const int64_t c0 = ng % G * per_group;
        const T *g0 = dout + ng * len, *p0 = x + ng * len;
        T* d0 = dx + ng * len;
        if (pool.plane) {  // the pool's gradient spread over the group, in this thread's scratch
            T* spread = pool.scratch + thread_index() * len;
            const AvgPoolPlane& w = *pool.plane;
            const int64_t pooled = w.out_plane(), first = ng * per_group * pooled;
            if (pool.winners) {
                max_unpool_planes(per_group, w.H, w.W, w.Ho, w.Wo, dout + first,
                                  pool.winners + first, spread);
            } else if (!avg_pool_planes_backward_on_avx512(w, per_group, dout + first, spread)) {
                avg_pool_planes_backward(w, per_group, dout + first, spread);
            }
            g0 = spread;
        }
        if (act.active && pointwise_is_plain(act.op)) {
            // The activation's gradient into this group's dx, at the normalized entries
            // recomputed in the same loop.
            with_plain(act.op, [&](auto relu) {
                plain_group_backward<decltype(relu)::relu>(per_group, planes, m, inv,
                                                           gamma + c0, beta + c0, p0, g0,
                                                           act.alpha, d0);
            });
            g0 = d0;
        } else if (act.active) {
            // The activation's gradient into this group's dx, at the normalized entries
            // recomputed there; the writing below reads each entry before it replaces it.
            normalize_group(per_group, planes, m, inv, gamma + c0, beta + c0, p0, d0);
            const int64_t after = ng + 1 < groups ? ng + 1 : ng;
            // The next group's x, its dout (pooled: its share) and its dx, written first.
            const int64_t read = pool.plane ? per_group * pool.plane->out_plane() : len;
            const int64_t size = sizeof(T);
            const Prefetched next[] = {{x + after * len, len * size, false},
                                       {dout + after * read, read * size, false},
                                       {dx + after * len, len * size, true}};
            with_next_prefetched(len, next, 3, [&](int64_t b, int64_t e) {
                pointwise_backward_serial(act.op, e - b, g0 + b, d0 + b, act.alpha, d0 + b);
            });
            g0 = d0;
        }
        // Per (n, c) plane: sum dout and sum dout * (x - mean).
        double s1 = 0, s2 = 0;
        for (int64_t c = 0; c < per_group; ++c) {
            const T *g = g0 + c * planes, *p = p0 + c * planes;
            double lanes[2][kSumLanes] = {};  // of dout, of dout * (x - mean)
            block_sums<T, 2>(planes, lanes, [g, p, m](int64_t i) {
                return Terms<T, 2>{{g[i], g[i] * (p[i] - m)}};
            });
            const double sd = fold_lanes(lanes[0]), sdx = fold_lanes(lanes[1]);
            plane_d[ng * per_group + c] = sd;
            plane_dx[ng * per_group + c] = sdx;
            s1 += static_cast<double>(gamma[c0 + c]) * sd;
            s2 += static_cast<double>(gamma[c0 + c]) * sdx;
        }
        const T c2 = static_cast<T>(-inv * inv * s2 / count), c3 = static_cast<T>(-s1 / count);
        for (int64_t c = 0; c < per_group; ++c) {
            const T gam = gamma[c0 + c];
            const T *g = g0 + c * planes, *p = p0 + c * planes;
            T* d = d0 + c * planes;
#pragma omp simd
            for (int64_t i = 0; i < planes; ++i) d[i] = inv * (g[i] * gam + (c2 * (p[i] - m) + c3));
        }
    });
    for (int64_t c = 0; c < C; ++c) {
        double sg = 0, sb = 0;
        for (int64_t n = 0; n < N; ++n) {
            sg += plane_dx[n * C + c] * static_cast<double>(inv_std[n * G + c / per_group]);
            sb += plane_d[n * C + c];
        }
        dgamma[c] = static_cast<T>(sg);
        dbeta[c] = static_cast<T>(sb);
    }
}

}  // namespace
}  // namespace graphnet
