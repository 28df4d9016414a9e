// Inverted dropout on the GPU: one thread per group of four elements (one Philox counter), the
// mask math of kernels/dropout_math.h, which the CPU twin runs too, so the masks are the same bits.
// The state is read through a pointer and advanced by a second, one-thread launch: a captured
// graph replays both, so each replay draws the next mask (dropout_math.h says why).
#include <cuda_runtime.h>

#include <cstdint>

#include "cairn/base/error.h"
#include "cairn/kernels/cuda/launch.cuh"
#include "cairn/kernels/dropout.h"

namespace cairn::kernels::cuda {
namespace {

// x, y, mask: (n); state: int32 (4); mask may be null.
__global__ void dropout_kernel(const float* x, int64_t n, float rate, float scale,
                               const int32_t* state, float* y, float* mask) {
  const uint64_t seed = dropout_seed(state), offset = dropout_offset(state);
  const int64_t groups = (n + 3) / 4;
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < groups; g += stride) {
    const Philox4 words = dropout_words(seed, offset, g);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t i = 4 * g + j;
      if (i < n) {
        const float m = dropout_mask_value(words.v[j], rate, scale);
        if (mask != nullptr) mask[i] = m;
        y[i] = __fmul_rn(x[i], m);
      }
    }
  }
}

__global__ void advance_dropout_state_kernel(int32_t* state, uint64_t step) {
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    set_dropout_state(state, dropout_seed(state), dropout_offset(state) + step);
  }
}

}  // namespace

void dropout(const float* x, int64_t n, float rate, float scale, const int32_t* state, float* y,
             float* mask, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "dropout: negative size ", n);
  CAIRN_CHECK(rate >= 0.0f && rate <= 1.0f, "dropout: rate ", rate, " outside [0, 1]");
  if (n == 0) return;
  dropout_kernel<<<grid_size((n + 3) / 4), kBlockThreads, 0, stream>>>(x, n, rate, scale, state, y,
                                                                       mask);
  CAIRN_CHECK_LAUNCH("dropout_kernel", stream);
}

void advance_dropout_state(int32_t* state, int64_t n, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "advance_dropout_state: negative size ", n);
  if (n == 0) return;
  advance_dropout_state_kernel<<<1, 1, 0, stream>>>(state, dropout_offset_step(n));
  CAIRN_CHECK_LAUNCH("advance_dropout_state_kernel", stream);
}

}  // namespace cairn::kernels::cuda
