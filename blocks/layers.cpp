#include "cairn/blocks/layers.h"

#include <optional>

#include "cairn/base/error.h"
#include "cairn/core/ops.h"
#include "cairn/kernels/elementwise_ops.h"

namespace cairn {
namespace {

// The activation registry: the op table's rows marked kActivation, by their names. nullopt is the
// identity ("" and "linear").
struct ActivationRegistry {
  std::vector<std::string> names;
  std::vector<std::optional<kernels::UnaryOp>> ops;

  ActivationRegistry() {
    names.push_back("linear");
    ops.push_back(std::nullopt);
    for (const kernels::UnaryOpInfo& row : kernels::kUnaryOps) {
      if (!row.activation) continue;
      names.push_back(row.name);
      ops.push_back(row.op);
    }
  }

  // The entry for `name`, or throws listing every name.
  std::optional<kernels::UnaryOp> find(const std::string& name) const {
    if (name.empty()) return std::nullopt;
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == name) return ops[i];
    }
    std::string known;
    for (const std::string& n : names) known += (known.empty() ? "" : ", ") + n;
    CAIRN_FAIL("Activation: unknown activation '", name, "' (known: ", known, ")");
  }
};

const ActivationRegistry& registry() {
  static const ActivationRegistry instance;
  return instance;
}

}  // namespace

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

void Activation::validate(const std::string& name) { registry().find(name); }

const std::vector<std::string>& Activation::names() { return registry().names; }

Activation::Activation(std::string name) : Block("Activation"), name_(std::move(name)) {
  validate(name_);
}

Tensor Activation::apply(const std::string& name, const Tensor& x) {
  const std::optional<kernels::UnaryOp> op = registry().find(name);
  return op ? ops::unary(*op, x) : x;
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
