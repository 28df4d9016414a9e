// Seeded random fills on the GPU, counter-based (kernels/philox.h): element i is a function of
// (seed, i) alone, so any launch shape, and the CPU twin in kernels/cpu/random.cpp, give the same
// numbers.
//
// The exact recipe, which the CPU twin must follow operation for operation (all float, no FMA):
//
//   uniform, element i:
//     u    = uniform_from_bits(philox4x32(seed, i / 4).v[i % 4])    in [0, 1)
//     y[i] = lo + (hi - lo) * u                                     product rounded, then sum
//
//   normal, element pair p = i / 2 (elements 2p and 2p + 1), w = philox4x32(seed, p):
//     u1 = 1.0f - uniform_from_bits(w.v[0])                         in (0, 1], so logf is finite
//     u2 = uniform_from_bits(w.v[1])                                in [0, 1)
//     r  = sqrtf(-2.0f * logf(u1))
//     t  = 6.283185307179586f * u2                                  2 pi, rounded to float
//     z0 = r * cosf(t),  z1 = r * sinf(t)
//     y[2p] = mean + stddev * z0,  y[2p + 1] = mean + stddev * z1   product rounded, then sum
//   Words 2 and 3 of w are unused. For odd n the last pair's z1 is dropped.
//
// The device code spells its multiplies and adds as __fmul_rn/__fadd_rn so that nvcc cannot fuse
// them into FMAs, which would round once where the CPU rounds twice. logf/sqrtf/cosf/sinf are the
// accurate library functions (never the __logf-style intrinsics, and this file must not be built
// with --use_fast_math); sqrtf is correctly rounded on both sides, while logf/cosf/sinf may differ
// from the host's in the last bit, which is why normal() matches only to within a few ulps.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cairn/base/error.h"
#include "cairn/kernels/cuda/launch.cuh"
#include "cairn/kernels/philox.h"
#include "cairn/kernels/random.h"

namespace cairn::kernels::cuda {
namespace {

constexpr float kTwoPi = 6.283185307179586f;

// y: (n); one thread per Philox counter, which yields elements 4c .. 4c + 3.
__global__ void uniform_kernel(float* y, int64_t n, uint64_t seed, float lo, float hi) {
  const int64_t counters = (n + 3) / 4;
  const float span = hi - lo;
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < counters; c += stride) {
    const Philox4 w = philox4x32(seed, static_cast<uint64_t>(c));
    // Unrolled so that w.v[j] stays in registers instead of a local-memory array.
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t i = 4 * c + j;
      if (i < n) y[i] = __fadd_rn(lo, __fmul_rn(span, uniform_from_bits(w.v[j])));
    }
  }
}

// y: (n); one thread per element pair p, which yields elements 2p and 2p + 1.
__global__ void normal_kernel(float* y, int64_t n, uint64_t seed, float mean, float stddev) {
  const int64_t pairs = (n + 1) / 2;
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs; p += stride) {
    const Philox4 w = philox4x32(seed, static_cast<uint64_t>(p));
    const float u1 = 1.0f - uniform_from_bits(w.v[0]);
    const float u2 = uniform_from_bits(w.v[1]);
    const float r = sqrtf(__fmul_rn(-2.0f, logf(u1)));
    const float t = __fmul_rn(kTwoPi, u2);
    const float z0 = __fmul_rn(r, cosf(t));
    const float z1 = __fmul_rn(r, sinf(t));
    y[2 * p] = __fadd_rn(mean, __fmul_rn(stddev, z0));
    if (2 * p + 1 < n) y[2 * p + 1] = __fadd_rn(mean, __fmul_rn(stddev, z1));
  }
}

}  // namespace

void uniform(float* y, int64_t n, uint64_t seed, float lo, float hi, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "uniform: negative size ", n);
  if (n == 0) return;
  uniform_kernel<<<grid_size((n + 3) / 4), kBlockThreads, 0, stream>>>(y, n, seed, lo, hi);
  CAIRN_CHECK_LAUNCH("uniform_kernel", stream);
}

void normal(float* y, int64_t n, uint64_t seed, float mean, float stddev, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "normal: negative size ", n);
  if (n == 0) return;
  normal_kernel<<<grid_size((n + 1) / 2), kBlockThreads, 0, stream>>>(y, n, seed, mean, stddev);
  CAIRN_CHECK_LAUNCH("normal_kernel", stream);
}

}  // namespace cairn::kernels::cuda
