#include "cairn/blocks/optimizer.h"

#include <cmath>
#include <cstdio>

#include "cairn/blocks/captured_state.h"
#include "cairn/base/error.h"
#include "cairn/core/ops/op_support.h"
#include "cairn/kernels/optimizer.h"

namespace cairn {
namespace {

std::string format_float(float value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", static_cast<double>(value));
  return text;
}

void check_learning_rate(const std::string& who, float learning_rate) {
  CAIRN_CHECK(std::isfinite(learning_rate) && learning_rate >= 0.0f, who,
              ": learning_rate must be finite and >= 0, got ", learning_rate);
}

void check_weight_decay(const std::string& who, float weight_decay) {
  CAIRN_CHECK(std::isfinite(weight_decay) && weight_decay >= 0.0f, who,
              ": weight_decay must be finite and >= 0, got ", weight_decay);
}

// Momentum and Adam's betas are decay rates: 1 or more would let the state grow without bound.
void check_unit_interval(const std::string& who, const char* what, float value) {
  CAIRN_CHECK(value >= 0.0f && value < 1.0f, who, ": ", what, " must lie in [0, 1), got ", value);
}

// The weight, its gradient and its slots must agree before a kernel reads raw pointers.
void check_update_args(const char* who, const Tensor& weight, const Tensor& grad,
                       const std::vector<Tensor>& slots, size_t expected_slots, int64_t step) {
  ops::detail::check_float(who, weight, "weight");
  ops::detail::check_float(who, grad, "grad");
  CAIRN_CHECK(grad.shape() == weight.shape(), who, ": grad shape ", shape_str(grad.shape()),
              " differs from weight shape ", shape_str(weight.shape()));
  ops::detail::check_same_device(who, weight, grad);
  CAIRN_CHECK(slots.size() == expected_slots, who, ": expects ", expected_slots,
              " state tensors, got ", slots.size());
  for (const Tensor& slot : slots) {
    ops::detail::check_float(who, slot, "state");
    CAIRN_CHECK(slot.shape() == weight.shape(), who, ": state shape ", shape_str(slot.shape()),
                " differs from weight shape ", shape_str(weight.shape()));
    ops::detail::check_same_device(who, weight, slot);
  }
  CAIRN_CHECK(step >= 1, who, ": step is 1-based, got ", step);
}

// Adam and AdamW: the same checks and kernel, told apart by how the weight decay is applied.
void check_adam_hyperparameters(const std::string& who, float beta1, float beta2, float epsilon,
                                float weight_decay) {
  check_unit_interval(who, "beta1", beta1);
  check_unit_interval(who, "beta2", beta2);
  // epsilon keeps the step finite where a gradient has been exactly zero so far (0 / 0 otherwise).
  CAIRN_CHECK(std::isfinite(epsilon) && epsilon > 0.0f, who,
              ": epsilon must be finite and > 0, got ", epsilon);
  check_weight_decay(who, weight_decay);
}

void run_adam_update(Tensor& weight, const Tensor& grad, std::vector<Tensor>& slots,
                     const kernels::AdamConfig& config) {
  ops::detail::dispatch(
      weight.device(),
      [&] {
        kernels::cpu::adam_update(weight.data(), grad.data(), slots[0].data(), slots[1].data(),
                                  weight.numel(), config);
      },
      [&](cuda::Stream stream) {
        kernels::cuda::adam_update(weight.data(), grad.data(), slots[0].data(), slots[1].data(),
                                   weight.numel(), config, stream);
      });
}

}  // namespace

// ---- Optimizer ----

Optimizer::Optimizer(const std::string& who, float learning_rate) : learning_rate_(learning_rate) {
  check_learning_rate(who, learning_rate);
}

void Optimizer::set_learning_rate(float learning_rate) {
  check_learning_rate(name() + " set_learning_rate", learning_rate);
  // Captured steps hold the rate as a host value: a new one needs a new capture.
  if (learning_rate != learning_rate_) captured_state_changed();
  learning_rate_ = learning_rate;
}

std::string Optimizer::str() const {
  std::string text = name() + "(learning_rate=" + format_float(learning_rate_);
  for (const auto& [key, value] : hyperparameters()) {
    if (key != "learning_rate") text += ", " + key + "=" + format_float(value);
  }
  return text + ")";
}

std::vector<float> Optimizer::take_hyperparameters(const std::map<std::string, float>& values,
                                                   const std::vector<std::string>& expected) const {
  std::string problems;
  std::vector<float> out;
  for (const std::string& key : expected) {
    const auto found = values.find(key);
    if (found == values.end()) {
      problems += " missing '" + key + "';";
    } else {
      out.push_back(found->second);
    }
  }
  for (const auto& [key, value] : values) {
    bool known = false;
    for (const std::string& wanted : expected) known = known || wanted == key;
    if (!known) problems += " unknown '" + key + "';";
  }
  CAIRN_CHECK(problems.empty(), name(), ".set_hyperparameters:", problems);
  return out;
}

// ---- SGD ----

SGD::SGD(float learning_rate, float momentum, float weight_decay)
    : Optimizer("SGD", learning_rate), momentum_(momentum), weight_decay_(weight_decay) {
  check_unit_interval("SGD", "momentum", momentum);
  check_weight_decay("SGD", weight_decay);
}

std::vector<std::string> SGD::slot_names() const {
  if (momentum_ == 0.0f) return {};
  return {"momentum"};
}

void SGD::update(Tensor& weight, const Tensor& grad, std::vector<Tensor>& slots, int64_t step,
                 float grad_scale) const {
  check_update_args("SGD.update", weight, grad, slots, slot_names().size(), step);
  kernels::SgdConfig config;
  config.learning_rate = learning_rate();
  config.momentum = momentum_;
  config.weight_decay = weight_decay_;
  config.grad_scale = grad_scale;
  float* velocity = slots.empty() ? nullptr : slots[0].data();
  ops::detail::dispatch(
      weight.device(),
      [&] {
        kernels::cpu::sgd_update(weight.data(), grad.data(), velocity, weight.numel(), config);
      },
      [&](cuda::Stream stream) {
        kernels::cuda::sgd_update(weight.data(), grad.data(), velocity, weight.numel(), config,
                                  stream);
      });
}

std::map<std::string, float> SGD::hyperparameters() const {
  return {
      {"learning_rate", learning_rate()}, {"momentum", momentum_}, {"weight_decay", weight_decay_}};
}

void SGD::set_hyperparameters(const std::map<std::string, float>& values) {
  captured_state_changed();  // captured steps hold the old values
  const std::vector<float> v =
      take_hyperparameters(values, {"learning_rate", "momentum", "weight_decay"});
  static_cast<void>(SGD(v[0], v[1], v[2]));  // the constructor's checks, before anything changes
  set_learning_rate(v[0]);
  momentum_ = v[1];
  weight_decay_ = v[2];
}

// ---- Adam ----

Adam::Adam(float learning_rate, float beta1, float beta2, float epsilon, float weight_decay)
    : Optimizer("Adam", learning_rate),
      beta1_(beta1),
      beta2_(beta2),
      epsilon_(epsilon),
      weight_decay_(weight_decay) {
  check_adam_hyperparameters("Adam", beta1, beta2, epsilon, weight_decay);
}

void Adam::update(Tensor& weight, const Tensor& grad, std::vector<Tensor>& slots, int64_t step,
                  float grad_scale) const {
  check_update_args("Adam.update", weight, grad, slots, 2, step);
  kernels::AdamConfig config;
  config.learning_rate = learning_rate();
  config.beta1 = beta1_;
  config.beta2 = beta2_;
  config.epsilon = epsilon_;
  config.weight_decay = weight_decay_;
  config.grad_scale = grad_scale;
  config.step = step;
  run_adam_update(weight, grad, slots, config);
}

std::optional<std::string> Adam::capture_refusal() const {
  return "Adam's bias correction changes every step and cannot be frozen into a captured CUDA "
         "graph; capture SGD steps, or run Adam steps eagerly";
}

std::map<std::string, float> Adam::hyperparameters() const {
  return {{"learning_rate", learning_rate()},
          {"beta1", beta1_},
          {"beta2", beta2_},
          {"epsilon", epsilon_},
          {"weight_decay", weight_decay_}};
}

void Adam::set_hyperparameters(const std::map<std::string, float>& values) {
  captured_state_changed();  // captured steps hold the old values
  const std::vector<float> v =
      take_hyperparameters(values, {"learning_rate", "beta1", "beta2", "epsilon", "weight_decay"});
  static_cast<void>(Adam(v[0], v[1], v[2], v[3], v[4]));
  set_learning_rate(v[0]);
  beta1_ = v[1];
  beta2_ = v[2];
  epsilon_ = v[3];
  weight_decay_ = v[4];
}

// ---- AdamW ----

AdamW::AdamW(float learning_rate, float beta1, float beta2, float epsilon, float weight_decay)
    : Optimizer("AdamW", learning_rate),
      beta1_(beta1),
      beta2_(beta2),
      epsilon_(epsilon),
      weight_decay_(weight_decay) {
  check_adam_hyperparameters("AdamW", beta1, beta2, epsilon, weight_decay);
}

void AdamW::update(Tensor& weight, const Tensor& grad, std::vector<Tensor>& slots, int64_t step,
                   float grad_scale) const {
  check_update_args("AdamW.update", weight, grad, slots, 2, step);
  kernels::AdamConfig config;
  config.learning_rate = learning_rate();
  config.beta1 = beta1_;
  config.beta2 = beta2_;
  config.epsilon = epsilon_;
  config.weight_decay = weight_decay_;
  config.decay_mode = kernels::AdamWeightDecay::kDecoupled;
  config.grad_scale = grad_scale;
  config.step = step;
  run_adam_update(weight, grad, slots, config);
}

std::optional<std::string> AdamW::capture_refusal() const {
  return "AdamW's bias correction changes every step and cannot be frozen into a captured CUDA "
         "graph; capture SGD steps, or run AdamW steps eagerly";
}

std::map<std::string, float> AdamW::hyperparameters() const {
  return {{"learning_rate", learning_rate()},
          {"beta1", beta1_},
          {"beta2", beta2_},
          {"epsilon", epsilon_},
          {"weight_decay", weight_decay_}};
}

void AdamW::set_hyperparameters(const std::map<std::string, float>& values) {
  captured_state_changed();  // captured steps hold the old values
  const std::vector<float> v =
      take_hyperparameters(values, {"learning_rate", "beta1", "beta2", "epsilon", "weight_decay"});
  static_cast<void>(AdamW(v[0], v[1], v[2], v[3], v[4]));
  set_learning_rate(v[0]);
  beta1_ = v[1];
  beta2_ = v[2];
  epsilon_ = v[3];
  weight_decay_ = v[4];
}

}  // namespace cairn
