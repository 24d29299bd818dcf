// Adam's element loop (optim_loops.h) compiled for AVX2 (optim_avx2.cpp). Call it only when
// cpu_has_avx2_fma() (cpu_features.h).
#pragma once

#include <cstdint>

#include "optim_loops.h"

namespace graphnet {

template <typename T>
void adam_elements_avx2(const AdamScalars<T>& a, int64_t n, T* w, const T* dw, T* m, T* v);

}  // namespace graphnet
