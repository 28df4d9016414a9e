// Determinism (docs/determinism.md): training the same network from the same seed twice in one
// process gives bit-identical parameters, with SGD + momentum and with Adam, on the CPU and on a
// GPU. deterministic() is on by default.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "support/test_support.h"

namespace cairn {
namespace {

constexpr int kSteps = 30;
constexpr int64_t kBatch = 16;
constexpr int64_t kFeatures = 12;
constexpr int64_t kClasses = 10;

// The exact bits, so that EXPECT_EQ tells -0 from +0 and compares NaNs too.
std::vector<uint32_t> bits(const Tensor& tensor) {
  const std::vector<float> data = tensor.to_vector();
  std::vector<uint32_t> out(data.size());
  std::memcpy(out.data(), data.data(), data.size() * sizeof(float));
  return out;
}

using Snapshot = std::vector<std::pair<std::string, std::vector<uint32_t>>>;

// Dense(32, relu) -> Dense(10) on fixed synthetic data: `kSteps` steps, each on its own batch.
Snapshot train(const std::shared_ptr<Optimizer>& optimizer, uint64_t seed, const Device& device) {
  auto net = make<Sequential>();
  net->add(make<Dense>(32, "relu"), make<Dense>(kClasses));  // in_units inferred: deferred init
  net->initialize(init::xavier(), device, seed);
  Trainer trainer(net->collect_params(), optimizer);
  const SoftmaxCrossEntropyLoss loss_fn;
  for (int step = 0; step < kSteps; ++step) {
    const Tensor x =
        Tensor::normal({kBatch, kFeatures}, 0.0f, 1.0f, seed * 1000 + uint64_t(step), device);
    std::vector<int32_t> labels(kBatch);
    for (int64_t i = 0; i < kBatch; ++i) labels[size_t(i)] = int32_t((i * 7 + step) % kClasses);
    const Tensor y = Tensor::from_int32(labels, {kBatch}, device);
    Tensor loss;
    {
      autograd::RecordScope record;
      loss = loss_fn((*net)(x), y);
    }
    loss.backward();
    trainer.step(1);
  }
  Snapshot out;
  for (const auto& [name, parameter] : net->collect_params()) {
    out.emplace_back(name, bits(parameter->data()));
  }
  for (const auto& [name, slot] : trainer.state()) out.emplace_back("state." + name, bits(slot));
  return out;
}

void expect_identical(const Snapshot& first, const Snapshot& second) {
  ASSERT_EQ(first.size(), second.size());
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(first[i].first, second[i].first);
    EXPECT_EQ(first[i].second, second[i].second) << first[i].first << " differs between runs";
  }
}

void expect_trained_apart(const Snapshot& trained, const Snapshot& other_seed) {
  // Guards against a vacuous pass (nothing trained, or the seed ignored).
  ASSERT_EQ(trained.size(), other_seed.size());
  EXPECT_NE(trained[0].second, other_seed[0].second) << "another seed gave the same weights";
}

void check_runs_repeat(const Device& device) {
  {
    SCOPED_TRACE("SGD with momentum on " + device.str());
    const Snapshot a = train(std::make_shared<SGD>(0.05f, 0.9f, 1e-4f), 11, device);
    const Snapshot b = train(std::make_shared<SGD>(0.05f, 0.9f, 1e-4f), 11, device);
    expect_identical(a, b);
    expect_trained_apart(a, train(std::make_shared<SGD>(0.05f, 0.9f, 1e-4f), 12, device));
  }
  {
    SCOPED_TRACE("Adam on " + device.str());
    const Snapshot a = train(std::make_shared<Adam>(1e-3f), 11, device);
    const Snapshot b = train(std::make_shared<Adam>(1e-3f), 11, device);
    expect_identical(a, b);
    expect_trained_apart(a, train(std::make_shared<Adam>(1e-3f), 12, device));
  }
}

TEST(Determinism, OnByDefault) { EXPECT_TRUE(deterministic()); }

TEST(Determinism, TrainingTwiceFromOneSeedIsBitIdenticalOnTheCpu) {
  check_runs_repeat(Device::cpu());
}

TEST(Determinism, LoaderOrderIsAPureFunctionOfSeedAndEpoch) {
  auto data = std::make_shared<LabelledImages>();
  data->count = 37;
  data->features = 3;
  data->classes = 10;
  for (int64_t i = 0; i < data->count * data->features; ++i) data->pixels.push_back(uint8_t(i));
  for (int64_t i = 0; i < data->count; ++i) data->labels.push_back(int32_t(i % 10));
  LoaderOptions options;
  options.batch_size = 8;
  options.seed = 5;
  auto epoch_labels = [&](int64_t epoch) {
    DataLoader loader(data, options, Device::cpu());
    loader.start_epoch(epoch);
    std::vector<int32_t> labels;
    Batch batch;
    while (loader.next(batch)) {
      for (int32_t label : batch.y.to_int32_vector()) labels.push_back(label);
    }
    return labels;
  };
  EXPECT_EQ(epoch_labels(3), epoch_labels(3));
  EXPECT_NE(epoch_labels(3), epoch_labels(4));
  EXPECT_EQ(seeded_permutation(1000, 42), seeded_permutation(1000, 42));
}

class DeterminismCuda : public testing::CudaTest {};

TEST_F(DeterminismCuda, TrainingTwiceFromOneSeedIsBitIdenticalOnTheGpu) {
  ASSERT_TRUE(deterministic());
  check_runs_repeat(Device::cuda(0));
}

}  // namespace
}  // namespace cairn
