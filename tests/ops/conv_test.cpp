// conv2d on the CPU: golden values (forward and all three gradients) from a float64 numpy
// reference (tests/data/make_conv_fixture.py, checked against PyTorch when written), central finite
// differences on small random cases, bad input, NaN propagation and empty batches.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace cairn {
namespace {

using testing::expect_close;
using testing::expect_error;
using testing::expect_gradients_match;
using testing::random_tensor;

const Device kCpu = Device::cpu();

// One case of tests/data/conv_cases.txt.
struct ConvCase {
  std::string name;
  int64_t n = 0, c = 0, h = 0, w = 0, k = 0, r = 0, s = 0;
  ops::Conv2DParams params;
  bool has_bias = false;
  std::map<std::string, std::vector<float>> arrays;  // x, w, b, dy, y, dx, dw, db

  int64_t out_h() const {
    return (h + 2 * params.pad_h - params.dilation_h * (r - 1) - 1) / params.stride_h + 1;
  }
  int64_t out_w() const {
    return (w + 2 * params.pad_w - params.dilation_w * (s - 1) - 1) / params.stride_w + 1;
  }
  Tensor tensor(const std::string& key, const Shape& shape) const {
    return Tensor::from_vector(arrays.at(key), shape, kCpu);
  }
};

std::vector<ConvCase> load_cases() {
  const std::string path = std::string(CAIRN_TEST_DATA_DIR) + "/conv_cases.txt";
  std::ifstream file(path);
  EXPECT_TRUE(file.good()) << "cannot open " << path;
  std::vector<ConvCase> cases;
  std::string line;
  ConvCase current;
  while (std::getline(file, line)) {
    std::istringstream in(line);
    std::string key;
    in >> key;
    if (key == "case") {
      current = ConvCase();
      in >> current.name;
    } else if (key == "params") {
      int64_t bias = 0;
      ops::Conv2DParams& p = current.params;
      in >> current.n >> current.c >> current.h >> current.w >> current.k >> current.r >>
          current.s >> p.stride_h >> p.stride_w >> p.pad_h >> p.pad_w >> p.dilation_h >>
          p.dilation_w >> p.groups >> bias;
      current.has_bias = bias != 0;
    } else if (key == "end") {
      cases.push_back(current);
    } else if (!key.empty()) {
      int64_t count = 0;
      in >> count;
      std::vector<float>& values = current.arrays[key];
      values.resize(size_t(count));
      for (float& v : values) in >> v;
      EXPECT_FALSE(in.fail()) << current.name << ": short array " << key;
    }
  }
  return cases;
}

TEST(Conv2D, MatchesTheNumpyReferenceForwardAndBackward) {
  const std::vector<ConvCase> cases = load_cases();
  ASSERT_EQ(cases.size(), 12u);
  for (const ConvCase& cc : cases) {
    SCOPED_TRACE(cc.name);
    Tensor x = cc.tensor("x", {cc.n, cc.c, cc.h, cc.w});
    Tensor w = cc.tensor("w", {cc.k, cc.c / cc.params.groups, cc.r, cc.s});
    Tensor b = cc.has_bias ? cc.tensor("b", {cc.k}) : Tensor();
    const Shape out_shape{cc.n, cc.k, cc.out_h(), cc.out_w()};
    const Tensor dy = cc.tensor("dy", out_shape);
    x.attach_grad();
    w.attach_grad();
    if (b.defined()) b.attach_grad();
    Tensor y;
    {
      autograd::RecordScope record;
      y = ops::conv2d(x, w, b, cc.params);
    }
    // Sums of up to 98 products of values in [-1, 1], in float32.
    const double atol = 2e-5, rtol = 1e-5;
    expect_close(y, cc.tensor("y", out_shape), atol, rtol, "y");
    y.backward(dy);
    expect_close(x.grad(), cc.tensor("dx", x.shape()), atol, rtol, "dx");
    expect_close(w.grad(), cc.tensor("dw", w.shape()), 1e-4, rtol, "dw");
    if (b.defined()) expect_close(b.grad(), cc.tensor("db", b.shape()), 1e-4, rtol, "db");
  }
}

// sum(y * m) for a fixed random m: every output element weighted differently.
Tensor weighted_sum(const Tensor& y) {
  return ops::sum(ops::mul(y, random_tensor(y.shape(), 99, y.device())));
}

struct FdCase {
  const char* name;
  Shape x, w;
  ops::Conv2DParams params;
  bool bias;
};

TEST(Conv2D, GradientsMatchFiniteDifferences) {
  const FdCase cases[] = {
      {"3x3 stride 2 pad 1", {2, 2, 5, 4}, {3, 2, 3, 3}, {2, 2, 1, 1, 1, 1, 1}, true},
      {"groups 2 dilation 2", {1, 4, 6, 5}, {2, 2, 2, 2}, {1, 1, 1, 0, 2, 2, 2}, true},
      {"depthwise", {2, 3, 4, 4}, {3, 1, 3, 3}, {1, 1, 1, 1, 1, 1, 3}, false},
      {"pointwise", {2, 3, 3, 2}, {2, 3, 1, 1}, {}, true},
      {"stride 3 leftover, rectangular", {1, 2, 7, 8}, {2, 2, 2, 3}, {3, 2, 0, 1, 1, 1, 1}, true},
  };
  uint64_t seed = 10;
  for (const FdCase& fd : cases) {
    SCOPED_TRACE(fd.name);
    std::vector<Tensor> inputs{random_tensor(fd.x, seed++, kCpu), random_tensor(fd.w, seed++, kCpu)};
    if (fd.bias) inputs.push_back(random_tensor({fd.w[0]}, seed++, kCpu));
    const ops::Conv2DParams params = fd.params;
    expect_gradients_match(
        [params](const std::vector<Tensor>& in) {
          return weighted_sum(ops::conv2d(in[0], in[1], in.size() > 2 ? in[2] : Tensor(), params));
        },
        inputs);
  }
}

TEST(Conv2D, OnlyTheGradientsAskedForAreComputed) {
  Tensor x = random_tensor({2, 2, 4, 4}, 1, kCpu);
  Tensor w = random_tensor({3, 2, 3, 3}, 2, kCpu);
  Tensor b = random_tensor({3}, 3, kCpu);
  w.attach_grad();  // x and b are constants here
  {
    autograd::RecordScope record;
    weighted_sum(ops::conv2d(x, w, b, {})).backward();
  }
  EXPECT_TRUE(w.grad().defined());
  EXPECT_EQ(shape_str(w.grad().shape()), shape_str(w.shape()));
}

TEST(Conv2D, NaNInTheInputPropagates) {
  std::vector<float> values = random_tensor({1, 1, 5, 5}, 4, kCpu).to_vector();
  values[12] = std::nanf("");  // the centre pixel
  const Tensor x = Tensor::from_vector(values, {1, 1, 5, 5}, kCpu);
  const Tensor w = random_tensor({2, 1, 3, 3}, 5, kCpu);
  const std::vector<float> y = ops::conv2d(x, w, Tensor(), {}).to_vector();  // (1, 2, 3, 3)
  for (float v : y) EXPECT_TRUE(std::isnan(v)) << "every 3x3 window covers the centre";
  // Padded: the corner windows of a 5x5 output miss the centre.
  ops::Conv2DParams padded;
  padded.pad_h = padded.pad_w = 1;
  const std::vector<float> z = ops::conv2d(x, w, Tensor(), padded).to_vector();
  EXPECT_FALSE(std::isnan(z[0]));
  EXPECT_TRUE(std::isnan(z[12]));
}

TEST(Conv2D, AnEmptyBatchGivesAnEmptyOutputAndZeroWeightGradients) {
  Tensor x = Tensor::zeros({0, 2, 5, 5}, kCpu);
  Tensor w = random_tensor({3, 2, 3, 3}, 6, kCpu);
  Tensor b = random_tensor({3}, 7, kCpu);
  x.attach_grad();
  w.attach_grad();
  b.attach_grad();
  Tensor y;
  {
    autograd::RecordScope record;
    y = ops::conv2d(x, w, b, {});
    EXPECT_EQ(shape_str(y.shape()), shape_str(Shape{0, 3, 3, 3}));
    ops::sum(y).backward();
  }
  for (float v : w.grad().to_vector()) EXPECT_EQ(v, 0.0f);
  for (float v : b.grad().to_vector()) EXPECT_EQ(v, 0.0f);
}

TEST(Conv2D, BadInputIsRefusedNamingTheProblem) {
  const Tensor x = random_tensor({2, 4, 6, 6}, 1, kCpu);
  const Tensor w = random_tensor({6, 4, 3, 3}, 2, kCpu);
  const Tensor b = random_tensor({6}, 3, kCpu);
  const ops::Conv2DParams none;
  auto with = [](auto change) {
    ops::Conv2DParams p;
    change(p);
    return p;
  };
  expect_error([&] { ops::conv2d(x.reshape({2, 4, 36}), w, b, none); },
               {"conv2d", "x must be 4-d"});
  expect_error([&] { ops::conv2d(x, w.reshape({6, 36}), b, none); },
               {"conv2d", "weight must be 4-d"});
  expect_error([&] { ops::conv2d(x, random_tensor({6, 4, 7, 3}, 4, kCpu), b, none); },
               {"conv2d", "kernel larger than the padded input"});
  expect_error(
      [&] {
        ops::conv2d(x, w, b, with([](ops::Conv2DParams& p) { p.dilation_w = 4; }));
      },
      {"conv2d", "kernel larger than the padded input"});
  expect_error(
      [&] {
        ops::conv2d(x, random_tensor({6, 1, 3, 3}, 5, kCpu), b,
                    with([](ops::Conv2DParams& p) { p.groups = 3; }));
      },
      {"conv2d", "in-channel count 4", "not divisible by groups=3"});
  expect_error(
      [&] {
        ops::conv2d(x, random_tensor({5, 2, 3, 3}, 6, kCpu), Tensor(),
                    with([](ops::Conv2DParams& p) { p.groups = 2; }));
      },
      {"conv2d", "out-channel count 5", "not divisible by groups=2"});
  expect_error([&] { ops::conv2d(x, random_tensor({6, 3, 3, 3}, 7, kCpu), b, none); },
               {"conv2d", "channels per group", "has 4"});
  expect_error([&] { ops::conv2d(x, w, random_tensor({5}, 8, kCpu), none); },
               {"conv2d", "bias must be (6)"});
  expect_error([&] { ops::conv2d(x, w, random_tensor({6, 1}, 8, kCpu), none); },
               {"conv2d", "bias must be (6)"});
  expect_error(
      [&] { ops::conv2d(Tensor::empty({2, 4, 6, 6}, kCpu, DType::kInt32), w, b, none); },
      {"conv2d", "x must be float32"});
  expect_error([&] { ops::conv2d(x, Tensor(), b, none); },
               {"conv2d", "weight is an undefined tensor"});
  expect_error([&] { ops::conv2d(x, w, b, with([](ops::Conv2DParams& p) { p.stride_h = 0; })); },
               {"conv2d", "stride must be positive"});
  expect_error([&] { ops::conv2d(x, w, b, with([](ops::Conv2DParams& p) { p.stride_w = -1; })); },
               {"conv2d", "stride must be positive"});
  expect_error(
      [&] { ops::conv2d(x, w, b, with([](ops::Conv2DParams& p) { p.dilation_h = 0; })); },
      {"conv2d", "dilation must be positive"});
  expect_error([&] { ops::conv2d(x, w, b, with([](ops::Conv2DParams& p) { p.pad_w = -1; })); },
               {"conv2d", "padding must be non-negative"});
  expect_error([&] { ops::conv2d(x, w, b, with([](ops::Conv2DParams& p) { p.groups = 0; })); },
               {"conv2d", "groups must be positive"});
}

}  // namespace
}  // namespace cairn
