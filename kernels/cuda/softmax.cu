// Row softmax, its backward, and softmax cross-entropy, numerically stable: each row's maximum is
// subtracted before exp, so exp never overflows.
//
// A "team" of threads owns a row: one warp for rows up to kWarpMaxCols, a whole block beyond. The
// team reduces with an xor butterfly, which leaves the same bits in every lane (each step adds the
// same two values, commutatively), and with a fixed-order pass over the warps' totals; so every
// thread sees the same max and sum, and the results are deterministic.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "cairn/base/error.h"
#include "cairn/kernels/cuda/launch.cuh"
#include "cairn/kernels/softmax.h"

namespace cairn::kernels::cuda {
namespace {

// Up to 32 elements a lane, a warp per row beats a block per row (no shared memory, no barriers).
constexpr int64_t kWarpMaxCols = 1024;

struct Sum {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct Max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Reduces v over a team of kTeam threads and returns the result in every one of them. A team
// larger than a warp must be the whole block, and the whole block must call this together.
template <int kTeam, typename Op>
__device__ float team_all_reduce(float v, Op op) {
  for (int offset = kWarpThreads / 2; offset > 0; offset /= 2) {
    v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  if constexpr (kTeam > kWarpThreads) {
    static_assert(kTeam == kBlockThreads, "a team larger than a warp is the whole block");
    constexpr int kWarps = kTeam / kWarpThreads;
    __shared__ float warp_totals[kWarps];
    __syncthreads();  // the previous call's readers are done with warp_totals
    if (threadIdx.x % kWarpThreads == 0) warp_totals[threadIdx.x / kWarpThreads] = v;
    __syncthreads();
    v = warp_totals[0];
    for (int w = 1; w < kWarps; ++w) v = op(v, warp_totals[w]);
  }
  return v;
}

// The rows a team visits: kBlockThreads / kTeam teams a block, grid-stride over rows. The row is
// uniform across the team, so a block-wide team reaches its barriers together.
template <int kTeam>
struct TeamRows {
  static constexpr int kRowsPerBlock = kBlockThreads / kTeam;
  __device__ static int lane() { return threadIdx.x % kTeam; }
  __device__ static int64_t first() {
    return blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / kTeam;
  }
  __device__ static int64_t stride() { return gridDim.x * int64_t(kRowsPerBlock); }
};

template <int kTeam>
__device__ float row_max(const float* x, int64_t cols) {
  float m = -INFINITY;
  for (int64_t c = TeamRows<kTeam>::lane(); c < cols; c += kTeam) m = fmaxf(m, x[c]);
  return team_all_reduce<kTeam>(m, Max{});
}

template <int kTeam>
__device__ float row_sum_exp(const float* x, int64_t cols, float max) {
  float s = 0.0f;
  for (int64_t c = TeamRows<kTeam>::lane(); c < cols; c += kTeam) s += expf(x[c] - max);
  return team_all_reduce<kTeam>(s, Sum{});
}

// x, y: (rows, cols); y may alias x.
template <int kTeam>
__global__ void softmax_rows_kernel(const float* x, int64_t rows, int64_t cols, float* y) {
  using Rows = TeamRows<kTeam>;
  for (int64_t row = Rows::first(); row < rows; row += Rows::stride()) {
    const float* xr = x + row * cols;
    float* yr = y + row * cols;
    const float max = row_max<kTeam>(xr, cols);
    const float sum = row_sum_exp<kTeam>(xr, cols, max);
    for (int64_t c = Rows::lane(); c < cols; c += kTeam) yr[c] = expf(xr[c] - max) / sum;
  }
}

// y, dy, dx: (rows, cols); dx[r] = y[r] * (dy[r] - <dy[r], y[r]>)
template <int kTeam>
__global__ void softmax_backward_rows_kernel(const float* y, const float* dy, int64_t rows,
                                             int64_t cols, float* dx) {
  using Rows = TeamRows<kTeam>;
  for (int64_t row = Rows::first(); row < rows; row += Rows::stride()) {
    const float* yr = y + row * cols;
    const float* dyr = dy + row * cols;
    float* dxr = dx + row * cols;
    float dot = 0.0f;
    for (int64_t c = Rows::lane(); c < cols; c += kTeam) dot += dyr[c] * yr[c];
    dot = team_all_reduce<kTeam>(dot, Sum{});
    for (int64_t c = Rows::lane(); c < cols; c += kTeam) dxr[c] = yr[c] * (dyr[c] - dot);
  }
}

// logits, probs: (rows, cols); labels, loss: (rows)
// loss[r] = log(sum_c exp(x[r, c] - max)) - (x[r, label] - max), the logsumexp form that never
// forms the large max + log(sum) only to subtract a logit close to it.
template <int kTeam>
__global__ void softmax_xent_forward_kernel(const float* logits, const int32_t* labels,
                                            int64_t rows, int64_t cols, float* loss, float* probs) {
  using Rows = TeamRows<kTeam>;
  for (int64_t row = Rows::first(); row < rows; row += Rows::stride()) {
    const float* xr = logits + row * cols;
    float* pr = probs + row * cols;
    const float max = row_max<kTeam>(xr, cols);
    const float sum = row_sum_exp<kTeam>(xr, cols, max);
    for (int64_t c = Rows::lane(); c < cols; c += kTeam) pr[c] = expf(xr[c] - max) / sum;
    if (Rows::lane() == 0) {
      const int32_t label = labels[row];
      loss[row] = (label >= 0 && label < cols) ? logf(sum) - (xr[label] - max) : NAN;
    }
  }
}

// probs, dlogits: (rows, cols); labels, dloss: (rows)
// dlogits[r, c] = dloss[r] * (probs[r, c] - (c == labels[r])); NaN for the whole row when its label
// is out of range, as its loss was.
__global__ void softmax_xent_backward_kernel(const float* probs, const int32_t* labels,
                                             const float* dloss, int64_t rows, int64_t cols,
                                             float* dlogits) {
  const int64_t n = rows * cols;
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t r = i / cols;
    const int64_t c = i - r * cols;
    const int32_t label = labels[r];
    if (label >= 0 && label < cols) {
      dlogits[i] = dloss[r] * (probs[i] - (c == label ? 1.0f : 0.0f));
    } else {
      dlogits[i] = NAN;
    }
  }
}

template <int kTeam>
int row_grid(int64_t rows) {
  constexpr int64_t kRowsPerBlock = TeamRows<kTeam>::kRowsPerBlock;
  return grid_size(rows, kRowsPerBlock);
}

void check_shape(const char* op, int64_t rows, int64_t cols) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, op, ": negative shape (", rows, ", ", cols, ")");
  CAIRN_CHECK(cols == 0 || rows <= INT64_MAX / cols, op, ": shape (", rows, ", ", cols,
              ") overflows int64");
}

}  // namespace

void softmax_rows(const float* x, int64_t rows, int64_t cols, float* y, StreamHandle stream) {
  check_shape("softmax_rows", rows, cols);
  if (rows == 0 || cols == 0) return;
  if (cols <= kWarpMaxCols) {
    softmax_rows_kernel<kWarpThreads>
        <<<row_grid<kWarpThreads>(rows), kBlockThreads, 0, stream>>>(x, rows, cols, y);
  } else {
    softmax_rows_kernel<kBlockThreads>
        <<<row_grid<kBlockThreads>(rows), kBlockThreads, 0, stream>>>(x, rows, cols, y);
  }
  CAIRN_CHECK_LAUNCH("softmax_rows_kernel", stream);
}

void softmax_backward_rows(const float* y, const float* dy, int64_t rows, int64_t cols, float* dx,
                           StreamHandle stream) {
  check_shape("softmax_backward_rows", rows, cols);
  if (rows == 0 || cols == 0) return;
  if (cols <= kWarpMaxCols) {
    softmax_backward_rows_kernel<kWarpThreads>
        <<<row_grid<kWarpThreads>(rows), kBlockThreads, 0, stream>>>(y, dy, rows, cols, dx);
  } else {
    softmax_backward_rows_kernel<kBlockThreads>
        <<<row_grid<kBlockThreads>(rows), kBlockThreads, 0, stream>>>(y, dy, rows, cols, dx);
  }
  CAIRN_CHECK_LAUNCH("softmax_backward_rows_kernel", stream);
}

void softmax_xent_forward(const float* logits, const int32_t* labels, int64_t rows, int64_t cols,
                          float* loss, float* probs, StreamHandle stream) {
  check_shape("softmax_xent_forward", rows, cols);
  // cols == 0 still runs: every label is out of range, so every loss is NaN.
  if (rows == 0) return;
  if (cols <= kWarpMaxCols) {
    softmax_xent_forward_kernel<kWarpThreads>
        <<<row_grid<kWarpThreads>(rows), kBlockThreads, 0, stream>>>(logits, labels, rows, cols,
                                                                     loss, probs);
  } else {
    softmax_xent_forward_kernel<kBlockThreads>
        <<<row_grid<kBlockThreads>(rows), kBlockThreads, 0, stream>>>(logits, labels, rows, cols,
                                                                      loss, probs);
  }
  CAIRN_CHECK_LAUNCH("softmax_xent_forward_kernel", stream);
}

void softmax_xent_backward(const float* probs, const int32_t* labels, const float* dloss,
                           int64_t rows, int64_t cols, float* dlogits, StreamHandle stream) {
  check_shape("softmax_xent_backward", rows, cols);
  const int64_t n = rows * cols;
  if (n == 0) return;
  softmax_xent_backward_kernel<<<grid_size(n), kBlockThreads, 0, stream>>>(probs, labels, dloss,
                                                                           rows, cols, dlogits);
  CAIRN_CHECK_LAUNCH("softmax_xent_backward_kernel", stream);
}

}  // namespace cairn::kernels::cuda
