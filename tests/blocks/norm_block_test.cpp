// BatchNorm and LayerNorm blocks: training against prediction mode, the running statistics as
// state (PyTorch's names, saved and loaded, never a gradient, never touched by a Trainer), a
// PyTorch state_dict (I64 num_batches_tracked) loading and reproducing PyTorch's outputs, deferred
// in_channels, the printed tree, and a captured training step updating the running statistics at
// every replay (GPU; the fake device in CI).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cairn/blocks/hybridize.h"
#include "cairn/blocks/layers.h"
#include "cairn/blocks/loss.h"
#include "cairn/blocks/normalization.h"
#include "cairn/blocks/optimizer.h"
#include "cairn/blocks/safetensors.h"
#include "cairn/blocks/trainer.h"
#include "support/test_support.h"

namespace cairn {
namespace {

using testing::expect_close;
using testing::expect_error;
using testing::random_tensor;

const Device kCpu = Device::cpu();

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "cairn_norm_block_test_" + name + ".safetensors";
}

Tensor find(const SafetensorsFile& file, const std::string& name) {
  for (const auto& [key, tensor] : file.tensors) {
    if (key == name) return tensor;
  }
  ADD_FAILURE() << "no tensor " << name;
  return Tensor();
}

TEST(BatchNormBlock, TrainingUsesTheBatchAndUpdatesTheRunningStatistics) {
  BatchNorm bn;
  bn.initialize(init::uniform(), kCpu);
  const Tensor x = random_tensor({8, 3, 2, 2}, 1, kCpu, -1.0f, 5.0f);
  Tensor y;
  {
    autograd::RecordScope record;
    y = bn(x);
  }
  // What the op computes with the batch statistics, and the running update from 0 and 1.
  Tensor mean = Tensor::zeros({3}, kCpu), var = Tensor::ones({3}, kCpu);
  const Tensor expected = ops::batch_norm(x, Tensor::ones({3}, kCpu), Tensor::zeros({3}, kCpu),
                                          mean, var, true, 0.1f, 1e-5f);
  EXPECT_EQ(y.to_vector(), expected.to_vector());
  EXPECT_EQ(bn.running_mean()->data().to_vector(), mean.to_vector());
  EXPECT_EQ(bn.running_var()->data().to_vector(), var.to_vector());
  EXPECT_EQ(bn.num_batches_tracked()->data().to_int32_vector(), std::vector<int32_t>{1});
  EXPECT_NE(mean.to_vector(), std::vector<float>(3, 0.0f));
}

TEST(BatchNormBlock, PredictingUsesAndKeepsTheRunningStatistics) {
  BatchNorm bn;
  bn.initialize(init::uniform(), kCpu);
  {
    autograd::RecordScope record;
    bn(random_tensor({8, 3, 2, 2}, 2, kCpu, -1.0f, 5.0f));
  }
  const std::vector<float> mean = bn.running_mean()->data().to_vector();
  const std::vector<float> var = bn.running_var()->data().to_vector();
  const Tensor x = random_tensor({2, 3, 2, 2}, 3, kCpu);
  const Tensor y = bn(x);  // outside RecordScope: predicting
  {
    autograd::RecordScope record(autograd::Mode::kPredict);  // recording, still predicting
    bn(x);
  }
  EXPECT_EQ(bn.running_mean()->data().to_vector(), mean);
  EXPECT_EQ(bn.running_var()->data().to_vector(), var);
  EXPECT_EQ(bn.num_batches_tracked()->data().to_int32_vector(), std::vector<int32_t>{1});
  const std::vector<float> xs = x.to_vector(), ys = y.to_vector();
  for (size_t i = 0; i < xs.size(); ++i) {
    const size_t c = (i / 4) % 3;
    EXPECT_NEAR(ys[i], (xs[i] - mean[c]) / std::sqrt(var[c] + 1e-5f), 1e-5) << i;
  }
  // A batch of one is fine when predicting (and refused when training).
  EXPECT_EQ(bn(random_tensor({1, 3}, 4, kCpu)).shape(), (Shape{1, 3}));
  expect_error(
      [&] {
        autograd::RecordScope record;
        bn(random_tensor({1, 3}, 4, kCpu));
      },
      {"batch_norm", "expected more than 1 value per channel when training"});
  EXPECT_EQ(bn.num_batches_tracked()->data().to_int32_vector(), std::vector<int32_t>{1});
}

TEST(BatchNormBlock, DeferredChannelsAndOwnInitialValues) {
  BatchNorm bn;
  EXPECT_EQ(bn.in_channels(), 0);
  EXPECT_EQ(bn.describe(), "BatchNorm(?, momentum=0.1, epsilon=1e-05)");
  bn.initialize(init::uniform(1.0f), kCpu, 3);  // must not reach weight, bias or the statistics
  bn(random_tensor({4, 5}, 5, kCpu));
  EXPECT_EQ(bn.in_channels(), 5);
  EXPECT_EQ(bn.describe(), "BatchNorm(5, momentum=0.1, epsilon=1e-05)");
  EXPECT_EQ(bn.weight()->data().to_vector(), std::vector<float>(5, 1.0f));
  EXPECT_EQ(bn.bias()->data().to_vector(), std::vector<float>(5, 0.0f));
  EXPECT_EQ(bn.running_mean()->data().to_vector(), std::vector<float>(5, 0.0f));
  EXPECT_EQ(bn.running_var()->data().to_vector(), std::vector<float>(5, 1.0f));
  EXPECT_EQ(bn.num_batches_tracked()->data().dtype(), DType::kInt32);
  EXPECT_EQ(bn.num_batches_tracked()->data().shape(), Shape{});
  expect_error(
      [&] {
        bn(random_tensor({4, 6}, 6, kCpu));
      },
      {"BatchNorm(5", "input has 6 channels", "expected 5"});

  BatchNormOptions fixed;
  fixed.in_channels = 3;
  fixed.affine = false;
  fixed.momentum = 0.25f;
  BatchNorm plain(fixed);
  EXPECT_EQ(plain.describe(), "BatchNorm(3, momentum=0.25, epsilon=1e-05, affine=false)");
  EXPECT_EQ(plain.weight(), nullptr);
  EXPECT_EQ(plain.collect_params().names(),
            (std::vector<std::string>{"running_mean", "running_var", "num_batches_tracked"}));
}

TEST(BatchNormBlock, RefusesBadOptions) {
  auto with = [](float momentum, float epsilon, int64_t channels) {
    BatchNormOptions options;
    options.momentum = momentum;
    options.epsilon = epsilon;
    options.in_channels = channels;
    return [options] { BatchNorm bn(options); };
  };
  expect_error(with(1.5f, 1e-5f, 0), {"BatchNorm", "momentum must lie in [0, 1]", "1.5"});
  expect_error(with(-0.1f, 1e-5f, 0), {"BatchNorm", "momentum"});
  expect_error(with(std::nanf(""), 1e-5f, 0), {"BatchNorm", "momentum"});
  expect_error(with(0.1f, 0.0f, 0), {"BatchNorm", "epsilon must be finite and > 0"});
  expect_error(with(0.1f, -1.0f, 0), {"BatchNorm", "epsilon"});
  expect_error(with(0.1f, 1e-5f, -2), {"BatchNorm", "in_channels"});
  BatchNorm fine(BatchNormOptions{1.0f, 1e-3f, true, 0});  // both ends of [0, 1] are allowed
  BatchNorm also(BatchNormOptions{0.0f, 1e-3f, true, 0});
  expect_error([] { LayerNorm({}); }, {"LayerNorm", "at least one axis"});
  expect_error([] { LayerNorm({3, 0}); }, {"LayerNorm", "positive"});
  expect_error([] { LayerNorm({3}, LayerNormOptions{0.0f, true}); }, {"LayerNorm", "epsilon"});
}

// A Dense and a BatchNorm, PyTorch's names and order.
std::shared_ptr<Sequential> dense_bn_net() {
  auto net = make<Sequential>();
  net->add(make<Dense>(4, "", 3));
  net->add(make<BatchNorm>());
  return net;
}

TEST(BatchNormBlock, StateIsListedSavedAndLoadedUnderPyTorchNames) {
  auto net = dense_bn_net();
  net->initialize(init::uniform(), kCpu, 1);
  for (int i = 0; i < 3; ++i) {
    autograd::RecordScope record;
    (*net)(random_tensor({6, 3}, 10 + uint64_t(i), kCpu));
  }
  EXPECT_EQ(net->collect_params().names(),
            (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                      "1.running_var", "1.num_batches_tracked"}));
  EXPECT_EQ(net->collect_params().trainable().names(),
            (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias"}));
  auto& bn = static_cast<BatchNorm&>(*net->children()[1].second);
  EXPECT_TRUE(bn.running_mean()->is_state());
  bn.running_mean()->set_grad_req(GradReq::kWrite);  // a state stays kNull
  EXPECT_EQ(bn.running_mean()->grad_req(), GradReq::kNull);
  EXPECT_FALSE(bn.running_mean()->data().requires_grad());

  const std::string path = temp_path("saved");
  net->save_parameters(path);
  const SafetensorsFile file = load_safetensors(path);
  EXPECT_EQ(file.stored_dtypes.at("1.running_mean"), "F32");
  EXPECT_EQ(file.stored_dtypes.at("1.num_batches_tracked"), "I32");  // PyTorch's copy_ widens it
  auto loaded = dense_bn_net();
  loaded->load_parameters(path, kCpu);
  for (const auto& [name, parameter] : net->collect_params()) {
    const Tensor got = loaded->collect_params().at(name)->data();
    if (got.dtype() == DType::kInt32) {
      EXPECT_EQ(got.to_int32_vector(), std::vector<int32_t>{3}) << name;
    } else {
      EXPECT_EQ(got.to_vector(), parameter->data().to_vector()) << name;
    }
  }
  std::remove(path.c_str());
}

TEST(BatchNormBlock, LoadsAPyTorchStateDictAndGivesPyTorchsOutputs) {
  auto net = make<Sequential>();
  net->add(make<BatchNorm>());
  net->add(make<LayerNorm>(std::vector<int64_t>{3, 5, 4}));
  LoadParametersOptions options;
  options.ignore_extra = true;  // the test.* tensors
  const std::string path = std::string(CAIRN_TEST_DATA_DIR) + "/torch_batchnorm.safetensors";
  const LoadParametersReport report = net->load_parameters(path, kCpu, options);
  EXPECT_EQ(report.loaded.size(), 7u);
  auto& bn = static_cast<BatchNorm&>(*net->children()[0].second);
  EXPECT_EQ(bn.in_channels(), 3);  // from the file's shapes
  EXPECT_EQ(bn.num_batches_tracked()->data().to_int32_vector(), std::vector<int32_t>{2});
  const SafetensorsFile file = load_safetensors(path);
  const Tensor x = find(file, "test.input");
  expect_close((*net)(x), find(file, "test.eval_output"), 1e-5, 1e-5, "eval");
  Tensor train_output;
  {
    autograd::RecordScope record;
    train_output = (*net)(x);
  }
  expect_close(train_output, find(file, "test.train_output"), 1e-5, 1e-5, "train");
  expect_close(bn.running_mean()->data(), find(file, "test.running_mean_after"), 1e-6, 1e-6,
               "running_mean");
  expect_close(bn.running_var()->data(), find(file, "test.running_var_after"), 1e-6, 1e-6,
               "running_var");
  EXPECT_EQ(bn.num_batches_tracked()->data().to_int32_vector(), std::vector<int32_t>{3});
}

TEST(BatchNormBlock, LoadingRefusesAFloatCounterAndWrongShapes) {
  const std::string path = temp_path("bad");
  save_safetensors(path, {{"weight", Tensor::ones({3}, kCpu)},
                          {"bias", Tensor::zeros({3}, kCpu)},
                          {"running_mean", Tensor::zeros({4}, kCpu)},
                          {"running_var", Tensor::ones({3}, kCpu)},
                          {"num_batches_tracked", Tensor::zeros({}, kCpu)}});
  BatchNorm bn(BatchNormOptions{0.1f, 1e-5f, true, 3});
  expect_error([&] { bn.load_parameters(path, kCpu); },
               {"'num_batches_tracked': file has float32, expected int32",
                "'running_mean': file has shape (4,), the network expects (3,)"});
  EXPECT_FALSE(bn.running_var()->is_initialized());  // nothing was loaded
  std::remove(path.c_str());
}

TEST(BatchNormBlock, TheTrainerNeverUpdatesTheRunningStatistics) {
  auto net = dense_bn_net();
  net->initialize(init::uniform(), kCpu, 2);
  auto& bn = static_cast<BatchNorm&>(*net->children()[1].second);
  Trainer trainer(net->collect_params(), std::make_shared<AdamW>(0.1f, 0.9f, 0.999f, 1e-8f, 0.5f));
  for (int i = 0; i < 3; ++i) {
    {
      autograd::RecordScope record;
      L2Loss()((*net)(random_tensor({6, 3}, 20 + uint64_t(i), kCpu)), Tensor::zeros({6, 4}, kCpu))
          .backward();
    }
    const std::vector<float> mean = bn.running_mean()->data().to_vector();
    const std::vector<float> var = bn.running_var()->data().to_vector();
    const std::vector<float> weight = bn.weight()->data().to_vector();
    trainer.step(6);
    EXPECT_EQ(bn.running_mean()->data().to_vector(), mean);  // AdamW's decay would shrink it
    EXPECT_EQ(bn.running_var()->data().to_vector(), var);
    EXPECT_NE(bn.weight()->data().to_vector(), weight);  // the weight does train
  }
  for (const auto& [name, slot] : trainer.state()) {
    EXPECT_EQ(name.find("running"), std::string::npos) << name;
    EXPECT_EQ(name.find("num_batches"), std::string::npos) << name;
  }
}

TEST(NormBlocks, PrintedTree) {
  auto net = make<Sequential>();
  net->add(make<Dense>(4, "relu", 3));
  net->add(make<BatchNorm>(BatchNormOptions{0.1f, 1e-5f, true, 4}));
  net->add(make<LayerNorm>(std::vector<int64_t>{4}));
  std::ostringstream text;
  text << *net;
  EXPECT_NE(text.str().find("(1): BatchNorm(4, momentum=0.1, epsilon=1e-05)"), std::string::npos)
      << text.str();
  EXPECT_NE(text.str().find("(2): LayerNorm((4,), epsilon=1e-05)"), std::string::npos)
      << text.str();
}

TEST(LayerNormBlock, NormalisesTheTrailingAxesWithOwnInitialValues) {
  LayerNorm ln({3, 4});
  ln.initialize(init::uniform(1.0f), kCpu, 9);
  EXPECT_EQ(ln.weight()->data().to_vector(), std::vector<float>(12, 1.0f));
  EXPECT_EQ(ln.bias()->data().to_vector(), std::vector<float>(12, 0.0f));
  EXPECT_EQ(ln.collect_params().names(), (std::vector<std::string>{"weight", "bias"}));
  const Tensor x = random_tensor({2, 5, 3, 4}, 11, kCpu);
  EXPECT_EQ(ln(x).to_vector(),
            ops::layer_norm(x, 2, ln.weight()->data(), ln.bias()->data(), 1e-5f).to_vector());
  expect_error(
      [&] {
        ln(random_tensor({2, 4, 3}, 12, kCpu));
      },
      {"LayerNorm((3, 4)", "last axes must be (3, 4)", "(2, 4, 3)"});
  expect_error([&] { ln(random_tensor({4}, 12, kCpu)); }, {"LayerNorm", "(4,)"});
  LayerNorm plain({5}, LayerNormOptions{1e-3f, false});
  EXPECT_TRUE(plain.collect_params().names().empty());
  EXPECT_EQ(plain.describe(), "LayerNorm((5,), epsilon=0.001, affine=false)");
}

// ---- A captured training step (a CUDA graph) on the GPU ----

class NormBlockGpu : public testing::CudaTest {};

TEST_F(NormBlockGpu, EveryReplayOfACapturedStepUpdatesTheRunningStatistics) {
  const Device gpu = Device::cuda(0);
  auto net = dense_bn_net();
  net->initialize(init::uniform(), gpu, 4);
  auto& bn = static_cast<BatchNorm&>(*net->children()[1].second);
  Trainer trainer(net->collect_params(), std::make_shared<SGD>(0.05f));
  const L2Loss loss_fn;
  auto body = [&](const Tensor& x, const Tensor& y) {
    {
      autograd::RecordScope record;
      loss_fn((*net)(x), y).backward();
    }
    trainer.step(x.dim(0));
  };
  CapturedStep step(body, gpu);
  const Tensor x = random_tensor({8, 3}, 30, gpu, -2.0f, 3.0f);
  const Tensor y = Tensor::zeros({8, 4}, gpu);
  std::vector<std::vector<float>> means;
  std::vector<int32_t> counts;
  for (int run = 0; run < 4; ++run) {  // warm-up, capture (and a replay), then two replays
    step.run(x, y);
    means.push_back(bn.running_mean()->data().to_vector());
    counts.push_back(bn.num_batches_tracked()->data().to_int32_vector()[0]);
  }
  ASSERT_TRUE(step.captured()) << step.eager_reason();
  EXPECT_EQ(counts, (std::vector<int32_t>{1, 2, 3, 4}));
  // Each replay moves the running mean again (the network changes too, so the batch mean does).
  EXPECT_NE(means[3], means[2]);
  EXPECT_NE(means[2], means[1]);

  // The same four steps eagerly, from the same start, give the same statistics.
  auto eager_net = dense_bn_net();
  eager_net->initialize(init::uniform(), gpu, 4);
  auto& eager_bn = static_cast<BatchNorm&>(*eager_net->children()[1].second);
  Trainer eager_trainer(eager_net->collect_params(), std::make_shared<SGD>(0.05f));
  for (int run = 0; run < 4; ++run) {
    {
      autograd::RecordScope record;
      loss_fn((*eager_net)(x), y).backward();
    }
    eager_trainer.step(8);
  }
  expect_close(bn.running_mean()->data().to_vector(), eager_bn.running_mean()->data().to_vector(),
               1e-6, 1e-5, "running_mean, captured against eager");
  expect_close(bn.running_var()->data().to_vector(), eager_bn.running_var()->data().to_vector(),
               1e-6, 1e-5, "running_var, captured against eager");
}

}  // namespace
}  // namespace cairn
