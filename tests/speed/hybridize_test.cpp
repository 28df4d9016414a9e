// hybridize() and CapturedStep (issue "Speed"): on the CPU they change nothing; on a GPU a captured
// forward or training step computes what the eager one does, blocks that synchronise with the host
// stay eager and say which op did it, and a training loop stops asking the raw allocator for memory
// after its warm-up, eager or captured.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "blocks_tour/lecture_networks.h"
#include "cairn/cairn.h"
#include "cairn/core/allocator.h"
#include "support/test_support.h"

namespace cairn {
namespace {

using testing::CudaTest;
using testing::expect_close;

constexpr uint64_t kSeed = 2024;

Tensor random_labels(int64_t rows, int64_t classes, uint64_t seed, const Device& device) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> pick(0, int32_t(classes - 1));
  std::vector<int32_t> labels(static_cast<size_t>(rows));
  for (int32_t& label : labels) label = pick(rng);
  return Tensor::from_int32(labels, {rows}, device);
}

struct Batch {
  Tensor x, y;
};

std::vector<Batch> batches(int count, int64_t rows, int64_t features, const Device& device) {
  std::vector<Batch> out;
  for (int i = 0; i < count; ++i) {
    out.push_back({Tensor::uniform({rows, features}, -1.0f, 1.0f, 100 + uint64_t(i), device),
                   random_labels(rows, 10, 200 + uint64_t(i), device)});
  }
  return out;
}

// An MLP (features -> 256 relu -> 10) with its trainer and one training step, as a user writes it.
struct Training {
  std::shared_ptr<Sequential> net = lecture::sequential_mlp();
  std::unique_ptr<Trainer> trainer;
  SoftmaxCrossEntropyLoss loss_fn;

  Training(const Device& device, OptimizerPtr optimizer) {
    net->initialize(init::xavier(), device, kSeed);
    // Deferred shapes complete at the first forward; the trainer keeps the parameter handles.
    trainer = std::make_unique<Trainer>(net->collect_params(), std::move(optimizer));
  }
  void step(const Tensor& x, const Tensor& y) {
    Tensor loss;
    {
      autograd::RecordScope record;
      loss = loss_fn((*net)(x), y);
    }
    loss.backward();
    trainer->step(1);
  }
  std::vector<std::vector<float>> parameters() const {
    std::vector<std::vector<float>> values;
    for (const auto& [name, parameter] : net->collect_params()) {
      values.push_back(parameter->data().to_vector());
    }
    return values;
  }
};

void expect_parameters_close(const Training& a, const Training& b, double atol,
                             const std::string& what) {
  const auto pa = a.parameters(), pb = b.parameters();
  ASSERT_EQ(pa.size(), pb.size()) << what;
  for (size_t i = 0; i < pa.size(); ++i) {
    expect_close(pa[i], pb[i], atol, 0.0, what + ": parameter " + std::to_string(i));
  }
}

// ---- CPU: nothing to capture, nothing changes ----

TEST(HybridizeCpu, BlockResultsAreIdenticalToEager) {
  auto eager = lecture::sequential_mlp();
  auto hybrid = lecture::sequential_mlp();
  eager->initialize(init::xavier(), Device::cpu(), kSeed);
  hybrid->initialize(init::xavier(), Device::cpu(), kSeed);
  hybrid->hybridize();
  ASSERT_TRUE(hybrid->hybridized());
  for (int call = 0; call < 4; ++call) {
    const Tensor x = Tensor::uniform({3, 20}, -1.0f, 1.0f, 10 + uint64_t(call), Device::cpu());
    EXPECT_EQ((*hybrid)(x).to_vector(), (*eager)(x).to_vector()) << "call " << call;
  }
  EXPECT_NE(hybrid->hybridize_reason().find("CPU"), std::string::npos)
      << hybrid->hybridize_reason();
}

TEST(HybridizeCpu, FancyMlpHybridizedOnTheCpuIsIdenticalToEager) {
  lecture::FancyMLP eager, hybrid;
  eager.initialize(init::xavier(), Device::cpu(), kSeed);
  hybrid.initialize(init::xavier(), Device::cpu(), kSeed);
  hybrid.hybridize();
  for (int call = 0; call < 3; ++call) {
    const Tensor x = Tensor::uniform({2, 20}, 0.0f, 1.0f, 30 + uint64_t(call), Device::cpu());
    EXPECT_EQ(hybrid(x).to_vector(), eager(x).to_vector()) << "call " << call;
  }
}

TEST(HybridizeCpu, CapturedStepRunsEagerlyAndMatchesAPlainLoopBitForBit) {
  const Device cpu = Device::cpu();
  Training plain(cpu, std::make_shared<SGD>(0.1f, 0.9f));
  Training captured(cpu, std::make_shared<SGD>(0.1f, 0.9f));
  CapturedStep step([&](const Tensor& x, const Tensor& y) { captured.step(x, y); }, cpu);
  EXPECT_NE(step.eager_reason().find("CPU"), std::string::npos) << step.eager_reason();

  for (const Batch& batch : batches(6, 8, 20, cpu)) {
    plain.step(batch.x, batch.y);
    step.run(batch.x, batch.y);
  }
  EXPECT_FALSE(step.captured());
  EXPECT_EQ(step.runs(), 6);
  EXPECT_NE(step.eager_reason().find("CPU"), std::string::npos) << step.eager_reason();
  const auto a = plain.parameters(), b = captured.parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "parameter " << i;
}

// ---- GPU ----

class HybridizeGpu : public CudaTest {
 protected:
  const Device gpu = Device::cuda(0);
};

TEST_F(HybridizeGpu, SequentialMlpReplaysOneGraphAndMatchesEager) {
  auto eager = lecture::sequential_mlp();
  auto hybrid = lecture::sequential_mlp();
  eager->initialize(init::xavier(), gpu, kSeed);
  hybrid->initialize(init::xavier(), gpu, kSeed);
  hybrid->hybridize(true, HybridizeOptions{/*check=*/true, /*tolerance=*/1e-6f});

  CachingAllocator& allocator = cuda_allocator(0);
  std::vector<std::vector<float>> outputs;
  int64_t raw_after_capture = -1;
  for (int call = 0; call < 6; ++call) {
    // Same shape, different values each call: a replay must read the new input.
    const Tensor x = Tensor::uniform({4, 20}, -1.0f, 1.0f, 40 + uint64_t(call), gpu);
    const int64_t requests_before = allocator.stats().requests;
    const Tensor y_hybrid = (*hybrid)(x);
    const int64_t hybrid_requests = allocator.stats().requests - requests_before;
    const int64_t eager_before = allocator.stats().requests;
    const Tensor y_eager = (*eager)(x);
    const int64_t eager_requests = allocator.stats().requests - eager_before;
    expect_close(y_hybrid, y_eager, 1e-6, 0.0, "call " + std::to_string(call));
    outputs.push_back(y_hybrid.to_vector());
    if (call == 1) raw_after_capture = allocator.stats().raw_allocations;
    if (call >= 2) {
      // Replays: no new capture (a new graph would draw a new private pool from cudaMalloc), and
      // fewer allocations than the eager forward (only the copy of the graph's output).
      EXPECT_EQ(allocator.stats().raw_allocations, raw_after_capture) << "call " << call;
      EXPECT_LT(hybrid_requests, eager_requests) << "call " << call;
    }
  }
  EXPECT_EQ(hybrid->hybridize_reason(), "");
  for (size_t call = 3; call < outputs.size(); ++call) {
    EXPECT_NE(outputs[call], outputs[call - 1]) << "replay " << call << " ignored its input";
  }
}

TEST_F(HybridizeGpu, FancyMlpStaysEagerNamingTheSynchronisingOp) {
  lecture::FancyMLP eager, hybrid;
  eager.initialize(init::xavier(), gpu, kSeed);
  hybrid.initialize(init::xavier(), gpu, kSeed);
  hybrid.hybridize();
  for (int call = 0; call < 4; ++call) {
    const Tensor x = Tensor::uniform({2, 20}, 0.0f, 1.0f, 50 + uint64_t(call), gpu);
    expect_close(hybrid(x), eager(x), 1e-6, 1e-6, "call " + std::to_string(call));
  }
  const std::string reason = hybrid.hybridize_reason();
  EXPECT_NE(reason.find("Tensor::item"), std::string::npos) << reason;
}

TEST_F(HybridizeGpu, CapturedSgdStepMatchesEagerSteps) {
  Training eager(gpu, std::make_shared<SGD>(0.1f, 0.9f));
  Training captured(gpu, std::make_shared<SGD>(0.1f, 0.9f));
  HybridizeOptions options;
  options.check = true;  // the capture itself compares one step with its eager twin
  options.tolerance = 1e-5f;
  CapturedStep step([&](const Tensor& x, const Tensor& y) { captured.step(x, y); }, gpu, options,
                    captured.net->collect_params(), captured.trainer.get());

  for (const Batch& batch : batches(20, 16, 20, gpu)) {
    eager.step(batch.x, batch.y);
    step.run(batch.x, batch.y);
  }
  EXPECT_TRUE(step.captured()) << step.eager_reason();
  EXPECT_EQ(step.eager_reason(), "");
  expect_parameters_close(captured, eager, 1e-5, "after 20 steps");
}

TEST_F(HybridizeGpu, CapturedAdamStepStaysEagerAndSaysWhy) {
  Training eager(gpu, std::make_shared<Adam>(1e-3f));
  Training captured(gpu, std::make_shared<Adam>(1e-3f));
  CapturedStep step([&](const Tensor& x, const Tensor& y) { captured.step(x, y); }, gpu);
  for (const Batch& batch : batches(5, 16, 20, gpu)) {
    eager.step(batch.x, batch.y);
    step.run(batch.x, batch.y);
  }
  EXPECT_FALSE(step.captured());
  EXPECT_NE(step.eager_reason().find("Adam"), std::string::npos) << step.eager_reason();
  // Eager all along, including the refused capture: the same steps as the plain loop.
  expect_parameters_close(captured, eager, 1e-6, "Adam, eager");
}

// A training loop's memory: after warm-up, no raw cudaMalloc and a flat number of bytes in use.
void expect_flat_memory(const std::function<void(int)>& run_step, const char* what) {
  CachingAllocator& allocator = cuda_allocator(0);
  constexpr int kSteps = 1000, kWarmup = 10;
  int64_t raw_at_warmup = 0, in_use_at_warmup = 0;
  for (int i = 1; i <= kSteps; ++i) {
    run_step(i);
    if (i == kWarmup) {
      raw_at_warmup = allocator.stats().raw_allocations;
      in_use_at_warmup = allocator.stats().bytes_in_use;
    }
    if (i > kWarmup && i % 100 == 0) {
      const AllocatorStats stats = allocator.stats();
      ASSERT_EQ(stats.raw_allocations, raw_at_warmup) << what << ": cudaMalloc at step " << i;
      ASSERT_EQ(stats.bytes_in_use, in_use_at_warmup) << what << ": bytes in use at step " << i;
    }
  }
  cuda::synchronize(Device::cuda(0));
  EXPECT_EQ(allocator.stats().raw_allocations, raw_at_warmup) << what;
  EXPECT_EQ(allocator.stats().bytes_in_use, in_use_at_warmup) << what;
}

TEST_F(HybridizeGpu, EagerTrainingMakesNoRawAllocationAfterWarmup) {
  Training training(gpu, std::make_shared<SGD>(0.05f, 0.9f));
  const std::vector<Batch> data = batches(4, 64, 20, gpu);
  expect_flat_memory(
      [&](int i) {
        const Batch& b = data[size_t(i) % data.size()];
        training.step(b.x, b.y);
      },
      "eager");
}

TEST_F(HybridizeGpu, CapturedTrainingMakesNoRawAllocationAfterWarmup) {
  Training training(gpu, std::make_shared<SGD>(0.05f, 0.9f));
  const std::vector<Batch> data = batches(4, 64, 20, gpu);
  CapturedStep step([&](const Tensor& x, const Tensor& y) { training.step(x, y); }, gpu);
  expect_flat_memory(
      [&](int i) {
        const Batch& b = data[size_t(i) % data.size()];
        step.run(b.x, b.y);
      },
      "captured");
  EXPECT_TRUE(step.captured()) << step.eager_reason();
}

// ---- Graph memory under cache pressure (issue 9) ----

// Takes whatever the allocator hands out for the sizes a small MLP uses and fills it with a marker:
// a graph still writing to freed or reassigned addresses would overwrite these.
std::vector<Tensor> scribble(const Device& device) {
  std::vector<Tensor> junk;
  for (int64_t n : {int64_t(4 * 256), int64_t(4 * 10), int64_t(256 * 20), int64_t(256),
                    int64_t(10 * 256), int64_t(10), int64_t(1) << 16, int64_t(1) << 20}) {
    for (int copy = 0; copy < 4; ++copy) junk.push_back(Tensor::full({n}, 12345.0f, device));
  }
  return junk;
}

void expect_untouched(const std::vector<Tensor>& junk, const std::string& what) {
  for (const Tensor& t : junk) {
    const std::vector<float> values = t.to_vector();
    const auto wrong =
        std::count_if(values.begin(), values.end(), [](float v) { return v != 12345.0f; });
    EXPECT_EQ(wrong, 0) << what << ": a replay wrote into memory handed out after the cache "
                        << "was emptied (" << values.size() << " elements)";
  }
}

// Captures a hybridized MLP (two calls) and returns it with the first replay's output for x.
struct ReplayedMlp {
  std::shared_ptr<Sequential> net = lecture::sequential_mlp();
  std::vector<float> first_replay;
  ReplayedMlp(const Device& gpu, const Tensor& x) {
    net->initialize(init::xavier(), gpu, kSeed);
    net->hybridize();
    (*net)(x);  // warm-up
    (*net)(x);  // capture and replay
    first_replay = (*net)(x).to_vector();
    EXPECT_EQ(net->hybridize_reason(), "");
  }
};

TEST_F(HybridizeGpu, ReplayAfterEmptyCacheEqualsTheReplayBefore) {
  const Tensor x = Tensor::uniform({4, 20}, -1.0f, 1.0f, 77, gpu);
  ReplayedMlp mlp(gpu, x);
  cuda::synchronize(gpu);
  cuda_allocator(0).empty_cache();  // must leave the live graph's pool alone
  const std::vector<Tensor> junk = scribble(gpu);
  EXPECT_EQ((*mlp.net)(x).to_vector(), mlp.first_replay);
  expect_untouched(junk, "after empty_cache");
  auto eager = lecture::sequential_mlp();
  eager->initialize(init::xavier(), gpu, kSeed);
  expect_close((*mlp.net)(x), (*eager)(x), 1e-6, 0.0, "replay vs eager");
}

// Out of memory on purpose: keep out of compute-sanitizer runs (the failed cudaMalloc is reported
// as an API error there); the name matches gpu_check.sh's *OutOfMemory* exclusion.
TEST_F(HybridizeGpu, ReplayAfterAnOutOfMemoryRetryEqualsTheReplayBefore) {
  const Tensor x = Tensor::uniform({4, 20}, -1.0f, 1.0f, 78, gpu);
  ReplayedMlp mlp(gpu, x);
  cuda::synchronize(gpu);
  // Far beyond any GPU: the allocator empties its cache and retries before giving up.
  testing::expect_error([&] { Tensor::empty({int64_t(1) << 42}, gpu); }, {"out of memory"});
  const std::vector<Tensor> junk = scribble(gpu);
  EXPECT_EQ((*mlp.net)(x).to_vector(), mlp.first_replay);
  expect_untouched(junk, "after an out-of-memory retry");
}

TEST_F(HybridizeGpu, CaptureWorksWithSyncAfterEveryLaunch) {
  // What CAIRN_SYNC_LAUNCHES=1 turns on: it must not break captures (a capturing stream is not
  // synchronised).
  set_sync_after_launch(true);
  struct Restore {
    ~Restore() { set_sync_after_launch(false); }
  } restore;
  auto eager = lecture::sequential_mlp();
  auto hybrid = lecture::sequential_mlp();
  eager->initialize(init::xavier(), gpu, kSeed);
  hybrid->initialize(init::xavier(), gpu, kSeed);
  hybrid->hybridize();
  for (int call = 0; call < 4; ++call) {
    const Tensor x = Tensor::uniform({4, 20}, -1.0f, 1.0f, 90 + uint64_t(call), gpu);
    expect_close((*hybrid)(x), (*eager)(x), 1e-6, 0.0, "call " + std::to_string(call));
  }
  EXPECT_EQ(hybrid->hybridize_reason(), "");

  Training training(gpu, std::make_shared<SGD>(0.05f, 0.9f));
  const std::vector<Batch> data = batches(2, 64, 20, gpu);
  CapturedStep step([&](const Tensor& x, const Tensor& y) { training.step(x, y); }, gpu);
  for (int i = 0; i < 4; ++i) step.run(data[size_t(i) % 2].x, data[size_t(i) % 2].y);
  EXPECT_TRUE(step.captured()) << step.eager_reason();
}

TEST_F(HybridizeGpu, GraphReplayEqualsEagerBitForBit) {
  // The same kernels, cuBLAS with the same workspace, no atomics: a replay is the eager run.
  auto eager = lecture::sequential_mlp();
  auto hybrid = lecture::sequential_mlp();
  eager->initialize(init::xavier(), gpu, kSeed);
  hybrid->initialize(init::xavier(), gpu, kSeed);
  hybrid->hybridize(true, HybridizeOptions{/*check=*/true, /*tolerance=*/0.0f});
  for (int call = 0; call < 4; ++call) {
    const Tensor x = Tensor::uniform({8, 20}, -1.0f, 1.0f, 60 + uint64_t(call), gpu);
    EXPECT_EQ((*hybrid)(x).to_vector(), (*eager)(x).to_vector()) << "call " << call;
  }
  EXPECT_EQ(hybrid->hybridize_reason(), "");

  Training training(gpu, std::make_shared<SGD>(0.05f, 0.9f));
  const std::vector<Batch> data = batches(2, 64, 20, gpu);
  training.step(data[0].x, data[0].y);  // deferred shapes, so that the parameters exist
  CapturedStep step([&](const Tensor& x, const Tensor& y) { training.step(x, y); }, gpu,
                    HybridizeOptions{/*check=*/true, /*tolerance=*/0.0f},
                    training.net->collect_params(), training.trainer.get());
  for (int i = 0; i < 4; ++i) step.run(data[size_t(i) % 2].x, data[size_t(i) % 2].y);
  EXPECT_TRUE(step.captured()) << step.eager_reason();
}

TEST_F(HybridizeGpu, IntermediatesSeeTheChildrenOfAHybridizedBlock) {
  auto eager = lecture::sequential_mlp();
  auto hybrid = lecture::sequential_mlp();
  eager->initialize(init::xavier(), gpu, kSeed);
  hybrid->initialize(init::xavier(), gpu, kSeed);
  hybrid->hybridize();
  const Tensor x = Tensor::uniform({4, 20}, -1.0f, 1.0f, 55, gpu);
  (*hybrid)(x);
  (*hybrid)(x);  // captured
  ASSERT_EQ(hybrid->hybridize_reason(), "");
  std::vector<float> hidden_eager, hidden_hybrid;
  {
    Intermediates seen(*eager);
    (*eager)(x);
    hidden_eager = seen.output("0").to_vector();
  }
  {
    Intermediates seen(*hybrid);
    const Tensor y = (*hybrid)(x);
    hidden_hybrid = seen.output("0").to_vector();
    EXPECT_EQ(seen.output("").to_vector(), y.to_vector());
  }
  EXPECT_EQ(hidden_hybrid, hidden_eager);
  EXPECT_EQ(hybrid->hybridize_reason(), "");  // and it replays again once nothing records
}

// ---- Stale graphs (second review, finding A): what a graph baked in was replaced ----

TEST_F(HybridizeGpu, AReinitialisedBlockIsCapturedAgainNotReplayedStale) {
  auto eager = lecture::sequential_mlp();
  auto hybrid = lecture::sequential_mlp();
  eager->initialize(init::xavier(), gpu, kSeed);
  hybrid->initialize(init::xavier(), gpu, kSeed);
  hybrid->hybridize();
  EXPECT_EQ(hybrid->hybridize_state(), HybridState::kWarmingUp);
  const Tensor x = Tensor::uniform({4, 20}, -1.0f, 1.0f, 61, gpu);
  (*eager)(x);
  (*hybrid)(x);
  EXPECT_EQ(hybrid->hybridize_state(), HybridState::kWarmingUp);
  (*hybrid)(x);
  ASSERT_EQ(hybrid->hybridize_state(), HybridState::kCaptured) << hybrid->hybridize_reason();
  // New tensors for every parameter. The old ones are kept alive here, so the new ones cannot
  // land at the same addresses (which the caching allocator would otherwise often hand back,
  // hiding a stale replay by luck): a graph still reading the old addresses gives the old answer.
  std::vector<Tensor> old_values;
  for (const auto& [name, parameter] : hybrid->collect_params()) {
    old_values.push_back(parameter->data());
  }
  eager->initialize(init::normal(0.5f), gpu, 7, /*force_reinit=*/true);
  hybrid->initialize(init::normal(0.5f), gpu, 7, /*force_reinit=*/true);
  for (int call = 0; call < 3; ++call) {
    const Tensor y = (*hybrid)(x);
    expect_close(y, (*eager)(x), 1e-6, 0.0, "after force_reinit, call " + std::to_string(call));
    EXPECT_EQ(hybrid->hybridize_state(), HybridState::kCaptured);
  }
}

TEST_F(HybridizeGpu, ACapturedStepFollowsNewHyperparametersAndLoadedState) {
  Training eager(gpu, std::make_shared<SGD>(0.1f, 0.9f));
  Training captured(gpu, std::make_shared<SGD>(0.1f, 0.9f));
  CapturedStep step([&](const Tensor& x, const Tensor& y) { captured.step(x, y); }, gpu, {}, {},
                    captured.trainer.get());
  const std::vector<Batch> data = batches(12, 16, 20, gpu);
  for (int i = 0; i < 4; ++i) {
    eager.step(data[i].x, data[i].y);
    step.run(data[i].x, data[i].y);
  }
  ASSERT_EQ(step.state(), HybridState::kCaptured) << step.eager_reason();
  EXPECT_EQ(step.captures(), 1);
  // A new learning rate and momentum: the graph holds the old ones as host values.
  for (Trainer* trainer : {eager.trainer.get(), captured.trainer.get()}) {
    trainer->optimizer().set_hyperparameters({{"learning_rate", 0.05f}, {"momentum", 0.5f},
                                              {"weight_decay", 0.0f}});
  }
  for (int i = 4; i < 8; ++i) {
    eager.step(data[i].x, data[i].y);
    step.run(data[i].x, data[i].y);
  }
  EXPECT_EQ(step.captures(), 2);
  expect_parameters_close(captured, eager, 1e-5, "after new hyperparameters");
  // Optimizer state loaded from elsewhere: new slot tensors the old graph never wrote.
  const NamedTensors slots = eager.trainer->state();
  const auto metadata = eager.trainer->state_metadata();
  captured.trainer->load_state(slots, metadata);
  for (int i = 8; i < 12; ++i) {
    eager.step(data[i].x, data[i].y);
    step.run(data[i].x, data[i].y);
  }
  EXPECT_EQ(step.captures(), 3);
  expect_parameters_close(captured, eager, 1e-5, "after load_state");
}

TEST_F(HybridizeGpu, AFailedCaptureLeavesTheTrainerAsItWas) {
  Training eager(gpu, std::make_shared<SGD>(0.1f, 0.9f));
  Training captured(gpu, std::make_shared<SGD>(0.1f, 0.9f));
  float last_loss = 0.0f;
  // item() after the step: a host synchronisation inside the capture, found after step() ran.
  CapturedStep step(
      [&](const Tensor& x, const Tensor& y) {
        Tensor loss;
        {
          autograd::RecordScope record;
          loss = captured.loss_fn((*captured.net)(x), y);
        }
        loss.backward();
        captured.trainer->step(1);
        last_loss = loss.item();
      },
      gpu, {}, {}, captured.trainer.get());
  const std::vector<Batch> data = batches(4, 16, 20, gpu);
  for (const Batch& batch : data) {
    eager.step(batch.x, batch.y);
    step.run(batch.x, batch.y);
  }
  EXPECT_EQ(step.state(), HybridState::kEager);
  EXPECT_NE(step.eager_reason().find("Tensor::item"), std::string::npos) << step.eager_reason();
  EXPECT_EQ(captured.trainer->steps(), 4) << "the failed capture counted a step";
  expect_parameters_close(captured, eager, 1e-6, "eager after the failed capture");
  EXPECT_TRUE(std::isfinite(last_loss));
}

TEST_F(HybridizeGpu, GraphsPerShapeAreBounded) {
  auto hybrid = lecture::sequential_mlp();
  hybrid->initialize(init::xavier(), gpu, kSeed);
  hybrid->hybridize();
  for (int64_t rows = 1; rows <= int64_t(HybridForward::kMaxGraphs) + 4; ++rows) {
    const Tensor x = Tensor::uniform({rows, 20}, -1.0f, 1.0f, 70 + uint64_t(rows), gpu);
    (*hybrid)(x);
    (*hybrid)(x);
  }
  // Checked through the allocator: each graph holds a private pool; they may not pile up.
  CachingAllocator& allocator = cuda_allocator(0);
  const int64_t reserved = allocator.stats().bytes_reserved;
  for (int64_t rows = 1; rows <= int64_t(HybridForward::kMaxGraphs) + 4; ++rows) {
    const Tensor x = Tensor::uniform({rows, 20}, -1.0f, 1.0f, 70 + uint64_t(rows), gpu);
    (*hybrid)(x);
    (*hybrid)(x);
  }
  EXPECT_LE(allocator.stats().bytes_reserved, reserved + (int64_t(8) << 20));
}

}  // namespace
}  // namespace cairn
