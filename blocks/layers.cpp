#include "cairn/blocks/layers.h"

#include "cairn/core/error.h"
#include "cairn/core/ops.h"

namespace cairn {

// ---- Sequential ----

const BlockPtr& Sequential::operator[](size_t index) const {
  CAIRN_CHECK(index < children().size(), "Sequential: index ", index, " out of range (size ",
              children().size(), ")");
  return children()[index].second;
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor y = x;
  for (const auto& [name, child] : children()) y = (*child)(y);
  return y;
}

// ---- Activation ----

void Activation::validate(const std::string& name) {
  CAIRN_CHECK(
      name.empty() || name == "linear" || name == "relu" || name == "sigmoid" || name == "tanh",
      "Activation: unknown activation '", name, "' (known: relu, sigmoid, tanh, linear)");
}

Activation::Activation(std::string name) : Block("Activation"), name_(std::move(name)) {
  validate(name_);
}

Tensor Activation::apply(const std::string& name, const Tensor& x) {
  if (name == "relu") return ops::relu(x);
  if (name == "sigmoid") return ops::sigmoid(x);
  if (name == "tanh") return ops::tanh(x);
  return x;
}

Tensor Activation::forward(const Tensor& x) { return apply(name_, x); }

// ---- Dense ----

Dense::Dense(int64_t units, std::string activation, int64_t in_units, bool use_bias)
    : Block("Dense"), units_(units), activation_(std::move(activation)) {
  CAIRN_CHECK(units > 0, "Dense: units must be positive, got ", units);
  CAIRN_CHECK(in_units >= 0, "Dense: in_units must be >= 0 (0 = inferred), got ", in_units);
  Activation::validate(activation_);
  weight_ = register_parameter("weight", {units, in_units});
  if (use_bias) {
    bias_ = register_parameter("bias", {units});
    bias_->set_initializer(init::zeros());  // Gluon's default bias_initializer
  }
  weight_->set_owner(describe());
  if (bias_) bias_->set_owner(describe());
}

std::string Dense::describe() const {
  const int64_t in = weight_->shape()[1];
  return "Dense(" + (in > 0 ? std::to_string(in) : std::string("?")) + " -> " +
         std::to_string(units_) + ", " + (activation_.empty() ? "linear" : activation_) + ")";
}

Tensor Dense::forward(const Tensor& x) {
  CAIRN_CHECK(x.defined(), describe(), ": input is an undefined tensor");
  CAIRN_CHECK(x.ndim() >= 2, describe(), ": input must be (batch, features), got shape ",
              shape_str(x.shape()));
  const Tensor flat = x.ndim() == 2 ? x : x.reshape({x.dim(0), -1});
  const int64_t features = flat.dim(1);
  if (!weight_->shape_known()) {
    weight_->infer_shape({units_, features});  // the first forward fixes in_units
    weight_->set_owner(describe());
    if (bias_) bias_->set_owner(describe());
  }
  CAIRN_CHECK(features == in_units(), describe(), ": input has ", features, " features (shape ",
              shape_str(x.shape()), "), expected ", in_units());
  const Tensor weight = weight_->data();  // first, so a missing initialize() names the weight
  if (bias_ && (activation_.empty() || activation_ == "linear" || activation_ == "relu")) {
    // The fused path: one cuBLASLt call with its epilogue on a GPU.
    return ops::dense(
        flat, weight, bias_->data(),
        activation_ == "relu" ? ops::DenseActivation::kRelu : ops::DenseActivation::kNone);
  }
  const Tensor y = ops::linear(flat, weight, bias_ ? bias_->data() : Tensor());
  return Activation::apply(activation_, y);
}

}  // namespace cairn
