// C = beta * C for a column-major matrix: the k == 0 GEMM, which BLAS defines and cuBLAS's
// documentation does not promise to honour (see gemm.cpp).
#include <cuda_runtime.h>

#include <cstdint>

#include "cairn/base/error.h"
#include "cairn/kernels/cuda/launch.cuh"
#include "cairn/kernels/gemm.h"

namespace cairn::kernels::cuda {
namespace {

// c: column-major (m, n) with leading dimension ldc; c = beta * c, and exactly 0 when beta == 0
// (never 0 * NaN), as BLAS defines the k == 0 product.
__global__ void scale_matrix_kernel(float* c, int64_t m, int64_t n, int64_t ldc, float beta) {
  const int64_t total = m * n;
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += stride) {
    const int64_t col = i / m;
    float* slot = c + col * ldc + (i - col * m);
    *slot = beta == 0.0f ? 0.0f : beta * *slot;
  }
}

}  // namespace

void scale_matrix(float* c, int64_t m, int64_t n, int64_t ldc, float beta, StreamHandle stream) {
  CAIRN_CHECK(m >= 0 && n >= 0 && ldc >= m, "scale_matrix: m=", m, " n=", n, " ldc=", ldc);
  if (m == 0 || n == 0) return;
  scale_matrix_kernel<<<grid_size(m * n), kBlockThreads, 0, stream>>>(c, m, n, ldc, beta);
  CAIRN_CHECK_LAUNCH("scale_matrix_kernel", stream);
}

}  // namespace cairn::kernels::cuda
