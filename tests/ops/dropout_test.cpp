// Inverted dropout on the CPU: identity when predicting, the documented Philox mask when training
// (kernels/dropout_math.h), exact scaling, the same mask backward, and the generator's stream:
// the same (seed, offset) gives the same mask, each call moves the offset on.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "cairn/kernels/dropout_math.h"
#include "cairn/kernels/philox.h"
#include "support/test_support.h"

namespace cairn {
namespace {

using testing::expect_error;

const Device kCpu = Device::cpu();

// Values in [1, 2): a zero in the output can only be a dropped element.
Tensor nonzero_input(int64_t n, uint64_t seed) {
  return Tensor::uniform({n}, 1.0f, 2.0f, seed, kCpu);
}

Tensor train_dropout(const Tensor& x, float rate, DropoutGenerator& generator) {
  autograd::TrainModeScope train;
  return ops::dropout(x, rate, generator);
}

// The mask dropout_math.h documents, computed here from Philox directly: element i is kept when
// the uniform of word (offset + i) is >= rate.
std::vector<bool> expected_keep(uint64_t seed, uint64_t offset, int64_t n, float rate) {
  std::vector<bool> keep(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t word = offset + uint64_t(i);
    const kernels::Philox4 w = kernels::philox4x32(seed, word / 4);
    keep[size_t(i)] = kernels::uniform_from_bits(w.v[word % 4]) >= rate;
  }
  return keep;
}

TEST(Dropout, PredictingIsTheIdentity) {
  DropoutGenerator generator(7);
  const Tensor x = nonzero_input(100, 1);
  EXPECT_TRUE(ops::dropout(x, 0.5f, generator).same(x)) << "outside recording";
  {
    autograd::RecordScope record(autograd::Mode::kPredict);
    EXPECT_TRUE(ops::dropout(x, 0.5f, generator).same(x)) << "recording in prediction mode";
  }
  {
    autograd::RecordScope record;
    autograd::PredictModeScope predict;
    EXPECT_TRUE(ops::dropout(x, 0.5f, generator).same(x)) << "PredictModeScope";
  }
  EXPECT_EQ(generator.offset(kCpu), 0u) << "predicting draws nothing";
}

TEST(Dropout, RateZeroIsTheIdentityAndRateOneGivesZeros) {
  DropoutGenerator generator(7);
  const Tensor x = nonzero_input(10, 2);
  EXPECT_TRUE(train_dropout(x, 0.0f, generator).same(x));
  EXPECT_EQ(generator.offset(kCpu), 0u);
  EXPECT_EQ(train_dropout(x, 1.0f, generator).to_vector(), std::vector<float>(10, 0.0f));
}

TEST(Dropout, TrainingDropsAboutRateAndScalesTheRestExactly) {
  constexpr int64_t kN = 1 << 16;
  constexpr uint64_t kSeed = 12345;
  for (const float rate : {0.1f, 0.5f, 0.9f}) {
    SCOPED_TRACE(rate);
    DropoutGenerator generator(kSeed);
    const Tensor x = nonzero_input(kN, 3);
    const std::vector<float> xs = x.to_vector(), ys = train_dropout(x, rate, generator).to_vector();
    const std::vector<bool> keep = expected_keep(kSeed, 0, kN, rate);
    const float scale = 1.0f / (1.0f - rate);
    int64_t zeros = 0;
    for (int64_t i = 0; i < kN; ++i) {
      const size_t k = size_t(i);
      if (keep[k]) {
        ASSERT_EQ(ys[k], xs[k] * scale) << "element " << i;
      } else {
        ASSERT_EQ(ys[k], 0.0f) << "element " << i;
        ++zeros;
      }
    }
    // A fixed seed: the count is one number, never a flake; the bound (> 5 standard deviations
    // of a binomial over 2^16) says the mask has the right rate.
    EXPECT_NEAR(double(zeros) / kN, rate, 0.01);
  }
}

TEST(Dropout, BackwardUsesTheForwardMask) {
  DropoutGenerator generator(99);
  Tensor x = nonzero_input(1001, 4);
  x.attach_grad();
  Tensor y;
  {
    autograd::RecordScope record;
    y = ops::dropout(x, 0.4f, generator);
  }
  const Tensor dy = Tensor::uniform({1001}, -1.0f, 1.0f, 5, kCpu);
  y.backward(dy);
  const std::vector<float> ys = y.to_vector(), dys = dy.to_vector(), dxs = x.grad().to_vector();
  const float scale = 1.0f / (1.0f - 0.4f);
  int64_t kept = 0;
  for (size_t i = 0; i < ys.size(); ++i) {
    ASSERT_EQ(dxs[i], ys[i] != 0.0f ? dys[i] * scale : 0.0f) << "element " << i;
    kept += ys[i] != 0.0f;
  }
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, 1001);
}

TEST(Dropout, TheSameSeedAndOffsetGiveTheSameMask) {
  const Tensor x = nonzero_input(37, 6);
  DropoutGenerator a(2024), b(2024), other(2025);
  const std::vector<float> first = train_dropout(x, 0.5f, a).to_vector();
  EXPECT_EQ(train_dropout(x, 0.5f, b).to_vector(), first);
  EXPECT_NE(train_dropout(x, 0.5f, other).to_vector(), first);
  // set_seed restarts the stream.
  train_dropout(x, 0.5f, a);
  a.set_seed(2024);
  EXPECT_EQ(a.offset(kCpu), 0u);
  EXPECT_EQ(train_dropout(x, 0.5f, a).to_vector(), first);
  EXPECT_EQ(a.seed(), 2024u);
}

TEST(Dropout, EachCallDrawsTheNextWordsAndAdvancesTheOffset) {
  DropoutGenerator stepped(5), whole(5);
  // Ones: equal outputs are equal masks.
  const Tensor x = Tensor::ones({16}, kCpu), half = Tensor::ones({8}, kCpu);
  const std::vector<float> a = train_dropout(half, 0.5f, stepped).to_vector();
  EXPECT_EQ(stepped.offset(kCpu), 8u);
  EXPECT_EQ(stepped.offset(), 8u) << "the device used last";
  const std::vector<float> b = train_dropout(half, 0.5f, stepped).to_vector();
  EXPECT_EQ(stepped.offset(kCpu), 16u);
  EXPECT_NE(a, b) << "consecutive calls must draw different masks";
  // Two calls of 8 use words 0..15, as one call of 16 does.
  std::vector<float> joined = a;
  joined.insert(joined.end(), b.begin(), b.end());
  EXPECT_EQ(train_dropout(x, 0.5f, whole).to_vector(), joined);
  // Offsets move in whole Philox counters (4 words): 10 elements take 12 words.
  DropoutGenerator odd(5);
  train_dropout(nonzero_input(10, 8), 0.5f, odd);
  EXPECT_EQ(odd.offset(kCpu), 12u);
  const Tensor y = train_dropout(nonzero_input(3, 9), 0.25f, odd);
  EXPECT_EQ(odd.offset(kCpu), 16u);
  const std::vector<bool> keep = expected_keep(5, 12, 3, 0.25f);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(y.to_vector()[i] != 0.0f, bool(keep[i])) << i;
}

TEST(Dropout, DroppedInfinitiesAndNaNsGiveNaN) {
  // x * mask, as PyTorch's x * mask * scale: a dropped inf is NaN, a kept one stays inf.
  DropoutGenerator generator(1);
  const float inf = std::numeric_limits<float>::infinity();
  const Tensor x = Tensor::full({64}, inf, kCpu);
  const std::vector<float> y = train_dropout(x, 0.5f, generator).to_vector();
  const std::vector<bool> keep = expected_keep(1, 0, 64, 0.5f);
  for (size_t i = 0; i < y.size(); ++i) {
    if (keep[i]) {
      EXPECT_EQ(y[i], inf) << i;
    } else {
      EXPECT_TRUE(std::isnan(y[i])) << i;
    }
  }
}

TEST(Dropout, BadArgumentsNameTheOp) {
  DropoutGenerator generator;
  const Tensor x = nonzero_input(4, 1);
  for (const float rate : {-0.1f, 1.5f, std::numeric_limits<float>::quiet_NaN()}) {
    expect_error([&] { train_dropout(x, rate, generator); }, {"dropout", "rate"});
    expect_error([&] { ops::dropout(x, rate, generator); }, {"dropout", "rate"});
  }
  expect_error([&] { train_dropout(Tensor(), 0.5f, generator); }, {"dropout", "undefined"});
  expect_error(
      [&] {
        train_dropout(Tensor::from_int32({1, 2}, {2}, kCpu), 0.5f, generator);
      },
      {"dropout", "float32"});
  EXPECT_EQ(generator.offset(), 0u);
}

}  // namespace
}  // namespace cairn
