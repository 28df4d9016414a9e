// The single-process parts of data-parallel training: autograd's grad-ready hook, the sharding of
// a loader's epochs, the reducer's buckets, and a job of one that trains exactly like no job.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "cairn/core/autograd.h"
#include "cairn/dist/communicator.h"
#include "cairn/dist/gradient_reducer.h"
#include "dist/dist_fixtures.h"
#include "support/test_support.h"

namespace cairn {
namespace {

const Device kCpu = Device::cpu();

TEST(GradReadyHook, RunsOncePerLeafWithTheFinalGradientLastLayerFirst) {
  auto net = testing::small_mlp(3, 5, 2);
  net->initialize(init::xavier(), kCpu, 1);
  const ParameterDict params = net->collect_params();
  std::vector<std::string> order;
  std::vector<std::vector<float>> seen(params.size());
  size_t index = 0;
  for (const auto& [name, parameter] : params) {
    const Tensor leaf = parameter->data();
    autograd::add_grad_ready_hook(leaf, &order, [&, name = name, leaf, index] {
      order.push_back(name);
      seen[index] = leaf.grad().to_vector();
    });
    ++index;
  }
  Tensor x = testing::random_tensor({4, 3}, 2, kCpu);
  Tensor y = Tensor::from_int32({0, 1, 1, 0}, {4}, kCpu);
  {
    autograd::RecordScope record;
    Tensor loss = SoftmaxCrossEntropyLoss()((*net)(x), y);
    loss.backward();
  }
  // Each hook ran once, saw the gradient backward() leaves behind, and the output layer's
  // parameters were final before the hidden layer's: the order overlap relies on.
  ASSERT_EQ(order.size(), params.size());
  index = 0;
  for (const auto& [name, parameter] : params) {
    EXPECT_EQ(seen[index++], parameter->grad().to_vector()) << name;
  }
  const auto position = [&](const std::string& name) {
    return std::find(order.begin(), order.end(), name) - order.begin();
  };
  EXPECT_LT(position("1.weight"), position("0.weight"));
  EXPECT_LT(position("1.bias"), position("0.bias"));

  for (const auto& [name, parameter] : params) {
    autograd::remove_grad_ready_hooks(parameter->data(), &order);
  }
  order.clear();
  {
    autograd::RecordScope record;
    SoftmaxCrossEntropyLoss()((*net)(x), y).backward();
  }
  EXPECT_TRUE(order.empty()) << "removed hooks still ran";
}

TEST(GradReadyHook, SharedLeafRunsOnceWithTheSumAndUnreachedLeafNever) {
  Tensor w = Tensor::from_vector({2.0f}, {1}, kCpu);
  Tensor unused = Tensor::from_vector({1.0f}, {1}, kCpu);
  w.attach_grad();
  unused.attach_grad();
  int w_calls = 0, unused_calls = 0;
  float w_grad_at_hook = 0;
  autograd::add_grad_ready_hook(w, nullptr, [&] {
    ++w_calls;
    w_grad_at_hook = w.grad().item();
  });
  autograd::add_grad_ready_hook(unused, nullptr, [&] { ++unused_calls; });
  Tensor x = Tensor::from_vector({3.0f}, {1}, kCpu);
  {
    autograd::RecordScope record;
    Tensor y = ops::sum(ops::mul(ops::mul(w, x), w));  // x * w^2: dy/dw = 2 x w = 12
    y.backward();
  }
  EXPECT_EQ(w_calls, 1);
  EXPECT_EQ(w_grad_at_hook, 12.0f);
  EXPECT_EQ(unused_calls, 0);
  testing::expect_error([&] { autograd::add_grad_ready_hook(x, nullptr, [] {}); },
                        {"add_grad_ready_hook", "leaf"});
}

TEST(Shards, AreDisjointEqualAndCoverTheEpoch) {
  for (int64_t count : {1, 2, 7, 60, 61, 1000}) {
    for (int64_t shards : {1, 2, 3, 4}) {
      const std::vector<int64_t> order = seeded_permutation(count, uint64_t(count * 31 + shards));
      for (ShardRemainder remainder : {ShardRemainder::kDrop, ShardRemainder::kUneven}) {
        if (remainder == ShardRemainder::kDrop && count < shards) continue;
        std::set<int64_t> all;
        size_t total = 0;
        for (int64_t shard = 0; shard < shards; ++shard) {
          const std::vector<int64_t> mine = shard_of(order, shard, shards, remainder);
          const int64_t expected = remainder == ShardRemainder::kDrop
                                       ? count / shards
                                       : count / shards + (shard < count % shards ? 1 : 0);
          EXPECT_EQ(int64_t(mine.size()), expected) << count << " over " << shards;
          all.insert(mine.begin(), mine.end());
          total += mine.size();
        }
        EXPECT_EQ(all.size(), total) << "shards overlap: " << count << " over " << shards;
        // kUneven covers everything; kDrop leaves out fewer than `shards`, the epoch's last ones.
        const int64_t dropped = remainder == ShardRemainder::kDrop ? count % shards : 0;
        EXPECT_EQ(int64_t(all.size()), count - dropped);
        for (int64_t i = count - dropped; i < count; ++i) {
          EXPECT_EQ(all.count(order[size_t(i)]), 0u);
        }
      }
    }
  }
  testing::expect_error([] { shard_of({0, 1}, 2, 2, ShardRemainder::kDrop); }, {"shard 2 of 2"});
}

TEST(Shards, LoadersTogetherServeTheSingleLoadersBatches) {
  // Batch k of the shards together holds the samples of batch k of one loader with
  // batch_size * shards, every epoch: what data-parallel parity rests on.
  const auto data = testing::numbered_images(61);
  const int64_t shards = 3, batch = 4;
  LoaderOptions single_options;
  single_options.batch_size = batch * shards;
  single_options.seed = 9;
  single_options.drop_last = true;
  DataLoader single(data, single_options, kCpu);
  std::vector<std::unique_ptr<DataLoader>> loaders;
  for (int64_t shard = 0; shard < shards; ++shard) {
    LoaderOptions options = single_options;
    options.batch_size = batch;
    options.shards = shards;
    options.shard = shard;
    loaders.push_back(std::make_unique<DataLoader>(data, options, kCpu));
    EXPECT_EQ(loaders.back()->epoch_samples(), 61 / 3);
    EXPECT_EQ(loaders.back()->batches_per_epoch(), 5);  // 20 samples in batches of 4
  }
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    single.start_epoch(epoch);
    for (auto& loader : loaders) loader->start_epoch(epoch);
    Batch whole, part;
    int64_t batches = 0;
    while (single.next(whole)) {
      std::multiset<int64_t> expected, got;
      for (int64_t id : testing::sample_ids(whole)) expected.insert(id);
      for (auto& loader : loaders) {
        ASSERT_TRUE(loader->next(part));
        for (int64_t id : testing::sample_ids(part)) got.insert(id);
      }
      EXPECT_EQ(got, expected) << "epoch " << epoch << " batch " << batches;
      ++batches;
    }
    EXPECT_EQ(batches, 5);
  }
  LoaderOptions bad = single_options;
  bad.shards = 2;
  bad.shard = 2;
  testing::expect_error([&] { DataLoader(data, bad, kCpu); }, {"DataLoader", "shard 2 of 2"});
}

TEST(GradientReducer, PacksBucketsInReverseOrderWithinTheirSize) {
  auto net = testing::small_mlp(16, 32, 4);  // 512, 32, 128, 4 floats
  net->initialize(init::xavier(), kCpu, 0);
  std::vector<Tensor> leaves;
  std::vector<std::string> names;
  for (const auto& [name, parameter] : net->collect_params()) {
    leaves.push_back(parameter->data());
    names.push_back(name);
  }
  dist::BucketOptions options;
  options.bucket_bytes = 600;  // 150 floats
  dist::GradientReducer reducer(leaves, names, dist::single_process_communicator(), options);
  // Reverse order 3 (4), 2 (128) | 1 (32) | 0 (512: alone, larger than a bucket).
  ASSERT_EQ(reducer.bucket_count(), 3u);
  EXPECT_EQ(reducer.bucket_members(0), (std::vector<size_t>{3, 2}));
  EXPECT_EQ(reducer.bucket_members(1), (std::vector<size_t>{1}));
  EXPECT_EQ(reducer.bucket_members(2), (std::vector<size_t>{0}));

  Tensor wrong = Tensor::zeros({3}, kCpu);
  wrong.attach_grad(GradReq::kAdd);
  testing::expect_error(
      [&] { dist::GradientReducer({wrong}, {"acc"}, dist::single_process_communicator()); },
      {"GradientReducer", "'acc'", "kAdd"});
}

TEST(DataParallelSingleProcess, TrainsBitIdenticallyToNoCommunicator) {
  for (const std::string optimizer : {"sgd", "adam"}) {
    auto plain_net = testing::small_mlp();
    auto dp_net = testing::small_mlp();
    plain_net->initialize(init::xavier(), kCpu, 5);
    dp_net->initialize(init::xavier(), kCpu, 5);
    Trainer plain(plain_net->collect_params(), testing::make_optimizer(optimizer));
    Trainer dp(dp_net->collect_params(), testing::make_optimizer(optimizer));
    dp.enable_data_parallel(dist::single_process_communicator());
    EXPECT_TRUE(dp.data_parallel());
    LoaderOptions options;
    options.batch_size = 8;
    DataLoader loader(testing::numbered_images(40), options, kCpu);
    Batch batch;
    while (loader.next(batch)) {
      testing::train_step(*plain_net, plain, batch);
      testing::train_step(*dp_net, dp, batch);
    }
    EXPECT_TRUE(
        testing::same_bits(testing::flat_parameters(*plain_net), testing::flat_parameters(*dp_net)))
        << optimizer;
  }
}

TEST(Communicator, SaysWhichBackendsWereBuilt) {
  // CMake found Open MPI on the development machine and CI; the answer must match the build.
#if CAIRN_EXPECT_MPI
  EXPECT_TRUE(dist::mpi_built());
#else
  EXPECT_FALSE(dist::mpi_built());
  testing::expect_error([] { dist::make_communicator(kCpu); }, {"built without MPI"});
#endif
  const auto single = dist::single_process_communicator();
  EXPECT_EQ(single->size(), 1);
  Tensor t = Tensor::full({3}, 2.0f, kCpu);
  single->allreduce_sum(t);
  EXPECT_EQ(t.to_vector(), std::vector<float>(3, 2.0f));
}

TEST(CollectiveTimeout, ComesFromTheEnvironmentOrTheDefaultAndRefusesNonsense) {
  const char* saved = std::getenv("CAIRN_COLLECTIVE_TIMEOUT_S");
  const std::string restore = saved != nullptr ? saved : "";
  unsetenv("CAIRN_COLLECTIVE_TIMEOUT_S");
  EXPECT_EQ(dist::default_collective_timeout(), dist::kDefaultCollectiveTimeoutSeconds);
  EXPECT_EQ(dist::kDefaultCollectiveTimeoutSeconds, 600);
  EXPECT_EQ(dist::single_process_communicator()->collective_timeout(), 600);
  setenv("CAIRN_COLLECTIVE_TIMEOUT_S", "2.5", 1);
  EXPECT_EQ(dist::default_collective_timeout(), 2.5);
  EXPECT_EQ(dist::single_process_communicator()->collective_timeout(), 2.5);
  for (const char* bad : {"", "0", "-3", "abc", "5s", "nan", "inf", "1e9", " 4"}) {
    setenv("CAIRN_COLLECTIVE_TIMEOUT_S", bad, 1);
    testing::expect_error([] { dist::default_collective_timeout(); },
                          {"CAIRN_COLLECTIVE_TIMEOUT_S", "seconds"});
    // A communicator is not made with a timeout nobody chose.
    testing::expect_error([] { dist::single_process_communicator(); },
                          {"CAIRN_COLLECTIVE_TIMEOUT_S"});
  }
  if (saved != nullptr) {
    setenv("CAIRN_COLLECTIVE_TIMEOUT_S", restore.c_str(), 1);
  } else {
    unsetenv("CAIRN_COLLECTIVE_TIMEOUT_S");
  }
  const auto comm = dist::single_process_communicator();
  comm->set_collective_timeout(0.25);
  EXPECT_EQ(comm->collective_timeout(), 0.25);
  for (const double bad : {0.0, -1.0, 2e8, std::nan(""), double(INFINITY)}) {
    testing::expect_error([&] { comm->set_collective_timeout(bad); },
                          {"set_collective_timeout"});
  }
  EXPECT_EQ(comm->collective_timeout(), 0.25);
}

TEST(RanksAgree, AJobOfOneAgreesWithItselfAndGathersItsOwnValue) {
  const auto comm = dist::single_process_communicator();
  EXPECT_EQ(comm->allgather("abc"), std::vector<std::string>{"abc"});
  dist::check_ranks_agree(*comm, {{"batch size", "8"}}, "test");
}

TEST(RanksAgree, DataParallelQuantitiesNameWhatTheLoaderComputes) {
  LoaderOptions options;
  options.batch_size = 8;
  options.seed = 7;
  options.shards = 2;
  options.shard = 1;
  DataLoader loader(testing::numbered_images(36), options, kCpu);
  const dist::Quantities quantities = data_parallel_quantities(loader);
  auto value = [&](const std::string& name) {
    for (const auto& [key, text] : quantities) {
      if (key == name) return text;
    }
    return std::string("<none>");
  };
  EXPECT_EQ(value("training samples"), "36");
  EXPECT_EQ(value("shards"), "2");
  EXPECT_EQ(value("batch size (per rank)"), "8");
  EXPECT_EQ(value("samples per epoch (per rank)"), "18");
  EXPECT_EQ(value("steps per epoch"), "3");
  EXPECT_EQ(value("shuffle"), "seed 7");
  EXPECT_EQ(value("normalisation (mean, stddev)"), "0, 1");
}

}  // namespace
}  // namespace cairn
