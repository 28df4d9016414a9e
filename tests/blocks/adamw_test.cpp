// AdamW through the Trainer against PyTorch's torch.optim.AdamW algorithm computed by hand in
// double, the decoupling of its weight decay, its hyperparameters and refusals, and its kernel
// (kernels/optimizer.h, AdamWeightDecay::kDecoupled) on the CPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cairn/blocks/optimizer.h"
#include "cairn/blocks/trainer.h"
#include "cairn/kernels/optimizer.h"
#include "support/test_support.h"

namespace cairn {
namespace {

using testing::expect_close;
using testing::expect_error;

const Device kCpu = Device::cpu();

Tensor values(const std::vector<float>& data, const Shape& shape) {
  return Tensor::from_vector(data, shape, kCpu);
}

ParameterDict single_parameter(const std::vector<float>& initial, ParameterPtr& out) {
  out = std::make_shared<Parameter>("w", Shape{int64_t(initial.size())});
  out->set_data(values(initial, {int64_t(initial.size())}), kCpu);
  ParameterDict dict;
  dict.insert("w", out);
  return dict;
}

// Leaves grad(w) = c, from loss = sum(w * c).
void backward_with_gradient(const ParameterPtr& w, const std::vector<float>& c) {
  autograd::RecordScope record;
  ops::sum(w->data() * values(c, w->shape())).backward();
}

// torch.optim.AdamW's single-tensor step (torch/optim/adamw.py, amsgrad off), in double:
//   param.mul_(1 - lr * wd); exp_avg.lerp_(grad, 1 - b1); exp_avg_sq.mul_(b2).addcmul_(grad, grad,
//   1 - b2) denom = exp_avg_sq.sqrt() / sqrt(1 - b2^t) + eps; param.addcdiv_(exp_avg, denom, -lr /
//   (1 - b1^t))
struct PyTorchAdamW {
  double lr, b1, b2, eps, wd;
  std::vector<double> param, exp_avg, exp_avg_sq;
  int64_t t = 0;
  void step(const std::vector<double>& grad) {
    ++t;
    for (size_t i = 0; i < param.size(); ++i) {
      param[i] *= 1 - lr * wd;
      exp_avg[i] += (grad[i] - exp_avg[i]) * (1 - b1);
      exp_avg_sq[i] = exp_avg_sq[i] * b2 + (1 - b2) * grad[i] * grad[i];
      const double denom = std::sqrt(exp_avg_sq[i]) / std::sqrt(1 - std::pow(b2, double(t))) + eps;
      param[i] -= lr / (1 - std::pow(b1, double(t))) * exp_avg[i] / denom;
    }
  }
};

TEST(AdamW, ThreeStepsMatchPyTorchsAlgorithm) {
  const double lr = 0.02, b1 = 0.8, b2 = 0.95, eps = 1e-6, wd = 0.1, scale = 0.25;
  ParameterPtr w;
  Trainer trainer(single_parameter({0.5f, -1.5f, 3, 0}, w),
                  std::make_shared<AdamW>(lr, b1, b2, eps, wd));
  PyTorchAdamW reference{lr, b1, b2, eps, wd, {0.5, -1.5, 3, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}};
  const std::vector<std::vector<float>> grads = {{4, -2, 0, 1}, {-1, 6, 0.5f, 1}, {2, 2, -3, 0}};
  for (size_t t = 0; t < grads.size(); ++t) {
    backward_with_gradient(w, grads[t]);
    trainer.step(4);  // grad_scale 1/4: PyTorch's gradient is the mean's, scale * grad
    std::vector<double> scaled;
    for (float g : grads[t]) scaled.push_back(scale * g);
    reference.step(scaled);
    std::vector<float> expected;
    for (double p : reference.param) expected.push_back(float(p));
    expect_close(w->data().to_vector(), expected, 1e-6, 1e-6, "after step " + std::to_string(t));
  }
  const NamedTensors state = trainer.state();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state[0].first, "w.mean");
  EXPECT_EQ(state[1].first, "w.variance");
  std::vector<float> mean, variance;
  for (double m : reference.exp_avg) mean.push_back(float(m));
  for (double v : reference.exp_avg_sq) variance.push_back(float(v));
  expect_close(state[0].second.to_vector(), mean, 1e-7, 1e-6, "mean");
  expect_close(state[1].second.to_vector(), variance, 1e-9, 1e-5, "variance");
}

// The decay does not pass through the moments: with a zero gradient the moments stay zero, the
// Adam term is 0 / (0 + eps) = 0, and w shrinks by exactly lr * wd * w (the factor 1 - lr * wd
// rounded to float once, as PyTorch's mul_ does). Adam's L2 decay instead feeds wd * w into the
// moments, whose normalised step moves w by about lr whatever wd is.
TEST(AdamW, WeightDecayIsDecoupledFromTheGradient) {
  const float lr = 0.1f, wd = 0.05f;
  const std::vector<float> initial = {2, -3, 0.75f, 1e-3f};
  ParameterPtr w;
  Trainer trainer(single_parameter(initial, w),
                  std::make_shared<AdamW>(lr, 0.9f, 0.999f, 1e-8f, wd));
  std::vector<float> expected = initial;
  const float factor = float(1.0 - double(lr) * double(wd));
  for (int step = 0; step < 3; ++step) {
    backward_with_gradient(w, {0, 0, 0, 0});
    trainer.step(1);
    for (float& e : expected) e *= factor;
    const std::vector<float> got = w->data().to_vector();
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(testing::float_bits(got[i]), testing::float_bits(expected[i]))
          << "step " << step << " element " << i << ": " << got[i] << " vs " << expected[i];
    }
  }
  for (const auto& [name, slot] : trainer.state()) {
    EXPECT_EQ(slot.to_vector(), std::vector<float>(4, 0.0f)) << name << " saw the decay";
  }
  // One step against w - lr * wd * w in double: the same to float rounding.
  ParameterPtr once;
  Trainer single(single_parameter(initial, once),
                 std::make_shared<AdamW>(lr, 0.9f, 0.999f, 1e-8f, wd));
  backward_with_gradient(once, {0, 0, 0, 0});
  single.step(1);
  std::vector<float> shrunk;
  for (float v : initial) shrunk.push_back(float(double(v) - double(lr) * double(wd) * double(v)));
  expect_close(once->data().to_vector(), shrunk, 0, 1e-7, "w - lr * wd * w");

  // Adam with the same decay: the zero-gradient step is lr * sign(w) (the L2 term normalised).
  ParameterPtr coupled;
  Trainer adam(single_parameter(initial, coupled),
               std::make_shared<Adam>(lr, 0.9f, 0.999f, 1e-8f, wd));
  backward_with_gradient(coupled, {0, 0, 0, 0});
  adam.step(1);
  std::vector<float> coupled_expected;
  for (float v : initial) {
    const double g = double(wd) * v;  // the step is lr * g / (|g| + eps): eps shows at w = 1e-3
    coupled_expected.push_back(float(v - double(lr) * g / (std::abs(g) + 1e-8)));
  }
  expect_close(coupled->data().to_vector(), coupled_expected, 1e-6, 1e-6, "Adam's coupled decay");
}

TEST(AdamW, KernelWithoutDecayIsAdam) {
  // weight_decay 0: the decoupled and the L2 variants are the same arithmetic, bit for bit.
  const int64_t n = 257;
  Tensor w1 = testing::random_tensor({n}, 1, kCpu), w2 = w1.clone();
  Tensor m1 = Tensor::zeros({n}, kCpu), m2 = m1.clone(), v1 = m1.clone(), v2 = m1.clone();
  kernels::AdamConfig config;
  config.learning_rate = 0.01f;
  for (int64_t step = 1; step <= 3; ++step) {
    const Tensor g = testing::random_tensor({n}, 10 + uint64_t(step), kCpu);
    config.step = step;
    config.decay_mode = kernels::AdamWeightDecay::kL2;
    kernels::cpu::adam_update(w1.data(), g.data(), m1.data(), v1.data(), n, config);
    config.decay_mode = kernels::AdamWeightDecay::kDecoupled;
    kernels::cpu::adam_update(w2.data(), g.data(), m2.data(), v2.data(), n, config);
  }
  EXPECT_EQ(w1.to_vector(), w2.to_vector());
  EXPECT_EQ(v1.to_vector(), v2.to_vector());
}

TEST(AdamW, DefaultsNameHyperparametersAndRefusals) {
  const AdamW defaults;
  EXPECT_EQ(defaults.name(), "adamw");
  EXPECT_FLOAT_EQ(defaults.learning_rate(), 1e-3f);
  EXPECT_FLOAT_EQ(defaults.beta1(), 0.9f);
  EXPECT_FLOAT_EQ(defaults.beta2(), 0.999f);
  EXPECT_FLOAT_EQ(defaults.epsilon(), 1e-8f);
  EXPECT_FLOAT_EQ(defaults.weight_decay(), 0.01f);  // PyTorch's default, unlike Adam's 0
  EXPECT_EQ(defaults.str(),
            "adamw(learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-08, weight_decay=0.01)");
  EXPECT_EQ(defaults.slot_names(), (std::vector<std::string>{"mean", "variance"}));
  ASSERT_TRUE(defaults.capture_refusal().has_value());
  EXPECT_NE(defaults.capture_refusal()->find("AdamW"), std::string::npos);

  AdamW changed;
  changed.set_hyperparameters({{"learning_rate", 0.5f},
                               {"beta1", 0.5f},
                               {"beta2", 0.75f},
                               {"epsilon", 1e-4f},
                               {"weight_decay", 0.25f}});
  EXPECT_EQ(changed.hyperparameters(), (std::map<std::string, float>{{"learning_rate", 0.5f},
                                                                     {"beta1", 0.5f},
                                                                     {"beta2", 0.75f},
                                                                     {"epsilon", 1e-4f},
                                                                     {"weight_decay", 0.25f}}));
  expect_error(
      [&] {
        changed.set_hyperparameters({{"learning_rate", 0.5f}});
      },
      {"adamw.set_hyperparameters", "missing 'beta1'"});
  expect_error(
      [&] {
        changed.set_hyperparameters({{"learning_rate", 0.5f},
                                     {"beta1", 1.0f},
                                     {"beta2", 0.5f},
                                     {"epsilon", 1e-4f},
                                     {"weight_decay", 0.25f}});
      },
      {"AdamW", "beta1 must lie in [0, 1)"});
  EXPECT_FLOAT_EQ(changed.beta1(), 0.5f);  // a refused set changes nothing

  expect_error([] { AdamW(std::nanf("")); }, {"AdamW", "learning_rate"});
  expect_error([] { AdamW(1e-3f, 1.0f); }, {"AdamW", "beta1", "[0, 1)"});
  expect_error([] { AdamW(1e-3f, 0.9f, -0.1f); }, {"AdamW", "beta2", "[0, 1)"});
  expect_error([] { AdamW(1e-3f, 0.9f, 0.999f, 0.0f); }, {"AdamW", "epsilon"});
  expect_error([] { AdamW(1e-3f, 0.9f, 0.999f, 1e-8f, -0.01f); }, {"AdamW", "weight_decay"});
}

TEST(AdamW, TrainerStateRecordsItsName) {
  ParameterPtr w;
  Trainer trainer(single_parameter({1, 2}, w), std::make_shared<AdamW>(0.1f));
  backward_with_gradient(w, {1, 1});
  trainer.step(1);
  EXPECT_EQ(trainer.state_metadata().at("optimizer"), "adamw");
  // An Adam trainer refuses AdamW's state: same slots, different update.
  ParameterPtr v;
  Trainer adam(single_parameter({1, 2}, v), std::make_shared<Adam>(0.1f));
  expect_error([&] { adam.load_state(trainer.state(), trainer.state_metadata()); },
               {"Trainer::load_state", "optimizer 'adamw'", "uses 'adam'"});
}

}  // namespace
}  // namespace cairn
