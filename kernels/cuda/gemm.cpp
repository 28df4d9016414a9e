// GEMM on the GPU: runs a ColumnMajorGemmPlan (kernels/gemm.h) through cublasSgemm.
//
// The plan is computed once, on the host, by plan_gemm(); this file only checks that its sizes fit
// cuBLAS's int arguments and makes the call. k == 0 is handled here, not left to cuBLAS: BLAS
// defines it as C = beta * C (C not read when beta == 0), and the cuBLAS documentation does not
// state that it honours that, so scale_matrix (scale_matrix.cu) does it explicitly.
// Host code only (no kernel here): the fake CUDA device's build compiles it unchanged.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "cairn/base/error.h"
#include "cairn/kernels/gemm.h"

namespace cairn::kernels::cuda {
namespace {

bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

}  // namespace

// C' (m, n) = alpha * op(first) (m, k) * op(second) (k, n) + beta * C', all column-major.
void gemm(const ColumnMajorGemmPlan& plan, BlasHandle handle) {
  CAIRN_CHECK(handle != nullptr, "gemm: null cuBLAS handle");
  CAIRN_CHECK(fits_int(plan.m) && fits_int(plan.n) && fits_int(plan.k), "gemm: sizes m=", plan.m,
              " n=", plan.n, " k=", plan.k, " must lie in [0, INT_MAX] for cuBLAS");
  CAIRN_CHECK(fits_int(plan.ld_first) && fits_int(plan.ld_second) && fits_int(plan.ldc),
              "gemm: leading dimensions ", plan.ld_first, ", ", plan.ld_second, ", ", plan.ldc,
              " must lie in [0, INT_MAX] for cuBLAS");
  if (plan.m == 0 || plan.n == 0) return;
  cublasHandle_t cublas = handle;  // BlasHandle is cublasContext*, the same type

  if (plan.k == 0) {
    if (plan.beta == 1.0f) return;
    cudaStream_t stream = nullptr;
    CAIRN_CUBLAS_CHECK(cublasGetStream(cublas, &stream));
    scale_matrix(plan.c, plan.m, plan.n, plan.ldc, plan.beta, stream);
    return;
  }

  // alpha and beta are passed by host address: a handle left in device pointer mode would read
  // them as device addresses, so refuse it rather than change the caller's handle behind its back.
  cublasPointerMode_t mode = CUBLAS_POINTER_MODE_HOST;
  CAIRN_CUBLAS_CHECK(cublasGetPointerMode(cublas, &mode));
  CAIRN_CHECK(mode == CUBLAS_POINTER_MODE_HOST,
              "gemm: the cuBLAS handle must be in host pointer mode");

  const float alpha = plan.alpha;
  const float beta = plan.beta;
  CAIRN_CUBLAS_CHECK(
      cublasSgemm(cublas, plan.transpose_first ? CUBLAS_OP_T : CUBLAS_OP_N,
                  plan.transpose_second ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(plan.m),
                  static_cast<int>(plan.n), static_cast<int>(plan.k), &alpha, plan.first,
                  static_cast<int>(plan.ld_first), plan.second, static_cast<int>(plan.ld_second),
                  &beta, plan.c, static_cast<int>(plan.ldc)));
}

}  // namespace cairn::kernels::cuda
