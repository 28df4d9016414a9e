// The combine of every CUDA max reduction, shared so that each follows the CPU twins' rule.
#pragma once

#include <cuda_runtime.h>

#include <cuda/std/cmath>

namespace cairn::kernels::cuda {

// The larger of a and b, where a NaN beats everything (whichever side it is on) and +0 beats -0
// (IEEE 754 totalOrder on the zeros). Associative and commutative, so the result does not depend
// on how CUB or a warp tiles the reduction; kernels/cpu/reduce.cpp's loop applies the same rule.
// (cuda::maximum keeps a NaN or drops it by position, and keeps one of two equal zeros by
// position: either would make the result depend on the combining order.)
struct NanMax {
  __host__ __device__ float operator()(float a, float b) const {
    return (a != a || a > b || (a == b && !::cuda::std::signbit(a))) ? a : b;
  }
};

}  // namespace cairn::kernels::cuda
