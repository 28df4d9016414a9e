// Batch norm and layer norm on the GPU: per-channel or per-row statistics in double, reduced by a
// fixed tree (an xor butterfly in each warp, then the warps' totals in order), so every run gives
// the same bits; the per-element formulas are kernels/norm_math.h's, shared with the CPU twins.
//
// Batch norm: one block a channel walks that channel's N * S values (n, s) with consecutive
// threads on consecutive s, so (N, C, H, W) inputs read coalesced runs of H * W; (N, C) inputs
// read one value per C floats, which is what a channel of a row-major matrix is. With few channels
// and large batches a channel's block is the whole of the work: splitting a channel over several
// blocks (partial (count, mean, M2) merged by Chan's formula in a fixed order) is the next step if
// the benchmark shows it matters. The running statistics are updated by the channel's block in
// place, on the stream: capturable, no host read.
//
// Layer norm: a team a row, as softmax.cu: one warp for rows up to kWarpMaxCols, a block beyond.
#include <cuda_runtime.h>

#include <cstdint>

#include "cairn/base/error.h"
#include "cairn/kernels/cuda/launch.cuh"
#include "cairn/kernels/norm.h"
#include "cairn/kernels/norm_math.h"

namespace cairn::kernels::cuda {
namespace {

constexpr int64_t kWarpMaxCols = 1024;
// Channels a batch-norm reduction grid covers at once (a grid-stride loop covers the rest).
constexpr int64_t kMaxChannelBlocks = 65535;

// Sums v over a team of kTeam threads (a warp, or the whole block) and returns the total in every
// one of them. Fixed order: the same bits on every run. The whole team must call it together.
template <int kTeam>
__device__ double team_sum(double v) {
  for (int offset = kWarpThreads / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  if constexpr (kTeam > kWarpThreads) {
    static_assert(kTeam == kBlockThreads, "a team larger than a warp is the whole block");
    constexpr int kWarps = kTeam / kWarpThreads;
    __shared__ double warp_totals[kWarps];
    __syncthreads();  // the previous call's readers are done with warp_totals
    if (threadIdx.x % kWarpThreads == 0) warp_totals[threadIdx.x / kWarpThreads] = v;
    __syncthreads();
    v = warp_totals[0];
    for (int w = 1; w < kWarps; ++w) v += warp_totals[w];
  }
  return v;
}

// The offset of value m = (n, s) of channel c in x (N, C, S).
__device__ inline int64_t channel_offset(BatchNormShape shape, int64_t c, int64_t m) {
  const int64_t n = m / shape.spatial;
  const int64_t s = m - n * shape.spatial;
  return (n * shape.channels + c) * shape.spatial + s;
}

// A block a channel (grid-stride over channels). mean, var: (C); running_*: (C) or null.
__global__ void batch_norm_statistics_kernel(const float* x, BatchNormShape shape, float momentum,
                                             float* mean, float* var, float* running_mean,
                                             float* running_var) {
  const int64_t M = shape.count();
  for (int64_t c = blockIdx.x; c < shape.channels; c += gridDim.x) {
    double sum = 0.0;
    for (int64_t m = threadIdx.x; m < M; m += blockDim.x)
      sum += double(x[channel_offset(shape, c, m)]);
    const double mean_d = team_sum<kBlockThreads>(sum) / double(M);
    double squares = 0.0;
    for (int64_t m = threadIdx.x; m < M; m += blockDim.x) {
      const double d = double(x[channel_offset(shape, c, m)]) - mean_d;
      squares += d * d;
    }
    squares = team_sum<kBlockThreads>(squares);
    if (threadIdx.x == 0) {
      const float batch_mean = static_cast<float>(mean_d);
      mean[c] = batch_mean;
      var[c] = norm::biased_variance(squares, M);
      if (running_mean != nullptr) {
        running_mean[c] = norm::running_update(running_mean[c], batch_mean, momentum);
        running_var[c] =
            norm::running_update(running_var[c], norm::unbiased_variance(squares, M), momentum);
      }
    }
  }
}

// x, y: (N, C, S), elementwise.
__global__ void batch_norm_forward_kernel(const float* x, BatchNormShape shape, const float* mean,
                                          const float* var, const float* weight, const float* bias,
                                          float epsilon, float* y) {
  const int64_t n = shape.elements();
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t c = (i / shape.spatial) % shape.channels;
    const float xhat = norm::normalize(x[i], mean[c], norm::invstd(var[c], epsilon));
    y[i] = norm::affine(xhat, weight, bias, c);
  }
}

// A block a channel: sum_dy[c] and sum_dy_xhat[c] = invstd * sum dy (x - mean), in double.
__global__ void batch_norm_backward_reduce_kernel(const float* x, const float* dy,
                                                  BatchNormShape shape, const float* mean,
                                                  const float* var, float epsilon, float* sum_dy,
                                                  float* sum_dy_xhat) {
  const int64_t M = shape.count();
  for (int64_t c = blockIdx.x; c < shape.channels; c += gridDim.x) {
    const double channel_mean = mean[c];
    double dys = 0.0, dy_centred = 0.0;
    for (int64_t m = threadIdx.x; m < M; m += blockDim.x) {
      const int64_t i = channel_offset(shape, c, m);
      dys += double(dy[i]);
      dy_centred += double(dy[i]) * (double(x[i]) - channel_mean);
    }
    dys = team_sum<kBlockThreads>(dys);
    dy_centred = team_sum<kBlockThreads>(dy_centred);
    if (threadIdx.x == 0) {
      sum_dy[c] = static_cast<float>(dys);
      sum_dy_xhat[c] = static_cast<float>(dy_centred * double(norm::invstd(var[c], epsilon)));
    }
  }
}

template <NormStatistics kStatistics>
__global__ void batch_norm_backward_input_kernel(const float* x, const float* dy,
                                                 BatchNormShape shape, const float* mean,
                                                 const float* var, const float* weight,
                                                 const float* sum_dy, const float* sum_dy_xhat,
                                                 float epsilon, float* dx) {
  const int64_t n = shape.elements();
  const float count = static_cast<float>(shape.count());
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t c = (i / shape.spatial) % shape.channels;
    const float inv = norm::invstd(var[c], epsilon);
    const float scale = norm::backward_scale(weight, c, inv);
    if constexpr (kStatistics == NormStatistics::kFixed) {
      dx[i] = norm::mul_rn(scale, dy[i]);
    } else {
      dx[i] = norm::backward_through_statistics(dy[i], norm::normalize(x[i], mean[c], inv), scale,
                                                norm::div_rn(sum_dy[c], count),
                                                norm::div_rn(sum_dy_xhat[c], count));
    }
  }
}

__global__ void increment_counter_kernel(int32_t* counter) { counter[0] += 1; }

// The rows a team visits, as softmax.cu's TeamRows.
template <int kTeam>
struct TeamRows {
  static constexpr int kRowsPerBlock = kBlockThreads / kTeam;
  __device__ static int lane() { return threadIdx.x % kTeam; }
  __device__ static int64_t first() {
    return blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / kTeam;
  }
  __device__ static int64_t stride() { return gridDim.x * int64_t(kRowsPerBlock); }
};

// x, y: (rows, cols); mean, var: (rows).
template <int kTeam>
__global__ void layer_norm_forward_kernel(const float* x, int64_t rows, int64_t cols,
                                          const float* weight, const float* bias, float epsilon,
                                          float* y, float* mean, float* var) {
  using Rows = TeamRows<kTeam>;
  for (int64_t row = Rows::first(); row < rows; row += Rows::stride()) {
    const float* xr = x + row * cols;
    double sum = 0.0;
    for (int64_t c = Rows::lane(); c < cols; c += kTeam) sum += double(xr[c]);
    const double mean_d = team_sum<kTeam>(sum) / double(cols);
    double squares = 0.0;
    for (int64_t c = Rows::lane(); c < cols; c += kTeam) {
      const double d = double(xr[c]) - mean_d;
      squares += d * d;
    }
    squares = team_sum<kTeam>(squares);
    const float row_mean = static_cast<float>(mean_d);
    const float row_var = norm::biased_variance(squares, cols);
    if (Rows::lane() == 0) {
      mean[row] = row_mean;
      var[row] = row_var;
    }
    const float inv = norm::invstd(row_var, epsilon);
    float* yr = y + row * cols;
    for (int64_t c = Rows::lane(); c < cols; c += kTeam) {
      yr[c] = norm::affine(norm::normalize(xr[c], row_mean, inv), weight, bias, c);
    }
  }
}

// dx: (rows, cols); dy_xhat: (rows, cols) or null.
template <int kTeam>
__global__ void layer_norm_backward_kernel(const float* x, const float* dy, int64_t rows,
                                           int64_t cols, const float* mean, const float* var,
                                           const float* weight, float epsilon, float* dx,
                                           float* dy_xhat) {
  using Rows = TeamRows<kTeam>;
  const float count = static_cast<float>(cols);
  for (int64_t row = Rows::first(); row < rows; row += Rows::stride()) {
    const float* xr = x + row * cols;
    const float* dyr = dy + row * cols;
    const float row_mean = mean[row];
    const float inv = norm::invstd(var[row], epsilon);
    double sum_g = 0.0, sum_g_centred = 0.0;
    for (int64_t c = Rows::lane(); c < cols; c += kTeam) {
      const double g = weight != nullptr ? double(norm::mul_rn(dyr[c], weight[c])) : double(dyr[c]);
      sum_g += g;
      sum_g_centred += g * (double(xr[c]) - double(row_mean));
    }
    sum_g = team_sum<kTeam>(sum_g);
    sum_g_centred = team_sum<kTeam>(sum_g_centred);
    const float mean_g = norm::div_rn(static_cast<float>(sum_g), count);
    const float mean_g_xhat = norm::div_rn(static_cast<float>(sum_g_centred * double(inv)), count);
    float* dxr = dx + row * cols;
    for (int64_t c = Rows::lane(); c < cols; c += kTeam) {
      const float xhat = norm::normalize(xr[c], row_mean, inv);
      const float g = weight != nullptr ? norm::mul_rn(dyr[c], weight[c]) : dyr[c];
      dxr[c] = norm::backward_through_statistics(g, xhat, inv, mean_g, mean_g_xhat);
      if (dy_xhat != nullptr) dy_xhat[row * cols + c] = norm::mul_rn(dyr[c], xhat);
    }
  }
}

template <int kTeam>
int row_grid(int64_t rows) {
  return grid_size(rows, TeamRows<kTeam>::kRowsPerBlock);
}

void check_shape(const char* what, BatchNormShape shape) {
  CAIRN_CHECK(shape.batch >= 0 && shape.channels >= 0 && shape.spatial >= 0, what,
              ": negative shape (", shape.batch, ", ", shape.channels, ", ", shape.spatial, ")");
  CAIRN_CHECK((shape.channels == 0 || shape.spatial == 0 ||
               shape.batch <= INT64_MAX / shape.channels / shape.spatial),
              what, ": shape (", shape.batch, ", ", shape.channels, ", ", shape.spatial,
              ") overflows int64");
}

void check_rows(const char* what, int64_t rows, int64_t cols) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, what, ": negative shape (", rows, ", ", cols, ")");
  CAIRN_CHECK(cols == 0 || rows <= INT64_MAX / cols, what, ": shape (", rows, ", ", cols,
              ") overflows int64");
}

int channel_grid(int64_t channels) {
  return static_cast<int>(std::min<int64_t>(channels, kMaxChannelBlocks));
}

}  // namespace

void batch_norm_statistics(const float* x, BatchNormShape shape, float momentum, float* mean,
                           float* var, float* running_mean, float* running_var,
                           StreamHandle stream) {
  check_shape("batch_norm_statistics", shape);
  CAIRN_CHECK((running_mean == nullptr) == (running_var == nullptr),
              "batch_norm_statistics: running_mean and running_var come together");
  if (shape.channels == 0) return;
  batch_norm_statistics_kernel<<<channel_grid(shape.channels), kBlockThreads, 0, stream>>>(
      x, shape, momentum, mean, var, running_mean, running_var);
  CAIRN_CHECK_LAUNCH("batch_norm_statistics_kernel", stream);
}

void batch_norm_forward(const float* x, BatchNormShape shape, const float* mean, const float* var,
                        const float* weight, const float* bias, float epsilon, float* y,
                        StreamHandle stream) {
  check_shape("batch_norm_forward", shape);
  const int64_t n = shape.elements();
  if (n == 0) return;
  batch_norm_forward_kernel<<<grid_size(n), kBlockThreads, 0, stream>>>(x, shape, mean, var, weight,
                                                                        bias, epsilon, y);
  CAIRN_CHECK_LAUNCH("batch_norm_forward_kernel", stream);
}

void batch_norm_backward_reduce(const float* x, const float* dy, BatchNormShape shape,
                                const float* mean, const float* var, float epsilon, float* sum_dy,
                                float* sum_dy_xhat, StreamHandle stream) {
  check_shape("batch_norm_backward_reduce", shape);
  if (shape.channels == 0) return;
  batch_norm_backward_reduce_kernel<<<channel_grid(shape.channels), kBlockThreads, 0, stream>>>(
      x, dy, shape, mean, var, epsilon, sum_dy, sum_dy_xhat);
  CAIRN_CHECK_LAUNCH("batch_norm_backward_reduce_kernel", stream);
}

void batch_norm_backward_input(const float* x, const float* dy, BatchNormShape shape,
                               const float* mean, const float* var, const float* weight,
                               const float* sum_dy, const float* sum_dy_xhat, float epsilon,
                               NormStatistics statistics, float* dx, StreamHandle stream) {
  check_shape("batch_norm_backward_input", shape);
  const int64_t n = shape.elements();
  if (n == 0) return;
  if (statistics == NormStatistics::kFixed) {
    batch_norm_backward_input_kernel<NormStatistics::kFixed>
        <<<grid_size(n), kBlockThreads, 0, stream>>>(x, dy, shape, mean, var, weight, sum_dy,
                                                     sum_dy_xhat, epsilon, dx);
  } else {
    batch_norm_backward_input_kernel<NormStatistics::kBatch>
        <<<grid_size(n), kBlockThreads, 0, stream>>>(x, dy, shape, mean, var, weight, sum_dy,
                                                     sum_dy_xhat, epsilon, dx);
  }
  CAIRN_CHECK_LAUNCH("batch_norm_backward_input_kernel", stream);
}

void increment_counter(int32_t* counter, StreamHandle stream) {
  increment_counter_kernel<<<1, 1, 0, stream>>>(counter);
  CAIRN_CHECK_LAUNCH("increment_counter_kernel", stream);
}

void layer_norm_forward(const float* x, int64_t rows, int64_t cols, const float* weight,
                        const float* bias, float epsilon, float* y, float* mean, float* var,
                        StreamHandle stream) {
  check_rows("layer_norm_forward", rows, cols);
  if (rows == 0) return;
  if (cols <= kWarpMaxCols) {
    layer_norm_forward_kernel<kWarpThreads>
        <<<row_grid<kWarpThreads>(rows), kBlockThreads, 0, stream>>>(x, rows, cols, weight, bias,
                                                                     epsilon, y, mean, var);
  } else {
    layer_norm_forward_kernel<kBlockThreads>
        <<<row_grid<kBlockThreads>(rows), kBlockThreads, 0, stream>>>(x, rows, cols, weight, bias,
                                                                      epsilon, y, mean, var);
  }
  CAIRN_CHECK_LAUNCH("layer_norm_forward_kernel", stream);
}

void layer_norm_backward(const float* x, const float* dy, int64_t rows, int64_t cols,
                         const float* mean, const float* var, const float* weight, float epsilon,
                         float* dx, float* dy_xhat, StreamHandle stream) {
  check_rows("layer_norm_backward", rows, cols);
  if (rows == 0) return;
  if (cols <= kWarpMaxCols) {
    layer_norm_backward_kernel<kWarpThreads>
        <<<row_grid<kWarpThreads>(rows), kBlockThreads, 0, stream>>>(x, dy, rows, cols, mean, var,
                                                                     weight, epsilon, dx, dy_xhat);
  } else {
    layer_norm_backward_kernel<kBlockThreads>
        <<<row_grid<kBlockThreads>(rows), kBlockThreads, 0, stream>>>(x, dy, rows, cols, mean, var,
                                                                      weight, epsilon, dx, dy_xhat);
  }
  CAIRN_CHECK_LAUNCH("layer_norm_backward_kernel", stream);
}

}  // namespace cairn::kernels::cuda
