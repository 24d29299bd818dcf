// How many threads the kernels use, and the one place they start them.
//
// Every kernel parallelises over independent pieces (images, or channel planes) with
// an OpenMP team of num_threads() threads. The count starts at omp_get_max_threads(),
// so OMP_NUM_THREADS is honoured, and graphnet._C.set_num_threads() changes it for all
// Python threads at once (omp_set_num_threads would only change the calling thread).
#pragma once

#include <algorithm>
#include <cstdint>

namespace graphnet {

int num_threads();
// Which thread of the innermost team runs the caller (omp_get_thread_num), for kernels
// compiled without library headers that index their threads' scratch.
int thread_index();
void set_num_threads(int n);  // n >= 1, else std::invalid_argument

// Threads worth starting for `pieces` independent pieces of work: never more than
// there are pieces, never fewer than one.
inline int team_size(int64_t pieces) {
    return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), pieces)));
}

// Calls body() on each thread of a team of `team`, whose `omp for` loops share out the
// work, or once on the calling thread when team is 1, where those loops run whole. A team
// of one still ends each `omp for` at a barrier that makes a futex system call in libgomp:
// two a step in the recurrent kernels, 0.4 us or more of one sequence's 3.5 us LSTM step
// (H = 128, float32); outside a parallel region the barrier is a no-op.
template <typename Body>
void on_team(int team, Body&& body) {
    if (team == 1) return body();
#pragma omp parallel num_threads(team)
    body();
}

}  // namespace graphnet
