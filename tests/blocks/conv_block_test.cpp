// The Conv2D block: deferred in_channels, PyTorch's parameter names and shapes, the printed tree,
// the fused activation, save/load, and misuse.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "cairn/blocks/conv.h"
#include "support/test_support.h"

namespace cairn {
namespace {

using testing::expect_error;

const Device kCpu = Device::cpu();

Tensor images(int64_t n, int64_t c, int64_t h, int64_t w, uint64_t seed = 3) {
  return Tensor::uniform({n, c, h, w}, -1.0f, 1.0f, seed, kCpu);
}

Conv2DOptions padded_relu(int64_t padding) {
  Conv2DOptions o;
  o.padding = padding;
  o.activation = "relu";
  return o;
}

TEST(Conv2DBlock, FirstForwardFixesInChannels) {
  auto conv = make<Conv2D>(6, 5, padded_relu(2));
  EXPECT_EQ(conv->in_channels(), 0);
  EXPECT_EQ(conv->describe(), "Conv2D(? -> 6, kernel=5x5, stride=1, padding=2, relu)");
  conv->initialize(init::uniform(), kCpu, 0);
  EXPECT_TRUE(conv->weight()->is_deferred());
  EXPECT_EQ(conv->weight()->shape(), (Shape{6, 0, 5, 5}));

  const Tensor y = (*conv)(images(2, 1, 28, 28));
  EXPECT_EQ(y.shape(), (Shape{2, 6, 28, 28}));
  EXPECT_EQ(conv->in_channels(), 1);
  EXPECT_EQ(conv->weight()->shape(), (Shape{6, 1, 5, 5}));
  EXPECT_EQ(conv->bias()->shape(), (Shape{6}));
  EXPECT_FALSE(conv->weight()->is_deferred());
  EXPECT_EQ(conv->describe(), "Conv2D(1 -> 6, kernel=5x5, stride=1, padding=2, relu)");
  expect_error([&] { (*conv)(images(2, 3, 28, 28)); },
               {"Conv2D(1 -> 6", "input has 3 channels", "expected 1"});
  expect_error([&] { (*conv)(Tensor::uniform({2, 784}, 0.0f, 1.0f, 1, kCpu)); },
               {"Conv2D(1 -> 6", "must be (N, C, H, W)"});
}

TEST(Conv2DBlock, ParametersHavePyTorchNamesAndShapes) {
  Conv2DOptions o;
  o.stride = {2, 1};
  o.padding = {1, 0};
  o.groups = 2;
  o.in_channels = 4;
  o.use_bias = false;
  auto conv = make<Conv2D>(6, Size2(3, 2), o);
  EXPECT_EQ(conv->collect_params().names(), (std::vector<std::string>{"weight"}));
  EXPECT_EQ(conv->weight()->shape(), (Shape{6, 2, 3, 2}));
  EXPECT_EQ(conv->bias(), nullptr);
  EXPECT_EQ(conv->kernel_size(), Size2(3, 2));
  EXPECT_EQ(conv->options().stride, Size2(2, 1));
  EXPECT_EQ(conv->describe(),
            "Conv2D(4 -> 6, kernel=3x2, stride=2x1, padding=1x0, groups=2, no bias, linear)");

  auto depthwise = make<Conv2D>(8, 3, [] {
    Conv2DOptions d;
    d.groups = 8;
    d.dilation = 2;
    d.padding = 2;
    return d;
  }());
  auto net = make<Sequential>();
  net->add(make<Conv2D>(8, 1, Conv2DOptions{}), depthwise);
  net->initialize(init::uniform(), kCpu, 1);
  EXPECT_EQ((*net)(images(1, 3, 7, 7)).shape(), (Shape{1, 8, 7, 7}));
  EXPECT_EQ(net->collect_params().names(),
            (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias"}));
  EXPECT_EQ(depthwise->weight()->shape(), (Shape{8, 1, 3, 3}));
  std::ostringstream tree;
  tree << *net;
  EXPECT_NE(tree.str().find("(0): Conv2D(3 -> 8, kernel=1x1, stride=1, padding=0, linear)"),
            std::string::npos)
      << tree.str();
  EXPECT_NE(tree.str().find(
                "(1): Conv2D(8 -> 8, kernel=3x3, stride=1, padding=2, dilation=2, groups=8, linear)"),
            std::string::npos)
      << tree.str();
}

TEST(Conv2DBlock, TheActivationIsAppliedAfterTheBias) {
  Conv2DOptions linear_options;
  linear_options.in_channels = 2;
  Conv2DOptions tanh_options = linear_options;
  tanh_options.activation = "tanh";
  auto linear = make<Conv2D>(3, 3, linear_options);
  auto squashed = make<Conv2D>(3, 3, tanh_options);
  linear->initialize(init::uniform(), kCpu, 7);
  squashed->initialize(init::uniform(), kCpu, 7);
  // Give the bias a value the zeros initializer does not, so that the order shows.
  linear->bias()->set_data(Tensor::from_vector({0.5f, -0.25f, 1.0f}, {3}, kCpu), kCpu);
  squashed->bias()->set_data(Tensor::from_vector({0.5f, -0.25f, 1.0f}, {3}, kCpu), kCpu);
  squashed->weight()->set_data(linear->weight()->data().clone(), kCpu);
  const Tensor x = images(2, 2, 5, 5);
  const std::vector<float> z = (*linear)(x).to_vector();
  const std::vector<float> y = (*squashed)(x).to_vector();
  ASSERT_EQ(y.size(), z.size());
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], std::tanh(z[i]), 1e-6) << i;
  expect_error([] { Conv2DOptions bad; bad.activation = "nope"; Conv2D(3, 3, bad); },
               {"unknown activation 'nope'"});
}

TEST(Conv2DBlock, SaveThenLoadRoundTrips) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("cairn_conv_" + std::to_string(::getpid()) + ".safetensors"))
                               .string();
  auto saved = make<Sequential>();
  saved->add(make<Conv2D>(4, 3, padded_relu(1)), make<Conv2D>(2, 1, Conv2DOptions{}));
  saved->initialize(init::uniform(0.3f), kCpu, 11);
  const Tensor x = images(2, 3, 6, 6);
  const Tensor y = (*saved)(x);
  saved->save_parameters(path);

  auto loaded = make<Sequential>();  // shapes still deferred: the file fixes them
  loaded->add(make<Conv2D>(4, 3, padded_relu(1)), make<Conv2D>(2, 1, Conv2DOptions{}));
  loaded->load_parameters(path, kCpu);
  std::filesystem::remove(path);
  EXPECT_EQ(loaded->collect_params().at("0.weight")->shape(), (Shape{4, 3, 3, 3}));
  EXPECT_EQ(loaded->collect_params().at("1.weight")->shape(), (Shape{2, 4, 1, 1}));
  EXPECT_EQ((*loaded)(x).to_vector(), y.to_vector());
}

TEST(Conv2DBlock, BadOptionsAreRefused) {
  expect_error([] { Conv2D(0, 3); }, {"Conv2D", "channels must be positive"});
  expect_error([] { Conv2D(4, Size2(0, 3)); }, {"Conv2D", "kernel_size must be positive"});
  expect_error(
      [] {
        Conv2DOptions o;
        o.groups = 3;
        Conv2D(4, 3, o);
      },
      {"Conv2D", "channels 4", "not divisible by groups=3"});
  expect_error(
      [] {
        Conv2DOptions o;
        o.stride = 0;
        Conv2D(4, 3, o);
      },
      {"Conv2D", "stride must be positive"});
  expect_error(
      [] {
        Conv2DOptions o;
        o.padding = -1;
        Conv2D(4, 3, o);
      },
      {"Conv2D", "padding must be non-negative"});
  Conv2DOptions grouped;
  grouped.groups = 2;
  auto conv = make<Conv2D>(4, 3, grouped);
  conv->initialize(init::uniform(), kCpu, 0);
  expect_error([&] { (*conv)(images(1, 3, 5, 5)); }, {"Conv2D", "3 channels", "groups=2"});
}

}  // namespace
}  // namespace cairn
