#include "cairn/blocks/normalization.h"

#include <cmath>
#include <cstdio>

#include "cairn/base/error.h"
#include "cairn/core/autograd.h"
#include "cairn/core/ops.h"
#include "cairn/core/ops/op_support.h"
#include "cairn/kernels/norm.h"

namespace cairn {
namespace {

std::string format_float(float value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", static_cast<double>(value));
  return text;
}

void check_epsilon(const char* who, float epsilon) {
  CAIRN_CHECK(std::isfinite(epsilon) && epsilon > 0.0f, who,
              ": epsilon must be finite and > 0, got ", epsilon);
}

// num_batches_tracked += 1, in place on its device: a kernel on the stream, so that it also
// counts the replays of a captured training step.
void increment(const Tensor& counter) {
  ops::detail::dispatch(
      counter.device(), [&] { kernels::cpu::increment_counter(counter.data_int32()); },
      [&](cuda::Stream stream) { kernels::cuda::increment_counter(counter.data_int32(), stream); });
}

}  // namespace

// ---- BatchNorm ----

BatchNorm::BatchNorm(BatchNormOptions options) : Block("BatchNorm"), options_(options) {
  CAIRN_CHECK(options.momentum >= 0.0f && options.momentum <= 1.0f,
              "BatchNorm: momentum must lie in [0, 1], got ", options.momentum);
  check_epsilon("BatchNorm", options.epsilon);
  CAIRN_CHECK(options.in_channels >= 0, "BatchNorm: in_channels must be >= 0 (0 = inferred), got ",
              options.in_channels);
  const Shape channels = {options.in_channels};
  if (options.affine) {
    // Gluon's gamma and beta initializers: their own, whatever initialize() is given.
    weight_ = register_parameter("weight", channels);
    weight_->set_initializer(init::ones());
    bias_ = register_parameter("bias", channels);
    bias_->set_initializer(init::zeros());
  }
  running_mean_ = register_state("running_mean", channels, init::zeros());
  running_var_ = register_state("running_var", channels, init::ones());
  num_batches_tracked_ = register_state("num_batches_tracked", {}, nullptr, DType::kInt32);
  for (const auto& [name, parameter] : own_parameters()) parameter->set_owner(describe());
}

std::string BatchNorm::describe() const {
  const int64_t channels = in_channels();
  return "BatchNorm(" + (channels > 0 ? std::to_string(channels) : std::string("?")) +
         ", momentum=" + format_float(options_.momentum) +
         ", epsilon=" + format_float(options_.epsilon) + (options_.affine ? "" : ", affine=false") +
         ")";
}

Tensor BatchNorm::forward(const Tensor& x) {
  CAIRN_CHECK(x.defined(), describe(), ": input is an undefined tensor");
  CAIRN_CHECK(x.ndim() >= 2, describe(), ": input must be (N, C) or (N, C, ...), got shape ",
              shape_str(x.shape()));
  if (!running_mean_->shape_known()) {
    const Shape channels = {x.dim(1)};  // the first forward fixes in_channels
    CAIRN_CHECK(x.dim(1) > 0, describe(), ": input has no channels, shape ", shape_str(x.shape()));
    for (const auto& [name, parameter] : own_parameters()) {
      if (name != "num_batches_tracked") parameter->infer_shape(channels);
    }
    for (const auto& [name, parameter] : own_parameters()) parameter->set_owner(describe());
  }
  CAIRN_CHECK(x.dim(1) == in_channels(), describe(), ": input has ", x.dim(1), " channels (shape ",
              shape_str(x.shape()), "), expected ", in_channels());
  const bool training = autograd::is_training();
  const Tensor y = ops::batch_norm(
      x, weight_ ? weight_->data() : Tensor(), bias_ ? bias_->data() : Tensor(),
      running_mean_->data(), running_var_->data(), training, options_.momentum, options_.epsilon);
  if (training) increment(num_batches_tracked_->data());
  return y;
}

// ---- LayerNorm ----

LayerNorm::LayerNorm(std::vector<int64_t> normalized_shape, LayerNormOptions options)
    : Block("LayerNorm"), normalized_shape_(std::move(normalized_shape)), options_(options) {
  CAIRN_CHECK(!normalized_shape_.empty(),
              "LayerNorm: normalized_shape must have at least one axis");
  for (int64_t dim : normalized_shape_) {
    CAIRN_CHECK(dim > 0, "LayerNorm: normalized_shape must be positive, got ",
                shape_str(normalized_shape_));
  }
  check_epsilon("LayerNorm", options.epsilon);
  if (options.affine) {
    weight_ = register_parameter("weight", normalized_shape_);
    weight_->set_initializer(init::ones());
    bias_ = register_parameter("bias", normalized_shape_);
    bias_->set_initializer(init::zeros());
    weight_->set_owner(describe());
    bias_->set_owner(describe());
  }
}

std::string LayerNorm::describe() const {
  return "LayerNorm(" + shape_str(normalized_shape_) +
         ", epsilon=" + format_float(options_.epsilon) + (options_.affine ? "" : ", affine=false") +
         ")";
}

Tensor LayerNorm::forward(const Tensor& x) {
  CAIRN_CHECK(x.defined(), describe(), ": input is an undefined tensor");
  const int64_t axes = int64_t(normalized_shape_.size());
  const bool fits =
      x.ndim() >= axes && Shape(x.shape().end() - axes, x.shape().end()) == normalized_shape_;
  CAIRN_CHECK(fits, describe(), ": input's last axes must be ", shape_str(normalized_shape_),
              ", got shape ", shape_str(x.shape()));
  return ops::layer_norm(x, axes, weight_ ? weight_->data() : Tensor(),
                         bias_ ? bias_->data() : Tensor(), options_.epsilon);
}

}  // namespace cairn
