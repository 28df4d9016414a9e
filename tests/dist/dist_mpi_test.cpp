// Data-parallel training over MPI, run by ctest under mpirun with 1, 2 and 3 ranks
// (tests/sources.cmake): collectives, parameters bit-identical across ranks after every step, the
// same parameters as one process trained on the concatenated batch, buckets started during
// backward, checkpoints written by rank 0 and resumed by every rank. The GPU part (NCCL) skips
// without a GPU per rank.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "cairn/blocks/checkpoint.h"
#include "cairn/blocks/hybridize.h"
#include "cairn/core/cuda_context.h"
#include "cairn/dist/communicator.h"
#include "dist/dist_fixtures.h"
#include "support/test_support.h"

namespace cairn {
namespace {

using testing::flat_parameters;
using testing::same_bits;

// One communicator for the whole binary: every rank runs the same tests in the same order, so
// their collectives match.
const dist::CommunicatorPtr& world() {
  static const dist::CommunicatorPtr comm = dist::make_communicator(Device::cpu());
  return comm;
}

// Rank 0's copy of `values`, on every rank.
std::vector<float> rank0_copy(const std::vector<float>& values) {
  Tensor copy = Tensor::from_vector(values, {int64_t(values.size())}, Device::cpu());
  world()->broadcast(copy, 0);
  return copy.to_vector();
}

TEST(MpiCommunicator, CollectivesGiveTheSumAndRankZerosValues) {
  const auto& comm = world();
  const int rank = comm->rank(), size = comm->size();
  EXPECT_EQ(comm->backend(), "mpi");
  ASSERT_GE(rank, 0);
  ASSERT_LT(rank, size);
  EXPECT_EQ(size, dist::launcher_size());
  // Small integers: the sum is exact in any order.
  Tensor t = Tensor::from_vector({float(rank), float(10 * rank + 1), -1.0f}, {3}, Device::cpu());
  comm->allreduce_sum(t);
  const float ranks = float(size), rank_sum = float(size * (size - 1) / 2);
  EXPECT_EQ(t.to_vector(), (std::vector<float>{rank_sum, 10 * rank_sum + ranks, -ranks}));

  Tensor async = Tensor::full({1000}, float(rank + 1), Device::cpu());
  auto pending = comm->start_allreduce_sum(async);
  pending->wait();
  EXPECT_EQ(async.to_vector(), std::vector<float>(1000, float(size * (size + 1) / 2)));

  Tensor b = Tensor::full({5}, float(rank == 0 ? 7 : rank), Device::cpu());
  comm->broadcast(b, 0);
  EXPECT_EQ(b.to_vector(), std::vector<float>(5, 7.0f));

  std::vector<double> host = {1.0, double(rank)};
  comm->allreduce_sum(host);
  EXPECT_EQ(host, (std::vector<double>{double(size), double(rank_sum)}));
  comm->barrier();
}

TEST(MpiCommunicator, RefusesWhatItCannotReduce) {
  Tensor labels = Tensor::from_int32({1, 2}, {2}, Device::cpu());
  testing::expect_error([&] { world()->allreduce_sum(labels); }, {"mpi allreduce_sum", "float32"});
  Tensor t = Tensor::zeros({2}, Device::cpu());
  testing::expect_error([&] { world()->broadcast(t, world()->size()); }, {"mpi broadcast", "root"});
}

// Trains `steps` steps data-parallel, one rank's shard each; step s takes the first batch of
// epoch s, so a step's data is a function of s alone (resuming needs no loader position).
struct DataParallelRun {
  std::shared_ptr<Sequential> net = testing::small_mlp();
  std::unique_ptr<Trainer> trainer;
  std::unique_ptr<DataLoader> loader;

  DataParallelRun(const std::string& optimizer, uint64_t init_seed, int64_t batch_per_rank,
                  const dist::BucketOptions& buckets = {}) {
    net->initialize(init::xavier(), Device::cpu(), init_seed);
    trainer = std::make_unique<Trainer>(net->collect_params(), testing::make_optimizer(optimizer));
    LoaderOptions options;
    options.batch_size = batch_per_rank;
    options.seed = 3;
    options.shards = world()->size();
    options.shard = world()->rank();
    loader = std::make_unique<DataLoader>(testing::numbered_images(60), options, Device::cpu());
  }
  void enable() { trainer->enable_data_parallel(world()); }
  void step(int64_t s) {
    loader->start_epoch(s);
    Batch batch;
    ASSERT_TRUE(loader->next(batch));
    testing::train_step(*net, *trainer, batch);
  }
};

class DataParallel : public ::testing::TestWithParam<std::string> {};

TEST_P(DataParallel, ParametersAreBitIdenticalAcrossRanksAfterEveryStep) {
  // Each rank initialises with its own seed: the broadcast at enable time must make them equal.
  DataParallelRun run(GetParam(), /*init_seed=*/100 + uint64_t(world()->rank()), 8);
  run.enable();
  std::vector<float> params = flat_parameters(*run.net);
  ASSERT_TRUE(same_bits(params, rank0_copy(params))) << "not equal after the broadcast";
  for (int64_t s = 0; s < 20; ++s) {
    run.step(s);
    params = flat_parameters(*run.net);
    ASSERT_TRUE(same_bits(params, rank0_copy(params)))
        << "rank " << world()->rank() << " differs from rank 0 after step " << s + 1;
  }
  // The optimizer's state too.
  for (const auto& [name, slot] : run.trainer->state()) {
    const std::vector<float> values = slot.to_vector();
    EXPECT_TRUE(same_bits(values, rank0_copy(values))) << name;
  }
}

// The reference: one process, all ranks' batches at once (batch_per_rank * size, unsharded).
// Each rank computes it locally: it needs no communication.
std::vector<float> single_process_reference(const std::string& optimizer, int64_t batch,
                                            int64_t steps, int64_t shards, int64_t shard) {
  auto net = testing::small_mlp();
  net->initialize(init::xavier(), Device::cpu(), 100);  // rank 0's seed, which DP broadcasts
  Trainer trainer(net->collect_params(), testing::make_optimizer(optimizer));
  LoaderOptions options;
  options.batch_size = batch;
  options.seed = 3;
  options.shards = shards;
  options.shard = shard;
  DataLoader loader(testing::numbered_images(60), options, Device::cpu());
  for (int64_t s = 0; s < steps; ++s) {
    loader.start_epoch(s);
    Batch b;
    loader.next(b);
    testing::train_step(*net, trainer, b);
  }
  return flat_parameters(*net);
}

TEST_P(DataParallel, MatchesOneProcessOnTheConcatenatedBatch) {
  const int64_t batch = 8, steps = 24;
  const int size = world()->size();
  DataParallelRun run(GetParam(), 100 + uint64_t(world()->rank()), batch);
  run.enable();
  for (int64_t s = 0; s < steps; ++s) run.step(s);
  const std::vector<float> distributed = flat_parameters(*run.net);
  const std::vector<float> reference =
      single_process_reference(GetParam(), batch * size, steps, 1, 0);
  // The data-parallel gradient is (1/size) * sum over ranks of each rank's batch mean; the
  // reference's is one mean over the same samples: the same terms, summed in another order and
  // scaled in two steps, so each gradient differs by a few float32 roundings (~1e-7 relative),
  // and over 24 steps those differences feed back through the weights (magnitude ~0.5).
  // Measured on the development machine: max |difference| 8.9e-8 (SGD, 2 and 3 ranks), 1.5e-7
  // (Adam, 2 ranks), 8.9e-8 (Adam, 3 ranks). Allowed: 2e-6 absolute + 1e-5 relative, more than
  // ten times that, while a rank's data missing moves the weights by 1e-2 and more (the control
  // below), and a wrong scale (sum instead of mean, tried) by 0.3 with SGD. Adam's update is
  // nearly blind to the gradient's scale (that sum moved its weights by 3e-6 only): SGD is the
  // check of the averaging.
  double worst = 0;
  for (size_t i = 0; i < reference.size(); ++i) {
    worst = std::max(worst, std::abs(double(distributed[i]) - double(reference[i])));
  }
  std::printf("[rank %d of %d, %s] max |data-parallel - single process| over %zu weights: %.3g\n",
              world()->rank(), size, GetParam().c_str(), reference.size(), worst);
  testing::expect_close(distributed, reference, 2e-6, 1e-5, "data-parallel vs single process");
  if (size > 1) {
    // The control: training on this rank's shard alone ends far from both.
    const std::vector<float> alone =
        single_process_reference(GetParam(), batch, steps, size, world()->rank());
    double control = 0;
    for (size_t i = 0; i < reference.size(); ++i) {
      control = std::max(control, std::abs(double(alone[i]) - double(reference[i])));
    }
    EXPECT_GT(control, 1000 * 2e-6) << "the comparison cannot tell a rank's data from all of it";
  }
}

INSTANTIATE_TEST_SUITE_P(Optimizers, DataParallel, ::testing::Values("sgd", "adam"));

// initialize(force_reinit) gives every parameter new tensors: the reducer's hooks sat on the old
// ones, so without a rebind each rank would step on its own shard's gradients and drift apart.
TEST(DataParallelReinit, ReinitialisedParametersKeepBeingAveraged) {
  DataParallelRun run("sgd", 100, 8);
  run.enable();
  run.step(0);
  // Every rank re-initialises with the same seed: new tensors holding equal values.
  run.net->initialize(init::xavier(), Device::cpu(), 7, /*force_reinit=*/true);
  std::vector<float> params = flat_parameters(*run.net);
  ASSERT_TRUE(same_bits(params, rank0_copy(params)));
  for (int64_t s = 1; s < 6; ++s) {
    run.step(s);
    params = flat_parameters(*run.net);
    ASSERT_TRUE(same_bits(params, rank0_copy(params)))
        << "rank " << world()->rank() << " differs from rank 0 after step " << s
        << " since the re-initialisation: its gradients were not averaged";
  }
}

TEST(DataParallelBuckets, StartDuringBackwardBeforeTheUpdate) {
  // 1 KiB buckets: the MLP's 16x32, 32, 32x4 and 4 floats make several.
  dist::BucketOptions small;
  small.bucket_bytes = 1024;
  DataParallelRun run("sgd", 100, 8);
  run.trainer->enable_data_parallel(world(), small);
  const dist::GradientReducer* reducer = run.trainer->gradient_reducer();
  ASSERT_NE(reducer, nullptr);
  ASSERT_GE(reducer->bucket_count(), 2u);
  // The last layer's parameters come first: their gradients are ready first.
  EXPECT_EQ(reducer->bucket_members(0).front(), run.net->collect_params().size() - 1);
  run.step(0);
  if (world()->size() > 1) {
    // Every bucket was started from a hook inside backward(), none left for step().
    EXPECT_EQ(reducer->buckets_started_in_backward(), reducer->bucket_count());
  }
}

TEST(DataParallelCheckpoint, RankZeroWritesEveryRankResumesBitIdentically) {
  const auto& comm = world();
  // One path for the job: rank 0's process id.
  std::vector<double> pid = {comm->rank() == 0 ? double(getpid()) : 0.0};
  comm->allreduce_sum(pid);
  const std::string path = ::testing::TempDir() + "cairn_dist_checkpoint_" +
                           std::to_string(int64_t(pid[0])) + ".safetensors";

  // Uninterrupted: 6 steps, a checkpoint after the 3rd.
  DataParallelRun uninterrupted("adam", 100, 8);
  uninterrupted.enable();
  std::vector<float> at_checkpoint;
  for (int64_t s = 0; s < 6; ++s) {
    uninterrupted.step(s);
    if (s == 2) {
      if (comm->rank() == 0) save_checkpoint(path, *uninterrupted.net, *uninterrupted.trainer);
      comm->barrier();  // written before anyone reads it
      at_checkpoint = flat_parameters(*uninterrupted.net);
    }
  }
  const std::vector<float> expected = flat_parameters(*uninterrupted.net);

  // Resumed: a fresh network on every rank (another seed), loaded, then steps 4 to 6.
  DataParallelRun resumed("adam", 999 + uint64_t(comm->rank()), 8);
  load_checkpoint(path, *resumed.net, *resumed.trainer, Device::cpu());
  EXPECT_TRUE(same_bits(flat_parameters(*resumed.net), at_checkpoint));
  resumed.enable();
  for (int64_t s = 3; s < 6; ++s) resumed.step(s);
  EXPECT_TRUE(same_bits(flat_parameters(*resumed.net), expected))
      << "rank " << comm->rank() << ": the resumed run differs from the uninterrupted one";
  EXPECT_EQ(resumed.trainer->steps(), 6);

  // And a single process (no communicator) reads it too.
  if (comm->rank() == 0) {
    auto net = testing::small_mlp();
    Trainer alone(net->collect_params(), testing::make_optimizer("adam"));
    load_checkpoint(path, *net, alone, Device::cpu());
    EXPECT_TRUE(same_bits(flat_parameters(*net), at_checkpoint));
    EXPECT_EQ(alone.steps(), 3);
    EXPECT_FALSE(alone.data_parallel());
  }
  comm->barrier();
  if (comm->rank() == 0) std::remove(path.c_str());
}

TEST(DataParallelSetup, RefusesDeferredParameters) {
  auto net = make<Sequential>();
  net->add(make<Dense>(4));  // input size unknown until the first forward
  net->initialize(init::xavier(), Device::cpu(), 0);
  Trainer trainer(net->collect_params(), testing::make_optimizer("sgd"));
  // Fails on every rank before any collective.
  testing::expect_error([&] { trainer.enable_data_parallel(world()); },
                        {"enable_data_parallel", "0.weight", "run one forward pass first"});
}

// ---- Agreement and timeouts. A mismatch throws on every rank alike, so these run in-process:
// the job goes on, its collectives still matched. ----

TEST(MpiCommunicator, AllgatherGivesEveryRanksStringInRankOrder) {
  const auto& comm = world();
  // Lengths differ by rank; rank 0's is empty.
  const std::vector<std::string> all = comm->allgather(std::string(size_t(comm->rank()), 'x') +
                                                        (comm->rank() ? "!" : ""));
  ASSERT_EQ(all.size(), size_t(comm->size()));
  for (int r = 0; r < comm->size(); ++r) {
    EXPECT_EQ(all[size_t(r)], std::string(size_t(r), 'x') + (r ? "!" : "")) << r;
  }
}

TEST(RanksAgree, EveryRankNamesEachDifferingQuantityWithEachRanksValue) {
  const auto& comm = world();
  dist::check_ranks_agree(*comm, {{"batch size", "8"}, {"steps per epoch", "4"}}, "test");
  if (comm->size() == 1) GTEST_SKIP() << "one rank always agrees with itself";
  const std::string steps = comm->rank() == 1 ? "3" : "4";
  dist::Quantities mine = {{"batch size", "8"}, {"steps per epoch", steps}};
  if (comm->rank() == 0) mine.emplace_back("warm-up", "0");
  testing::expect_error([&] { dist::check_ranks_agree(*comm, mine, "the check"); },
                        {"the check: the ranks disagree on 2 quantities",
                         "steps per epoch: '4' on rank", "'3' on rank 1",
                         "warm-up: '0' on rank 0; nothing on rank"});
  // Still in step: a collective after the refusal matches on every rank.
  std::vector<double> one = {1.0};
  comm->allreduce_sum(one);
  EXPECT_EQ(one[0], double(comm->size()));
}

TEST(RanksAgree, EnableDataParallelRefusesRanksThatWouldTakeDifferentSteps) {
  const auto& comm = world();
  if (comm->size() == 1) GTEST_SKIP() << "needs 2 or more ranks";
  // Rank 1 with fewer samples (a smaller --limit): fewer steps per epoch. Without the check the
  // job would deadlock at the end of rank 1's epoch.
  auto net = testing::small_mlp();
  net->initialize(init::xavier(), Device::cpu(), 0);
  Trainer trainer(net->collect_params(), testing::make_optimizer("sgd"));
  LoaderOptions options;
  options.batch_size = 4;
  options.shards = comm->size();
  options.shard = comm->rank();
  const int64_t samples = comm->rank() == 1 ? 16 * comm->size() : 24 * comm->size();
  DataLoader loader(testing::numbered_images(samples), options, Device::cpu());
  testing::expect_error(
      [&] { trainer.enable_data_parallel(comm, {}, data_parallel_quantities(loader)); },
      {"enable_data_parallel", "steps per epoch: '6' on rank", "'4' on rank 1",
       "training samples"});
  EXPECT_FALSE(trainer.data_parallel());
  // The library's own quantities: a different optimizer hyperparameter on one rank.
  Trainer other(net->collect_params(),
                std::make_shared<SGD>(comm->rank() == 1 ? 0.2f : 0.1f, 0.9f));
  testing::expect_error([&] { other.enable_data_parallel(comm); },
                        {"optimizer and hyperparameters", "learning_rate=0.200000003"});
  EXPECT_FALSE(other.data_parallel());
  comm->barrier();
}

TEST(CollectiveTimeout, AShortTimeoutLetsCollectivesThatCompleteThrough) {
  const auto& comm = world();
  const double saved = comm->collective_timeout();
  comm->set_collective_timeout(5);
  // Rank 0 comes 200 ms late to a barrier and a reduction: the others wait, well within 5 s.
  if (comm->rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  comm->barrier();
  Tensor t = Tensor::full({10}, 1.0f, Device::cpu());
  auto pending = comm->start_allreduce_sum(t);
  if (comm->rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  pending->wait();
  EXPECT_EQ(t.to_vector(), std::vector<float>(10, float(comm->size())));
  comm->set_collective_timeout(saved);
  testing::expect_error([&] { comm->set_collective_timeout(0); }, {"set_collective_timeout"});
}

// ---- GPU: NCCL. One GPU per rank; skipped otherwise, saying how many are needed. ----

class NcclTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Every rank must take the same decision, or some would wait in a collective the others
    // skipped: agree first.
    const int gpus = cuda_available() ? cuda_device_count() : 0;
    std::vector<double> ready = {dist::nccl_built() && world()->local_rank() < gpus ? 1.0 : 0.0};
    world()->allreduce_sum(ready);
    if (ready[0] == world()->size()) return;
    std::string why = !dist::nccl_built()
                          ? std::string("this cairn was built without NCCL")
                          : "needs one GPU per rank: " + std::to_string(world()->size()) +
                                " GPUs in all, one per local rank (this machine "
                                "has " +
                                std::to_string(gpus) +
                                (gpus == 0 ? ": " + cuda_unavailable_reason() : "") + ")";
    const char* required = std::getenv("CAIRN_REQUIRE_GPU");
    // A GPU promised and absent fails; too few GPUs for this many ranks is a skip (the 2- and
    // 3-rank jobs on a one-GPU machine).
    if (required != nullptr && std::string(required) == "1" && dist::nccl_built() && gpus == 0) {
      GTEST_FAIL() << "CAIRN_REQUIRE_GPU=1 but " << why;
    }
    GTEST_SKIP() << why;
  }
  const dist::CommunicatorPtr& nccl() {
    static const dist::CommunicatorPtr comm =
        dist::make_communicator(Device::cuda(world()->local_rank() % cuda_device_count()));
    return comm;
  }
};

TEST_F(NcclTest, AllreduceMatchesTheMpiPath) {
  const Device gpu = nccl()->device();
  // Values whose sums round: the two engines may add in different orders.
  Tensor on_cpu = testing::random_tensor({100003}, 7 + uint64_t(world()->rank()), Device::cpu());
  Tensor on_gpu = on_cpu.to(gpu);
  world()->allreduce_sum(on_cpu);
  nccl()->allreduce_sum(on_gpu);
  testing::expect_close(on_gpu.to_host(), on_cpu, 1e-6, 1e-5, "nccl vs mpi");
  Tensor b = Tensor::full({7}, float(world()->rank() + 3), gpu);
  nccl()->broadcast(b, 0);
  EXPECT_EQ(b.to_vector(), std::vector<float>(7, 3.0f));
}

TEST_F(NcclTest, CapturedStepIncludesTheAllreduce) {
  const Device gpu = nccl()->device();
  auto make_run = [&] {
    auto net = testing::small_mlp();
    net->initialize(init::xavier(), gpu, 100 + uint64_t(world()->rank()));
    auto trainer = std::make_unique<Trainer>(net->collect_params(), std::make_shared<SGD>(0.1f));
    trainer->enable_data_parallel(nccl());
    return std::make_pair(net, std::move(trainer));
  };
  auto [eager_net, eager_trainer] = make_run();
  auto [net, trainer] = make_run();
  const SoftmaxCrossEntropyLoss loss_fn;
  CapturedStep step(
      [&](const Tensor& x, const Tensor& y) {
        Tensor loss;
        {
          autograd::RecordScope record;
          loss = loss_fn((*net)(x), y);
        }
        loss.backward();
        trainer->step(1);
      },
      gpu);
  LoaderOptions options;
  options.batch_size = 8;
  options.drop_last = true;
  options.shards = world()->size();
  options.shard = world()->rank();
  DataLoader loader(testing::numbered_images(64), options, Device::cpu());
  Batch batch;
  for (int i = 0; i < 4 && loader.next(batch); ++i) {
    Tensor x = batch.x.to(gpu), y = batch.y.to(gpu);
    step.run(x, y);
    Tensor loss;
    {
      autograd::RecordScope record;
      loss = loss_fn((*eager_net)(x), y);
    }
    loss.backward();
    eager_trainer->step(1);
  }
  EXPECT_TRUE(step.captured()) << step.eager_reason();
  const std::vector<float> captured = flat_parameters(*net);
  testing::expect_close(captured, flat_parameters(*eager_net), 1e-6, 1e-5, "captured vs eager");
  EXPECT_TRUE(same_bits(captured, rank0_copy(captured))) << "ranks differ";
}

}  // namespace
}  // namespace cairn
