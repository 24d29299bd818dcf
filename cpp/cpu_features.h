// What the CPU running us can do, asked once at run time: the AVX2 kernels
// (conv_direct.cpp, skinny_gemm.cpp) are compiled for AVX2 + FMA while the rest of the
// module stays portable x86-64, so they are only called when this says yes.
// Include it only from portable translation units, never from the AVX2 ones. A build
// for another CPU compiles no x86 kernel (GRAPHNET_X86_KERNELS undefined): all say no.
#pragma once

namespace graphnet {

#ifdef GRAPHNET_X86_KERNELS
inline bool cpu_has_avx2_fma() {
    static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return has;
}

// AVX-512 Foundation (libgcc's check includes the OS saving the 512-bit registers).
inline bool cpu_has_avx512f() {
    static const bool has = __builtin_cpu_supports("avx512f") && cpu_has_avx2_fma();
    return has;
}

// AVX-512's multiply of 64-bit words (vpmullq) and its other DQ instructions.
inline bool cpu_has_avx512dq() {
    static const bool has = __builtin_cpu_supports("avx512dq") && cpu_has_avx512f();
    return has;
}
#else  // a build without the x86 kernels (CMakeLists.txt): every caller's portable path
inline bool cpu_has_avx2_fma() { return false; }
inline bool cpu_has_avx512f() { return false; }
inline bool cpu_has_avx512dq() { return false; }
#endif

}  // namespace graphnet
