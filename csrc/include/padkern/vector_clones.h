// Function multiversioning for the CPU's hot loops: a loop marked PADKERN_VECTOR_CLONES is
// compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 with FMA) and baseline x86-64, and the
// best one the machine supports is picked when the library loads (4x to 16x wide). The
// levels, not bare "avx512f"/"avx2", so the clones contract multiply-adds into FMAs: neither
// of those flags enables FMA in gcc.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define PADKERN_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// gcc 11 and older know no "arch=" levels in target_clones: the same widths without FMA.
#define PADKERN_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PADKERN_VECTOR_CLONES
#endif
