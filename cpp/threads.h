// How many threads the kernels use, and the one place they start them.
//
// Every kernel parallelises over independent pieces (images, or channel planes) with
// an OpenMP team of num_threads() threads. The count starts at omp_get_max_threads(),
// so OMP_NUM_THREADS is honoured, and graphnet._C.set_num_threads() changes it for all
// Python threads at once (omp_set_num_threads would only change the calling thread).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace graphnet {

int num_threads();  // 1 on a thread that holds a OneThreadHere
// Which thread of the innermost team runs the caller (omp_get_thread_num), for kernels
// compiled without library headers that index their threads' scratch.
int thread_index();
int team_threads();  // the innermost team's size (omp_get_num_threads)
// The most threads a team may have: more than any CPU graphnet runs on has, and few enough
// to start. Every region of a large kernel would start one thread per piece of work up to
// the count, and tens of thousands of them exhaust the process (a crash, not an error).
constexpr int kMaxThreads = 1024;
void set_num_threads(int64_t n);  // 1 <= n <= kMaxThreads, else std::invalid_argument

// While one lives, the kernels called on its thread run there alone (num_threads() is 1):
// for a kernel whose team already splits its work into whole calls of another kernel (a
// stack of small products, one matrix per call), where the inner kernel's own region
// would only cost its start and barrier. The inner kernels give the same bits on any
// thread count, so this changes no result.
class OneThreadHere {
  public:
    OneThreadHere();
    ~OneThreadHere();
    OneThreadHere(const OneThreadHere&) = delete;
    OneThreadHere& operator=(const OneThreadHere&) = delete;
};

// Threads worth starting for `pieces` independent pieces of work: never more than
// there are pieces, never fewer than one.
inline int team_size(int64_t pieces) {
    return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), pieces)));
}

// A parallel region ends at a barrier, and libgomp's barrier makes a futex system call
// even in a team of one thread: about 1.5 us here, more than a small gate's whole kernel
// (a transformer's eval call at batch 1 ran 20 regions). So the kernels start a region
// only for a team of two or more; a team of one runs the work on the calling thread,
// where `omp for` loops run whole and their barriers are no-ops.

// Calls body(thread, threads) on each thread of a team of `team` (thread numbered from 0
// to threads - 1; `omp for` loops in body share out their work among the team), or
// body(0, 1) on the calling thread when team is 1. The numbers are the team's own even
// when the caller runs inside another team.
template <typename Body>
void on_team(int team, Body&& body) {
    if (team <= 1) return body(0, 1);
#pragma omp parallel num_threads(team)
    body(thread_index(), team_threads());
}

// body(i) for each i in [0, count): contiguous blocks of i, one per thread of a team of
// `team`, or in order on the calling thread when team is 1.
template <typename Body>
void parallel_for(int team, int64_t count, Body&& body) {
    if (team <= 1) {
        for (int64_t i = 0; i < count; ++i) body(i);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(team)
    for (int64_t i = 0; i < count; ++i) body(i);
}

// As parallel_for, but each thread takes the next `chunk` of i when it is free: for
// pieces of uneven cost. A body that takes (i, thread) is also told which thread of the
// team runs it (0 to team - 1; 0 on the calling thread), to use scratch of its own.
template <typename Body>
void parallel_for_dynamic(int team, int64_t count, int64_t chunk, Body&& body) {
    const auto run = [&body](int64_t i, int thread) {
        if constexpr (std::is_invocable_v<Body&, int64_t, int>) {
            body(i, thread);
        } else {
            body(i);
        }
    };
    if (team <= 1) {
        for (int64_t i = 0; i < count; ++i) run(i, 0);
        return;
    }
#pragma omp parallel num_threads(team)
    {
        const int thread = thread_index();
#pragma omp for schedule(dynamic, chunk)
        for (int64_t i = 0; i < count; ++i) run(i, thread);
    }
}

}  // namespace graphnet
