// Batch normalisation and layer normalisation: the statistics, the normalised output and the
// backward pass, as CPU twins and CUDA launchers.
//
// Statistics accumulate in double on both devices (the mean first, then the centred sum of
// squares: two passes, no cancellation of E[x^2] - E[x]^2) and round to float once; the twins
// differ only in the order they add, so their float statistics almost always agree bit for bit.
// The per-element formulas are written once, in kernels/norm_math.h. Every reduction is
// deterministic (a fixed order, no atomics). Nothing here reads a device value on the host, so
// every launcher, the in-place running-statistics update included, can be captured in a CUDA
// graph.
#pragma once

#include <cstdint>

#include "cairn/kernels/common.h"

namespace cairn::kernels {

// Batch norm's x viewed as (batch, channels, spatial): (N, C) is spatial 1, (N, C, H, W) is
// spatial H * W. Statistics are per channel, over count() = batch * spatial values.
struct BatchNormShape {
  int64_t batch = 0;
  int64_t channels = 0;
  int64_t spatial = 1;
  CAIRN_HOST_DEVICE int64_t count() const { return batch * spatial; }
  CAIRN_HOST_DEVICE int64_t elements() const { return batch * channels * spatial; }
};

// Which statistics a batch norm backward differentiates: the batch's own (training: the mean and
// variance depend on x), or fixed ones (prediction with the running statistics: a per-channel
// affine map of x).
enum class NormStatistics { kBatch, kFixed };

namespace cpu {

// x: (N, C, S) -> mean, var: (C), the batch mean and biased variance. When running_mean and
// running_var are non-null, updates them in place: running = (1 - momentum) * running +
// momentum * batch, with the unbiased variance var * M / (M - 1) (M = count(); M = 1 gives inf:
// callers refuse it).
void batch_norm_statistics(const float* x, BatchNormShape shape, float momentum, float* mean,
                           float* var, float* running_mean, float* running_var);
// y = xhat * weight[c] + bias[c], xhat = (x - mean[c]) * invstd(var[c], epsilon); a null weight
// or bias leaves that term out (no affine map).
void batch_norm_forward(const float* x, BatchNormShape shape, const float* mean, const float* var,
                        const float* weight, const float* bias, float epsilon, float* y);
// Per channel: sum_dy[c] = sum dy (the bias gradient), sum_dy_xhat[c] = sum dy * xhat (the
// weight gradient), both in double.
void batch_norm_backward_reduce(const float* x, const float* dy, BatchNormShape shape,
                                const float* mean, const float* var, float epsilon, float* sum_dy,
                                float* sum_dy_xhat);
// dx. kBatch: w invstd (dy - sum_dy / M - xhat sum_dy_xhat / M); kFixed: w invstd dy (the sums
// are not read and may be null). A null weight is 1.
void batch_norm_backward_input(const float* x, const float* dy, BatchNormShape shape,
                               const float* mean, const float* var, const float* weight,
                               const float* sum_dy, const float* sum_dy_xhat, float epsilon,
                               NormStatistics statistics, float* dx);
// counter[0] += 1 (BatchNorm's num_batches_tracked), in place.
void increment_counter(int32_t* counter);

// x, y: (rows, cols), each row normalised over its cols; weight, bias: (cols) or null.
// mean, var: (rows), each row's mean and biased variance, kept for the backward.
void layer_norm_forward(const float* x, int64_t rows, int64_t cols, const float* weight,
                        const float* bias, float epsilon, float* y, float* mean, float* var);
// dx[r] = invstd (g - mean(g) - xhat mean(g xhat)), g = dy * weight (weight null: g = dy).
// dy_xhat (rows, cols), when non-null, gets dy * xhat: summed down the columns it is the weight's
// gradient (kernels/reduce.h's sum_columns).
void layer_norm_backward(const float* x, const float* dy, int64_t rows, int64_t cols,
                         const float* mean, const float* var, const float* weight, float epsilon,
                         float* dx, float* dy_xhat);

}  // namespace cpu

namespace cuda {

void batch_norm_statistics(const float* x, BatchNormShape shape, float momentum, float* mean,
                           float* var, float* running_mean, float* running_var,
                           StreamHandle stream);
void batch_norm_forward(const float* x, BatchNormShape shape, const float* mean, const float* var,
                        const float* weight, const float* bias, float epsilon, float* y,
                        StreamHandle stream);
void batch_norm_backward_reduce(const float* x, const float* dy, BatchNormShape shape,
                                const float* mean, const float* var, float epsilon, float* sum_dy,
                                float* sum_dy_xhat, StreamHandle stream);
void batch_norm_backward_input(const float* x, const float* dy, BatchNormShape shape,
                               const float* mean, const float* var, const float* weight,
                               const float* sum_dy, const float* sum_dy_xhat, float epsilon,
                               NormStatistics statistics, float* dx, StreamHandle stream);
void increment_counter(int32_t* counter, StreamHandle stream);
void layer_norm_forward(const float* x, int64_t rows, int64_t cols, const float* weight,
                        const float* bias, float epsilon, float* y, float* mean, float* var,
                        StreamHandle stream);
void layer_norm_backward(const float* x, const float* dy, int64_t rows, int64_t cols,
                         const float* mean, const float* var, const float* weight, float epsilon,
                         float* dx, float* dy_xhat, StreamHandle stream);

}  // namespace cuda
}  // namespace cairn::kernels
