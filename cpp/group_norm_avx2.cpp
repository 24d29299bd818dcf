// The groupnorm kernels compiled for AVX2 (group_norm.h, group_norm_isa.h). Without FMA, as
// norm_avx2.cpp.
#pragma GCC target("avx2")
#define GRAPHNET_GROUP_NORM_ISA avx2
#include "group_norm_isa.h"
