// The tape's bookkeeping: recording scopes, shared leaves, grad requests, deep graphs.
#include <gtest/gtest.h>

#include "support/test_support.h"

namespace cairn {
namespace {

using testing::expect_error;

Tensor leaf(std::vector<float> values, GradReq request = GradReq::kWrite) {
  const int64_t n = int64_t(values.size());
  Tensor t = Tensor::from_vector(std::move(values), {n}, Device::cpu());
  t.attach_grad(request);
  return t;
}

TEST(Autograd, RecordsOnlyInsideARecordScope) {
  Tensor x = leaf({1, 2});
  Tensor outside = ops::sum(ops::square(x));
  EXPECT_TRUE(outside.is_leaf());
  {
    autograd::RecordScope record;
    EXPECT_TRUE(autograd::is_recording());
    Tensor inside = ops::sum(ops::square(x));
    EXPECT_FALSE(inside.is_leaf());
    {
      autograd::PauseScope pause;
      EXPECT_FALSE(autograd::is_recording());
    }
  }
  EXPECT_FALSE(autograd::is_recording());
}

// Gluon's model: training mode comes with recording and only there (or in a TrainModeScope), so
// a forward outside recording, which evaluation is, predicts.
TEST(Autograd, TrainingModeComesWithRecordingAndScopesRestoreIt) {
  EXPECT_FALSE(autograd::is_training());
  {
    autograd::RecordScope record;
    EXPECT_TRUE(autograd::is_training());
    {
      autograd::PauseScope pause;  // metrics mid-step predict
      EXPECT_FALSE(autograd::is_training());
      EXPECT_FALSE(autograd::is_recording());
    }
    EXPECT_TRUE(autograd::is_training());
    {
      autograd::PredictModeScope predict;
      EXPECT_FALSE(autograd::is_training());
      EXPECT_TRUE(autograd::is_recording());
    }
    {
      autograd::PauseScope pause(autograd::Mode::kTraining);
      EXPECT_TRUE(autograd::is_training());
      EXPECT_FALSE(autograd::is_recording());
    }
  }
  EXPECT_FALSE(autograd::is_training());
  {
    autograd::RecordScope record(autograd::Mode::kPredict);
    EXPECT_TRUE(autograd::is_recording());
    EXPECT_FALSE(autograd::is_training());
  }
  {
    autograd::TrainModeScope train;
    EXPECT_TRUE(autograd::is_training());
    EXPECT_FALSE(autograd::is_recording());
  }
  EXPECT_FALSE(autograd::is_training());
}

TEST(Autograd, ALeafUsedTwiceGetsTheSumOfBothUses) {
  Tensor x = leaf({1, -2, 3});
  {
    autograd::RecordScope record;
    Tensor y = ops::sum(ops::add(ops::mul(x, x), x));  // d/dx = 2x + 1
    y.backward();
  }
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{3, -3, 7}));
}

TEST(Autograd, WriteOverwritesAndAddAccumulates) {
  Tensor write = leaf({1, 2}, GradReq::kWrite);
  Tensor add = leaf({1, 2}, GradReq::kAdd);
  for (int i = 0; i < 2; ++i) {
    autograd::RecordScope record;
    ops::sum(ops::mul_scalar(ops::add(write, add), 3.0f)).backward();
  }
  EXPECT_EQ(write.grad().to_vector(), (std::vector<float>{3, 3}));
  EXPECT_EQ(add.grad().to_vector(), (std::vector<float>{6, 6}));
  add.zero_grad();
  EXPECT_EQ(add.grad().to_vector(), (std::vector<float>{0, 0}));
}

TEST(Autograd, NullRequestsAndDetachedTensorsGetNoGradient) {
  Tensor constant = leaf({5, 5}, GradReq::kNull);
  Tensor x = leaf({1, 2});
  {
    autograd::RecordScope record;
    ops::sum(ops::mul(ops::add(x, constant), x.detach())).backward();
  }
  EXPECT_FALSE(constant.grad().defined());
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{1, 2}));  // only the first factor flows
}

TEST(Autograd, BackwardNeedsARecordedGraphOrAHeadGradient) {
  Tensor x = leaf({1, 2});
  Tensor unrecorded = ops::sum(ops::relu(Tensor::ones({2}, Device::cpu())));
  expect_error([&] { unrecorded.backward(); }, {"backward", "RecordScope"});
  autograd::RecordScope record;
  Tensor vector_valued = ops::mul_scalar(x, 2.0f);
  expect_error([&] { vector_valued.backward(); }, {"head gradient", "(2,)"});
  vector_valued.backward(Tensor::from_vector({1, 10}, {2}, Device::cpu()));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{2, 20}));
}

TEST(Autograd, DeepGraphsDoNotOverflowTheStack) {
  Tensor x = leaf({1.0f});
  Tensor y = x;
  {
    autograd::RecordScope record;
    for (int i = 0; i < 20000; ++i) y = ops::add_scalar(y, 0.0f);
    ops::sum(y).backward();
  }
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{1.0f}));
}

}  // namespace
}  // namespace cairn
