// Optimizers: how one parameter moves given its gradient. They hold hyperparameters only; the
// per-parameter state (momentum, Adam's moments) lives in the Trainer as "slots", so that one
// optimizer object can serve any number of parameters and the Trainer can save and restore it.
//
// Every update is one fused kernel a parameter (kernels/optimizer.h), on the parameter's device and
// that device's current stream.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cairn/core/tensor.h"

namespace cairn {

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // "sgd", "adam", "adamw": what a checkpoint records, and checks when it is loaded back.
  virtual std::string name() const = 0;
  float learning_rate() const { return learning_rate_; }
  void set_learning_rate(float learning_rate);  // throws for a negative or non-finite rate

  // The names of the tensors kept per parameter, in the order update() takes them ("momentum" for
  // SGD with momentum; "mean" and "variance" for Adam). Each slot has its parameter's shape.
  virtual std::vector<std::string> slot_names() const = 0;

  // Moves `weight` one step along `grad` (both on one device, same shape), reading and writing
  // `slots` (slot_names() order, same shape and device). `step` is this parameter's 1-based update
  // count (Adam's bias correction); the raw gradient is multiplied by grad_scale first.
  virtual void update(Tensor& weight, const Tensor& grad, std::vector<Tensor>& slots, int64_t step,
                      float grad_scale) const = 0;

  // Why update() cannot be captured into a CUDA graph, or nothing when it can. A graph replays
  // every kernel with the arguments it was captured with, so an update whose host-side arguments
  // change from step to step (Adam's bias correction) would repeat one step's arguments forever.
  // Hyperparameters are not such arguments: changing them re-captures (captured_state.h).
  virtual std::optional<std::string> capture_refusal() const { return std::nullopt; }
  bool step_capturable() const { return !capture_refusal().has_value(); }

  // Every hyperparameter by name, the learning rate included; set_hyperparameters() takes the
  // same names back (all of them, validated as the constructor does) when a checkpoint is loaded.
  virtual std::map<std::string, float> hyperparameters() const = 0;
  virtual void set_hyperparameters(const std::map<std::string, float>& values) = 0;

  // A copy with the same hyperparameters (the Trainer tries loaded hyperparameters on one first).
  virtual std::shared_ptr<Optimizer> clone() const = 0;

  // "sgd(learning_rate=0.1, momentum=0.9, weight_decay=0)"
  std::string str() const;

 protected:
  // `who` names the optimizer in the message when the learning rate is invalid.
  Optimizer(const std::string& who, float learning_rate);
  // Checks that `values` names exactly `expected` and returns them in that order.
  std::vector<float> take_hyperparameters(const std::map<std::string, float>& values,
                                          const std::vector<std::string>& expected) const;

 private:
  float learning_rate_;
};

using OptimizerPtr = std::shared_ptr<Optimizer>;

// Stochastic gradient descent, optionally with (heavy-ball) momentum and L2 weight decay:
//   g = grad_scale * grad + weight_decay * w;  v = momentum * v + g;  w -= lr * v
// With momentum 0 there is no velocity slot and w -= lr * g.
class SGD final : public Optimizer {
 public:
  explicit SGD(float learning_rate, float momentum = 0.0f, float weight_decay = 0.0f);

  std::string name() const override { return "sgd"; }
  std::vector<std::string> slot_names() const override;
  void update(Tensor& weight, const Tensor& grad, std::vector<Tensor>& slots, int64_t step,
              float grad_scale) const override;
  std::map<std::string, float> hyperparameters() const override;
  void set_hyperparameters(const std::map<std::string, float>& values) override;
  std::shared_ptr<Optimizer> clone() const override { return std::make_shared<SGD>(*this); }

  float momentum() const { return momentum_; }
  float weight_decay() const { return weight_decay_; }

 private:
  float momentum_;
  float weight_decay_;
};

// Adam (Kingma & Ba) with bias correction and L2 weight decay folded into the gradient (not AdamW).
class Adam final : public Optimizer {
 public:
  explicit Adam(float learning_rate = 1e-3f, float beta1 = 0.9f, float beta2 = 0.999f,
                float epsilon = 1e-8f, float weight_decay = 0.0f);

  std::string name() const override { return "adam"; }
  std::vector<std::string> slot_names() const override { return {"mean", "variance"}; }
  void update(Tensor& weight, const Tensor& grad, std::vector<Tensor>& slots, int64_t step,
              float grad_scale) const override;
  std::optional<std::string> capture_refusal() const override;
  std::map<std::string, float> hyperparameters() const override;
  void set_hyperparameters(const std::map<std::string, float>& values) override;
  std::shared_ptr<Optimizer> clone() const override { return std::make_shared<Adam>(*this); }

  float beta1() const { return beta1_; }
  float beta2() const { return beta2_; }
  float epsilon() const { return epsilon_; }
  float weight_decay() const { return weight_decay_; }

 private:
  float beta1_;
  float beta2_;
  float epsilon_;
  float weight_decay_;
};

// AdamW (Loshchilov & Hutter), PyTorch's torch.optim.AdamW: the weight decay is decoupled from the
// gradient, w *= 1 - lr * weight_decay, then the Adam step with bias correction on the raw
// (scaled) gradient. Same slots as Adam ("mean", "variance"); its steps are not capturable either.
class AdamW final : public Optimizer {
 public:
  explicit AdamW(float learning_rate = 1e-3f, float beta1 = 0.9f, float beta2 = 0.999f,
                 float epsilon = 1e-8f, float weight_decay = 0.01f);

  std::string name() const override { return "adamw"; }
  std::vector<std::string> slot_names() const override { return {"mean", "variance"}; }
  void update(Tensor& weight, const Tensor& grad, std::vector<Tensor>& slots, int64_t step,
              float grad_scale) const override;
  std::optional<std::string> capture_refusal() const override;
  std::map<std::string, float> hyperparameters() const override;
  void set_hyperparameters(const std::map<std::string, float>& values) override;
  std::shared_ptr<Optimizer> clone() const override { return std::make_shared<AdamW>(*this); }

  float beta1() const { return beta1_; }
  float beta2() const { return beta2_; }
  float epsilon() const { return epsilon_; }
  float weight_decay() const { return weight_decay_; }

 private:
  float beta1_;
  float beta2_;
  float epsilon_;
  float weight_decay_;
};

}  // namespace cairn
