// The per-element arithmetic of batch norm and layer norm, written once for the CPU twins
// (kernels/cpu/norm.cpp) and the CUDA kernels (kernels/cuda/norm.cu).
//
// Each step is one correctly rounded float operation (kernels/elementwise_ops.h's *_rn helpers,
// never contracted into an FMA on the device), so given the same statistics both devices give the
// same bits. The statistics themselves are sums in double, rounded to float once.
#pragma once

#include <cstdint>

#include "cairn/kernels/common.h"
#include "cairn/kernels/elementwise_ops.h"

namespace cairn::kernels::norm {

using ew::add_rn;
using ew::div_rn;
using ew::mul_rn;
using ew::sqrt_rn;
using ew::sub_rn;

// 1 / sqrt(var + epsilon)
CAIRN_HOST_DEVICE inline float invstd(float var, float epsilon) {
  return div_rn(1.0f, sqrt_rn(add_rn(var, epsilon)));
}

// (x - mean) * invstd
CAIRN_HOST_DEVICE inline float normalize(float x, float mean, float invstd) {
  return mul_rn(sub_rn(x, mean), invstd);
}

// xhat * weight + bias, either term left out where the parameter is absent (no affine map): an
// absent bias adds nothing, not +0 (which would turn -0 into +0).
CAIRN_HOST_DEVICE inline float affine(float xhat, const float* weight, const float* bias,
                                      int64_t i) {
  float y = xhat;
  if (weight != nullptr) y = mul_rn(y, weight[i]);
  if (bias != nullptr) y = add_rn(y, bias[i]);
  return y;
}

// The weight (1 when absent) times invstd: what dy is scaled by.
CAIRN_HOST_DEVICE inline float backward_scale(const float* weight, int64_t i, float invstd) {
  return weight != nullptr ? mul_rn(weight[i], invstd) : invstd;
}

// The backward through normalisation by the statistics of the values normalised:
//   dx = scale * (dy - mean(dy) - xhat * mean(dy * xhat))
// with scale = weight * invstd. (Layer norm passes g = dy * weight as dy and invstd as scale.)
CAIRN_HOST_DEVICE inline float backward_through_statistics(float dy, float xhat, float scale,
                                                           float mean_dy, float mean_dy_xhat) {
  return mul_rn(scale, sub_rn(sub_rn(dy, mean_dy), mul_rn(xhat, mean_dy_xhat)));
}

// PyTorch's running-statistics rule: (1 - momentum) * running + momentum * batch.
CAIRN_HOST_DEVICE inline float running_update(float running, float batch, float momentum) {
  return add_rn(mul_rn(sub_rn(1.0f, momentum), running), mul_rn(momentum, batch));
}

// From the double sums of one channel or row of `count` values: the mean, and the biased and
// unbiased variances of the centred sum of squares (count - 1 = 0 gives inf, as PyTorch's
// running_var would; batch_norm refuses such batches when training).
CAIRN_HOST_DEVICE inline float mean_of(double sum, int64_t count) {
  return static_cast<float>(sum / static_cast<double>(count));
}
CAIRN_HOST_DEVICE inline float biased_variance(double centred_squares, int64_t count) {
  return static_cast<float>(centred_squares / static_cast<double>(count));
}
CAIRN_HOST_DEVICE inline float unbiased_variance(double centred_squares, int64_t count) {
  return static_cast<float>(centred_squares / static_cast<double>(count - 1));
}

}  // namespace cairn::kernels::norm
