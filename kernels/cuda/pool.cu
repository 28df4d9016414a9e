// 2-d max and average pooling on the GPU: one thread per output element forward, one per input
// element backward (each gathers the windows covering it, so there are no atomics and the result
// is deterministic). The per-element math is kernels/pool_math.h, which the CPU twin runs too:
// the two give the same bits.
#include <cuda_runtime.h>

#include <cstdint>

#include "cairn/base/error.h"
#include "cairn/kernels/cuda/launch.cuh"
#include "cairn/kernels/pool.h"

namespace cairn::kernels::cuda {
namespace {

// x: (planes, in_h, in_w) -> y, argmax: (planes, out_h, out_w)
__global__ void max_pool2d_forward_kernel(const float* x, Pool2DGeometry g, float* y,
                                          int32_t* argmax) {
  const int64_t per_plane = g.out_h * g.out_w;
  const int64_t n = g.planes * per_plane;
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t p = i / per_plane, o = i - p * per_plane;
    const int64_t oh = o / g.out_w, ow = o - oh * g.out_w;
    y[i] = max_pool_at(x + p * g.in_h * g.in_w, g, oh, ow, &argmax[i]);
  }
}

// dy, argmax: (planes, out_h, out_w) -> dx: (planes, in_h, in_w)
__global__ void max_pool2d_backward_kernel(const float* dy, const int32_t* argmax, Pool2DGeometry g,
                                           float* dx) {
  const int64_t per_plane = g.in_h * g.in_w;
  const int64_t n = g.planes * per_plane;
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t p = i / per_plane, e = i - p * per_plane;
    const int64_t ih = e / g.in_w, iw = e - ih * g.in_w;
    const int64_t out_plane = p * g.out_h * g.out_w;
    dx[i] = max_pool_backward_at(dy + out_plane, argmax + out_plane, g, ih, iw);
  }
}

// x: (planes, in_h, in_w) -> y: (planes, out_h, out_w)
__global__ void avg_pool2d_forward_kernel(const float* x, Pool2DGeometry g, AvgDivisor divisor,
                                          float* y) {
  const int64_t per_plane = g.out_h * g.out_w;
  const int64_t n = g.planes * per_plane;
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t p = i / per_plane, o = i - p * per_plane;
    const int64_t oh = o / g.out_w, ow = o - oh * g.out_w;
    y[i] = avg_pool_at(x + p * g.in_h * g.in_w, g, oh, ow, divisor);
  }
}

// dy: (planes, out_h, out_w) -> dx: (planes, in_h, in_w)
__global__ void avg_pool2d_backward_kernel(const float* dy, Pool2DGeometry g, AvgDivisor divisor,
                                           float* dx) {
  const int64_t per_plane = g.in_h * g.in_w;
  const int64_t n = g.planes * per_plane;
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t p = i / per_plane, e = i - p * per_plane;
    const int64_t ih = e / g.in_w, iw = e - ih * g.in_w;
    dx[i] = avg_pool_backward_at(dy + p * g.out_h * g.out_w, g, ih, iw, divisor);
  }
}

void check_divisor(const char* what, AvgDivisor divisor) {
  CAIRN_CHECK(divisor == AvgDivisor::kIncludePadding || divisor == AvgDivisor::kExcludePadding,
              what, ": unknown AvgDivisor ", static_cast<int>(divisor));
}

}  // namespace

void max_pool2d_forward(const float* x, const Pool2DGeometry& g, float* y, int32_t* argmax,
                        StreamHandle stream) {
  check_pool2d_geometry("max_pool2d_forward", g);
  const int64_t n = g.planes * g.out_h * g.out_w;
  if (n == 0) return;
  max_pool2d_forward_kernel<<<grid_size(n), kBlockThreads, 0, stream>>>(x, g, y, argmax);
  CAIRN_CHECK_LAUNCH("max_pool2d_forward_kernel", stream);
}

void max_pool2d_backward(const float* dy, const int32_t* argmax, const Pool2DGeometry& g, float* dx,
                         StreamHandle stream) {
  check_pool2d_geometry("max_pool2d_backward", g);
  const int64_t n = g.planes * g.in_h * g.in_w;
  if (n == 0) return;
  max_pool2d_backward_kernel<<<grid_size(n), kBlockThreads, 0, stream>>>(dy, argmax, g, dx);
  CAIRN_CHECK_LAUNCH("max_pool2d_backward_kernel", stream);
}

void avg_pool2d_forward(const float* x, const Pool2DGeometry& g, AvgDivisor divisor, float* y,
                        StreamHandle stream) {
  check_pool2d_geometry("avg_pool2d_forward", g);
  check_divisor("avg_pool2d_forward", divisor);
  const int64_t n = g.planes * g.out_h * g.out_w;
  if (n == 0) return;
  avg_pool2d_forward_kernel<<<grid_size(n), kBlockThreads, 0, stream>>>(x, g, divisor, y);
  CAIRN_CHECK_LAUNCH("avg_pool2d_forward_kernel", stream);
}

void avg_pool2d_backward(const float* dy, const Pool2DGeometry& g, AvgDivisor divisor, float* dx,
                         StreamHandle stream) {
  check_pool2d_geometry("avg_pool2d_backward", g);
  check_divisor("avg_pool2d_backward", divisor);
  const int64_t n = g.planes * g.in_h * g.in_w;
  if (n == 0) return;
  avg_pool2d_backward_kernel<<<grid_size(n), kBlockThreads, 0, stream>>>(dy, g, divisor, dx);
  CAIRN_CHECK_LAUNCH("avg_pool2d_backward_kernel", stream);
}

}  // namespace cairn::kernels::cuda
