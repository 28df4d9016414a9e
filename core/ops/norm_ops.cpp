// Batch normalisation and layer normalisation (PyTorch's batch_norm and layer_norm).
#include <cmath>
#include <string>

#include "cairn/core/autograd.h"
#include "cairn/core/ops.h"
#include "cairn/core/ops/op_support.h"
#include "cairn/kernels/norm.h"

namespace cairn::ops {
namespace {

using kernels::BatchNormShape;
using kernels::NormStatistics;

const float* data_or_null(const Tensor& t) { return t.defined() ? t.data() : nullptr; }

void check_epsilon(const char* op, float epsilon) {
  CAIRN_CHECK(std::isfinite(epsilon) && epsilon > 0.0f, op,
              ": epsilon must be finite and > 0, got ", epsilon);
}

// An optional per-channel (or per-normalised-element) tensor: undefined, or float32 of `shape`
// on x's device.
void check_optional(const char* op, const Tensor& t, const char* role, const Shape& shape,
                    const Tensor& x) {
  if (!t.defined()) return;
  detail::check_float(op, t, role);
  detail::check_same_device(op, x, t);
  CAIRN_CHECK(t.shape() == shape, op, ": ", role, " must have shape ", shape_str(shape), " for x ",
              shape_str(x.shape()), ", got ", shape_str(t.shape()));
}

// The recorded inputs: x, then weight and bias where given (autograd takes defined tensors only),
// and the backward's gradients in the same order.
std::vector<Tensor> defined_of(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  std::vector<Tensor> inputs = {x};
  if (weight.defined()) inputs.push_back(weight);
  if (bias.defined()) inputs.push_back(bias);
  return inputs;
}
std::vector<Tensor> grads_of(const Tensor& dx, bool has_weight, const Tensor& dweight,
                             bool has_bias, const Tensor& dbias) {
  std::vector<Tensor> grads = {dx};
  if (has_weight) grads.push_back(dweight);
  if (has_bias) grads.push_back(dbias);
  return grads;
}

BatchNormShape batch_norm_shape(const Tensor& x) {
  BatchNormShape shape;
  shape.batch = x.dim(0);
  shape.channels = x.dim(1);
  shape.spatial = 1;
  for (int64_t axis = 2; axis < x.ndim(); ++axis) shape.spatial *= x.shape()[size_t(axis)];
  return shape;
}

// What the backward of one batch_norm call keeps: x, the weight, the statistics it normalised by
// (the batch's, or a snapshot of the running ones) and which they were.
struct BatchNormSaved {
  Tensor x, weight, mean, var;
  bool has_weight, has_bias;
  BatchNormShape shape;
  float epsilon;
  NormStatistics statistics;
};

std::vector<Tensor> batch_norm_backward(const BatchNormSaved& s, bool need_x, bool need_weight,
                                        bool need_bias, const Tensor& dy) {
  const Device device = dy.device();
  const int64_t C = s.shape.channels;
  // The sums are the weight's and bias's gradients, and the batch-statistics dx needs them too.
  const bool need_sums =
      need_weight || need_bias || (need_x && s.statistics == NormStatistics::kBatch);
  Tensor sum_dy, sum_dy_xhat, dx;
  if (need_sums) {
    sum_dy = Tensor::empty({C}, device);
    sum_dy_xhat = Tensor::empty({C}, device);
    detail::dispatch(
        device,
        [&] {
          kernels::cpu::batch_norm_backward_reduce(s.x.data(), dy.data(), s.shape, s.mean.data(),
                                                   s.var.data(), s.epsilon, sum_dy.data(),
                                                   sum_dy_xhat.data());
        },
        [&](cuda::Stream stream) {
          kernels::cuda::batch_norm_backward_reduce(s.x.data(), dy.data(), s.shape, s.mean.data(),
                                                    s.var.data(), s.epsilon, sum_dy.data(),
                                                    sum_dy_xhat.data(), stream);
        });
  }
  if (need_x) {
    dx = Tensor::empty(s.x.shape(), device);
    const float* sums[2] = {data_or_null(sum_dy), data_or_null(sum_dy_xhat)};
    detail::dispatch(
        device,
        [&] {
          kernels::cpu::batch_norm_backward_input(s.x.data(), dy.data(), s.shape, s.mean.data(),
                                                  s.var.data(), data_or_null(s.weight), sums[0],
                                                  sums[1], s.epsilon, s.statistics, dx.data());
        },
        [&](cuda::Stream stream) {
          kernels::cuda::batch_norm_backward_input(
              s.x.data(), dy.data(), s.shape, s.mean.data(), s.var.data(), data_or_null(s.weight),
              sums[0], sums[1], s.epsilon, s.statistics, dx.data(), stream);
        });
  }
  return grads_of(dx, s.has_weight, need_weight ? sum_dy_xhat : Tensor(), s.has_bias,
                  need_bias ? sum_dy : Tensor());
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                  Tensor running_var, bool training, float momentum, float epsilon) {
  constexpr const char* kOp = "batch_norm";
  detail::check_float(kOp, x, "x");
  CAIRN_CHECK(x.ndim() >= 2, kOp, ": x must be (N, C) or (N, C, ...) with the channels on axis 1, ",
              "got shape ", shape_str(x.shape()));
  check_epsilon(kOp, epsilon);
  CAIRN_CHECK(momentum >= 0.0f && momentum <= 1.0f, kOp, ": momentum must lie in [0, 1], got ",
              momentum);
  const BatchNormShape shape = batch_norm_shape(x);
  const Shape channels = {shape.channels};
  check_optional(kOp, weight, "weight", channels, x);
  check_optional(kOp, bias, "bias", channels, x);
  check_optional(kOp, running_mean, "running_mean", channels, x);
  check_optional(kOp, running_var, "running_var", channels, x);
  CAIRN_CHECK(running_mean.defined() == running_var.defined(), kOp,
              ": running_mean and running_var are given together or not at all");
  CAIRN_CHECK(training || running_mean.defined(), kOp,
              ": predicting normalises with running_mean and running_var, and neither was given");
  // The unbiased variance of one value is 0 / 0, and the batch variance of one value is 0: the
  // output would be bias alone. PyTorch refuses such a batch when training, and so does cairn.
  CAIRN_CHECK(!training || shape.count() > 1, kOp,
              ": expected more than 1 value per channel when training, got input shape ",
              shape_str(x.shape()), " (", shape.count(), " per channel)");

  const Device device = x.device();
  Tensor mean, var;
  NormStatistics statistics;
  if (training) {
    statistics = NormStatistics::kBatch;
    mean = Tensor::empty(channels, device);
    var = Tensor::empty(channels, device);
    float* rm = running_mean.defined() ? running_mean.data() : nullptr;
    float* rv = running_var.defined() ? running_var.data() : nullptr;
    detail::dispatch(
        device,
        [&] {
          kernels::cpu::batch_norm_statistics(x.data(), shape, momentum, mean.data(), var.data(),
                                              rm, rv);
        },
        [&](cuda::Stream stream) {
          kernels::cuda::batch_norm_statistics(x.data(), shape, momentum, mean.data(), var.data(),
                                               rm, rv, stream);
        });
  } else {
    statistics = NormStatistics::kFixed;
    mean = running_mean;
    var = running_var;
  }
  Tensor y = Tensor::empty(x.shape(), device);
  detail::dispatch(
      device,
      [&] {
        kernels::cpu::batch_norm_forward(x.data(), shape, mean.data(), var.data(),
                                         data_or_null(weight), data_or_null(bias), epsilon,
                                         y.data());
      },
      [&](cuda::Stream stream) {
        kernels::cuda::batch_norm_forward(x.data(), shape, mean.data(), var.data(),
                                          data_or_null(weight), data_or_null(bias), epsilon,
                                          y.data(), stream);
      });
  const std::vector<Tensor> inputs = defined_of(x, weight, bias);
  if (autograd::should_record(inputs)) {
    BatchNormSaved saved;
    saved.has_weight = weight.defined();
    saved.has_bias = bias.defined();
    saved.x = x.detach();
    saved.weight = weight.defined() ? weight.detach() : Tensor();
    // The running statistics change in place at the next training forward: the backward takes
    // the values this forward used.
    saved.mean = training ? mean : mean.detach().clone();
    saved.var = training ? var : var.detach().clone();
    saved.shape = shape;
    saved.epsilon = epsilon;
    saved.statistics = statistics;
    const bool need_x = x.requires_grad(), need_weight = weight.requires_grad(),
               need_bias = bias.requires_grad();
    autograd::record(kOp, inputs, y, [saved, need_x, need_weight, need_bias](const Tensor& dy) {
      return batch_norm_backward(saved, need_x, need_weight, need_bias, dy);
    });
  } else {
    autograd::record(kOp, inputs, y, nullptr);  // the numerics check only
  }
  return y;
}

Tensor layer_norm(const Tensor& x, int64_t normalized_axes, const Tensor& weight,
                  const Tensor& bias, float epsilon) {
  constexpr const char* kOp = "layer_norm";
  detail::check_float(kOp, x, "x");
  CAIRN_CHECK(normalized_axes >= 1 && normalized_axes <= x.ndim(), kOp,
              ": normalized_axes must lie in [1, ", x.ndim(), "] for x of shape ",
              shape_str(x.shape()), ", got ", normalized_axes);
  check_epsilon(kOp, epsilon);
  const Shape normalized(x.shape().end() - normalized_axes, x.shape().end());
  check_optional(kOp, weight, "weight", normalized, x);
  check_optional(kOp, bias, "bias", normalized, x);
  int64_t rows = 1, cols = 1;
  for (int64_t axis = 0; axis < x.ndim(); ++axis) {
    (axis < x.ndim() - normalized_axes ? rows : cols) *= x.shape()[size_t(axis)];
  }
  const Device device = x.device();
  Tensor y = Tensor::empty(x.shape(), device);
  Tensor mean = Tensor::empty({rows}, device), var = Tensor::empty({rows}, device);
  detail::dispatch(
      device,
      [&] {
        kernels::cpu::layer_norm_forward(x.data(), rows, cols, data_or_null(weight),
                                         data_or_null(bias), epsilon, y.data(), mean.data(),
                                         var.data());
      },
      [&](cuda::Stream stream) {
        kernels::cuda::layer_norm_forward(x.data(), rows, cols, data_or_null(weight),
                                          data_or_null(bias), epsilon, y.data(), mean.data(),
                                          var.data(), stream);
      });
  const Tensor x_saved = x.detach();
  const Tensor weight_saved = weight.defined() ? weight.detach() : Tensor();
  const bool need_x = x.requires_grad(), need_weight = weight.requires_grad(),
             need_bias = bias.requires_grad();
  const bool has_weight = weight.defined(), has_bias = bias.defined();
  autograd::record(
      kOp, defined_of(x, weight, bias), y,
      [x_saved, weight_saved, mean, var, normalized, rows, cols, epsilon, need_x, need_weight,
       need_bias, has_weight, has_bias](const Tensor& dy) {
        const Device device = dy.device();
        Tensor dx = Tensor::empty(x_saved.shape(), device);
        Tensor dy_xhat = need_weight ? Tensor::empty({rows, cols}, device) : Tensor();
        detail::dispatch(
            device,
            [&] {
              kernels::cpu::layer_norm_backward(x_saved.data(), dy.data(), rows, cols, mean.data(),
                                                var.data(), data_or_null(weight_saved), epsilon,
                                                dx.data(), need_weight ? dy_xhat.data() : nullptr);
            },
            [&](cuda::Stream stream) {
              kernels::cuda::layer_norm_backward(x_saved.data(), dy.data(), rows, cols, mean.data(),
                                                 var.data(), data_or_null(weight_saved), epsilon,
                                                 dx.data(), need_weight ? dy_xhat.data() : nullptr,
                                                 stream);
            });
        Tensor dweight, dbias;
        if (need_weight) dweight = reshape(sum_columns(dy_xhat), normalized);
        if (need_bias) dbias = reshape(sum_columns(reshape(dy, {rows, cols})), normalized);
        return grads_of(need_x ? dx : Tensor(), has_weight, dweight, has_bias, dbias);
      });
  return y;
}

}  // namespace cairn::ops
