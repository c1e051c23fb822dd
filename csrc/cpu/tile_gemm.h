// Row-major GEMMs on small tiles for the CPU attention kernel, straight into the BLAS that
// torch's own CPU GEMM calls (MKL or OpenBLAS inside libtorch_cpu): an attention tile is a
// 64 x 256 x D product, a few microseconds of work, where an at::mm call would spend as long
// again creating tensors and dispatching. The BLAS is found at load time by name; a torch
// without one (or PADKERN_CPU_BLAS=0, which the tests use to cover this path) gets a plain
// loop with the same contract.
#pragma once
#include <dlfcn.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace padkern {
namespace cpu {

// Fortran BLAS ?gemm_ with 32-bit (LP64) integers, the interface torch itself calls.
template <typename T>
using FortranGemm = void (*)(const char*, const char*, const int*, const int*, const int*, const T*, const T*,
                             const int*, const T*, const int*, const T*, T*, const int*);

inline void* torch_blas_symbol(const char* name) {
  const char* switch_value = std::getenv("PADKERN_CPU_BLAS");
  if (switch_value != nullptr && std::strcmp(switch_value, "0") == 0) return nullptr;
  // libtorch_cpu is already loaded (this extension links against it); RTLD_NOLOAD only
  // finds it, since Python loads torch's libraries without RTLD_GLOBAL.
  void* torch_cpu = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
  void* found = torch_cpu != nullptr ? dlsym(torch_cpu, name) : nullptr;
  return found != nullptr ? found : dlsym(RTLD_DEFAULT, name);
}

template <typename T>
FortranGemm<T> blas_gemm();
template <>
inline FortranGemm<float> blas_gemm<float>() {
  static const auto gemm = reinterpret_cast<FortranGemm<float>>(torch_blas_symbol("sgemm_"));
  return gemm;
}
template <>
inline FortranGemm<double> blas_gemm<double>() {
  static const auto gemm = reinterpret_cast<FortranGemm<double>>(torch_blas_symbol("dgemm_"));
  return gemm;
}

// C [m, n] = alpha * op(A) op(B) + beta * C, all row-major with leading dimensions lda,
// ldb, ldc; op(A) = A^T when trans_a (A stored [k, m]), else A ([m, k]); likewise B.
// beta == 0 never reads C (it may hold anything). A row-major product is the column-major
// product of the transposes, so BLAS gets the operands swapped.
template <typename T>
void gemm_row_major(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
                    const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (const FortranGemm<T> gemm = blas_gemm<T>()) {
    const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
    const int mm = static_cast<int>(n), nn = static_cast<int>(m), kk = static_cast<int>(k);
    // BLAS rejects a leading dimension below 1 even when k == 0.
    const int la = static_cast<int>(ldb > 0 ? ldb : 1), lb = static_cast<int>(lda > 0 ? lda : 1);
    const int lc = static_cast<int>(ldc);
    gemm(&ta, &tb, &mm, &nn, &kk, &alpha, b, &la, a, &lb, &beta, c, &lc);
    return;
  }
  for (int64_t i = 0; i < m; ++i) {
    T* c_row = c + i * ldc;
    for (int64_t j = 0; j < n; ++j) c_row[j] = beta == T(0) ? T(0) : beta * c_row[j];
    for (int64_t p = 0; p < k; ++p) {
      const T a_ip = alpha * (trans_a ? a[p * lda + i] : a[i * lda + p]);
      if (trans_b) {
        for (int64_t j = 0; j < n; ++j) c_row[j] += a_ip * b[j * ldb + p];
      } else {
        const T* b_row = b + p * ldb;
        for (int64_t j = 0; j < n; ++j) c_row[j] += a_ip * b_row[j];
      }
    }
  }
}

}  // namespace cpu
}  // namespace padkern
