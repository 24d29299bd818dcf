#include "softmax_loss.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "recurrent.h"
#include "softmax_rows.h"
#include "threads.h"

namespace graphnet {

namespace {

// Rows per block of work: about 64k scores, below which a second thread costs more to
// wake than it saves.
int64_t rows_per_block(int64_t V) {
    return std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(V, 1));
}

}  // namespace

template <typename T>
double softmax_loss_rows(int64_t rows, int64_t V, const T* x, const int64_t* label,
                         const T* weight, T* dx) {
    for (int64_t r = 0; r < rows; ++r) {
        if (label[r] < 0 || label[r] >= V) {
            throw std::invalid_argument("softmax loss: label " + std::to_string(label[r]) +
                                        " of row " + std::to_string(r) + " is not in [0, " +
                                        std::to_string(V) + ")");
        }
    }
    if (V == 0) return 0.0;  // and then there are no rows: a label would not fit
    std::vector<double> row_loss(rows);
    const bool avx2 = avx2_activations_active();
    const int64_t block = rows_per_block(V), blocks = (rows + block - 1) / block;
    parallel_for(team_size(blocks), blocks, [&](int64_t b) {
        for (int64_t r = b * block; r < std::min(rows, (b + 1) * block); ++r) {
            const T* s = x + r * V;
            const T w = weight ? weight[r] : T(1);
            if (w == T(0)) {
                // A row of weight 0 (masked: a padded step) adds nothing to the loss and
                // has no gradient, whatever its scores: w * p would be NaN where they hold
                // an inf or a NaN, which the backward would carry into every weight.
                if (dx) std::fill(dx + r * V, dx + (r + 1) * V, T(0));
                row_loss[r] = 0.0;
                continue;
            }
            // Less the row's maximum, exp cannot overflow (a NaN in the row: p is NaN).
            const T shift = row_max(V, s);
            const T total = exp_shifted_sum(V, s, shift, dx ? dx + r * V : nullptr, avx2);
            if (dx) {
                T* d = dx + r * V;
                const T scale = w / total;
#pragma omp simd
                for (int64_t k = 0; k < V; ++k) d[k] *= scale;
                d[label[r]] -= w;
            }
            row_loss[r] = double(w) * (std::log(double(total)) - double(s[label[r]] - shift));
        }
    });
    double loss = 0.0;
    for (double l : row_loss) loss += l;
    return loss;
}

template double softmax_loss_rows<float>(int64_t, int64_t, const float*, const int64_t*,
                                         const float*, float*);
template double softmax_loss_rows<double>(int64_t, int64_t, const double*, const int64_t*,
                                          const double*, double*);

}  // namespace graphnet
