// The update rules' element loops (optim_loops.h) compiled for AVX2 (optim_avx2.cpp). Call
// them only when cpu_has_avx2_fma() (cpu_features.h).
#pragma once

#include <cstdint>

#include "optim_loops.h"

namespace graphnet {

template <typename Scalars, typename T>
void update_elements_avx2(const Scalars& a, int64_t n, T* w, const T* dw, T* state0, T* state1);

}  // namespace graphnet
