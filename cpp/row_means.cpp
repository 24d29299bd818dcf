#include "row_means.h"

#include <algorithm>

#include "threads.h"

namespace graphnet {

namespace {

constexpr int64_t kBlock = 128;  // numpy's PW_BLOCKSIZE

template <typename T>
T pairwise_sum(const T* a, int64_t n) {
    if (n < 8) {
        T sum = 0;
        for (int64_t i = 0; i < n; ++i) sum += a[i];
        return sum;
    }
    if (n <= kBlock) {
        // Eight running sums, of every eighth value: the compiler keeps them in vector lanes.
        T s[8];
        for (int j = 0; j < 8; ++j) s[j] = a[j];
        int64_t i = 8;
        for (; i < n - n % 8; i += 8) {
            for (int j = 0; j < 8; ++j) s[j] += a[i + j];
        }
        T sum = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
        for (; i < n; ++i) sum += a[i];
        return sum;
    }
    int64_t half = n / 2;
    half -= half % 8;
    return pairwise_sum(a, half) + pairwise_sum(a + half, n - half);
}

// Rows per block of work: about 64k values, below which a second thread costs more to
// wake than it saves.
int64_t rows_per_block(int64_t n) {
    return std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(n, 1));
}

}  // namespace

template <typename T>
void row_means(int64_t rows, int64_t n, const T* x, T* out) {
    const T count = T(n);
    const int64_t block = rows_per_block(n), blocks = (rows + block - 1) / block;
    parallel_for(team_size(blocks), blocks, [&](int64_t b) {
        for (int64_t r = b * block; r < std::min(rows, (b + 1) * block); ++r) {
            out[r] = numpy_sum(x + r * n, n) / count;
        }
    });
}

template <typename T>
void middle_means(int64_t outer, int64_t n, int64_t inner, const T* x, T* out) {
    const T count = T(n);
    const int64_t block = rows_per_block(n * inner), blocks = (outer + block - 1) / block;
    parallel_for(team_size(blocks), blocks, [&](int64_t b) {
        for (int64_t a = b * block; a < std::min(outer, (b + 1) * block); ++a) {
            T* sums = out + a * inner;
            std::fill(sums, sums + inner, T(0));
            for (int64_t j = 0; j < n; ++j) {
                const T* slice = x + (a * n + j) * inner;
                for (int64_t c = 0; c < inner; ++c) sums[c] += slice[c];
            }
            for (int64_t c = 0; c < inner; ++c) sums[c] /= count;
        }
    });
}

template <typename T>
void spread_means(int64_t outer, int64_t n, int64_t inner, const T* dout, T* dx) {
    if (n == 0) return;  // dx is empty
    const T count = T(n);
    const int64_t block = rows_per_block(n * inner), blocks = (outer + block - 1) / block;
    parallel_for(team_size(blocks), blocks, [&](int64_t b) {
        for (int64_t a = b * block; a < std::min(outer, (b + 1) * block); ++a) {
            T* first = dx + a * n * inner;
            for (int64_t c = 0; c < inner; ++c) first[c] = dout[a * inner + c] / count;
            for (int64_t j = 1; j < n; ++j) std::copy(first, first + inner, first + j * inner);
        }
    });
}

template <typename T>
T numpy_sum(const T* x, int64_t n) {
    return T(0) + pairwise_sum(x, n);
}

template void row_means<float>(int64_t, int64_t, const float*, float*);
template void row_means<double>(int64_t, int64_t, const double*, double*);
template void middle_means<float>(int64_t, int64_t, int64_t, const float*, float*);
template void middle_means<double>(int64_t, int64_t, int64_t, const double*, double*);
template void spread_means<float>(int64_t, int64_t, int64_t, const float*, float*);
template void spread_means<double>(int64_t, int64_t, int64_t, const double*, double*);
template float numpy_sum<float>(const float*, int64_t);
template double numpy_sum<double>(const double*, int64_t);

}  // namespace graphnet
