#include "threads.h"

#include <omp.h>

#include <atomic>
#include <stdexcept>
#include <string>

namespace graphnet {

namespace {
std::atomic<int> g_num_threads{omp_get_max_threads()};
}

int thread_index() { return omp_get_thread_num(); }

int team_threads() { return omp_get_num_threads(); }

int num_threads() { return g_num_threads.load(std::memory_order_relaxed); }

void set_num_threads(int n) {
    if (n < 1) {
        throw std::invalid_argument("set_num_threads: need at least 1 thread, got " +
                                    std::to_string(n));
    }
    g_num_threads.store(n, std::memory_order_relaxed);
}

}  // namespace graphnet
