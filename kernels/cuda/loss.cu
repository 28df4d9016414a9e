// L2 loss (Gluon's L2Loss), per sample: loss[r] = 0.5 * mean_c (pred[r, c] - label[r, c])^2.
//
// The forward is a row reduction: one warp per row with a shuffle reduction while rows are narrow
// (no shared memory, no barriers, 8 rows a block), one block per row through cub::BlockReduce once
// a row is wide enough to keep 256 threads busy. The backward is elementwise, grid-stride.
// Both work in double, term for term as the CPU twin does (kernels/cpu/loss.cpp): a difference of
// 2e19 squares to 4e38, beyond float but not double, so the loss is 2e38 on both devices, not inf;
// and pred 3e38 against label -3e38 gives a finite gradient on both.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cub/block/block_reduce.cuh>

#include "cairn/base/error.h"
#include "cairn/kernels/cuda/launch.cuh"
#include "cairn/kernels/loss.h"

namespace cairn::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = kBlockThreads / kWarpThreads;
// Up to 32 elements a lane a warp per row wins; beyond that a block per row has the parallelism.
constexpr int64_t kWarpMaxCols = 1024;

// Squared differences of one row, summed by `lane` of a team of `team` threads with stride `team`.
__device__ double partial_squared_error(const float* pred, const float* label, int64_t cols,
                                        int lane, int team) {
  double sum = 0.0;
  for (int64_t c = lane; c < cols; c += team) {
    const double d = static_cast<double>(pred[c]) - static_cast<double>(label[c]);
    sum += d * d;
  }
  return sum;
}

// The CPU twin's finish: 0.5 * mean, rounded to float once; cols == 0 gives NaN (an empty mean).
__device__ float half_mean(double sum, int64_t cols) {
  return cols > 0 ? static_cast<float>(0.5 * sum * (1.0 / static_cast<double>(cols))) : NAN;
}

// pred, label: (rows, cols), loss: (rows); a warp per row, grid-stride over rows.
// cols == 0 gives NaN (an empty mean), as on the CPU.
__global__ void l2_loss_forward_warp_kernel(const float* pred, const float* label, int64_t rows,
                                            int64_t cols, float* loss) {
  const int lane = threadIdx.x % kWarpThreads;
  const int64_t first = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / kWarpThreads;
  const int64_t stride = gridDim.x * int64_t(kWarpsPerBlock);
  for (int64_t row = first; row < rows; row += stride) {
    double sum =
        partial_squared_error(pred + row * cols, label + row * cols, cols, lane, kWarpThreads);
    for (int offset = kWarpThreads / 2; offset > 0; offset /= 2) {
      sum += __shfl_down_sync(0xffffffffu, sum, offset);
    }
    if (lane == 0) loss[row] = half_mean(sum, cols);
  }
}

// pred, label: (rows, cols), loss: (rows); a block per row, grid-stride over rows.
__global__ void l2_loss_forward_block_kernel(const float* pred, const float* label, int64_t rows,
                                             int64_t cols, float* loss) {
  using BlockReduce = cub::BlockReduce<double, kBlockThreads>;
  __shared__ typename BlockReduce::TempStorage temp;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const double partial = partial_squared_error(pred + row * cols, label + row * cols, cols,
                                                 threadIdx.x, kBlockThreads);
    const double sum = BlockReduce(temp).Sum(partial);
    if (threadIdx.x == 0) loss[row] = half_mean(sum, cols);
    __syncthreads();  // temp is reused by the next row's reduction
  }
}

// pred, label, dpred: (rows, cols), dloss: (rows)
// dpred[r, c] = dloss[r] * (pred[r, c] - label[r, c]) / cols, in double and rounded once: the
// CPU twin's expression, so the same bits (a product of a difference: nothing to contract).
__global__ void l2_loss_backward_kernel(const float* pred, const float* label, const float* dloss,
                                        int64_t rows, int64_t cols, float* dpred) {
  const int64_t n = rows * cols;
  const double inv_cols = 1.0 / static_cast<double>(cols);
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const double scale = static_cast<double>(dloss[i / cols]) * inv_cols;
    dpred[i] =
        static_cast<float>(scale * (static_cast<double>(pred[i]) - static_cast<double>(label[i])));
  }
}

void check_shape(const char* op, int64_t rows, int64_t cols) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, op, ": negative shape (", rows, ", ", cols, ")");
  CAIRN_CHECK(cols == 0 || rows <= INT64_MAX / cols, op, ": shape (", rows, ", ", cols,
              ") overflows int64");
}

}  // namespace

void l2_loss_forward(const float* pred, const float* label, int64_t rows, int64_t cols, float* loss,
                     StreamHandle stream) {
  check_shape("l2_loss_forward", rows, cols);
  if (rows == 0) return;
  if (cols <= kWarpMaxCols) {
    l2_loss_forward_warp_kernel<<<grid_size(rows, kWarpsPerBlock), kBlockThreads, 0, stream>>>(
        pred, label, rows, cols, loss);
    CAIRN_CHECK_LAUNCH("l2_loss_forward_warp_kernel", stream);
  } else {
    l2_loss_forward_block_kernel<<<grid_size(rows, 1), kBlockThreads, 0, stream>>>(
        pred, label, rows, cols, loss);
    CAIRN_CHECK_LAUNCH("l2_loss_forward_block_kernel", stream);
  }
}

void l2_loss_backward(const float* pred, const float* label, const float* dloss, int64_t rows,
                      int64_t cols, float* dpred, StreamHandle stream) {
  check_shape("l2_loss_backward", rows, cols);
  const int64_t n = rows * cols;
  if (n == 0) return;
  l2_loss_backward_kernel<<<grid_size(n), kBlockThreads, 0, stream>>>(pred, label, dloss, rows,
                                                                      cols, dpred);
  CAIRN_CHECK_LAUNCH("l2_loss_backward_kernel", stream);
}

}  // namespace cairn::kernels::cuda
