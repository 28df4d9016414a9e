// The data loader: batching, normalisation, pairing of images with labels, seeded shuffles, and
// the GPU's double-buffered copies against the CPU's batches.
#include "cairn/blocks/data_loader.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "cairn/kernels/cpu/parallel.h"
#include "support/test_support.h"

namespace cairn {
namespace {

// Ten 3-pixel samples whose pixels encode their index, so every batch row can be traced back.
std::shared_ptr<LabelledImages> traceable_data() {
  auto data = std::make_shared<LabelledImages>();
  data->count = 10;
  data->features = 3;
  data->classes = 10;
  for (int i = 0; i < 10; ++i) {
    data->pixels.insert(data->pixels.end(), {uint8_t(i), uint8_t(10 * i), uint8_t(255 - i)});
    data->labels.push_back((i * 7) % 10);
  }
  return data;
}

std::vector<Batch> one_epoch(DataLoader& loader, int64_t epoch) {
  loader.start_epoch(epoch);
  std::vector<Batch> batches;
  Batch batch;
  while (loader.next(batch)) batches.push_back({batch.x.clone(), batch.y.clone()});
  return batches;
}

TEST(DataLoader, BatchesCoverEverySampleOnceWithTheShortBatchLast) {
  LoaderOptions options;
  options.batch_size = 4;
  options.seed = 3;
  DataLoader loader(traceable_data(), options, Device::cpu());
  EXPECT_EQ(loader.batches_per_epoch(), 3);
  const std::vector<Batch> batches = one_epoch(loader, 0);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0].x.shape(), (Shape{4, 3}));
  EXPECT_EQ(batches[2].x.shape(), (Shape{2, 3}));
  std::set<int> seen;
  for (const Batch& batch : batches) {
    const std::vector<float> x = batch.x.to_vector();
    const std::vector<int32_t> y = batch.y.to_int32_vector();
    for (size_t row = 0; row < y.size(); ++row) {
      const int sample = int(std::lround(x[row * 3] * 255.0f));
      seen.insert(sample);
      EXPECT_EQ(y[row], (sample * 7) % 10) << "label travels with its image";
      EXPECT_FLOAT_EQ(x[row * 3 + 1], float(10 * sample) / 255.0f);
      EXPECT_FLOAT_EQ(x[row * 3 + 2], float(255 - sample) / 255.0f);
    }
  }
  EXPECT_EQ(seen.size(), 10u);
}

TEST(DataLoader, ShufflesDifferByEpochAndRepeatForTheSameEpoch) {
  LoaderOptions options;
  options.batch_size = 10;
  DataLoader loader(traceable_data(), options, Device::cpu());
  const auto first = one_epoch(loader, 1)[0].y.to_int32_vector();
  const auto second = one_epoch(loader, 2)[0].y.to_int32_vector();
  const auto again = one_epoch(loader, 1)[0].y.to_int32_vector();
  EXPECT_NE(first, second);
  EXPECT_EQ(first, again);
  options.shuffle = false;
  DataLoader ordered(traceable_data(), options, Device::cpu());
  EXPECT_EQ(one_epoch(ordered, 5)[0].y.to_int32_vector(),
            (std::vector<int32_t>{0, 7, 4, 1, 8, 5, 2, 9, 6, 3}));
}

TEST(DataLoader, DropLastAndStandardisation) {
  LoaderOptions options;
  options.batch_size = 4;
  options.drop_last = true;
  options.shuffle = false;
  options.mean = 0.5f;
  options.stddev = 0.25f;
  DataLoader loader(traceable_data(), options, Device::cpu());
  const auto batches = one_epoch(loader, 0);
  EXPECT_EQ(batches.size(), 2u);
  // Sample 1's last pixel: (254 / 255 - 0.5) / 0.25
  EXPECT_NEAR(batches[0].x.to_vector()[5], (254.0f / 255.0f - 0.5f) / 0.25f, 1e-6f);
}

// The gather is split across threads for large batches (parallel.h): at one thread and at three
// the batches are the same, bit for bit, and each row still matches its sample.
TEST(DataLoader, BatchesAreTheSameAtAnyThreadCount) {
  auto data = std::make_shared<LabelledImages>();
  data->count = 1000;
  data->features = 97;
  data->classes = 10;
  for (int64_t i = 0; i < data->count * data->features; ++i) {
    data->pixels.push_back(uint8_t((i * 2654435761u) >> 24));
  }
  for (int64_t i = 0; i < data->count; ++i) data->labels.push_back(int32_t(i % 10));
  LoaderOptions options;
  options.batch_size = 300;  // 3 threads of 100 rows, and a short last batch of 100
  options.mean = 0.3f;
  options.stddev = 0.4f;
  auto epoch_at = [&](int threads) {
    kernels::cpu::set_threads(threads);
    DataLoader loader(data, options, Device::cpu());
    auto batches = one_epoch(loader, 2);
    kernels::cpu::set_threads(0);
    return batches;
  };
  const auto one = epoch_at(1), three = epoch_at(3);
  ASSERT_EQ(one.size(), 4u);
  ASSERT_EQ(three.size(), 4u);
  for (size_t b = 0; b < one.size(); ++b) {
    EXPECT_EQ(one[b].x.to_vector(), three[b].x.to_vector()) << "batch " << b;
    EXPECT_EQ(one[b].y.to_int32_vector(), three[b].y.to_int32_vector()) << "batch " << b;
  }
  // Row r of the first batch is sample order[r], normalised.
  const std::vector<int64_t> order = seeded_permutation(data->count, options.seed * 1000003ull + 2);
  const std::vector<float> x = three[0].x.to_vector();
  for (int64_t row = 0; row < 300; row += 37) {
    const int64_t sample = order[size_t(row)];
    for (int64_t f = 0; f < data->features; f += 13) {
      const float pixel = float(data->pixels[size_t(sample * data->features + f)]);
      EXPECT_EQ(x[size_t(row * data->features + f)],
                pixel * (1.0f / (255.0f * 0.4f)) - 0.3f / 0.4f);
    }
  }
}

TEST(DataLoader, RejectsBadOptions) {
  LoaderOptions options;
  options.batch_size = 0;
  testing::expect_error([&] { DataLoader(traceable_data(), options, Device::cpu()); },
                        {"DataLoader", "batch_size must be positive"});
  testing::expect_error(
      [&] { DataLoader(std::make_shared<LabelledImages>(), LoaderOptions{}, Device::cpu()); },
      {"DataLoader", "empty"});
}

// 4x5 images whose pixels encode (sample, row, column): pixel (r, c) of sample i is
// 1 + 40 i + 5 r + c, never 0, so a shifted-in border (pixel 0) is told apart from the image.
std::shared_ptr<LabelledImages> small_images(int count) {
  auto data = std::make_shared<LabelledImages>();
  data->count = count;
  data->features = 20;
  data->classes = 10;
  for (int i = 0; i < count; ++i) {
    for (int p = 0; p < 20; ++p) data->pixels.push_back(uint8_t(1 + 40 * (i % 6) + p));
    data->labels.push_back(i % 6);
  }
  return data;
}

LoaderOptions augmented(int64_t max_shift, bool flip) {
  LoaderOptions options;
  options.batch_size = 8;
  options.shuffle = false;
  options.seed = 3;
  options.augmentation.height = 4;
  options.augmentation.width = 5;
  options.augmentation.max_shift = max_shift;
  options.augmentation.horizontal_flip = flip;
  return options;
}

// Every augmented sample is its image shifted by at most max_shift along each axis (zeros
// shifted in) and maybe mirrored; over many samples every shift and both mirrorings occur; the
// draws repeat for the same epoch and differ for another.
TEST(DataLoader, AugmentationShiftsAndMirrorsEachSampleWithinItsBounds) {
  const int count = 240;
  auto data = small_images(count);
  DataLoader loader(data, augmented(1, true), Device::cpu());
  std::set<std::vector<int64_t>> seen;  // (dy, dx, flip)
  const auto epoch1 = one_epoch(loader, 1);
  int64_t sample = 0;
  for (const Batch& batch : epoch1) {
    const std::vector<float> x = batch.x.to_vector();
    for (int64_t row = 0; row < batch.x.dim(0); ++row, ++sample) {
      const uint8_t* in = data->pixels.data() + sample * 20;
      bool matched = false;
      for (int64_t dy = -1; dy <= 1 && !matched; ++dy) {
        for (int64_t dx = -1; dx <= 1 && !matched; ++dx) {
          for (int flip = 0; flip < 2 && !matched; ++flip) {
            bool all = true;
            for (int64_t r = 0; r < 4 && all; ++r) {
              for (int64_t c = 0; c < 5 && all; ++c) {
                const int64_t sr = r + dy, shifted = c + dx, sc = flip ? 4 - shifted : shifted;
                const bool inside = sr >= 0 && sr < 4 && shifted >= 0 && shifted < 5;
                const float want = inside ? float(in[sr * 5 + sc]) * (1.0f / 255.0f) : 0.0f;
                all = x[size_t(row * 20 + r * 5 + c)] == want;
              }
            }
            if (all) {
              matched = true;
              seen.insert({dy, dx, flip});
            }
          }
        }
      }
      EXPECT_TRUE(matched) << "sample " << sample << " is no shift or mirror of its image";
      EXPECT_EQ(batch.y.to_int32_vector()[size_t(row)], data->labels[size_t(sample)]);
    }
  }
  EXPECT_EQ(seen.size(), 18u) << "every (dy, dx, mirror) should occur among 240 samples";
  const auto again = one_epoch(loader, 1);
  const auto epoch2 = one_epoch(loader, 2);
  EXPECT_EQ(again[0].x.to_vector(), epoch1[0].x.to_vector());
  EXPECT_NE(epoch2[0].x.to_vector(), epoch1[0].x.to_vector());
}

TEST(DataLoader, AugmentationOffLeavesTheImagesAsTheyAre) {
  auto data = small_images(8);
  LoaderOptions options = augmented(0, false);
  DataLoader loader(data, options, Device::cpu());
  const auto epoch = one_epoch(loader, 5);
  for (int64_t i = 0; i < 8 * 20; ++i) {
    EXPECT_EQ(epoch[0].x.to_vector()[size_t(i)], float(data->pixels[size_t(i)]) * (1.0f / 255.0f));
  }
}

TEST(DataLoader, AugmentationMustFitTheImages) {
  auto data = small_images(8);
  LoaderOptions wrong_size = augmented(1, true);
  wrong_size.augmentation.width = 4;
  testing::expect_error([&] { DataLoader(data, wrong_size, Device::cpu()); },
                        {"DataLoader", "augmentation", "4x4"});
  LoaderOptions too_far = augmented(4, false);
  testing::expect_error([&] { DataLoader(data, too_far, Device::cpu()); },
                        {"DataLoader", "shifted by up to 4"});
}

class DataLoaderCudaTest : public testing::CudaTest {};

TEST_F(DataLoaderCudaTest, AugmentedBatchesEqualTheCpuBatches) {
  LoaderOptions options = augmented(1, true);
  options.shuffle = true;
  DataLoader on_cpu(small_images(20), options, Device::cpu());
  DataLoader on_gpu(small_images(20), options, Device::cuda(0));
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    const auto expected = one_epoch(on_cpu, epoch);
    const auto actual = one_epoch(on_gpu, epoch);
    ASSERT_EQ(actual.size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ(actual[i].x.to_vector(), expected[i].x.to_vector()) << "epoch " << epoch;
    }
  }
}

// The GPU path stages batches through pinned buffers and a copy stream; what arrives must equal
// the CPU's batches exactly, across epochs and with the short last batch.
TEST_F(DataLoaderCudaTest, DoubleBufferedBatchesEqualTheCpuBatches) {
  LoaderOptions options;
  options.batch_size = 4;
  options.seed = 9;
  DataLoader on_cpu(traceable_data(), options, Device::cpu());
  DataLoader on_gpu(traceable_data(), options, Device::cuda(0));
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const auto expected = one_epoch(on_cpu, epoch);
    const auto actual = one_epoch(on_gpu, epoch);
    ASSERT_EQ(actual.size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_TRUE(actual[i].x.device().is_cuda());
      EXPECT_EQ(actual[i].x.to_vector(), expected[i].x.to_vector()) << "epoch " << epoch;
      EXPECT_EQ(actual[i].y.to_int32_vector(), expected[i].y.to_int32_vector());
    }
  }
}

// data_loader.h promises a batch stays valid until next() has been called twice more: batch k is
// still intact after the next() that returns k+1 (which stages k+2), however long the copies take.
TEST_F(DataLoaderCudaTest, ThePreviousBatchIsIntactAfterTheNextNext) {
  LoaderOptions options;
  options.batch_size = 2;
  options.seed = 4;
  DataLoader on_cpu(traceable_data(), options, Device::cpu());
  DataLoader on_gpu(traceable_data(), options, Device::cuda(0));
  const auto expected = one_epoch(on_cpu, 0);
  on_gpu.start_epoch(0);
  Batch previous, current;
  ASSERT_TRUE(on_gpu.next(previous));
  for (size_t k = 1; k < expected.size(); ++k) {
    ASSERT_TRUE(on_gpu.next(current));
    // Let every queued copy land before reading the older batch.
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(previous.x.to_vector(), expected[k - 1].x.to_vector()) << "batch " << k - 1;
    EXPECT_EQ(previous.y.to_int32_vector(), expected[k - 1].y.to_int32_vector());
    EXPECT_EQ(current.x.to_vector(), expected[k].x.to_vector()) << "batch " << k;
    previous = current;
  }
}

// Poisoned allocations are filled on the compute stream, the loader copies on its own stream: the
// first batch must be the data, never the poison.
TEST_F(DataLoaderCudaTest, PoisonedBuffersNeverShowThroughTheFirstBatch) {
  const bool was_poisoning = poison_allocations();
  set_poison_allocations(true);
  struct Restore {
    bool previous;
    ~Restore() { set_poison_allocations(previous); }
  } restore{was_poisoning};
  LoaderOptions options;
  options.batch_size = 4;
  options.shuffle = false;
  DataLoader on_cpu(traceable_data(), options, Device::cpu());
  DataLoader on_gpu(traceable_data(), options, Device::cuda(0));
  const auto expected = one_epoch(on_cpu, 0);
  const auto actual = one_epoch(on_gpu, 0);
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(actual[i].x.to_vector(), expected[i].x.to_vector()) << "batch " << i;
  }
}

}  // namespace
}  // namespace cairn
