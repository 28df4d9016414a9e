// L2 loss (Gluon's L2Loss), per sample: loss[r] = 0.5 * mean_c (pred[r, c] - label[r, c])^2.
//
// The forward is a row reduction: one warp per row with a shuffle reduction while rows are narrow
// (no shared memory, no barriers, 8 rows a block), one block per row through cub::BlockReduce once
// a row is wide enough to keep 256 threads busy. The backward is elementwise, grid-stride.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cub/block/block_reduce.cuh>

#include "cairn/core/error.h"
#include "cairn/kernels/cuda/launch.cuh"
#include "cairn/kernels/loss.h"

namespace cairn::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = kBlockThreads / kWarpThreads;
// Up to 32 elements a lane a warp per row wins; beyond that a block per row has the parallelism.
constexpr int64_t kWarpMaxCols = 1024;

// Squared differences of one row, summed by `lane` of a team of `team` threads with stride `team`.
__device__ float partial_squared_error(const float* pred, const float* label, int64_t cols,
                                       int lane, int team) {
  float sum = 0.0f;
  for (int64_t c = lane; c < cols; c += team) {
    const float d = pred[c] - label[c];
    sum += d * d;
  }
  return sum;
}

// pred, label: (rows, cols), loss: (rows); a warp per row, grid-stride over rows.
// cols == 0 gives NaN (an empty mean), as on the CPU.
__global__ void l2_loss_forward_warp_kernel(const float* pred, const float* label, int64_t rows,
                                            int64_t cols, float* loss) {
  const int lane = threadIdx.x % kWarpThreads;
  const int64_t first = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / kWarpThreads;
  const int64_t stride = gridDim.x * int64_t(kWarpsPerBlock);
  for (int64_t row = first; row < rows; row += stride) {
    float sum =
        partial_squared_error(pred + row * cols, label + row * cols, cols, lane, kWarpThreads);
    for (int offset = kWarpThreads / 2; offset > 0; offset /= 2) {
      sum += __shfl_down_sync(0xffffffffu, sum, offset);
    }
    if (lane == 0) loss[row] = 0.5f * sum / static_cast<float>(cols);
  }
}

// pred, label: (rows, cols), loss: (rows); a block per row, grid-stride over rows.
__global__ void l2_loss_forward_block_kernel(const float* pred, const float* label, int64_t rows,
                                             int64_t cols, float* loss) {
  using BlockReduce = cub::BlockReduce<float, kBlockThreads>;
  __shared__ typename BlockReduce::TempStorage temp;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float partial = partial_squared_error(pred + row * cols, label + row * cols, cols,
                                                threadIdx.x, kBlockThreads);
    const float sum = BlockReduce(temp).Sum(partial);
    if (threadIdx.x == 0) loss[row] = 0.5f * sum / static_cast<float>(cols);
    __syncthreads();  // temp is reused by the next row's reduction
  }
}

// pred, label, dpred: (rows, cols), dloss: (rows)
// dpred[r, c] = dloss[r] * (pred[r, c] - label[r, c]) / cols
__global__ void l2_loss_backward_kernel(const float* pred, const float* label, const float* dloss,
                                        int64_t rows, int64_t cols, float* dpred) {
  const int64_t n = rows * cols;
  const float inv_cols = 1.0f / static_cast<float>(cols);
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t r = i / cols;
    dpred[i] = dloss[r] * (pred[i] - label[i]) * inv_cols;
  }
}

void check_shape(const char* op, int64_t rows, int64_t cols) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, op, ": negative shape (", rows, ", ", cols, ")");
  CAIRN_CHECK(cols == 0 || rows <= INT64_MAX / cols, op, ": shape (", rows, ", ", cols,
              ") overflows int64");
}

int blocks_for(int64_t work_items, int64_t items_per_block) {
  return static_cast<int>(
      std::min((work_items + items_per_block - 1) / items_per_block, kMaxBlocks));
}

}  // namespace

void l2_loss_forward(const float* pred, const float* label, int64_t rows, int64_t cols, float* loss,
                     StreamHandle stream) {
  check_shape("l2_loss_forward", rows, cols);
  if (rows == 0) return;
  if (cols <= kWarpMaxCols) {
    l2_loss_forward_warp_kernel<<<blocks_for(rows, kWarpsPerBlock), kBlockThreads, 0, stream>>>(
        pred, label, rows, cols, loss);
    CAIRN_CHECK_LAUNCH("l2_loss_forward_warp_kernel", stream);
  } else {
    l2_loss_forward_block_kernel<<<blocks_for(rows, 1), kBlockThreads, 0, stream>>>(
        pred, label, rows, cols, loss);
    CAIRN_CHECK_LAUNCH("l2_loss_forward_block_kernel", stream);
  }
}

void l2_loss_backward(const float* pred, const float* label, const float* dloss, int64_t rows,
                      int64_t cols, float* dpred, StreamHandle stream) {
  check_shape("l2_loss_backward", rows, cols);
  const int64_t n = rows * cols;
  if (n == 0) return;
  l2_loss_backward_kernel<<<blocks_for(n, kBlockThreads), kBlockThreads, 0, stream>>>(
      pred, label, dloss, rows, cols, dpred);
  CAIRN_CHECK_LAUNCH("l2_loss_backward_kernel", stream);
}

}  // namespace cairn::kernels::cuda
