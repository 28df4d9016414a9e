// Hardening: bad input across the public API. Every case expects a cairn::Error whose message
// names the op or class and what was wrong, and each test ends by checking that the process is
// still usable (a normal training step on a fresh network still works). Malformed files are
// written into a per-test temporary directory, removed afterwards.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cairn/blocks/idx.h"
#include "cairn/blocks/safetensors.h"
#include "support/temp_dir.h"
#include "support/test_support.h"

namespace cairn {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;

const Device kCpu = Device::cpu();

Tensor values(const std::vector<float>& data, const Shape& shape, const Device& device = kCpu) {
  return Tensor::from_vector(data, shape, device);
}

std::shared_ptr<Sequential> small_mlp(int64_t in_units = 4) {
  auto net = make<Sequential>();
  net->add(make<Dense>(8, "relu", in_units), make<Dense>(3, "", 8));
  return net;
}

// One ordinary training step on a fresh network: after any of the errors below, nothing may be
// left half-done, locked or switched on (check_numerics, recording) that breaks it.
void expect_still_usable(const Device& device = kCpu) {
  auto net = small_mlp();
  net->initialize(init::xavier(), device, 7);
  Trainer trainer(net->collect_params(), std::make_shared<SGD>(0.1f, 0.9f));
  const Tensor x = Tensor::uniform({5, 4}, -1.0f, 1.0f, 3, kCpu).to(device);
  const Tensor y = Tensor::from_int32({0, 1, 2, 1, 0}, {5}, device);
  const std::vector<float> before = net->collect_params().at("0.weight")->data().to_vector();
  Tensor loss;
  {
    autograd::RecordScope record;
    loss = SoftmaxCrossEntropyLoss()((*net)(x), y);
  }
  loss.backward();
  trainer.step(1);
  EXPECT_TRUE(std::isfinite(loss.item()));
  EXPECT_NE(net->collect_params().at("0.weight")->data().to_vector(), before)
      << "a training step after the errors did not move the weights";
  EXPECT_FALSE(check_numerics()) << "a test left check_numerics on";
  EXPECT_FALSE(autograd::is_recording()) << "a test left autograd recording";
}

// Turns check_numerics on for a scope and restores what was there, even when a test fails.
class CheckNumericsGuard {
 public:
  CheckNumericsGuard() : previous_(check_numerics()) { set_check_numerics(true); }
  ~CheckNumericsGuard() { set_check_numerics(previous_); }
  CheckNumericsGuard(const CheckNumericsGuard&) = delete;
  CheckNumericsGuard& operator=(const CheckNumericsGuard&) = delete;

 private:
  bool previous_;
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

// Each test gets a fresh directory under the system's temp directory, removed afterwards.
class HardeningFiles : public testing::TempDirTest {};

// ---- Shapes ----

TEST(Hardening, DenseRejectsAnotherFeatureCountOnceInferred) {
  auto dense = make<Dense>(3);
  dense->initialize(init::uniform(), kCpu, 1);
  EXPECT_EQ((*dense)(Tensor::ones({2, 4}, kCpu)).shape(), (Shape{2, 3}));
  expect_error(
      [&] {
        (*dense)(Tensor::ones({2, 5}, kCpu));
      },
      {"Dense(4 -> 3, linear)", "input has 5 features", "(2, 5)", "expected 4"});
  expect_error([&] { (*dense)(Tensor::ones({4}, kCpu)); },
               {"Dense(4 -> 3, linear)", "input must be (batch, features)", "(4,)"});
  expect_error([&] { (*dense)(Tensor()); }, {"Dense(4 -> 3, linear)", "undefined"});
  // The layer keeps working with the size it inferred.
  EXPECT_EQ((*dense)(Tensor::ones({7, 4}, kCpu)).shape(), (Shape{7, 3}));
  expect_still_usable();
}

TEST(Hardening, SequentialIndexOutOfRange) {
  auto net = small_mlp();
  expect_error([&] { (*net)[2]; }, {"Sequential", "index 2 out of range", "size 2"});
  expect_error([&] { (*net)[size_t(-1)]; }, {"Sequential", "out of range"});
  EXPECT_NE((*net)[1], nullptr);
  expect_still_usable();
}

TEST(Hardening, LossesRejectMismatchedShapesAndLabels) {
  const Tensor logits = Tensor::ones({4, 3}, kCpu);
  expect_error(
      [&] {
        SoftmaxCrossEntropyLoss()(logits, Tensor::from_int32({0, 1, 2}, {3}, kCpu));
      },
      {"softmax_cross_entropy", "logits (4, 3)", "labels (3,)"});
  expect_error(
      [&] {
        SoftmaxCrossEntropyLoss()(logits, Tensor::from_int32({0, 1, 7, 2}, {4}, kCpu));
      },
      {"softmax_cross_entropy", "label 7 at row 2", "outside [0, 3)"});
  expect_error([&] { SoftmaxCrossEntropyLoss()(logits, Tensor::zeros({4}, kCpu)); },
               {"softmax_cross_entropy", "labels must be int32", "float32"});
  expect_error(
      [&] {
        L2Loss()(logits, Tensor::zeros({4, 2}, kCpu));
      },
      {"l2_loss", "label shape (4, 2)", "does not match pred shape (4, 3)"});
  expect_error(
      [&] {
        L2Loss()(Tensor::zeros({2, 2, 2}, kCpu), Tensor::zeros({2, 2, 2}, kCpu));
      },
      {"l2_loss", "expects pred (N, C) or (N)", "(2, 2, 2)"});
  expect_still_usable();
}

TEST(Hardening, MatmulAndReshapeRejectShapesThatDoNotFit) {
  expect_error(
      [] {
        ops::matmul(Tensor::ones({2, 3}, kCpu), Tensor::ones({4, 5}, kCpu));
      },
      {"matmul", "inner dimensions differ", "(2, 3)", "(4, 5)"});
  expect_error(
      [] {
        Tensor::ones({2, 3}, kCpu).reshape({4, 2});
      },
      {"reshape", "cannot view (2, 3)", "6 elements", "(4, 2)"});
  expect_error(
      [] {
        Tensor::ones({2, 3}, kCpu).reshape({-1, -1});
      },
      {"reshape", "more than one -1"});
  expect_error(
      [] {
        Tensor::ones({2, 3}, kCpu).reshape({4, -1});
      },
      {"reshape", "cannot infer -1", "6 elements"});
  // Known dimensions whose product overflows int64 must be refused, not wrapped around.
  expect_error(
      [] {
        Tensor::ones({2, 3}, kCpu).reshape({int64_t(1) << 40, int64_t(1) << 40, -1});
      },
      {"reshape", "(1099511627776, 1099511627776, -1)", "more elements than int64_t can count"});
  expect_error(
      [] {
        Tensor::ones({2, 3}, kCpu).reshape({int64_t(1) << 62, 4});
      },
      {"reshape", "more elements than int64_t can count"});
  expect_still_usable();
}

// ---- Blocks: construction, names, initialisation ----

TEST(Hardening, DenseAndActivationRejectBadArguments) {
  expect_error([] { Dense(0); }, {"Dense", "units must be positive", "0"});
  expect_error([] { Dense(4, "", -2); }, {"Dense", "in_units must be >= 0", "-2"});
  expect_error([] { Dense(4, "softplusx"); },
               {"Activation", "unknown activation 'softplusx'", "relu"});
  expect_error([] { Activation("swish"); }, {"Activation", "unknown activation 'swish'"});
  expect_still_usable();
}

class TwoLayer : public Block {
 public:
  TwoLayer() : Block("TwoLayer") { hidden_ = register_block("hidden", make<Dense>(4, "relu", 3)); }
  Tensor forward(const Tensor& x) override { return (*hidden_)(x); }
  using Block::register_block;
  std::shared_ptr<Dense> hidden_;
};

TEST(Hardening, DuplicateAndMalformedNames) {
  TwoLayer block;
  expect_error([&] { block.register_block("hidden", make<Dense>(2)); },
               {"TwoLayer", "a child named 'hidden' is already registered"});
  expect_error([&] { block.register_parameter("hidden", {2}); },
               {"TwoLayer", "'hidden' is already a child block's name"});
  block.register_parameter("scale", {2});
  expect_error([&] { block.register_parameter("scale", {2}); },
               {"TwoLayer", "a parameter named 'scale' is already registered"});
  expect_error([&] { block.register_block("scale", make<Dense>(2)); },
               {"TwoLayer", "'scale' is already a parameter name"});
  expect_error([&] { block.register_block("a.b", make<Dense>(2)); },
               {"TwoLayer", "child name 'a.b'", "contain no '.'"});
  expect_error([&] { block.register_parameter("", {2}); },
               {"TwoLayer", "parameter name ''", "non-empty"});
  expect_error([&] { block.register_block("null", std::shared_ptr<Dense>()); },
               {"TwoLayer", "register_block('null') got a null block"});
  expect_error(
      [&] {
        block.register_parameter("neg", {2, -3});
      },
      {"Parameter 'neg'", "negative dimension", "(2, -3)"});
  expect_error([&] { block.collect_params("(unclosed"); }, {"collect_params", "bad pattern"});
  expect_error([&] { block.collect_params().at("nope"); },
               {"ParameterDict", "no parameter named 'nope'", "hidden.weight"});
  expect_still_usable();
}

TEST(Hardening, UninitialisedAndDeferredParameters) {
  // Known shape, never initialised: the forward names the weight and says what to do.
  auto known = make<Dense>(3, "", 4);
  expect_error(
      [&] {
        (*known)(Tensor::ones({2, 4}, kCpu));
      },
      {"parameter 'weight' of Dense(4 -> 3, linear)", "is not initialized", "call initialize()"});
  // Deferred shape, initialised: data() before the first forward says the shape is deferred.
  auto deferred = make<Dense>(3);
  deferred->initialize(init::uniform(), kCpu, 1);
  EXPECT_TRUE(deferred->weight()->is_deferred());
  expect_error([&] { deferred->weight()->data(); },
               {"parameter 'weight'", "has a deferred shape (3, 0)", "run a forward pass first"});
  expect_error([&] { deferred->weight()->grad(); }, {"parameter 'weight'", "deferred shape"});
  // Deferred shape, never initialised.
  auto bare = make<Dense>(3);
  expect_error([&] { bare->weight()->data(); },
               {"parameter 'weight'", "is not initialized", "before its first forward"});
  expect_error([&] { bare->save_parameters("/nonexistent-dir/never-written.safetensors"); },
               {"parameter 'weight'", "is not initialized"});
  // A block initialised on a device that is not there.
  if (!cuda_available()) {
    auto net = small_mlp();
    expect_error([&] { net->initialize(init::uniform(), Device::cuda(0), 1); },
                 {"Tensor::empty", "cuda:0", "is not available"});
  }
  expect_still_usable();
}

TEST(Hardening, BadInitializerArgumentsFailAtInitialize) {
  expect_error([] { init::xavier(3.0f, "fan"); },
               {"init::xavier", "factor must be \"avg\", \"in\" or \"out\"", "\"fan\""});
  {
    auto net = make<Dense>(3, "", 4);
    // The initializer's own argument is named, at the call that gave it.
    expect_error([&] { net->initialize(init::normal(-1.0f), kCpu, 1); },
                 {"init::normal", "sigma must be finite and >= 0", "-1"});
    // A good initializer afterwards recovers the layer.
    net->initialize(init::normal(0.1f), kCpu, 1, /*force_reinit=*/true);
    EXPECT_EQ((*net)(Tensor::ones({2, 4}, kCpu)).shape(), (Shape{2, 3}));
  }
  {
    auto net = make<Dense>(3, "", 4);
    expect_error([&] { net->initialize(init::uniform(-0.5f), kCpu, 1); },
                 {"init::uniform", "scale must be finite and >= 0", "-0.5"});
    expect_error([] { init::uniform(std::numeric_limits<float>::infinity()); },
                 {"init::uniform", "scale", "inf"});
    expect_error([] { init::xavier(-1.0f); }, {"init::xavier", "magnitude", "-1"});
    expect_error([] { init::constant(std::numeric_limits<float>::quiet_NaN()); },
                 {"init::constant", "finite", "nan"});
  }
  {
    Parameter bias("bias", {3});
    expect_error([&] { bias.initialize(init::xavier(), kCpu, 1); },
                 {"init::xavier", "parameter 'bias'", "needs at least 2 dimensions", "(3,)"});
  }
  expect_still_usable();
}

// ---- Trainer and optimizers ----

TEST(Hardening, OptimizerHyperparametersAreValidated) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  expect_error([] { SGD(-0.1f); }, {"SGD", "learning_rate must be finite and >= 0", "-0.1"});
  expect_error([&] { SGD nan_rate(nan); }, {"SGD", "learning_rate must be finite"});
  expect_error([] { SGD(0.1f, 1.0f); }, {"SGD", "momentum must lie in [0, 1)", "1"});
  expect_error([] { SGD(0.1f, -0.5f); }, {"SGD", "momentum must lie in [0, 1)", "-0.5"});
  expect_error([&] { SGD(0.1f, nan); }, {"SGD", "momentum must lie in [0, 1)", "nan"});
  expect_error([&] { SGD(0.1f, 0.0f, inf); }, {"SGD", "weight_decay must be finite and >= 0"});
  expect_error([] { Adam(1e-3f, 1.0f); }, {"Adam", "beta1 must lie in [0, 1)"});
  expect_error([] { Adam(1e-3f, 0.9f, 1.5f); }, {"Adam", "beta2 must lie in [0, 1)", "1.5"});
  expect_error([] { Adam(1e-3f, 0.9f, 0.999f, 0.0f); },
               {"Adam", "epsilon must be finite and > 0", "0"});
  SGD sgd(0.1f);
  expect_error([&] { sgd.set_learning_rate(inf); }, {"learning_rate must be finite"});
  EXPECT_EQ(sgd.learning_rate(), 0.1f) << "a refused learning rate must not be kept";
  expect_error(
      [&] {
        sgd.set_hyperparameters({{"learning_rate", 0.1f}});
      },
      {"sgd.set_hyperparameters", "momentum"});
  expect_still_usable();
}

TEST(Hardening, TrainerStepPreconditions) {
  expect_error([] { Trainer(ParameterDict(), nullptr); }, {"Trainer", "optimizer is null"});
  // Parameters whose shape is deferred until the first forward.
  auto net = small_mlp(/*in_units=*/0);
  net->initialize(init::uniform(), kCpu, 1);
  Trainer trainer(net->collect_params(), std::make_shared<Adam>());
  expect_error([&] { trainer.step(1); },
               {"Trainer::step", "parameter '0.weight' is not initialized", "deferred"});
  // Never initialised at all.
  auto bare = small_mlp();
  Trainer bare_trainer(bare->collect_params(), std::make_shared<SGD>(0.1f));
  expect_error([&] { bare_trainer.step(1); },
               {"Trainer::step", "parameter '0.weight' is not initialized"});
  // A batch size that cannot scale a gradient.
  (*net)(Tensor::ones({2, 4}, kCpu));
  expect_error([&] { trainer.step(0); }, {"Trainer::step", "batch_size must be positive", "0"});
  expect_error([&] { trainer.step(-8); }, {"Trainer::step", "batch_size must be positive", "-8"});
  EXPECT_EQ(trainer.steps(), 0);
  // The refused steps left nothing behind: a real step works.
  Tensor loss;
  {
    autograd::RecordScope record;
    loss = L2Loss()((*net)(Tensor::ones({2, 4}, kCpu)), Tensor::zeros({2, 3}, kCpu));
  }
  loss.backward();
  trainer.step(1);
  EXPECT_EQ(trainer.steps(), 1);
  expect_still_usable();
}

// ---- Tensors and autograd ----

TEST(Hardening, TensorAccessAndAutogradMisuse) {
  expect_error([] { Tensor::ones({2, 3}, kCpu).item(); }, {"Tensor::item", "6 elements", "(2, 3)"});
  expect_error([] { Tensor().item(); }, {"undefined"});
  expect_error([] { Tensor::from_vector({1, 2, 3}, {2, 2}, kCpu); }, {"Tensor::from_vector", "3"});
  expect_error([] { Tensor::from_int32({1}, {1}, kCpu).to_vector(); },
               {"Tensor::to_vector", "int32"});
  // backward() on something computed outside a RecordScope from tensors without gradients.
  const Tensor y = ops::sum(ops::mul_scalar(Tensor::ones({3}, kCpu), 2.0f));
  expect_error([&] { y.backward(); }, {"backward", "not computed inside autograd::RecordScope"});
  // A non-scalar without a head gradient.
  Tensor x = Tensor::ones({3}, kCpu);
  x.attach_grad();
  Tensor z;
  {
    autograd::RecordScope record;
    z = ops::mul_scalar(x, 2.0f);
  }
  expect_error([&] { z.backward(); }, {"backward", "head gradient is needed", "(3,)"});
  z.backward(Tensor::ones({3}, kCpu));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{2, 2, 2}));
  expect_still_usable();
}

TEST(Hardening, AbsurdSizesOverflowOrRunOutOfHostMemory) {
  expect_error(
      [] {
        Tensor::empty({int64_t(1) << 62, int64_t(1) << 62}, kCpu);
      },
      {"Tensor::empty", "more elements than int64_t can count"});
  expect_error([] { Tensor::empty({int64_t(1) << 61}, kCpu); },
               {"Tensor::empty", "too large to allocate"});
  // 2^45 floats = 128 TiB: more than the x86-64 user address space, so no host grants it.
  expect_error([] { Tensor::empty({int64_t(1) << 45}, kCpu); },
               {"out of host memory", "140737488355328 bytes"});
  expect_error(
      [] {
        Tensor::zeros({int64_t(1) << 25, int64_t(1) << 20}, kCpu);
      },
      {"out of host memory"});
  expect_still_usable();
}

// ---- Numerics: the first op producing NaN or Inf is named ----

TEST(Hardening, CheckNumericsNamesTheFirstOpProducingNaNOrInf) {
  {
    CheckNumericsGuard numerics;
    const Tensor negative = values({1.0f, -2.0f, 3.0f}, {3});
    expect_error([&] { ops::log(negative); },
                 {"check_numerics", "log produced NaN", "element 1", "from finite inputs"});
    expect_error([&] { ops::relu(ops::log(negative)); }, {"check_numerics: log produced NaN"});
    // Through a block and a loss: the log inside the chain is named, not the later ops.
    expect_error(
        [&] {
          ops::sum(ops::relu(ops::mul_scalar(ops::log(ops::add_scalar(negative, -1.0f)), 2.0f)));
        },
        {"check_numerics: log produced"});
    expect_error(
        [] {
          ops::div(Tensor::ones({2}, kCpu), values({1.0f, 0.0f}, {2}));
        },
        {"check_numerics: div produced Inf", "element 1"});
    expect_error([] { ops::div_scalar(Tensor::ones({2}, kCpu), 0.0f); },
                 {"check_numerics: div_scalar produced Inf"});
    expect_error(
        [] {
          ops::exp(values({1.0f, 100.0f}, {2}));
        },
        {"check_numerics: exp produced Inf", "element 1"});
    expect_error([] { ops::sqrt(values({-1.0f}, {1})); }, {"check_numerics: sqrt produced NaN"});
    // Bad data: a NaN already in the batch is reported as such, at the first op that sees it.
    auto net = small_mlp();
    net->initialize(init::xavier(), kCpu, 1);
    std::vector<float> batch(8, 0.5f);
    batch[5] = std::nanf("");
    expect_error(
        [&] {
          (*net)(values(batch, {2, 4}));
        },
        {"check_numerics: input 0 of", "already holds a non-finite value at element 5",
         "from outside"});
    // Finite data through the same network is fine with the checks on.
    EXPECT_EQ((*net)(Tensor::ones({2, 4}, kCpu)).shape(), (Shape{2, 3}));
  }
  EXPECT_FALSE(check_numerics());
  // With the mode off, a NaN passes silently, as documented.
  EXPECT_TRUE(std::isnan(ops::log(values({-1.0f}, {1})).item()));
  expect_still_usable();
}

// ---- Files: safetensors parameters and checkpoints ----

TEST_F(HardeningFiles, CorruptAndTruncatedParameterFiles) {
  auto net = small_mlp();
  net->initialize(init::xavier(), kCpu, 1);
  const std::string good = path("good.safetensors");
  net->save_parameters(good);
  const std::string bytes = read_bytes(good);
  ASSERT_GT(bytes.size(), 64u);

  const std::string truncated = path("truncated.safetensors");
  write_bytes(truncated, bytes.substr(0, bytes.size() / 2));
  expect_error([&] { net->load_parameters(truncated, kCpu); },
               {"load_safetensors: " + truncated + ": "});

  const std::string garbage = path("garbage.safetensors");
  write_bytes(garbage, std::string("\x10\x00\x00\x00\x00\x00\x00\x00{not json at all", 24));
  expect_error([&] { net->load_parameters(garbage, kCpu); },
               {"load_safetensors: " + garbage + ": ", "not valid JSON"});

  std::string huge_header = bytes;
  huge_header[7] = '\x7f';  // a header length of ~2^63
  const std::string lying = path("lying.safetensors");
  write_bytes(lying, huge_header);
  expect_error([&] { net->load_parameters(lying, kCpu); },
               {"load_safetensors: " + lying + ": ", "header length", "exceeds"});

  const std::string empty = path("empty.safetensors");
  write_bytes(empty, "");
  expect_error([&] { net->load_parameters(empty, kCpu); }, {"too short"});
  expect_error([&] { net->load_parameters(path("missing.safetensors"), kCpu); },
               {"load_safetensors", "missing.safetensors", "cannot open"});
  expect_error([&] { net->load_parameters(dir_.string(), kCpu); }, {"not a regular file"});

  // The network still holds its values and loads the good file.
  net->load_parameters(good, kCpu);
  expect_still_usable();
}

TEST_F(HardeningFiles, ParametersOfAnotherNetworkAreListed) {
  auto other = make<Sequential>();
  other->add(make<Dense>(6, "relu", 4), make<Dense>(3, "", 6), make<Dense>(2, "", 3));
  other->initialize(init::xavier(), kCpu, 1);
  const std::string file = path("other.safetensors");
  other->save_parameters(file);

  auto net = small_mlp();
  net->initialize(init::xavier(), kCpu, 2);
  const std::vector<float> before = net->collect_params().at("0.weight")->data().to_vector();
  expect_error([&] { net->load_parameters(file, kCpu); },
               {"load_parameters", file, "does not match the network",
                "'0.weight': file has shape (6, 4), the network expects (8, 4)",
                "'0.bias': file has shape (6,), the network expects (8,)",
                "'1.weight': file has shape (3, 6), the network expects (3, 8)",
                "'2.weight': in the file but not in the network",
                "'2.bias': in the file but not in the network"});
  EXPECT_EQ(net->collect_params().at("0.weight")->data().to_vector(), before)
      << "a refused load must not change any parameter";

  // The other way round: parameters the file lacks.
  const std::string small_file = path("small.safetensors");
  net->save_parameters(small_file);
  expect_error([&] { other->load_parameters(small_file, kCpu); },
               {"'2.weight': missing from the file", "'2.bias': missing from the file"});
  expect_still_usable();
}

TEST_F(HardeningFiles, CorruptTruncatedAndMismatchedCheckpoints) {
  auto net = small_mlp();
  net->initialize(init::xavier(), kCpu, 1);
  Trainer trainer(net->collect_params(), std::make_shared<SGD>(0.1f, 0.9f));
  {
    Tensor loss;
    {
      autograd::RecordScope record;
      loss = SoftmaxCrossEntropyLoss()((*net)(Tensor::ones({2, 4}, kCpu)),
                                       Tensor::from_int32({0, 2}, {2}, kCpu));
    }
    loss.backward();
    trainer.step(1);
  }
  const std::string good = path("good.ckpt");
  save_checkpoint(good, *net, trainer, {{"epoch", "3"}});
  const std::string bytes = read_bytes(good);

  const std::string truncated = path("truncated.ckpt");
  write_bytes(truncated, bytes.substr(0, bytes.size() - 5));
  expect_error([&] { load_checkpoint(truncated, *net, trainer, kCpu); },
               {"load_safetensors: " + truncated + ": "});

  std::string flipped = bytes;
  flipped[12] = '[';  // the JSON header no longer parses as an object
  const std::string corrupt = path("corrupt.ckpt");
  write_bytes(corrupt, flipped);
  expect_error([&] { load_checkpoint(corrupt, *net, trainer, kCpu); },
               {"load_safetensors: " + corrupt + ": "});

  // Another network.
  auto wide = make<Sequential>();
  wide->add(make<Dense>(5, "relu", 4), make<Dense>(3, "", 5));
  wide->initialize(init::xavier(), kCpu, 1);
  Trainer wide_trainer(wide->collect_params(), std::make_shared<SGD>(0.1f, 0.9f));
  expect_error([&] { load_checkpoint(good, *wide, wide_trainer, kCpu); },
               {"load_checkpoint", "does not match the network",
                "'0.weight': file has shape (8, 4), the network expects (5, 4)"});
  // The same network, another optimizer.
  Trainer adam_trainer(net->collect_params(), std::make_shared<Adam>());
  expect_error([&] { load_checkpoint(good, *net, adam_trainer, kCpu); },
               {"load_checkpoint", "does not match the trainer", "sgd", "adam"});
  // A bare parameter file is not a checkpoint: the trainer's entries are missing.
  const std::string bare = path("bare.safetensors");
  net->save_parameters(bare);
  expect_error([&] { load_checkpoint(bare, *net, trainer, kCpu); },
               {"load_checkpoint", "does not match the trainer", "trainer.steps"});
  expect_error(
      [&] {
        save_checkpoint(path("x.ckpt"), *net, trainer, {{"optimizer", "x"}});
      },
      {"save_checkpoint", "metadata key 'optimizer' is reserved"});

  // None of that changed the trainer: the good checkpoint still loads.
  EXPECT_EQ(load_checkpoint(good, *net, trainer, kCpu).at("epoch"), "3");
  EXPECT_EQ(trainer.steps(), 1);
  expect_still_usable();
}

// ---- Files: IDX and Fashion-MNIST ----

IdxArray small_images(int64_t count) {
  IdxArray images;
  images.shape = {count, 2, 2};
  images.data.assign(size_t(count * 4), 17);
  return images;
}

IdxArray small_labels(int64_t count, uint8_t label = 3) {
  IdxArray labels;
  labels.shape = {count};
  labels.data.assign(size_t(count), label);
  return labels;
}

TEST_F(HardeningFiles, TruncatedAndCorruptIdxFiles) {
  const std::string plain = path("plain-idx3-ubyte");
  write_idx(plain, small_images(5), /*gzip=*/false);
  const std::string plain_bytes = read_bytes(plain);
  write_bytes(plain, plain_bytes.substr(0, plain_bytes.size() - 3));
  expect_error([&] { read_idx(plain); },
               {"read_idx: " + plain + ": ", "truncated", "expected 20 bytes", "found 17"});
  write_bytes(plain, plain_bytes.substr(0, 6));
  expect_error([&] { read_idx(plain); }, {"read_idx: " + plain + ": ", "truncated header"});
  write_bytes(plain, std::string("\x00\x00\x0D\x01\x00\x00\x00\x01\x00\x00\x00\x00", 12));
  expect_error([&] { read_idx(plain); }, {"unsupported data type 0x0D", "float32"});

  const std::string gz = path("images.gz");
  write_idx(gz, small_images(50), /*gzip=*/true);
  const std::string gz_bytes = read_bytes(gz);
  write_bytes(gz, gz_bytes.substr(0, gz_bytes.size() / 2));
  expect_error([&] { read_idx(gz); }, {"read_idx: " + gz + ": "});
  std::string corrupt = gz_bytes;
  for (size_t i = 12; i < corrupt.size() - 8; ++i) corrupt[i] = char(corrupt[i] ^ 0x5A);
  write_bytes(gz, corrupt);
  expect_error([&] { read_idx(gz); }, {"read_idx: " + gz + ": "});
  expect_still_usable();
}

TEST_F(HardeningFiles, FashionMnistMissingOrMalformed) {
  const std::string missing = path("no-such-dir");
  expect_error([&] { load_fashion_mnist(missing, /*train=*/true); },
               {"load_fashion_mnist", missing + "/train-images-idx3-ubyte", ".gz exists",
                "dataset-fashion-mnist"});
  // Images but no labels.
  write_idx(path("t10k-images-idx3-ubyte"), small_images(4), false);
  expect_error([&] { load_fashion_mnist(dir_.string(), /*train=*/false); },
               {"load_fashion_mnist", "t10k-labels-idx1-ubyte"});
  // Counts that disagree.
  write_idx(path("t10k-labels-idx1-ubyte.gz"), small_labels(3), true);
  expect_error([&] { load_fashion_mnist(dir_.string(), false); },
               {"load_fashion_mnist", "has 4 images", "has 3 labels"});
  // A label outside the ten classes.
  write_idx(path("t10k-labels-idx1-ubyte.gz"), small_labels(4, 12), true);
  expect_error([&] { load_fashion_mnist(dir_.string(), false); },
               {"load_fashion_mnist", "label 12 at index 0", "[0, 10)"});
  // Labels swapped for images: the wrong rank.
  write_idx(path("t10k-images-idx3-ubyte"), small_labels(4), false);
  write_idx(path("t10k-labels-idx1-ubyte.gz"), small_labels(4), true);
  expect_error([&] { load_fashion_mnist(dir_.string(), false); },
               {"load_fashion_mnist", "expected 3 dimensions"});
  // A truncated images file.
  write_bytes(path("t10k-images-idx3-ubyte"), std::string("\x00\x00\x08\x03\x00\x00", 6));
  expect_error([&] { load_fashion_mnist(dir_.string(), false); },
               {"read_idx", "t10k-images-idx3-ubyte", "truncated header"});
  // And a good set loads.
  write_idx(path("t10k-images-idx3-ubyte"), small_images(4), false);
  const LabelledImages set = load_fashion_mnist(dir_.string(), false);
  EXPECT_EQ(set.count, 4);
  EXPECT_EQ(set.features, 4);
  expect_still_usable();
}

// ---- Data loader ----

TEST(Hardening, DataLoaderRejectsBadOptionsAndEmptyData) {
  auto data = std::make_shared<LabelledImages>();
  data->count = 3;
  data->features = 2;
  data->classes = 10;
  data->pixels = {0, 1, 2, 3, 4, 5};
  data->labels = {0, 1, 2};
  LoaderOptions options;
  options.batch_size = 0;
  expect_error([&] { DataLoader(data, options, kCpu); },
               {"DataLoader", "batch_size must be positive, got 0"});
  options.batch_size = -4;
  expect_error([&] { DataLoader(data, options, kCpu); },
               {"DataLoader", "batch_size must be positive, got -4"});
  options.batch_size = 2;
  options.stddev = 0.0f;
  expect_error([&] { DataLoader(data, options, kCpu); },
               {"DataLoader", "stddev must be finite and positive"});
  options.stddev = 1.0f;
  expect_error([&] { DataLoader(std::make_shared<LabelledImages>(), options, kCpu); },
               {"DataLoader", "the data set is empty"});
  expect_error([&] { DataLoader(nullptr, options, kCpu); }, {"DataLoader", "empty"});
  auto inconsistent = std::make_shared<LabelledImages>(*data);
  inconsistent->pixels.pop_back();
  expect_error([&] { DataLoader(inconsistent, options, kCpu); },
               {"DataLoader", "arrays do not match count 3 and features 2"});
  DataLoader loader(data, options, kCpu);
  expect_error([&] { loader.start_epoch(-1); }, {"DataLoader::start_epoch", "negative epoch -1"});
  Batch batch;
  int64_t seen = 0;
  while (loader.next(batch)) seen += batch.x.dim(0);
  EXPECT_EQ(seen, 3);
  expect_still_usable();
}

// ---- GPU: mixed devices and device memory (skips without a GPU) ----

class HardeningCuda : public testing::CudaTest {};

TEST_F(HardeningCuda, MixedDevicesAreRefusedByName) {
  const Device gpu = Device::cuda(0);
  auto net = small_mlp();
  net->initialize(init::xavier(), gpu, 1);
  expect_error([&] { (*net)(Tensor::ones({2, 4}, kCpu)); }, {"different devices", "cpu", "cuda:0"});
  const Tensor logits = Tensor::ones({2, 3}, gpu);
  expect_error(
      [&] {
        SoftmaxCrossEntropyLoss()(logits, Tensor::from_int32({0, 1}, {2}, kCpu));
      },
      {"softmax_cross_entropy", "different devices"});
  expect_error([&] { ops::add(Tensor::ones({2}, gpu), Tensor::ones({2}, kCpu)); },
               {"add", "different devices"});
  EXPECT_EQ((*net)(Tensor::ones({2, 4}, gpu)).shape(), (Shape{2, 3}));
  expect_still_usable(gpu);
}

TEST_F(HardeningCuda, DeviceOutOfMemoryLeavesTheDeviceUsable) {
  const Device gpu = Device::cuda(0);
  expect_error([&] { Tensor::empty({int64_t(1) << 45}, gpu); }, {"out of memory on cuda:0"});
  expect_error([&] { Tensor::zeros({int64_t(1) << 45}, gpu); }, {"out of memory on cuda:0"});
  const Tensor y = ops::add(Tensor::ones({1000}, gpu), Tensor::ones({1000}, gpu));
  EXPECT_EQ(ops::sum(y).item(), 2000.0f);
  expect_still_usable(gpu);
}

TEST_F(HardeningCuda, CheckNumericsOnTheGpu) {
  const Device gpu = Device::cuda(0);
  {
    CheckNumericsGuard numerics;
    expect_error(
        [&] {
          ops::relu(ops::log(values({1.0f, -1.0f}, {2}, gpu)));
        },
        {"check_numerics: log produced NaN", "cuda:0"});
  }
  expect_still_usable(gpu);
}

}  // namespace
}  // namespace cairn
