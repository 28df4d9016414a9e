// Training end to end: losses (values, reductions, gradients), the optimizers through the Trainer
// against hand computation, what a step must not touch, small training runs that must learn,
// checkpoints that resume bit for bit, and the GPU against the CPU where a device is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cairn/blocks/checkpoint.h"
#include "cairn/blocks/layers.h"
#include "cairn/blocks/loss.h"
#include "cairn/blocks/lr_schedule.h"
#include "cairn/blocks/optimizer.h"
#include "cairn/blocks/safetensors.h"
#include "cairn/blocks/trainer.h"
#include "cairn/kernels/loss.h"
#include "support/test_support.h"

namespace cairn {
namespace {

using testing::expect_close;
using testing::expect_error;
using testing::expect_gradients_match;

const Device kCpu = Device::cpu();

Tensor values(const std::vector<float>& data, const Shape& shape, const Device& device = kCpu) {
  return Tensor::from_vector(data, shape, device);
}

// The exact bits, so that EXPECT_EQ tells -0 from +0 and fails on NaN.
std::vector<uint32_t> bits(const Tensor& tensor) {
  const std::vector<float> data = tensor.to_vector();
  std::vector<uint32_t> out(data.size());
  std::memcpy(out.data(), data.data(), data.size() * sizeof(float));
  return out;
}

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "cairn_training_test_" + name + ".safetensors";
}

// ---- Losses: values ----

// log(e + e^2 + e^3) - 3 and log(3): row 0 from the issue, row 1 uniform logits.
const double kXentRow0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3.0;
const double kXentRow1 = std::log(3.0);

TEST(Losses, SoftmaxCrossEntropyMatchesHandComputedValues) {
  const Tensor logits = values({1, 2, 3, 0, 0, 0}, {2, 3});
  const Tensor labels = Tensor::from_int32({2, 0}, {2}, kCpu);
  const Tensor none = SoftmaxCrossEntropyLoss(Reduction::kNone)(logits, labels);
  EXPECT_EQ(none.shape(), (Shape{2}));
  expect_close(none.to_vector(), {float(kXentRow0), float(kXentRow1)}, 1e-6, 1e-6);
  const Tensor mean = SoftmaxCrossEntropyLoss()(logits, labels);
  EXPECT_EQ(mean.shape(), (Shape{}));
  EXPECT_NEAR(mean.item(), (kXentRow0 + kXentRow1) / 2, 1e-6);
  EXPECT_NEAR(SoftmaxCrossEntropyLoss(Reduction::kSum)(logits, labels).item(),
              kXentRow0 + kXentRow1, 1e-6);
}

TEST(Losses, L2MatchesHandComputedValues) {
  // Row 0: 0.5 * mean(1, 4) = 1.25. Row 1: 0.5 * mean(4, 4) = 2.
  const Tensor pred = values({1, 2, 3, -1}, {2, 2});
  const Tensor label = values({0, 0, 1, 1}, {2, 2});
  expect_close(L2Loss(Reduction::kNone)(pred, label).to_vector(), {1.25f, 2.0f}, 0, 0);
  EXPECT_FLOAT_EQ(L2Loss()(pred, label).item(), 1.625f);
  EXPECT_FLOAT_EQ(L2Loss(Reduction::kSum)(pred, label).item(), 3.25f);
}

TEST(Losses, L2TakesOneValueASampleWithOrWithoutTheTrailingOne) {
  // 0.5 * (pred - label)^2 per sample: 0.5 * 4, 0.5 * 0.25.
  const std::vector<float> expected = {2.0f, 0.125f};
  expect_close(ops::l2_loss(values({3, 1}, {2}), values({1, 1.5f}, {2})).to_vector(), expected, 0,
               0);
  expect_close(ops::l2_loss(values({3, 1}, {2, 1}), values({1, 1.5f}, {2})).to_vector(), expected,
               0, 0);
  expect_close(ops::l2_loss(values({3, 1}, {2}), values({1, 1.5f}, {2, 1})).to_vector(), expected,
               0, 0);
}

TEST(Losses, L2RejectsMismatchedShapesAndDtypes) {
  expect_error(
      [] {
        ops::l2_loss(values({1, 2, 3, 4}, {2, 2}), values({1, 2}, {2}));
      },
      {"l2_loss", "label shape (2,)", "pred shape (2, 2)"});
  expect_error(
      [] {
        ops::l2_loss(values({1, 2, 3, 4}, {1, 2, 2}), values({1, 2, 3, 4}, {1, 2, 2}));
      },
      {"l2_loss", "(N, C) or (N)", "(1, 2, 2)"});
  expect_error(
      [] {
        ops::l2_loss(values({}, {2, 0}), values({}, {2, 0}));
      },
      {"l2_loss", "at least one value"});
  expect_error(
      [] {
        ops::l2_loss(values({1, 2}, {2}), Tensor::from_int32({1, 2}, {2}, kCpu));
      },
      {"l2_loss", "label must be float32", "int32"});
}

TEST(Losses, AnEmptyBatchGivesAnEmptyLossAndANaNMean) {
  const Tensor empty =
      L2Loss(Reduction::kNone)(Tensor::zeros({0, 3}, kCpu), Tensor::zeros({0, 3}, kCpu));
  EXPECT_EQ(empty.shape(), (Shape{0}));
  EXPECT_TRUE(
      std::isnan(L2Loss()(Tensor::zeros({0, 3}, kCpu), Tensor::zeros({0, 3}, kCpu)).item()));
}

// ---- Losses: gradients ----

TEST(Losses, SoftmaxCrossEntropyGradientsMatchFiniteDifferences) {
  const Tensor labels = Tensor::from_int32({2, 0, 1}, {3}, kCpu);
  for (const Reduction reduction : {Reduction::kMean, Reduction::kSum}) {
    SCOPED_TRACE(reduction_name(reduction));
    const SoftmaxCrossEntropyLoss loss(reduction);
    expect_gradients_match([&](const std::vector<Tensor>& in) { return loss(in[0], labels); },
                           {testing::random_tensor({3, 4}, 11, kCpu, -2.0f, 2.0f)});
  }
  // kNone, reduced by a weighted sum so that every sample's gradient is scaled differently.
  const Tensor weights = values({1.0f, -2.0f, 0.5f}, {3});
  expect_gradients_match(
      [&](const std::vector<Tensor>& in) {
        return ops::sum(SoftmaxCrossEntropyLoss(Reduction::kNone)(in[0], labels) * weights);
      },
      {testing::random_tensor({3, 4}, 12, kCpu, -2.0f, 2.0f)});
}

TEST(Losses, L2GradientsMatchFiniteDifferences) {
  const Tensor label = testing::random_tensor({3, 5}, 21, kCpu);
  for (const Reduction reduction : {Reduction::kMean, Reduction::kSum}) {
    SCOPED_TRACE(reduction_name(reduction));
    const L2Loss loss(reduction);
    expect_gradients_match([&](const std::vector<Tensor>& in) { return loss(in[0], label); },
                           {testing::random_tensor({3, 5}, 22, kCpu, -2.0f, 2.0f)});
  }
  const Tensor weights = values({1.0f, -2.0f, 0.5f}, {3});
  expect_gradients_match(
      [&](const std::vector<Tensor>& in) {
        return ops::sum(L2Loss(Reduction::kNone)(in[0], label) * weights);
      },
      {testing::random_tensor({3, 5}, 23, kCpu, -2.0f, 2.0f)});
  // One value a sample, the label carrying the trailing 1.
  const Tensor column = testing::random_tensor({4, 1}, 24, kCpu);
  expect_gradients_match(
      [&](const std::vector<Tensor>& in) { return L2Loss(Reduction::kSum)(in[0], column); },
      {testing::random_tensor({4}, 25, kCpu)});
}

TEST(Losses, TheLabelGetsNoGradient) {
  Tensor pred = values({1, 2}, {1, 2});
  Tensor label = values({0, 0}, {1, 2});
  pred.attach_grad();
  label.attach_grad();
  {
    autograd::RecordScope record;
    L2Loss()(pred, label).backward();
  }
  expect_close(pred.grad().to_vector(), {0.5f, 1.0f}, 1e-7, 0);  // (pred - label) / C
  EXPECT_EQ(label.grad().to_vector(), (std::vector<float>{0, 0}));
}

// ---- Optimizers through the Trainer ----

// One parameter "w" = initial, in a dict of its own.
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

TEST(Trainer, SgdStepMatchesHandComputation) {
  ParameterPtr w;
  Trainer trainer(single_parameter({1, 2}, w), std::make_shared<SGD>(0.1f));
  backward_with_gradient(w, {3, -4});
  trainer.step(2);  // g = [1.5, -2]
  expect_close(w->data().to_vector(), {1 - 0.1f * 1.5f, 2 + 0.1f * 2}, 1e-7, 1e-7);
  EXPECT_EQ(trainer.steps(), 1);
  EXPECT_TRUE(trainer.state().empty());  // no momentum, no slot
  // The gradient is left alone.
  EXPECT_EQ(w->grad().to_vector(), (std::vector<float>{3, -4}));
}

TEST(Trainer, SgdWithMomentumAndWeightDecayMatchesHandComputation) {
  const double lr = 0.1, momentum = 0.9, wd = 0.01, scale = 0.5;
  ParameterPtr w;
  Trainer trainer(single_parameter({1, 2}, w), std::make_shared<SGD>(lr, momentum, wd));
  std::vector<double> weight = {1, 2}, velocity = {0, 0};
  const std::vector<std::vector<float>> grads = {{3, -4}, {-1, 0.5f}, {2, 2}};
  for (const auto& grad : grads) {
    backward_with_gradient(w, grad);
    trainer.step(2);
    for (size_t i = 0; i < 2; ++i) {
      const double g = scale * grad[i] + wd * weight[i];
      velocity[i] = momentum * velocity[i] + g;
      weight[i] -= lr * velocity[i];
    }
    expect_close(w->data().to_vector(), {float(weight[0]), float(weight[1])}, 1e-6, 1e-6);
  }
  const NamedTensors state = trainer.state();
  ASSERT_EQ(state.size(), 1u);
  EXPECT_EQ(state[0].first, "w.momentum");
  expect_close(state[0].second.to_vector(), {float(velocity[0]), float(velocity[1])}, 1e-6, 1e-6);
}

TEST(Trainer, AdamTwoStepsMatchHandComputedReference) {
  const double lr = 0.01, b1 = 0.8, b2 = 0.95, eps = 1e-6, wd = 0.1, scale = 0.25;
  ParameterPtr w;
  Trainer trainer(single_parameter({0.5f, -1.5f, 3}, w),
                  std::make_shared<Adam>(lr, b1, b2, eps, wd));
  std::vector<double> weight = {0.5, -1.5, 3}, mean(3, 0), variance(3, 0);
  const std::vector<std::vector<float>> grads = {{4, -2, 0}, {-1, 6, 0.5f}};
  for (size_t t = 1; t <= grads.size(); ++t) {
    backward_with_gradient(w, grads[t - 1]);
    trainer.step(4);
    for (size_t i = 0; i < 3; ++i) {
      const double g = scale * grads[t - 1][i] + wd * weight[i];
      mean[i] = b1 * mean[i] + (1 - b1) * g;
      variance[i] = b2 * variance[i] + (1 - b2) * g * g;
      const double mean_hat = mean[i] / (1 - std::pow(b1, double(t)));
      const double variance_hat = variance[i] / (1 - std::pow(b2, double(t)));
      weight[i] -= lr * mean_hat / (std::sqrt(variance_hat) + eps);
    }
    expect_close(w->data().to_vector(), {float(weight[0]), float(weight[1]), float(weight[2])},
                 1e-6, 1e-6, "after step " + std::to_string(t));
  }
  const NamedTensors state = trainer.state();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state[0].first, "w.mean");
  EXPECT_EQ(state[1].first, "w.variance");
  expect_close(state[1].second.to_vector(),
               {float(variance[0]), float(variance[1]), float(variance[2])}, 1e-9, 1e-5);
}

// A weight, a frozen parameter, a parameter frozen after construction and a constant.
class WithConstant : public Block {
 public:
  WithConstant() : Block("WithConstant") {
    w = register_parameter("w", {2});
    frozen = register_parameter("frozen", {2}, GradReq::kNull);
    late = register_parameter("late", {2});
    c = register_constant("c", values({0.25f, -0.75f}, {2}));
  }
  Tensor forward(const Tensor& x) override {
    return x * w->data() + frozen->data() + late->data() * c->data();
  }
  ParameterPtr w, frozen, late, c;
};

TEST(Trainer, StepLeavesConstantsAndNullGradParametersBitIdentical) {
  for (const OptimizerPtr& optimizer :
       {OptimizerPtr(std::make_shared<SGD>(0.5f, 0.9f, 0.1f)),
        OptimizerPtr(std::make_shared<Adam>(0.5f, 0.9f, 0.999f, 1e-8f, 0.1f))}) {
    SCOPED_TRACE(optimizer->str());
    auto net = make<WithConstant>();
    net->initialize(init::uniform(1.0f), kCpu, 5);
    net->late->set_grad_req(GradReq::kNull);
    const std::vector<uint32_t> frozen = bits(net->frozen->data());
    const std::vector<uint32_t> late = bits(net->late->data());
    const std::vector<uint32_t> constant = bits(net->c->data());
    const std::vector<uint32_t> weight = bits(net->w->data());
    Trainer trainer(net->collect_params(), optimizer);
    for (int i = 0; i < 3; ++i) {
      {
        autograd::RecordScope record;
        L2Loss()((*net)(values({1, 2, 3, 4}, {2, 2})), values({0, 0, 0, 0}, {2, 2})).backward();
      }
      trainer.step(1);
    }
    EXPECT_EQ(bits(net->frozen->data()), frozen);
    EXPECT_EQ(bits(net->late->data()), late);
    EXPECT_EQ(bits(net->c->data()), constant);
    EXPECT_NE(bits(net->w->data()), weight);
    // Only the weight has optimizer state.
    for (const auto& [name, slot] : trainer.state()) EXPECT_EQ(name.rfind("w.", 0), 0u) << name;
  }
}

TEST(Trainer, StepNamesADeferredParameter) {
  auto net = make<Sequential>();
  net->add(make<Dense>(4, "relu"), make<Dense>(2));
  net->initialize(init::uniform(), kCpu, 0);
  Trainer trainer(net->collect_params(), std::make_shared<SGD>(0.1f));
  expect_error([&] { trainer.step(1); }, {"Trainer::step", "'0.weight'", "deferred", "forward"});
  auto uninitialised = make<Dense>(3, "", 2);
  Trainer other(uninitialised->collect_params(), std::make_shared<SGD>(0.1f));
  expect_error([&] { other.step(1); }, {"Trainer::step", "'weight'", "initialize()"});
}

TEST(Trainer, RejectsBadHyperparametersAndBatchSizes) {
  expect_error([] { SGD(-0.1f); }, {"SGD", "learning_rate", "-0.1"});
  expect_error([] { SGD(0.1f, 1.0f); }, {"SGD", "momentum", "[0, 1)", "1"});
  expect_error([] { SGD(0.1f, -0.5f); }, {"SGD", "momentum", "[0, 1)"});
  expect_error([] { SGD(0.1f, 0.0f, -1.0f); }, {"SGD", "weight_decay"});
  expect_error([] { Adam(std::nanf("")); }, {"Adam", "learning_rate"});
  expect_error([] { Adam(1e-3f, 1.0f); }, {"Adam", "beta1", "[0, 1)"});
  expect_error([] { Adam(1e-3f, 0.9f, -0.1f); }, {"Adam", "beta2", "[0, 1)"});
  expect_error([] { Adam(1e-3f, 0.9f, 0.999f, 0.0f); }, {"Adam", "epsilon"});
  SGD sgd(0.1f);
  expect_error([&] { sgd.set_learning_rate(-1.0f); }, {"sgd", "learning_rate", "-1"});
  EXPECT_FLOAT_EQ(sgd.learning_rate(), 0.1f);
  ParameterPtr w;
  Trainer trainer(single_parameter({1}, w), std::make_shared<SGD>(0.1f));
  expect_error([&] { trainer.step(0); }, {"Trainer::step", "batch_size", "0"});
  expect_error([] { Trainer(ParameterDict(), nullptr); }, {"Trainer", "optimizer is null"});
}

TEST(Trainer, SetLearningRateTakesEffectAtTheNextStep) {
  ParameterPtr w;
  Trainer trainer(single_parameter({1}, w), std::make_shared<SGD>(0.1f));
  trainer.set_learning_rate(0.5f);
  EXPECT_FLOAT_EQ(trainer.learning_rate(), 0.5f);
  backward_with_gradient(w, {1});
  trainer.step(1);
  EXPECT_FLOAT_EQ(w->data().item(), 0.5f);
}

TEST(Trainer, StateMetadataWritesFloatsThatReadBackExactly) {
  ParameterPtr w;
  Trainer trainer(single_parameter({1, 2}, w), std::make_shared<Adam>(0.1f, 0.9f, 0.999f, 1e-8f));
  backward_with_gradient(w, {1, 1});
  trainer.step(1);
  const auto metadata = trainer.state_metadata();
  EXPECT_EQ(metadata.at("optimizer"), "adam");
  EXPECT_EQ(metadata.at("optimizer.learning_rate"), "0.100000001");  // 0.1f, "%.9g"
  EXPECT_EQ(std::strtof(metadata.at("optimizer.beta2").c_str(), nullptr), 0.999f);
  EXPECT_EQ(std::strtof(metadata.at("optimizer.epsilon").c_str(), nullptr), 1e-8f);
  EXPECT_EQ(metadata.at("trainer.steps"), "1");
  EXPECT_EQ(metadata.at("trainer.updates.w"), "1");
}

TEST(Trainer, LoadStateRestoresHyperparametersCountsAndSlots) {
  ParameterPtr w;
  Trainer source(single_parameter({1, 2}, w), std::make_shared<SGD>(0.2f, 0.5f));
  backward_with_gradient(w, {1, -1});
  source.step(1);
  source.step(1);
  ParameterPtr w2;
  Trainer target(single_parameter({1, 2}, w2), std::make_shared<SGD>(0.1f));  // no momentum
  target.load_state(source.state(), source.state_metadata());
  EXPECT_EQ(target.steps(), 2);
  EXPECT_FLOAT_EQ(target.learning_rate(), 0.2f);
  ASSERT_EQ(target.state().size(), 1u);
  EXPECT_EQ(bits(target.state()[0].second), bits(source.state()[0].second));
}

TEST(Trainer, LoadStateListsEveryMismatchAndChangesNothing) {
  ParameterPtr w;
  Trainer trainer(single_parameter({1, 2}, w), std::make_shared<Adam>(0.1f));
  backward_with_gradient(w, {1, -1});
  trainer.step(1);
  const NamedTensors state = trainer.state();
  const auto metadata = trainer.state_metadata();

  ParameterPtr v;
  Trainer sgd(single_parameter({1, 2}, v), std::make_shared<SGD>(0.1f, 0.9f));
  expect_error([&] { sgd.load_state(state, metadata); },
               {"Trainer::load_state", "optimizer 'adam'", "uses 'sgd'"});

  Trainer adam(single_parameter({1, 2}, v), std::make_shared<Adam>(0.3f));
  NamedTensors bad = {{"w.mean", Tensor::zeros({3}, kCpu)},
                      {"x.mean", Tensor::zeros({2}, kCpu)},
                      {"w.velocity", Tensor::zeros({2}, kCpu)}};
  auto bad_metadata = metadata;
  bad_metadata["optimizer.beta1"] = "1.5";
  bad_metadata["trainer.steps"] = "many";
  expect_error([&] { adam.load_state(bad, bad_metadata); },
               {"'w.mean': shape (3,)", "'x.mean'", "no slot 'velocity'", "beta1", "'many'"});
  // Half of a parameter's slots.
  expect_error([&] { adam.load_state({state[0]}, metadata); }, {"'w.variance': missing"});
  EXPECT_EQ(adam.steps(), 0);
  EXPECT_FLOAT_EQ(adam.learning_rate(), 0.3f);
  EXPECT_TRUE(adam.state().empty());
}

// ---- Learning ----

// Two Gaussian-ish clouds, linearly separable with a margin: class 1 where x0 + x1 > 0, and no
// point closer than 0.5 to that line (points inside the band are pushed out along the normal).
void separable_points(int64_t n, uint64_t seed, Tensor& x, Tensor& labels) {
  std::vector<float> xs = Tensor::uniform({n, 2}, -2.0f, 2.0f, seed, kCpu).to_vector();
  std::vector<int32_t> ys(static_cast<size_t>(n), 0);
  const float kMargin = 0.5f;
  for (int64_t i = 0; i < n; ++i) {
    float& a = xs[size_t(2 * i)];
    float& b = xs[size_t(2 * i + 1)];
    const float distance = (a + b) / std::sqrt(2.0f);
    const float sign = distance >= 0 ? 1.0f : -1.0f;
    if (std::abs(distance) < kMargin) {
      const float push = (kMargin - std::abs(distance)) * sign / std::sqrt(2.0f);
      a += push;
      b += push;
    }
    ys[size_t(i)] = sign > 0 ? 1 : 0;
  }
  x = values(xs, {n, 2});
  labels = Tensor::from_int32(ys, {n}, kCpu);
}

// Xavier for the weights and zeros for the biases, as Gluon's Dense does (Xavier needs a fan).
void init_xavier(Block& net, const Device& device, uint64_t seed) {
  net.collect_params(".*weight").initialize(init::xavier(), device, seed);
  net.collect_params(".*bias").initialize(init::zeros(), device, seed);
}

std::shared_ptr<Sequential> small_classifier() {
  auto net = make<Sequential>();
  net->add(make<Dense>(16, "relu"), make<Dense>(2));
  return net;
}

float train_classifier(const OptimizerPtr& optimizer, float& initial_loss, float& accuracy) {
  Tensor x, labels;
  separable_points(64, 7, x, labels);
  auto net = small_classifier();
  init_xavier(*net, kCpu, 3);
  Trainer trainer(net->collect_params(), optimizer);
  const SoftmaxCrossEntropyLoss loss_fn;  // mean over the batch, so step(1)
  float loss_value = 0;
  for (int step = 0; step < 200; ++step) {
    {
      autograd::RecordScope record;
      Tensor loss = loss_fn((*net)(x), labels);
      loss.backward();
      loss_value = loss.item();
    }
    if (step == 0) initial_loss = loss_value;
    trainer.step(1);
  }
  const Tensor logits = (*net)(x);
  loss_value = loss_fn(logits, labels).item();
  const std::vector<int32_t> predicted = ops::argmax_rows(logits).to_int32_vector();
  const std::vector<int32_t> truth = labels.to_int32_vector();
  int64_t correct = 0;
  for (size_t i = 0; i < truth.size(); ++i) correct += predicted[i] == truth[i] ? 1 : 0;
  accuracy = float(correct) / float(truth.size());
  return loss_value;
}

// The start is about chance or worse: log 2 = 0.69 for an untrained net, 1.05 for this seed's
// Xavier draw. The data are separable with margin 0.5 and the net can represent the separating line
// exactly, so the loss can go to 0; a mean loss of 0.02 means the true class gets a (geometric
// mean) probability above e^-0.02 = 0.98. 200 full-batch steps reach 2e-4 (SGD with momentum),
// 1.6e-3 (Adam) and 1.4e-2 (plain SGD, which converges more slowly: its bound is 0.05) here; the
// bounds leave a factor 3 to 100 for another BLAS's rounding or a reordered sum.
TEST(Training, SgdWithMomentumLearnsSeparablePoints) {
  float initial = 0, accuracy = 0;
  const float final_loss = train_classifier(std::make_shared<SGD>(0.1f, 0.9f), initial, accuracy);
  EXPECT_GT(initial, 0.5f);
  EXPECT_LT(final_loss, 0.02f) << "initial " << initial;
  EXPECT_EQ(accuracy, 1.0f);
}

TEST(Training, PlainSgdLearnsSeparablePoints) {
  float initial = 0, accuracy = 0;
  const float final_loss = train_classifier(std::make_shared<SGD>(0.1f), initial, accuracy);
  EXPECT_GT(initial, 0.5f);
  EXPECT_LT(final_loss, 0.05f) << "initial " << initial;
  EXPECT_EQ(accuracy, 1.0f);
}

TEST(Training, AdamLearnsSeparablePoints) {
  float initial = 0, accuracy = 0;
  const float final_loss = train_classifier(std::make_shared<Adam>(0.01f), initial, accuracy);
  EXPECT_GT(initial, 0.5f);
  EXPECT_LT(final_loss, 0.02f) << "initial " << initial;
  EXPECT_EQ(accuracy, 1.0f);
}

// y = 2 x0 - x1 + 0.5, fitted with L2Loss: a line the net represents exactly.
TEST(Training, AdamFitsARegressionWithL2Loss) {
  const Tensor x = Tensor::uniform({64, 2}, -1.0f, 1.0f, 9, kCpu);
  std::vector<float> xs = x.to_vector(), ys(64);
  for (size_t i = 0; i < 64; ++i) ys[i] = 2 * xs[2 * i] - xs[2 * i + 1] + 0.5f;
  const Tensor y = values(ys, {64, 1});
  auto net = make<Sequential>();
  net->add(make<Dense>(16, "relu"), make<Dense>(1));
  init_xavier(*net, kCpu, 4);
  Trainer trainer(net->collect_params(), std::make_shared<Adam>(0.01f));
  float initial = 0, last = 0;
  for (int step = 0; step < 300; ++step) {
    autograd::RecordScope record;
    Tensor loss = L2Loss(Reduction::kSum)((*net)(x), y);
    loss.backward();
    last = loss.item() / 64;
    if (step == 0) initial = last;
    trainer.step(64);  // summed loss: step(batch_size) gives the gradient of the mean
  }
  // Var(y) = 4/3 + 1/3, so predicting the mean alone leaves 0.5 * 5/3 = 0.83 (the start: 0.81);
  // 0.01 is about 1% of that, an RMS error of 0.14 against a spread of 1.3. It reaches 6e-4.
  EXPECT_GT(initial, 0.3f);
  EXPECT_LT(last, 0.01f) << "initial " << initial;
}

// ---- Checkpoints ----

struct Batch {
  Tensor x;
  Tensor labels;
};

std::vector<Batch> fixed_batches() {
  std::vector<Batch> out;
  for (uint64_t i = 0; i < 3; ++i) {
    Batch batch;
    separable_points(8, 100 + i, batch.x, batch.labels);
    out.push_back(batch);
  }
  return out;
}

void train_steps(Block& net, Trainer& trainer, const std::vector<Batch>& batches, int first,
                 int count) {
  for (int step = first; step < first + count; ++step) {
    const Batch& batch = batches[size_t(step) % batches.size()];
    {
      autograd::RecordScope record;
      SoftmaxCrossEntropyLoss(Reduction::kSum)(net(batch.x), batch.labels).backward();
    }
    trainer.step(batch.x.dim(0));
  }
}

std::vector<std::vector<uint32_t>> parameter_bits(const Block& net) {
  std::vector<std::vector<uint32_t>> out;
  for (const auto& [name, parameter] : net.collect_params()) out.push_back(bits(parameter->data()));
  return out;
}

void expect_bit_identical_resume(const std::function<OptimizerPtr()>& make_optimizer,
                                 const OptimizerPtr& fresh_optimizer, const std::string& tag) {
  const std::vector<Batch> batches = fixed_batches();
  const std::string path = temp_path(tag);
  constexpr int kBefore = 5, kAfter = 7;

  auto net = small_classifier();
  init_xavier(*net, kCpu, 1);
  Trainer trainer(net->collect_params(), make_optimizer());
  train_steps(*net, trainer, batches, 0, kBefore);
  save_checkpoint(path, *net, trainer, {{"epoch", "3"}});
  train_steps(*net, trainer, batches, kBefore, kAfter);
  const auto expected = parameter_bits(*net);

  // A fresh network (another seed, shapes still deferred) and a trainer whose optimizer has other
  // hyperparameters: the checkpoint brings back all of it.
  auto resumed = small_classifier();
  init_xavier(*resumed, kCpu, 99);
  Trainer resumed_trainer(resumed->collect_params(), fresh_optimizer);
  const auto metadata = load_checkpoint(path, *resumed, resumed_trainer, kCpu);
  EXPECT_EQ(metadata.at("epoch"), "3");
  EXPECT_EQ(resumed_trainer.steps(), kBefore);
  EXPECT_EQ(resumed_trainer.optimizer().hyperparameters(), make_optimizer()->hyperparameters());
  train_steps(*resumed, resumed_trainer, batches, kBefore, kAfter);
  const auto actual = parameter_bits(*resumed);
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i)
    EXPECT_EQ(actual[i], expected[i]) << "parameter " << i;
  EXPECT_EQ(resumed_trainer.steps(), kBefore + kAfter);
  std::remove(path.c_str());
}

TEST(Checkpoint, SgdWithMomentumResumesBitForBit) {
  expect_bit_identical_resume([] { return std::make_shared<SGD>(0.05f, 0.9f, 1e-3f); },
                              std::make_shared<SGD>(0.3f, 0.5f), "sgd");
}

TEST(Checkpoint, AdamResumesBitForBit) {
  expect_bit_identical_resume(
      [] { return std::make_shared<Adam>(0.01f, 0.85f, 0.99f, 1e-7f, 1e-4f); },
      std::make_shared<Adam>(), "adam");
}

// ---- Learning-rate schedules: what a checkpoint records so that a resumed run continues the
// schedule it was trained under. ----

TEST(LearningRateSchedule, CosineIsTheSamplesFormulaBitForBitAndEndsAtItsHorizon) {
  const float base = 0.1f;
  const int64_t total = 47;
  const auto schedule = LearningRateSchedule::cosine(base, total);
  for (int64_t step = 0; step < total; ++step) {
    // train_fashion_mnist's formula before schedules were data.
    const float expected = float(base * 0.5 * (1.0 + std::cos(3.141592653589793 * double(step) /
                                                              double(total))));
    ASSERT_EQ(schedule.rate(step), expected) << "step " << step;
  }
  EXPECT_EQ(schedule.rate(0), base);
  EXPECT_EQ(schedule.end_step(), total);
  expect_error([&] { schedule.rate(total); }, {"past the end", "cosine from 0.1 to 0 over 47"});
  expect_error([&] { schedule.rate(-1); }, {"before the schedule"});
}

TEST(LearningRateSchedule, WarmUpRisesLinearlyAndARestartStartsLater) {
  const auto constant = LearningRateSchedule::constant(0.5f, /*warmup_steps=*/4);
  EXPECT_EQ(constant.rate(0), 0.125f);
  EXPECT_EQ(constant.rate(1), 0.25f);
  EXPECT_EQ(constant.rate(3), 0.5f);
  EXPECT_EQ(constant.rate(1000000), 0.5f);
  EXPECT_EQ(constant.end_step(), INT64_MAX);
  // Warm-up 2 of a 10-step cosine started at step 30: steps 30, 31 warm up, 32..39 decay.
  const auto restarted = LearningRateSchedule::cosine(0.2f, 10, 2, 30);
  EXPECT_EQ(restarted.rate(30), 0.1f);
  EXPECT_EQ(restarted.rate(31), 0.2f);
  EXPECT_EQ(restarted.rate(32), 0.2f);  // the cosine's first step is its base
  EXPECT_EQ(restarted.rate(36), float(0.2 * 0.5 * (1.0 + std::cos(3.141592653589793 * 4 / 8))));
  EXPECT_LT(restarted.rate(39), 0.01f);
  expect_error([&] { restarted.rate(29); }, {"starts at step 30"});
  expect_error([&] { restarted.rate(40); }, {"past the end"});
  EXPECT_EQ(restarted.str(), "cosine from 0.2 to 0 over 10 steps (steps 30 to 39), warm-up 2 steps");
}

TEST(LearningRateSchedule, RefusesWhatIsNotASchedule) {
  expect_error([] { LearningRateSchedule::cosine(0.1f, 0); }, {"horizon_steps (0)"});
  expect_error([] { LearningRateSchedule::cosine(0.1f, 5, 5); }, {"warmup_steps (5)"});
  expect_error([] { LearningRateSchedule::cosine(-0.1f, 5); }, {"base_rate"});
  expect_error([] { LearningRateSchedule::constant(NAN); }, {"base_rate"});
  expect_error([] { LearningRateSchedule::constant(0.1f, -1); }, {"warmup_steps"});
  expect_error([] { LearningRateSchedule::constant(0.1f, 0, -3); }, {"start_step"});
  LearningRateSchedule with_horizon;
  with_horizon.horizon_steps = 10;
  expect_error([&] { with_horizon.validate(); }, {"constant schedule has no horizon"});
}

TEST(LearningRateSchedule, MetadataReadsBackToTheBitAndNamesEveryBadEntry) {
  const float odd_rate = std::nextafter(0.1f, 1.0f);
  for (const auto& schedule :
       {LearningRateSchedule::cosine(odd_rate, 60, 3, 12), LearningRateSchedule::constant(1e-3f),
        LearningRateSchedule::cosine(0.1f, 7)}) {
    const auto metadata = schedule.metadata();
    EXPECT_TRUE(LearningRateSchedule::in_metadata(metadata));
    const auto back = LearningRateSchedule::from_metadata(metadata);
    EXPECT_TRUE(back == schedule) << back.str() << " vs " << schedule.str();
    EXPECT_EQ(back.base_rate, schedule.base_rate);
  }
  EXPECT_FALSE(LearningRateSchedule::cosine(odd_rate, 60) == LearningRateSchedule::cosine(0.1f, 60));
  EXPECT_FALSE(LearningRateSchedule::cosine(0.1f, 60) == LearningRateSchedule::cosine(0.1f, 61));
  EXPECT_FALSE(LearningRateSchedule::in_metadata({{"epoch", "2"}}));
  auto bad = LearningRateSchedule::cosine(0.1f, 60).metadata();
  bad["lr_schedule.kind"] = "linear";
  bad["lr_schedule.base_rate"] = "0.1x";
  bad["lr_schedule.horizon_steps"] = "-60";
  bad.erase("lr_schedule.warmup_steps");
  expect_error([&] { LearningRateSchedule::from_metadata(bad); },
               {"'lr_schedule.kind': 'linear' is not constant or cosine",
                "'lr_schedule.base_rate': '0.1x' is not a float",
                "'lr_schedule.horizon_steps': '-60' is not a whole number",
                "'lr_schedule.warmup_steps': missing"});
  auto short_horizon = LearningRateSchedule::cosine(0.1f, 60).metadata();
  short_horizon["lr_schedule.horizon_steps"] = "0";
  expect_error([&] { LearningRateSchedule::from_metadata(short_horizon); }, {"horizon_steps (0)"});
}

TEST(LearningRateSchedule, ACheckpointCarriesItAndAResumedRunTakesTheSameRates) {
  auto net = small_classifier();
  init_xavier(*net, kCpu, 1);
  Trainer trainer(net->collect_params(), std::make_shared<SGD>(0.1f, 0.9f));
  const auto schedule = LearningRateSchedule::cosine(0.1f, 8, 2);
  const std::vector<Batch> batches = fixed_batches();
  auto scheduled_steps = [&](Block& block, Trainer& t, int first, int count) {
    for (int step = first; step < first + count; ++step) {
      t.set_learning_rate(schedule.rate(step));
      train_steps(block, t, batches, step, 1);
    }
  };
  scheduled_steps(*net, trainer, 0, 3);
  const std::string path = temp_path("schedule");
  auto metadata = schedule.metadata();
  metadata["epoch"] = "1";
  save_checkpoint(path, *net, trainer, metadata);
  scheduled_steps(*net, trainer, 3, 5);
  const auto expected = parameter_bits(*net);

  auto resumed = small_classifier();
  init_xavier(*resumed, kCpu, 7);
  Trainer resumed_trainer(resumed->collect_params(), std::make_shared<SGD>(0.1f, 0.9f));
  const auto loaded = load_checkpoint(path, *resumed, resumed_trainer, kCpu);
  const auto recorded = LearningRateSchedule::from_metadata(loaded);
  EXPECT_TRUE(recorded == schedule) << recorded.str();
  scheduled_steps(*resumed, resumed_trainer, 3, 5);
  EXPECT_EQ(parameter_bits(*resumed), expected);
  std::remove(path.c_str());
}

TEST(Checkpoint, HoldsParametersSlotsAndMetadataUnderDocumentedNames) {
  auto net = small_classifier();
  init_xavier(*net, kCpu, 1);
  Trainer trainer(net->collect_params(), std::make_shared<SGD>(0.1f, 0.9f));
  train_steps(*net, trainer, fixed_batches(), 0, 2);
  const std::string path = temp_path("layout");
  save_checkpoint(path, *net, trainer, {{"epoch", "1"}});
  const SafetensorsFile file = load_safetensors(path);
  std::vector<std::string> names;
  for (const auto& [name, tensor] : file.tensors) names.push_back(name);
  for (const std::string& expected : {"0.weight", "0.bias", "1.weight", "1.bias",
                                      "optimizer.0.weight.momentum", "optimizer.1.bias.momentum"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end()) << expected;
  }
  EXPECT_EQ(names.size(), 8u);
  EXPECT_EQ(file.metadata.at("optimizer"), "sgd");
  EXPECT_EQ(file.metadata.at("trainer.steps"), "2");
  EXPECT_EQ(file.metadata.at("epoch"), "1");
  // A checkpoint is read with load_checkpoint: load_parameters refuses the optimizer's entries.
  expect_error([&] { net->load_parameters(path, kCpu); },
               {"load_parameters", "optimizer.0.weight.momentum"});
  std::remove(path.c_str());
}

TEST(Checkpoint, RefusesReservedMetadataKeys) {
  auto net = make<Dense>(2, "", 2);
  init_xavier(*net, kCpu, 1);
  Trainer trainer(net->collect_params(), std::make_shared<SGD>(0.1f));
  expect_error(
      [&] {
        save_checkpoint(temp_path("reserved"), *net, trainer, {{"trainer.steps", "9"}});
      },
      {"save_checkpoint", "'trainer.steps'", "reserved"});
}

TEST(Checkpoint, LoadingIntoAMismatchingNetworkOrTrainerSaysWhatDiffers) {
  auto net = small_classifier();
  init_xavier(*net, kCpu, 1);
  Trainer trainer(net->collect_params(), std::make_shared<Adam>());
  train_steps(*net, trainer, fixed_batches(), 0, 1);
  const std::string path = temp_path("mismatch");
  save_checkpoint(path, *net, trainer);

  auto wider = make<Sequential>();
  wider->add(make<Dense>(17, "relu", 2), make<Dense>(2, "", 17));
  init_xavier(*wider, kCpu, 1);
  const auto before = parameter_bits(*wider);
  Trainer wider_trainer(wider->collect_params(), std::make_shared<Adam>());
  expect_error(
      [&] { load_checkpoint(path, *wider, wider_trainer, kCpu); },
      {"load_checkpoint", "does not match the network", "'0.weight'", "(16, 2)", "(17, 2)"});
  EXPECT_EQ(parameter_bits(*wider), before);  // nothing loaded

  auto deeper = make<Sequential>();
  deeper->add(make<Dense>(16, "relu"), make<Dense>(2), make<Dense>(2));
  init_xavier(*deeper, kCpu, 1);
  Trainer deeper_trainer(deeper->collect_params(), std::make_shared<Adam>());
  expect_error([&] { load_checkpoint(path, *deeper, deeper_trainer, kCpu); },
               {"'2.weight': missing from the file", "'2.bias'"});

  auto same = small_classifier();
  init_xavier(*same, kCpu, 1);
  (*same)(values({0, 0}, {1, 2}));
  const auto same_before = parameter_bits(*same);
  Trainer sgd_trainer(same->collect_params(), std::make_shared<SGD>(0.1f, 0.9f));
  expect_error([&] { load_checkpoint(path, *same, sgd_trainer, kCpu); },
               {"load_checkpoint", "does not match the trainer", "optimizer 'adam'"});
  EXPECT_EQ(parameter_bits(*same), same_before);  // checked before anything changed
  std::remove(path.c_str());
}

// ---- GPU against CPU ----

class TrainingGpu : public testing::CudaTest {};

TEST_F(TrainingGpu, LossesForwardAndBackwardMatchTheCpu) {
  const Device gpu = Device::cuda(0);
  // Rows 0 and 1, a prime, and enough rows to take several blocks; widths on both sides of the
  // warp-per-row limit (1024).
  for (const int64_t rows : {0, 1, 37, 1000}) {
    for (const int64_t cols : {1, 33, 1024, 1500}) {
      SCOPED_TRACE("rows " + std::to_string(rows) + ", cols " + std::to_string(cols));
      const Tensor pred = testing::random_tensor({rows, cols}, 1, kCpu, -3.0f, 3.0f);
      const Tensor label = testing::random_tensor({rows, cols}, 2, kCpu, -3.0f, 3.0f);
      std::vector<int32_t> classes(static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) classes[size_t(r)] = int32_t((r * 7) % cols);
      const Tensor labels = Tensor::from_int32(classes, {rows}, kCpu);
      const Tensor head = testing::random_tensor({rows}, 3, kCpu);

      auto run = [&](const Device& device, auto&& loss_fn, const Tensor& target) {
        Tensor input = pred.to(device);
        input.attach_grad();
        Tensor loss;
        {
          autograd::RecordScope record;
          loss = loss_fn(input, target.to(device));
          loss.backward(head.to(device));
        }
        return std::make_pair(loss.to_host(), input.grad().to_host());
      };
      const auto l2 = [](const Tensor& p, const Tensor& t) { return ops::l2_loss(p, t); };
      const auto xent = [](const Tensor& p, const Tensor& t) {
        return ops::softmax_cross_entropy(p, t);
      };
      const auto [l2_cpu, dl2_cpu] = run(kCpu, l2, label);
      const auto [l2_gpu, dl2_gpu] = run(gpu, l2, label);
      expect_close(l2_gpu, l2_cpu, 1e-5, 1e-5, "l2 loss");
      expect_close(dl2_gpu, dl2_cpu, 1e-6, 1e-5, "l2 gradient");
      const auto [x_cpu, dx_cpu] = run(kCpu, xent, labels);
      const auto [x_gpu, dx_gpu] = run(gpu, xent, labels);
      expect_close(x_gpu, x_cpu, 1e-5, 1e-5, "cross-entropy loss");
      expect_close(dx_gpu, dx_cpu, 1e-6, 1e-5, "cross-entropy gradient");
    }
  }
}

TEST_F(TrainingGpu, L2ForwardWritesEveryRowAndNothingWhenEmpty) {
  const Device gpu = Device::cuda(0);
  const Tensor pred = testing::random_tensor({300, 2000}, 4, gpu);
  const Tensor label = testing::random_tensor({300, 2000}, 5, gpu);
  Tensor loss = Tensor::empty({300}, gpu);
  testing::poison(loss);
  kernels::cuda::l2_loss_forward(pred.data(), label.data(), 300, 2000, loss.data(),
                                 cuda::current_stream(gpu));
  expect_close(loss, ops::l2_loss(pred.to_host(), label.to_host()), 1e-6, 1e-5);
  Tensor untouched = Tensor::empty({1}, gpu);
  testing::poison(untouched);
  kernels::cuda::l2_loss_forward(pred.data(), label.data(), 0, 2000, untouched.data(),
                                 cuda::current_stream(gpu));
  EXPECT_TRUE(std::isnan(untouched.item()));
}

TEST_F(TrainingGpu, OptimizerUpdatesMatchTheCpu) {
  const Device gpu = Device::cuda(0);
  for (const int64_t n : {1, 257, 1 << 20}) {
    for (const OptimizerPtr& optimizer :
         {OptimizerPtr(std::make_shared<SGD>(0.1f)),
          OptimizerPtr(std::make_shared<SGD>(0.1f, 0.9f, 0.01f)),
          OptimizerPtr(std::make_shared<Adam>(0.01f, 0.9f, 0.999f, 1e-8f, 0.01f))}) {
      SCOPED_TRACE(optimizer->str() + ", n " + std::to_string(n));
      const Tensor start = testing::random_tensor({n}, 6, kCpu);
      Tensor w_cpu = start.clone(), w_gpu = start.to(gpu);
      std::vector<Tensor> slots_cpu, slots_gpu;
      for (size_t i = 0; i < optimizer->slot_names().size(); ++i) {
        slots_cpu.push_back(Tensor::zeros({n}, kCpu));
        slots_gpu.push_back(Tensor::zeros({n}, gpu));
      }
      for (int64_t step = 1; step <= 3; ++step) {
        const Tensor grad = testing::random_tensor({n}, 10 + uint64_t(step), kCpu);
        optimizer->update(w_cpu, grad, slots_cpu, step, 0.5f);
        optimizer->update(w_gpu, grad.to(gpu), slots_gpu, step, 0.5f);
      }
      expect_close(w_gpu, w_cpu, 1e-6, 1e-5, "weight");
      for (size_t i = 0; i < slots_cpu.size(); ++i) {
        expect_close(slots_gpu[i], slots_cpu[i], 1e-7, 1e-5, optimizer->slot_names()[i]);
      }
    }
  }
}

TEST_F(TrainingGpu, TrainingStepsMatchTheCpu) {
  const Device gpu = Device::cuda(0);
  for (const OptimizerPtr& optimizer : {OptimizerPtr(std::make_shared<SGD>(0.1f, 0.9f)),
                                        OptimizerPtr(std::make_shared<Adam>(0.01f))}) {
    SCOPED_TRACE(optimizer->str());
    auto on_cpu = small_classifier();
    auto on_gpu = small_classifier();
    init_xavier(*on_cpu, kCpu, 1);
    init_xavier(*on_gpu, gpu, 1);
    Trainer cpu_trainer(on_cpu->collect_params(), optimizer->clone());
    Trainer gpu_trainer(on_gpu->collect_params(), optimizer->clone());
    const std::vector<Batch> batches = fixed_batches();
    train_steps(*on_cpu, cpu_trainer, batches, 0, 3);
    std::vector<Batch> gpu_batches;
    for (const Batch& batch : batches)
      gpu_batches.push_back({batch.x.to(gpu), batch.labels.to(gpu)});
    train_steps(*on_gpu, gpu_trainer, gpu_batches, 0, 3);
    const ParameterDict cpu_params = on_cpu->collect_params();
    for (const auto& [name, parameter] : on_gpu->collect_params()) {
      EXPECT_TRUE(parameter->device().is_cuda()) << name;
      // cuBLAS and the CPU BLAS round differently and Adam rescales each element's step, so the
      // tolerance is a tenth of one step (lr 0.01 here): a wrong formula misses by whole steps.
      expect_close(parameter->data().to_host(), cpu_params.at(name)->data(), 1e-4, 1e-3, name);
    }
    // The state comes back to the host, named as on the CPU.
    const NamedTensors gpu_state = gpu_trainer.state();
    const NamedTensors cpu_state = cpu_trainer.state();
    ASSERT_EQ(gpu_state.size(), cpu_state.size());
    for (size_t i = 0; i < gpu_state.size(); ++i) {
      EXPECT_EQ(gpu_state[i].first, cpu_state[i].first);
      EXPECT_TRUE(gpu_state[i].second.device().is_cpu());
      expect_close(gpu_state[i].second, cpu_state[i].second, 1e-5, 1e-3, gpu_state[i].first);
    }
  }
}

}  // namespace
}  // namespace cairn
