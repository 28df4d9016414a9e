// The stock blocks: Sequential, Dense and Activation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cairn/blocks/block.h"

namespace cairn {

// Runs its children in the order they were added; they are named "0", "1", ... as in Gluon and
// PyTorch. The same block may be added twice: it then shares its parameters between both places.
class Sequential : public Block {
 public:
  Sequential() : Block("Sequential") {}

  template <typename B>
  std::shared_ptr<B> add(std::shared_ptr<B> block) {
    add_child(std::to_string(children().size()), block);
    return block;
  }
  template <typename First, typename Second, typename... Rest>
  void add(std::shared_ptr<First> first, std::shared_ptr<Second> second,
           std::shared_ptr<Rest>... rest) {
    add(std::move(first));
    add(std::move(second), std::move(rest)...);
  }

  size_t size() const { return children().size(); }
  const BlockPtr& operator[](size_t index) const;
  Tensor forward(const Tensor& x) override;
};

// Activation by name: one registry, names() lists it: every row of the op table
// (kernels/elementwise_ops.h) marked as an activation ("relu", "sigmoid", "tanh", ...), and "" /
// "linear" for the identity.
class Activation : public Block {
 public:
  explicit Activation(std::string name);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override { return "Activation(" + name_ + ")"; }
  const std::string& name() const { return name_; }

  // The same function as a plain call, for layers that fuse an activation.
  static Tensor apply(const std::string& name, const Tensor& x);
  // Throws naming the valid names unless `name` is one of them.
  static void validate(const std::string& name);
  static const std::vector<std::string>& names();

 private:
  std::string name_;
};

// y = activation(x W^T + b), W: (units, in_units), b: (units), as in Gluon and PyTorch.
// in_units = 0 leaves the input size to the first forward (deferred shape inference). Inputs with
// more than two axes are flattened to (N, -1) first, as Gluon's Dense does.
class Dense : public Block {
 public:
  explicit Dense(int64_t units, std::string activation = "", int64_t in_units = 0,
                 bool use_bias = true);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;

  int64_t units() const { return units_; }
  int64_t in_units() const { return weight_->shape()[1]; }
  const std::string& activation() const { return activation_; }
  const ParameterPtr& weight() const { return weight_; }
  const ParameterPtr& bias() const { return bias_; }  // null without bias

 private:
  int64_t units_;
  std::string activation_;
  ParameterPtr weight_;
  ParameterPtr bias_;
};

}  // namespace cairn
