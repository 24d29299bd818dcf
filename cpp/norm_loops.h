// The loops of the norm kernels (norm.h), compiled twice: for any x86-64 (or other) CPU in
// norm.cpp, and for AVX2 in norm_avx2.cpp, where the compiler vectorises them 8 floats or 4
// doubles wide (forward + backward 1.25x to 1.6x faster, docs/performance/kernels.md; small
// planes stay on the portable copy, norm.cpp). Each file gets its
// own copy (an anonymous namespace), and this header includes no library header, so
// nothing compiled for AVX2 can be shared with the portable code. Both copies sum in an
// order fixed by the shapes alone, so either is bitwise the same for any thread count
// (the two copies may differ from each other in the last bits: their float64 sums group
// the lanes differently).
#pragma once

#include <cstdint>

#include "norm.h"
#include "threads.h"

namespace graphnet {

int num_threads();   // threads.h
int thread_index();  // threads.h

namespace {


// Below this many entries a second thread costs more to wake than it saves.
constexpr int64_t kEntriesPerThread = 1 << 15;
// Entries per statistics block: small enough to stay in L1 between its two passes.
constexpr int64_t kBlock = 2048;
// Columns per block of the batchnorm (N, D) layout, rows per statistics block there.
constexpr int64_t kColumns = 64, kRows = 32;
// Rows per block of layernorm's gamma and beta gradients (fixed: the summation order).
constexpr int64_t kRowBlock = 32;
// Rows whose statistics layernorm computes side by side (rows_forward, rows_backward).
constexpr int64_t kRowGroup = 8;
// Statistics segments shorter than this are summed by a plain loop (add_block).
constexpr int64_t kShortSegment = 32;
// Slices (channels) whose statistics a batchnorm gathers side by side (slices_moments).
constexpr int64_t kSliceGroup = 4;

// The scratch of the channel norms' backward: each plane's two sums and each channel's
// three coefficients (none for the (N, D) layout).
constexpr int64_t channel_scratch(const NormShape& s) {
    return s.inner == 1 ? 0 : 2 * s.outer * s.K + 3 * s.K;
}

// The blocks of rows of layernorm's backward: it needs 2 * row_blocks(N) * D doubles.
constexpr int64_t row_blocks(int64_t N) { return (N + kRowBlock - 1) / kRowBlock; }

template <typename I>
constexpr I lesser(I a, I b) {
    return b < a ? b : a;
}
template <typename I>
constexpr I greater(I a, I b) {
    return a < b ? b : a;
}
inline float root(float v) { return __builtin_sqrtf(v); }
inline double root(double v) { return __builtin_sqrt(v); }

// A relu on a normalized entry y, as the relu gate takes it (a NaN passes, as in np.maximum).
template <bool relu, typename T>
T relu_if(T y) {
    return (!relu || y > T(0) || y != y) ? y : T(0);
}

// The gradient reaching y through that relu: dout times whether y > 0, a product as in
// the relu gate (so a NaN or infinite dout where the relu blocks still gives a NaN).
template <typename T>
T through_relu(T dout, T y) {
    return dout * static_cast<T>(y > T(0));
}

// What channel_forward does to a normalized entry y (NormTail, norm.h), known at compile
// time: nothing, a relu, the add of the skip's entry (y + skip, or skip + y) then a relu,
// or a leaky relu of slope alpha (the leaky relu gate's expression, pointwise.h).
enum class Tail { none, relu, add_relu, skip_add_relu, leaky };

template <Tail tail, typename T>
T tail_of(T y, const T* skip, int64_t i, T alpha) {
    if constexpr (tail == Tail::leaky) return plain_forward<false>(y, alpha);
    if constexpr (tail == Tail::add_relu) y = y + skip[i];
    if constexpr (tail == Tail::skip_add_relu) y = skip[i] + y;
    return relu_if<tail != Tail::none>(y);
}

// Where channel_backward's dout passes (norm.h): everywhere; where the recomputed
// normalized entry y is positive; where the forward's output is (then also written out);
// or everywhere, times the leaky relu's slope alpha where y is not positive (its gate's
// expression).
enum class Mask { none, recomputed, from_output, leaky };

template <Mask mask, typename T>
T passed(T dout, T y, const T* relu_out, int64_t i, T alpha) {
    if constexpr (mask == Mask::recomputed) return through_relu(dout, y);
    if constexpr (mask == Mask::from_output) return through_relu(dout, relu_out[i]);
    if constexpr (mask == Mask::leaky) return plain_backward<false>(dout, y, alpha);
    return dout;
}

int team_for(int64_t pieces, int64_t entries) {
    const int64_t wanted = lesser(pieces, greater<int64_t>(1, entries / kEntriesPerThread));
    return static_cast<int>(greater<int64_t>(1, lesser<int64_t>(num_threads(), wanted)));
}

// Planes a block of plane_blocks (norm_pool_block's; one for empty planes or none at all).
inline int64_t plane_block(const NormShape& s) {
    const int64_t planes = s.outer * s.K;
    return s.inner > 0 && planes > 0 ? lesser(norm_pool_block(s.inner), planes) : 1;
}

// Calls f(first, count) for blocks of `block` consecutive planes (the last one fewer) covering
// the outer * K planes of s, the blocks shared out among a team of threads.
template <typename F>
void plane_blocks(const NormShape& s, int64_t block, F f) {
    const int64_t planes = s.outer * s.K, blocks = (planes + block - 1) / block;
    parallel_for(team_for(blocks, planes * s.inner), blocks, [&](int64_t b) {
        const int64_t first = b * block;
        f(first, lesser(block, planes - first));
    });
}

// Calls f(plane, k) for planes [first, first + count) of s in memory order, k the plane's
// channel, counted: a call and a division (plane % K) per plane took up to half the time
// of the passes over small planes (eval forward on 64 x 128 x 4 x 4: 2.2x).
template <typename F>
void planes_of_block(const NormShape& s, int64_t first, int64_t count, F f) {
    for (int64_t plane = first, k = first % s.K; plane < first + count; ++plane) {
        f(plane, k);
        k = k + 1 == s.K ? 0 : k + 1;
    }
}

// Brings `segs` segments of `len` entries, `stride` apart, into L2: the next block of a
// channel's planes (one 4 KB page each on 32 x 32 images, where the hardware's prefetcher
// starts over at every page), while this block's sums run. Touches no value.
template <typename T, int write = 0>
void prefetch_segments(const T* x, int64_t segs, int64_t stride, int64_t len) {
    constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(T));
    for (int64_t s = 0; s < segs; ++s) {
        for (int64_t i = 0; i < len; i += kLine) __builtin_prefetch(x + s * stride + i, write, 2);
    }
}

// Count, mean and centred sum of squares of the entries seen so far, merged block by
// block (Chan, Golub and LeVeque's pairwise update).
struct Moments {
    double n = 0, mean = 0, m2 = 0;
    void merge(double nb, double mean_b, double m2_b) {
        const double total = n + nb, delta = mean_b - mean;
        mean += delta * (nb / total);
        m2 += m2_b + delta * delta * (n * nb / total);
        n = total;
    }
    double var() const { return n > 0 ? m2 / n : __builtin_nan(""); }
    double mean_or_nan() const { return n > 0 ? mean : __builtin_nan(""); }
};

// Sums in float64 over p[0 .. len), into eight interleaved partial sums (lanes, added in a
// fixed order by fold): of p[i], and of (p[i] - m)^2. No reassociation is needed to
// vectorise that (a plain reduction loop stayed scalar in the groupnorm and layernorm
// paths, one dependent add per entry), and the order is the source's on any CPU.
// G segments `next` entries apart (a batchnorm's channels) are summed side by side, each
// into its own lanes in the order it has alone: one segment's lanes wait on their own adds
// (about 4 cycles per eight entries), G segments' chains overlap. The lanes are two of the
// compiler's vectors of four (split into whatever registers the target has), which stay in
// registers; as arrays indexed by segment and lane they went through memory (3x slower).
using Quad = double __attribute__((vector_size(32)));
struct Lanes {
    Quad low, high;  // lanes 0-3, 4-7
};

// p[0 .. 4) as float64 (written out so that the compiler makes one conversion of it).
template <typename T>
Quad four(const T* p) {
    return Quad{static_cast<double>(p[0]), static_cast<double>(p[1]), static_cast<double>(p[2]),
                static_cast<double>(p[3])};
}

// Lanes of f(0), ..., f(n - 1) and + 0.0 after them (n < 8), built in registers (stored
// one by one and loaded as vectors they stalled the load).
template <typename F>
Lanes first_lanes(int64_t n, F f) {
    const auto at = [&](int64_t l) { return l < n ? f(l) : 0.0; };
    return {Quad{at(0), at(1), at(2), at(3)}, Quad{at(4), at(5), at(6), at(7)}};
}

// The last len % 8 entries go to the first lanes; the others get + 0.0, which changes no
// sum (a lane starts at +0.0, and so is never -0.0).
template <int G, typename T>
void sum_into(const T* p, int64_t next, int64_t len, Lanes* acc) {
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) {
        for (int g = 0; g < G; ++g) {
            acc[g].low += four(p + g * next + i);
            acc[g].high += four(p + g * next + i + 4);
        }
    }
    if (i == len) return;
    for (int g = 0; g < G; ++g) {
        const T* q = p + g * next + i;
        const Lanes last =
            first_lanes(len - i, [&](int64_t l) { return static_cast<double>(q[l]); });
        acc[g].low += last.low;
        acc[g].high += last.high;
    }
}

template <int G, typename T>
void squares_into(const T* p, int64_t next, int64_t len, const double* m, Lanes* acc) {
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) {
        for (int g = 0; g < G; ++g) {
            const Quad low = four(p + g * next + i) - m[g];
            const Quad high = four(p + g * next + i + 4) - m[g];
            acc[g].low += low * low;
            acc[g].high += high * high;
        }
    }
    if (i == len) return;
    for (int g = 0; g < G; ++g) {
        const T* q = p + g * next + i;
        const Lanes last = first_lanes(len - i, [&](int64_t l) {
            const double d = q[l] - m[g];
            return d * d;
        });
        acc[g].low += last.low;
        acc[g].high += last.high;
    }
}

inline double fold(const Lanes& lanes) {
    double lane[8];
    __builtin_memcpy(lane, &lanes, sizeof(lane));
    const double low = (lane[0] + lane[4]) + (lane[1] + lane[5]);
    return low + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
}

// Adds `segs` segments of `len` entries, `stride` apart, as one block: its mean first, then
// the squares around that mean, both in float64. G such blocks, `next` entries apart (G
// channels' planes), each into its own acc[g].
// Segments shorter than kShortSegment (planes of 3x3 to 5x5) take a plain reduction loop
// per segment, whose ends cost less there (3x3 planes: 1.5x faster than the lanes).
template <int G, typename T>
void add_block(const T* x, int64_t next, int64_t segs, int64_t stride, int64_t len,
               Moments* acc) {
    const double nb = static_cast<double>(segs * len);
    if (len < kShortSegment) {
        for (int g = 0; g < G; ++g) {
            double sum = 0, m2 = 0;
            for (int64_t s = 0; s < segs; ++s) {
                const T* p = x + g * next + s * stride;
#pragma omp simd reduction(+ : sum)
                for (int64_t i = 0; i < len; ++i) sum += p[i];
            }
            const double m = sum / nb;
            for (int64_t s = 0; s < segs; ++s) {
                const T* p = x + g * next + s * stride;
#pragma omp simd reduction(+ : m2)
                for (int64_t i = 0; i < len; ++i) {
                    const double d = p[i] - m;
                    m2 += d * d;
                }
            }
            acc[g].merge(nb, m, m2);
        }
        return;
    }
    Lanes sums[G] = {}, squares[G] = {};
    double m[G];
    for (int64_t s = 0; s < segs; ++s) sum_into<G>(x + s * stride, next, len, sums);
    for (int g = 0; g < G; ++g) m[g] = fold(sums[g]) / nb;
    for (int64_t s = 0; s < segs; ++s) squares_into<G>(x + s * stride, next, len, m, squares);
    for (int g = 0; g < G; ++g) acc[g].merge(nb, m[g], fold(squares[g]));
}

// The moments of slices k .. k + G - 1 into acc: each `outer` segments of `inner` entries,
// K * inner apart, slice after slice inner entries apart.
template <int G, typename T>
void slice_moments(const NormShape& s, const T* x, int64_t k, Moments* acc) {
    const T* base = x + k * s.inner;
    const int64_t stride = s.K * s.inner;
    if (s.inner == 0) return;
    if (s.inner >= kBlock) {
        for (int64_t o = 0; o < s.outer; ++o) {
            for (int64_t i = 0; i < s.inner; i += kBlock) {
                if (i + kBlock < s.inner) {  // the next block: of this plane, or the next's first
                    prefetch_segments(base + o * stride + i + kBlock, G, s.inner,
                                      lesser(kBlock, s.inner - i - kBlock));
                } else if (o + 1 < s.outer) {
                    prefetch_segments(base + (o + 1) * stride, G, s.inner, kBlock);
                }
                add_block<G>(base + o * stride + i, s.inner, 1, stride,
                             lesser(kBlock, s.inner - i), acc);
            }
        }
    } else {
        const int64_t segs = kBlock / s.inner;
        for (int64_t o = 0; o < s.outer; o += segs) {
            if (o + segs < s.outer) {  // the G slices' planes of a sample are one run
                prefetch_segments(base + (o + segs) * stride, lesser(segs, s.outer - o - segs),
                                  stride, G * s.inner);
            }
            add_block<G>(base + o * stride, s.inner, lesser(segs, s.outer - o), stride, s.inner,
                         acc);
        }
    }
}

// A group's size, as by_groups passes it to its function (a template argument there).
template <int G>
struct GroupOf {
    static constexpr int size = G;
};

// Calls f(GroupOf<G>{}, first) for groups [first, first + G) covering [0, count): of
// kSliceGroup, the last one smaller.
template <typename F>
void by_groups(int64_t count, F f) {
    static_assert(kSliceGroup == 4, "one case per group size");
    int64_t first = 0;
    for (; first + 4 <= count; first += 4) f(GroupOf<4>{}, first);
    switch (count - first) {
        case 3: return f(GroupOf<3>{}, first);
        case 2: return f(GroupOf<2>{}, first);
        case 1: return f(GroupOf<1>{}, first);
        default: return;
    }
}

// The moments of the `count` slices k, k + 1, ... into acc.
template <typename T>
void slices_moments(const NormShape& s, const T* x, int64_t k, int64_t count, Moments* acc) {
    by_groups(count, [&](auto group, int64_t first) {
        slice_moments<decltype(group)::size>(s, x, k + first, acc + first);
    });
}

// The moments of columns [j0, j0 + width) of an (N, K) array, rows in blocks of kRows.
template <typename T>
void column_moments(int64_t N, int64_t K, int64_t j0, int64_t width, const T* x,
                    double* mean, double* var) {
    double m[kColumns] = {}, m2[kColumns] = {}, sum[kColumns], sq[kColumns];
    double n = 0;
    for (int64_t r0 = 0; r0 < N; r0 += kRows) {
        const int64_t rows = lesser(kRows, N - r0);
        for (int64_t j = 0; j < width; ++j) sum[j] = 0;
        for (int64_t r = r0; r < r0 + rows; ++r) {
            const T* row = x + r * K + j0;
#pragma omp simd
            for (int64_t j = 0; j < width; ++j) sum[j] += row[j];
        }
        const double nb = static_cast<double>(rows), total = n + nb;
        for (int64_t j = 0; j < width; ++j) sum[j] /= nb;  // now the block's means
        for (int64_t j = 0; j < width; ++j) sq[j] = 0;
        for (int64_t r = r0; r < r0 + rows; ++r) {
            const T* row = x + r * K + j0;
#pragma omp simd
            for (int64_t j = 0; j < width; ++j) {
                const double d = row[j] - sum[j];
                sq[j] += d * d;
            }
        }
        for (int64_t j = 0; j < width; ++j) {
            const double delta = sum[j] - m[j];
            m[j] += delta * (nb / total);
            m2[j] += sq[j] + delta * delta * (n * nb / total);
        }
        n = total;
    }
    for (int64_t j = 0; j < width; ++j) {
        mean[j] = n > 0 ? m[j] : __builtin_nan("");
        var[j] = n > 0 ? m2[j] / n : __builtin_nan("");
    }
}

// channel_norm_forward with its tail known at compile time (no test of it inside the loops).
template <Tail tail, typename T>
void channel_forward(const NormShape& s, bool train, double eps, T alpha, const T* x,
                     const T* gamma, const T* beta, const T* skip, const NormPool<T>* pool,
                     T* mean, T* var, T* inv_std, T* out) {
    constexpr bool added = tail == Tail::add_relu || tail == Tail::skip_add_relu;
    // The planes go in blocks (norm_pool_block), with a pool each pooled once written, while
    // it is in cache. Where block `first`'s planes go: out, or with a pool and no out this
    // thread's scratch.
    const int64_t block = plane_block(s);
    const auto destination = [&](int64_t first) {
        return out ? out + first * s.inner : pool->scratch + thread_index() * block * s.inner;
    };
    // The statistics of one k (or of a block of columns), then its outputs while its
    // entries are still in cache.
    const auto finish = [&](int64_t k, double m, double v) {
        if (train) mean[k] = static_cast<T>(m), var[k] = static_cast<T>(v);
        inv_std[k] = T(1) / root(var[k] + static_cast<T>(eps));
    };
    if (s.inner == 1) {
        const int64_t blocks = (s.K + kColumns - 1) / kColumns;
        parallel_for(team_for(blocks, s.outer * s.K), blocks, [&](int64_t b) {
            const int64_t j0 = b * kColumns, width = lesser(kColumns, s.K - j0);
            double m[kColumns] = {}, v[kColumns] = {};
            if (train) column_moments(s.outer, s.K, j0, width, x, m, v);
            T scale[kColumns];
            for (int64_t j = 0; j < width; ++j) {
                finish(j0 + j, m[j], v[j]);
                scale[j] = gamma[j0 + j] * inv_std[j0 + j];
            }
            const T *mb = mean + j0, *bb = beta + j0;
            for (int64_t n = 0; n < s.outer; ++n) {
                const T* row = x + n * s.K + j0;
                const T* sk = added ? skip + n * s.K + j0 : nullptr;
                T* o = out + n * s.K + j0;
#pragma omp simd
                for (int64_t j = 0; j < width; ++j) {
                    o[j] = tail_of<tail>((row[j] - mb[j]) * scale[j] + bb[j], sk, j, alpha);
                }
            }
        });
        return;
    }
    // In train mode the statistics, up to kSliceGroup channels side by side, as many
    // channels a group as leaves every thread of the team one group at least. Then the
    // outputs, the planes in memory order, a stream (one channel at a time, each of its planes
    // a jump of K planes, took 1.5x as long on 256 x 33 x 34 x 37, and 2.5-3x a copy's
    // time in eval mode).
    if (train) {
        const int team = team_for(s.K, s.K * (s.outer * s.inner));
        const int64_t group = lesser(kSliceGroup, (s.K + team - 1) / team);
        const int64_t groups = (s.K + group - 1) / group;
        parallel_for(team, groups, [&](int64_t g) {
            const int64_t first = g * group, count = lesser(group, s.K - first);
            Moments moments[kSliceGroup];
            slices_moments(s, x, first, count, moments);
            for (int64_t k = first; k < first + count; ++k) {
                finish(k, moments[k - first].mean_or_nan(), moments[k - first].var());
            }
        });
    } else {
        for (int64_t k = 0; k < s.K; ++k) finish(k, 0, 0);
    }
    plane_blocks(s, block, [&](int64_t first, int64_t count) {
        T* const written = destination(first);
        planes_of_block(s, first, count, [&](int64_t plane, int64_t k) {
            const T m = mean[k], a = gamma[k] * inv_std[k], c = beta[k];
            const T* p = x + plane * s.inner;
            const T* sk = added ? skip + plane * s.inner : nullptr;
            T* q = written + (plane - first) * s.inner;
#pragma omp simd
            for (int64_t i = 0; i < s.inner; ++i) {
                q[i] = tail_of<tail>((p[i] - m) * a + c, sk, i, alpha);
            }
        });
        if (pool) max_pool_norm_planes(*pool, written, first, count);
    });
}

template <typename T>
void channel_norm_forward_loops(const NormShape& s, bool train, const NormTail<T>& tail,
                                double eps, const T* x, const T* gamma, const T* beta, T* mean,
                                T* var, T* inv_std, T* out) {
    const auto run = tail.act.active       ? channel_forward<Tail::leaky, T>
                     : !tail.relu           ? channel_forward<Tail::none, T>
                     : tail.skip == nullptr ? channel_forward<Tail::relu, T>
                     : tail.skip_first      ? channel_forward<Tail::skip_add_relu, T>
                                            : channel_forward<Tail::add_relu, T>;
    run(s, train, eps, tail.act.alpha, x, gamma, beta, tail.skip, tail.pool, mean, var, inv_std,
        out);
}

// The gradients of one k from its sums: dbeta = sum dout, dgamma = sum dout * x_hat, and
// dx = c1 * dout + c2 * (x - mean) + c3 (in eval mode only c1 is not zero).
template <typename T>
struct ChannelGrad {
    T c1, c2, c3;
    ChannelGrad(bool train, double count, T gamma, T inv_std, double sum_d, double sum_dx,
                T& dgamma, T& dbeta) {
        const double inv = inv_std, a = static_cast<double>(gamma) * inv;
        dbeta = static_cast<T>(sum_d);
        dgamma = static_cast<T>(sum_dx * inv);
        c1 = static_cast<T>(a);
        c2 = train ? static_cast<T>(-a * inv * inv * sum_dx / count) : T(0);
        c3 = train ? static_cast<T>(-a * sum_d / count) : T(0);
    }
};

// channel_norm_backward with its mask known at compile time (no test of it inside the loops).
template <Mask mask, typename T>
void channel_backward(const NormShape& s, bool train, T alpha, const T* dout, const T* x,
                      const T* mean, const T* inv_std, const T* gamma, const T* beta,
                      const T* relu_out, T* masked, T* dx, T* dgamma, T* dbeta,
                      double* plane_sums) {
    // Sum dout and sum dout * (x - mean) in float64 per k, then dx. Masked from the
    // forward's output, the first pass writes the masked dout, which the second reads back
    // as its dout.
    constexpr bool recomputed = mask == Mask::recomputed || mask == Mask::leaky;
    constexpr bool written = mask == Mask::from_output;
    const double count = static_cast<double>((s.outer * s.inner));
    if (s.inner == 1) {  // by blocks of columns, each block's dx while it is in cache
        const int64_t blocks = (s.K + kColumns - 1) / kColumns;
        parallel_for(team_for(blocks, s.outer * s.K), blocks, [&](int64_t b) {
            const int64_t j0 = b * kColumns, width = lesser(kColumns, s.K - j0);
            const T* m = mean + j0;
            // With a recomputed relu: its output's scale and shift, to tell where it passed.
            T scale[kColumns], shift[kColumns];
            for (int64_t j = 0; j < width; ++j) {
                scale[j] = recomputed ? gamma[j0 + j] * inv_std[j0 + j] : T(0);
                shift[j] = recomputed ? beta[j0 + j] : T(0);
            }
            double sd[kColumns] = {}, sdx[kColumns] = {};
            for (int64_t n = 0; n < s.outer; ++n) {
                const int64_t at = n * s.K + j0;
                const T *g = dout + at, *p = x + at, *r = written ? relu_out + at : nullptr;
                T* w = written ? masked + at : nullptr;
#pragma omp simd
                for (int64_t j = 0; j < width; ++j) {
                    const T gj =
                        passed<mask>(g[j], (p[j] - m[j]) * scale[j] + shift[j], r, j, alpha);
                    if constexpr (written) w[j] = gj;
                    sd[j] += gj;
                    sdx[j] += static_cast<double>(gj) * static_cast<double>(p[j] - m[j]);
                }
            }
            T c1[kColumns], c2[kColumns], c3[kColumns];
            for (int64_t j = 0; j < width; ++j) {
                const int64_t k = j0 + j;
                const ChannelGrad<T> cg(train, count, gamma[k], inv_std[k], sd[j], sdx[j],
                                        dgamma[k], dbeta[k]);
                c1[j] = cg.c1, c2[j] = cg.c2, c3[j] = cg.c3;
            }
            for (int64_t n = 0; n < s.outer; ++n) {
                const int64_t at = n * s.K + j0;
                const T *g = written ? masked + at : dout + at, *p = x + at;
                T* d = dx + at;
#pragma omp simd
                for (int64_t j = 0; j < width; ++j) {
                    const T yj = (p[j] - m[j]) * scale[j] + shift[j];
                    const T gj = recomputed ? passed<mask, T>(g[j], yj, nullptr, j, alpha) : g[j];
                    d[j] = c1[j] * gj + (c2[j] * (p[j] - m[j]) + c3[j]);
                }
            }
        });
        return;
    }
    // Planes in memory order, each pass a stream: the sums of each plane, then (once each
    // channel's sums are added, plane by plane in order: the same bits for any thread
    // count) dx. Channel by channel, each of its planes a jump of K planes, the passes took
    // 1.4-2.2x as long (64 x 33 x 34 x 37 to 256 x 33 x 34 x 37, 128 x 64 x 16 x 16, float32).
    const int64_t planes = s.outer * s.K, block = plane_block(s);
    const auto each_plane = [&](auto f) {
        plane_blocks(s, block, [&](int64_t first, int64_t count) {
            planes_of_block(s, first, count, f);
        });
    };
    each_plane([&](int64_t plane, int64_t k) {
        const int64_t at = plane * s.inner;
        const T m = mean[k];
        const T a = recomputed ? gamma[k] * inv_std[k] : T(0), b = recomputed ? beta[k] : T(0);
        const T *g = dout + at, *p = x + at, *r = written ? relu_out + at : nullptr;
        T* w = written ? masked + at : nullptr;
        double sd = 0, sdx = 0;
#pragma omp simd reduction(+ : sd, sdx)
        for (int64_t i = 0; i < s.inner; ++i) {
            const T gi = passed<mask>(g[i], (p[i] - m) * a + b, r, i, alpha);
            if constexpr (written) w[i] = gi;
            sd += gi;
            sdx += static_cast<double>(gi) * static_cast<double>(p[i] - m);
        }
        plane_sums[2 * plane] = sd;
        plane_sums[2 * plane + 1] = sdx;
    });
    // Each channel's sums, its planes' in order, and its coefficients (after the planes').
    double* coefficients = plane_sums + 2 * planes;
    for (int64_t k = 0; k < s.K; ++k) {
        double sd = 0, sdx = 0;
        for (int64_t o = 0; o < s.outer; ++o) {
            sd += plane_sums[2 * (o * s.K + k)];
            sdx += plane_sums[2 * (o * s.K + k) + 1];
        }
        const ChannelGrad<T> cg(train, count, gamma[k], inv_std[k], sd, sdx, dgamma[k],
                                dbeta[k]);
        coefficients[3 * k] = cg.c1, coefficients[3 * k + 1] = cg.c2;
        coefficients[3 * k + 2] = cg.c3;
    }
    each_plane([&](int64_t plane, int64_t k) {
        const int64_t at = plane * s.inner;
        const T m = mean[k];
        const T a = recomputed ? gamma[k] * inv_std[k] : T(0), b = recomputed ? beta[k] : T(0);
        const T c1 = static_cast<T>(coefficients[3 * k]);
        const T c2 = static_cast<T>(coefficients[3 * k + 1]);
        const T c3 = static_cast<T>(coefficients[3 * k + 2]);
        const T *g = written ? masked + at : dout + at, *p = x + at;
        T* d = dx + at;
#pragma omp simd
        for (int64_t i = 0; i < s.inner; ++i) {
            const T yi = (p[i] - m) * a + b;
            const T gi = recomputed ? passed<mask, T>(g[i], yi, nullptr, i, alpha) : g[i];
            d[i] = c1 * gi + (c2 * (p[i] - m) + c3);
        }
    });
}

template <typename T>
void channel_norm_backward_loops(const NormShape& s, bool train, bool relu,
                                 const PointwiseAct<T>& act, const T* dout, const T* x,
                                 const T* mean, const T* inv_std, const T* gamma, const T* beta,
                                 const T* out, T* masked, T* dx, T* dgamma, T* dbeta,
                                 double* plane_sums) {
    const auto run = masked != nullptr ? channel_backward<Mask::from_output, T>
                     : act.active      ? channel_backward<Mask::leaky, T>
                     : relu            ? channel_backward<Mask::recomputed, T>
                                       : channel_backward<Mask::none, T>;
    run(s, train, act.alpha, dout, x, mean, inv_std, gamma, beta, out, masked, dx, dgamma,
        dbeta, plane_sums);
}

// mean[k] and inv_std[k] = 1 / sqrt(var + eps) of slice k from its moments, in T.
template <typename T>
void slice_statistics(const NormShape& s, const T* x, int64_t k, double eps, T* mean,
                      T* inv_std) {
    Moments m;
    slice_moments<1>(s, x, k, &m);
    mean[k] = static_cast<T>(m.mean_or_nan());
    inv_std[k] = T(1) / root(static_cast<T>(m.var()) + static_cast<T>(eps));
}

// out = relu_if((x - m) * inv * gamma + beta) over one row of D entries.
template <bool relu, typename T>
void normalize_row(int64_t D, const T* p, T m, T inv, const T* gamma, const T* beta, T* o) {
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) o[d] = relu_if<relu>((p[d] - m) * inv * gamma[d] + beta[d]);
}

// The means m and the centred sums of squares m2 of `rows` rows of D < kBlock entries, as
// slice_moments takes them for a slice of one such segment (add_block's sums): each row's
// sum in float64, then the squares around its mean, kSliceGroup rows side by side.
template <typename T>
void rows_moments(const T* p, int64_t D, int64_t rows, double* m, double* m2) {
    const double count = static_cast<double>(D);
    if (D < kShortSegment) {
        for (int64_t r = 0; r < rows; ++r) {
            const T* q = p + r * D;
            double sum = 0;
#pragma omp simd reduction(+ : sum)
            for (int64_t i = 0; i < D; ++i) sum += q[i];
            m[r] = sum / count;
        }
        for (int64_t r = 0; r < rows; ++r) {
            const T* q = p + r * D;
            double squares = 0;
#pragma omp simd reduction(+ : squares)
            for (int64_t i = 0; i < D; ++i) {
                const double d = q[i] - m[r];
                squares += d * d;
            }
            m2[r] = squares;
        }
        return;
    }
    by_groups(rows, [&](auto group, int64_t first) {
        constexpr int G = decltype(group)::size;
        Lanes sums[G] = {}, squares[G] = {};
        sum_into<G>(p + first * D, D, D, sums);
        for (int g = 0; g < G; ++g) m[first + g] = fold(sums[g]) / count;
        squares_into<G>(p + first * D, D, D, m + first, squares);
        for (int g = 0; g < G; ++g) m2[first + g] = fold(squares[g]);
    });
}

// layer_norm_forward with the relu known at compile time (no test of it inside the loops).
// Rows shorter than kBlock go kRowGroup at a time, each step of their statistics (the
// sums, the squares, the division and the root) taken for all the group's rows before the
// next, so that the rows' dependency chains overlap: a row of 64 at a time waited on its
// own (2.6 cycles an entry). Each row's numbers are slice_statistics' (the same sums in the
// same order).
template <bool relu, typename T>
void rows_forward(int64_t N, int64_t D, double eps, const T* x, const T* gamma, const T* beta,
                  T* mean, T* inv_std, T* out) {
    if (D >= kBlock) {
        parallel_for(team_for(N, N * D), N, [&](int64_t n) {
            slice_statistics(NormShape{1, N, D}, x, n, eps, mean, inv_std);
            normalize_row<relu>(D, x + n * D, mean[n], inv_std[n], gamma, beta, out + n * D);
        });
        return;
    }
    const int64_t groups = (N + kRowGroup - 1) / kRowGroup;
    const double count = static_cast<double>(D);
    parallel_for(team_for(groups, N * D), groups, [&](int64_t group) {
        const int64_t first = group * kRowGroup, rows = lesser(kRowGroup, N - first);
        const T* p = x + first * D;
        double m[kRowGroup], m2[kRowGroup];
        rows_moments(p, D, rows, m, m2);
        for (int64_t r = 0; r < rows; ++r) {
            mean[first + r] = static_cast<T>(m[r]);
            inv_std[first + r] = T(1) / root(static_cast<T>(m2[r] / count) + static_cast<T>(eps));
        }
        for (int64_t r = 0; r < rows; ++r) {
            normalize_row<relu>(D, p + r * D, mean[first + r], inv_std[first + r], gamma, beta,
                                out + (first + r) * D);
        }
    });
}

template <typename T>
void layer_norm_forward_loops(int64_t N, int64_t D, bool relu, double eps, const T* x,
                              const T* gamma, const T* beta, T* mean, T* inv_std, T* out) {
    (relu ? rows_forward<true, T> : rows_forward<false, T>)(N, D, eps, x, gamma, beta, mean,
                                                            inv_std, out);
}

// Layernorm's backward over blocks of kRowBlock rows: block(first, rows, pg, pb) writes the
// dx rows [first, first + rows) and adds their shares of dgamma and dbeta to pg and pb (D
// zeroed doubles of its own), then the blocks' shares are added in order, so the sums are
// the same for any number of threads.
template <typename T, typename Block>
void layer_norm_backward_in_blocks(int64_t N, int64_t D, T* dgamma, T* dbeta, double* part_g,
                                   double* part_b, Block&& block) {
    const int64_t blocks = row_blocks(N);
    parallel_for(team_for(blocks, N * D), blocks, [&](int64_t b) {
        const int64_t first = b * kRowBlock;
        block(first, lesser(kRowBlock, N - first), part_g + b * D, part_b + b * D);
    });
    parallel_for(team_for(D, blocks * D), D, [&](int64_t j) {
        double sg = 0, sb = 0;
        for (int64_t b = 0; b < blocks; ++b) {
            sg += part_g[b * D + j];
            sb += part_b[b * D + j];
        }
        dgamma[j] = static_cast<T>(sg);
        dbeta[j] = static_cast<T>(sb);
    });
}

// layer_norm_backward with the relu known at compile time (no test of it inside the loops).
template <bool relu, typename T>
void rows_backward(int64_t N, int64_t D, const T* dout, const T* x, const T* mean,
                   const T* inv_std, const T* gamma, const T* beta, T* dx, T* dgamma,
                   T* dbeta, double* part_g, double* part_b) {
    const double count = static_cast<double>(D);
    // A block's rows kRowGroup at a time: their sums first, side by side (one row at a
    // time, a row of 64 waited on its own sums and divisions), then their dx rows and their
    // shares of dgamma and dbeta in row order.
    const auto block = [&](int64_t block_first, int64_t block_rows, double* pg, double* pb) {
        const int64_t end = block_first + block_rows;
        for (int64_t first = block_first; first < end; first += kRowGroup) {
            const int64_t rows = lesser(kRowGroup, end - first);
            T c2[kRowGroup], c3[kRowGroup];
            for (int64_t r = 0; r < rows; ++r) {
                const int64_t n = first + r;
                const T *g = dout + n * D, *p = x + n * D;
                const T m = mean[n], inv = inv_std[n];
                double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
                for (int64_t j = 0; j < D; ++j) {
                    const T gj = relu ? through_relu(g[j], (p[j] - m) * inv * gamma[j] + beta[j])
                                      : g[j];
                    const double gg = static_cast<double>(gj) * static_cast<double>(gamma[j]);
                    s1 += gg;
                    s2 += gg * static_cast<double>(p[j] - m);
                }
                c2[r] = static_cast<T>(-inv * inv * s2 / count);
                c3[r] = static_cast<T>(-s1 / count);
            }
            for (int64_t r = 0; r < rows; ++r) {
                const int64_t n = first + r;
                const T *g = dout + n * D, *p = x + n * D;
                T* d = dx + n * D;
                const T m = mean[n], inv = inv_std[n];
#pragma omp simd
                for (int64_t j = 0; j < D; ++j) {
                    const T centred = p[j] - m;
                    const T gj = relu ? through_relu(g[j], centred * inv * gamma[j] + beta[j])
                                      : g[j];
                    d[j] = inv * (gj * gamma[j] + (c2[r] * centred + c3[r]));
                    pg[j] += static_cast<double>(gj) * static_cast<double>(centred * inv);
                    pb[j] += gj;
                }
            }
        }
    };
    layer_norm_backward_in_blocks(N, D, dgamma, dbeta, part_g, part_b, block);
}

template <typename T>
void layer_norm_backward_loops(int64_t N, int64_t D, bool relu, const T* dout, const T* x,
                               const T* mean, const T* inv_std, const T* gamma, const T* beta,
                               T* dx, T* dgamma, T* dbeta, double* part_g, double* part_b) {
    (relu ? rows_backward<true, T> : rows_backward<false, T>)(
        N, D, dout, x, mean, inv_std, gamma, beta, dx, dgamma, dbeta, part_g, part_b);
}

}  // namespace
}  // namespace graphnet
