#include "threads.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>

namespace graphnet {

namespace {
std::atomic<int> g_num_threads{std::min(omp_get_max_threads(), kMaxThreads)};
thread_local int one_thread_scopes = 0;  // OneThreadHere's alive on this thread
}  // namespace

int thread_index() { return omp_get_thread_num(); }

int team_threads() { return omp_get_num_threads(); }

int num_threads() {
    return one_thread_scopes > 0 ? 1 : g_num_threads.load(std::memory_order_relaxed);
}

OneThreadHere::OneThreadHere() { ++one_thread_scopes; }
OneThreadHere::~OneThreadHere() { --one_thread_scopes; }

void set_num_threads(int64_t n) {
    if (n < 1 || n > kMaxThreads) {
        throw std::invalid_argument("set_num_threads: n must be between 1 and " +
                                    std::to_string(kMaxThreads) + ", got " + std::to_string(n));
    }
    g_num_threads.store(static_cast<int>(n), std::memory_order_relaxed);
}

}  // namespace graphnet
