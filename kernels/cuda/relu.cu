// ReLU backward on the GPU. The forward pass is UnaryOp::kRelu in elementwise.cu.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cairn/core/error.h"
#include "cairn/kernels/cuda/launch.cuh"
#include "cairn/kernels/elementwise.h"

namespace cairn::kernels::cuda {
namespace {

// x, dy, dx: (n); dx may alias dy.
__global__ void relu_backward_kernel(const float* x, const float* dy, float* dx, int64_t n) {
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    // The kink at 0 takes the zero side, so a NaN input passes no gradient either.
    dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
  }
}

}  // namespace

void relu_backward(const float* x, const float* dy, float* dx, int64_t n, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "relu_backward: negative size ", n);
  if (n == 0) return;
  const int blocks =
      static_cast<int>(std::min((n + kBlockThreads - 1) / kBlockThreads, kMaxBlocks));
  relu_backward_kernel<<<blocks, kBlockThreads, 0, stream>>>(x, dy, dx, n);
  CAIRN_CHECK_LAUNCH("relu_backward_kernel", stream);
}

}  // namespace cairn::kernels::cuda
