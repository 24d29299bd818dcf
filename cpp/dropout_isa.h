// dropout_loops.h's element loop compiled for AVX2 and for AVX-512 with AVX512DQ
// (dropout_x86.cpp), the arguments of dropout_elements. Call them only where the CPU has
// those (dropout.cpp asks cpu_features.h and the activations' switches).
#pragma once

#include <cstdint>

namespace graphnet {

void dropout_elements_avx2(int64_t begin, int64_t end, uint64_t key, uint64_t threshold,
                           float scale, const float* x, float* out, float* mask);
void dropout_elements_avx2(int64_t begin, int64_t end, uint64_t key, uint64_t threshold,
                           double scale, const double* x, double* out, double* mask);
void dropout_elements_avx512(int64_t begin, int64_t end, uint64_t key, uint64_t threshold,
                             float scale, const float* x, float* out, float* mask);
void dropout_elements_avx512(int64_t begin, int64_t end, uint64_t key, uint64_t threshold,
                             double scale, const double* x, double* out, double* mask);

}  // namespace graphnet
