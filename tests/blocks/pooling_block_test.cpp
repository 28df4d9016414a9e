// The pooling, Flatten and Dropout blocks: output shapes, the printed lines, construction checks,
// and Dropout's behaviour in each mode.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace cairn {
namespace {

using testing::expect_error;

const Device kCpu = Device::cpu();

// Pool2DOptions field by field (C++17 has no designated initializers).
Pool2DOptions options(std::optional<Size2> stride, Size2 padding = 0, bool ceil_mode = false,
                      bool count_include_pad = true) {
  Pool2DOptions o;
  o.stride = stride;
  o.padding = padding;
  o.ceil_mode = ceil_mode;
  o.count_include_pad = count_include_pad;
  return o;
}

TEST(PoolingBlocks, OutputShapes) {
  const Tensor x = testing::random_tensor({2, 3, 9, 8}, 1, kCpu);
  EXPECT_EQ(MaxPool2D(2)(x).shape(), (Shape{2, 3, 4, 4}));
  EXPECT_EQ(MaxPool2D(2, options(std::nullopt, 0, true))(x).shape(), (Shape{2, 3, 5, 4}));
  EXPECT_EQ(MaxPool2D(3, options(1, 1))(x).shape(), (Shape{2, 3, 9, 8}));
  EXPECT_EQ(AvgPool2D({3, 2}, options(Size2(2, 1)))(x).shape(), (Shape{2, 3, 4, 7}));
  EXPECT_EQ(GlobalAvgPool2D()(x).shape(), (Shape{2, 3, 1, 1}));
  EXPECT_EQ(Flatten()(x).shape(), (Shape{2, 216}));
}

TEST(PoolingBlocks, TheStrideDefaultsToThePoolSize) {
  const MaxPool2D pool({3, 2});
  EXPECT_EQ(pool.params().stride_h, 3);
  EXPECT_EQ(pool.params().stride_w, 2);
}

TEST(PoolingBlocks, ForwardIsTheOp) {
  const Tensor x = testing::random_tensor({1, 2, 7, 6}, 2, kCpu);
  const Pool2DOptions o = options(2, 1, true, false);
  ops::Pool2DParams p{3, 3, 2, 2, 1, 1, true, false};
  EXPECT_EQ(AvgPool2D(3, o)(x).to_vector(), ops::avg_pool2d(x, p).to_vector());
  EXPECT_EQ(MaxPool2D(3, o)(x).to_vector(), ops::max_pool2d(x, p).to_vector());
}

TEST(PoolingBlocks, DescribeLines) {
  EXPECT_EQ(MaxPool2D(2).describe(),
            "MaxPool2D(size=2x2, stride=2x2, padding=0x0, ceil_mode=false)");
  EXPECT_EQ(MaxPool2D({3, 2}, options(1, Size2(1, 0), true)).describe(),
            "MaxPool2D(size=3x2, stride=1x1, padding=1x0, ceil_mode=true)");
  EXPECT_EQ(AvgPool2D(2, options(std::nullopt, 0, false, false)).describe(),
            "AvgPool2D(size=2x2, stride=2x2, padding=0x0, ceil_mode=false, "
            "count_include_pad=false)");
  EXPECT_EQ(GlobalAvgPool2D().describe(), "GlobalAvgPool2D");
  EXPECT_EQ(Flatten().describe(), "Flatten");
  EXPECT_EQ(Dropout(0.5f).describe(), "Dropout(p = 0.5)");
  EXPECT_EQ(Dropout(0.1f).describe(), "Dropout(p = 0.1)");

  Sequential net;
  net.add(make<MaxPool2D>(2), make<Flatten>(), make<Dropout>(0.25f), make<Dense>(10));
  std::ostringstream printed;
  printed << net;
  EXPECT_NE(printed.str().find("(0): MaxPool2D(size=2x2"), std::string::npos) << printed.str();
  EXPECT_NE(printed.str().find("(1): Flatten"), std::string::npos) << printed.str();
  EXPECT_NE(printed.str().find("(2): Dropout(p = 0.25)"), std::string::npos) << printed.str();
}

TEST(PoolingBlocks, ANetworkOfThemRunsAndInfersTheDenseShape) {
  auto net = make<Sequential>();
  net->add(make<MaxPool2D>(2), make<AvgPool2D>(2, options(1)), make<Flatten>(),
           make<Dropout>(0.5f, 3), make<Dense>(4));
  net->initialize(init::xavier(), kCpu, 1);
  const Tensor x = testing::random_tensor({5, 2, 8, 8}, 3, kCpu);
  EXPECT_EQ((*net)(x).shape(), (Shape{5, 4}));
  EXPECT_EQ(std::static_pointer_cast<Dense>((*net)[4])->in_units(), 2 * 3 * 3);
}

TEST(PoolingBlocks, BadConstructionNamesTheBlock) {
  expect_error([] { MaxPool2D(0); }, {"MaxPool2D", "pool_size"});
  expect_error([] { AvgPool2D({2, -1}); }, {"AvgPool2D", "pool_size"});
  expect_error([] { MaxPool2D(2, options(0)); }, {"MaxPool2D", "stride"});
  expect_error([] { AvgPool2D(3, options(std::nullopt, 2)); }, {"AvgPool2D", "padding", "2x2"});
  expect_error([] { MaxPool2D(2, options(std::nullopt, -1)); }, {"MaxPool2D", "padding"});
  for (const float rate : {-0.5f, 1.01f, std::numeric_limits<float>::quiet_NaN()}) {
    expect_error([rate] { Dropout{rate}; }, {"Dropout", "rate"});
  }
  EXPECT_NO_THROW(Dropout(1.0f));
  EXPECT_NO_THROW(Dropout(0.0f));
  // A bad input at forward names the op.
  expect_error([] { MaxPool2D(2)(Tensor::zeros({3, 4}, kCpu)); }, {"max_pool2d", "4-d"});
}

// ---- Dropout by mode ----

TEST(DropoutBlock, PredictsAsTheIdentityAndMasksWhileTraining) {
  Dropout dropout(0.5f, 42);
  EXPECT_EQ(dropout.rate(), 0.5f);
  EXPECT_EQ(dropout.seed(), 42u);
  const Tensor x = Tensor::ones({1000}, kCpu);
  EXPECT_TRUE(dropout(x).same(x)) << "a plain forward predicts";
  {
    autograd::PauseScope pause;
    EXPECT_TRUE(dropout(x).same(x));
  }
  EXPECT_EQ(dropout.offset(), 0u);

  auto zeros_in = [](const Tensor& y) {
    int64_t zeros = 0;
    for (float v : y.to_vector()) {
      EXPECT_TRUE(v == 0.0f || v == 2.0f) << v;
      zeros += v == 0.0f;
    }
    return zeros;
  };
  std::vector<float> recorded;
  {
    autograd::RecordScope record;
    const Tensor y = dropout(x);
    EXPECT_GT(zeros_in(y), 400);
    EXPECT_LT(zeros_in(y), 600);
    recorded = y.to_vector();
  }
  EXPECT_EQ(dropout.offset(), 1000u);
  {
    autograd::TrainModeScope train;
    const Tensor y = dropout(x);
    EXPECT_GT(zeros_in(y), 400);
    EXPECT_NE(y.to_vector(), recorded) << "the next call draws the next mask";
  }
  EXPECT_EQ(dropout.offset(), 2000u);
  {
    autograd::RecordScope record(autograd::Mode::kPredict);
    EXPECT_TRUE(dropout(x).same(x));
  }
  dropout.set_seed(42);
  EXPECT_EQ(dropout.offset(), 0u);
  autograd::TrainModeScope train;
  EXPECT_EQ(dropout(x).to_vector(), recorded) << "set_seed restarts the stream";
}

TEST(DropoutBlock, UnseededBlocksDrawDifferentMasks) {
  Dropout a(0.5f), b(0.5f);
  EXPECT_NE(a.seed(), b.seed());
  const Tensor x = Tensor::ones({64}, kCpu);
  autograd::TrainModeScope train;
  EXPECT_NE(a(x).to_vector(), b(x).to_vector());
  Dropout c(0.5f, 7), d(0.5f, 7);
  EXPECT_EQ(c(x).to_vector(), d(x).to_vector());
}

TEST(DropoutBlock, RateOneDropsEverything) {
  Dropout dropout(1.0f);
  autograd::TrainModeScope train;
  EXPECT_EQ(dropout(Tensor::ones({9}, kCpu)).to_vector(), std::vector<float>(9, 0.0f));
}

}  // namespace
}  // namespace cairn
