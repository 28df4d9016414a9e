// Pooling and flatten on the CPU: max_pool2d and avg_pool2d forward and backward against the
// float64 numpy reference in tests/data/pool_fixture.txt (tests/data/make_pool_fixture.py), finite
// differences, global average pooling, flatten, and every bad input naming the op.
#include "cairn/kernels/pool.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cairn/kernels/cpu/parallel.h"
#include "support/test_support.h"

namespace cairn {
namespace {

using testing::expect_close;
using testing::expect_error;
using testing::expect_gradients_match;

const Device kCpu = Device::cpu();

struct PoolCase {
  std::string name, op;
  int64_t n = 0, c = 0, h = 0, w = 0;
  ops::Pool2DParams params{};
  std::vector<float> x, dy;
  std::vector<double> y, dx;
};

// "nan" as well as numbers: strtod reads both.
template <typename T>
std::vector<T> read_values(std::istringstream& line) {
  std::vector<T> values;
  std::string token;
  while (line >> token) values.push_back(static_cast<T>(std::strtod(token.c_str(), nullptr)));
  return values;
}

std::vector<PoolCase> load_fixture() {
  const std::string path = std::string(CAIRN_TEST_DATA_DIR) + "/pool_fixture.txt";
  std::ifstream in(path);
  EXPECT_TRUE(in) << "cannot open " << path;
  std::vector<PoolCase> cases;
  std::string text;
  while (std::getline(in, text)) {
    std::istringstream line(text);
    std::string tag;
    line >> tag;
    if (tag == "case") {
      PoolCase c;
      int ceil_mode = 0, include_pad = 1;
      ops::Pool2DParams& p = c.params;
      line >> c.name >> c.op >> c.n >> c.c >> c.h >> c.w >> p.kernel_h >> p.kernel_w >>
          p.stride_h >> p.stride_w >> p.pad_h >> p.pad_w >> ceil_mode >> include_pad;
      p.ceil_mode = ceil_mode != 0;
      p.count_include_pad = include_pad != 0;
      cases.push_back(c);
    } else if (tag == "x") {
      cases.back().x = read_values<float>(line);
    } else if (tag == "dy") {
      cases.back().dy = read_values<float>(line);
    } else if (tag == "y") {
      cases.back().y = read_values<double>(line);
    } else if (tag == "dx") {
      cases.back().dx = read_values<double>(line);
    }
  }
  return cases;
}

Tensor run_pool(const PoolCase& c, const Tensor& x) {
  return c.op == "max" ? ops::max_pool2d(x, c.params) : ops::avg_pool2d(x, c.params);
}

std::vector<float> to_float(const std::vector<double>& values) {
  return std::vector<float>(values.begin(), values.end());
}

TEST(PoolGolden, ForwardAndBackwardMatchTheNumpyReference) {
  const std::vector<PoolCase> cases = load_fixture();
  ASSERT_EQ(cases.size(), 37u) << "the fixture's case count changed: regenerate and update";
  for (const PoolCase& c : cases) {
    SCOPED_TRACE(c.name);
    Tensor x = Tensor::from_vector(c.x, {c.n, c.c, c.h, c.w}, kCpu);
    x.attach_grad();
    Tensor y;
    {
      autograd::RecordScope record;
      y = run_pool(c, x);
    }
    ASSERT_EQ(y.numel(), int64_t(c.y.size()));
    ASSERT_EQ(y.numel(), int64_t(c.dy.size()));
    const Shape expected_shape = {c.n, c.c, y.dim(2), y.dim(3)};
    EXPECT_EQ(y.shape(), expected_shape);
    if (c.op == "max") {
      // A maximum is one of the inputs: exact, NaN included.
      testing::expect_within_ulps(y.to_vector(), to_float(c.y), 0, 0.0, c.name + " forward");
    } else {
      expect_close(y.to_vector(), to_float(c.y), 1e-6, 1e-6, c.name + " forward");
    }
    y.backward(Tensor::from_vector(c.dy, y.shape(), kCpu));
    // Sums of a few float dy (/ divisor): float rounding against the float64 reference.
    expect_close(x.grad().to_vector(), to_float(c.dx), 1e-6, 1e-5, c.name + " backward");
  }
}

TEST(PoolGolden, FixtureCoversTheAwkwardCases) {
  // The fixture must keep exercising the rules the golden test is for.
  bool ceil_drop = false, ceil_changes_size = false, excluded_padding = false, nan = false;
  for (const PoolCase& c : load_fixture()) {
    const ops::Pool2DParams& p = c.params;
    const int64_t ceil_size =
        kernels::pool_output_size(c.h, p.kernel_h, p.stride_h, p.pad_h, /*ceil_mode=*/true);
    const int64_t floor_size =
        kernels::pool_output_size(c.h, p.kernel_h, p.stride_h, p.pad_h, /*ceil_mode=*/false);
    const int64_t numerator = c.h + 2 * p.pad_h - p.kernel_h + p.stride_h - 1;
    if (p.ceil_mode && numerator / p.stride_h + 1 != ceil_size) ceil_drop = true;
    if (p.ceil_mode && ceil_size != floor_size) ceil_changes_size = true;
    if (c.op == "avg" && !p.count_include_pad) excluded_padding = true;
    for (float v : c.x) nan = nan || std::isnan(v);
  }
  EXPECT_TRUE(ceil_drop && ceil_changes_size && excluded_padding && nan);
}

TEST(PoolGolden, OutputSizeFollowsPyTorch) {
  // (in, kernel, stride, pad, ceil) -> out, worked by hand from PyTorch's pooling_output_shape.
  EXPECT_EQ(kernels::pool_output_size(8, 3, 2, 0, false), 3);
  EXPECT_EQ(kernels::pool_output_size(8, 3, 2, 0, true), 4);
  EXPECT_EQ(kernels::pool_output_size(5, 2, 2, 1, true), 3);  // 4th window starts in padding
  EXPECT_EQ(kernels::pool_output_size(5, 2, 2, 1, false), 3);
  EXPECT_EQ(kernels::pool_output_size(3, 4, 4, 0, true), 1);
  EXPECT_EQ(kernels::pool_output_size(3, 4, 4, 0, false), 0);  // refused by the ops
  EXPECT_EQ(kernels::pool_output_size(1, 1, 1, 0, false), 1);
  EXPECT_EQ(kernels::pool_output_size(224, 3, 2, 1, false), 112);
}

TEST(PoolCpu, ResultsDoNotDependOnTheThreadCount) {
  const Tensor x = testing::random_tensor({4, 8, 64, 63}, 5, kCpu);  // rows enough to split
  ops::Pool2DParams p{3, 3, 2, 2, 1, 1, true, false};
  kernels::cpu::set_threads(1);
  const std::vector<float> max1 = ops::max_pool2d(x, p).to_vector();
  const std::vector<float> avg1 = ops::avg_pool2d(x, p).to_vector();
  kernels::cpu::set_threads(2);
  EXPECT_EQ(ops::max_pool2d(x, p).to_vector(), max1);
  EXPECT_EQ(ops::avg_pool2d(x, p).to_vector(), avg1);
  kernels::cpu::set_threads(0);  // back to the default
}

// ---- finite differences ----

// sum(pool(x) * w) with fixed weights, so each output's gradient differs.
std::function<Tensor(const std::vector<Tensor>&)> weighted(
    std::function<Tensor(const Tensor&)> pool, const Shape& out_shape) {
  const Tensor w = testing::random_tensor(out_shape, 99, kCpu);
  return [pool, w](const std::vector<Tensor>& in) { return ops::sum(ops::mul(pool(in[0]), w)); };
}

TEST(PoolGradient, AvgPoolMatchesFiniteDifferences) {
  const std::vector<ops::Pool2DParams> params = {
      {3, 3, 2, 2, 1, 1, true, true},
      {3, 2, 1, 2, 1, 0, false, false},
      {2, 2, 3, 3, 0, 0, true, true},
  };
  for (const ops::Pool2DParams& p : params) {
    const Tensor x = testing::random_tensor({2, 2, 6, 5}, 11, kCpu);
    const Shape out = ops::avg_pool2d(x, p).shape();
    expect_gradients_match(weighted([p](const Tensor& t) { return ops::avg_pool2d(t, p); }, out),
                           {x});
  }
}

TEST(PoolGradient, MaxPoolMatchesFiniteDifferencesAwayFromTies) {
  // Distinct values 0.1 apart: a shift of eps = 0.01 never changes which element is a maximum.
  std::vector<float> values(2 * 2 * 6 * 5);
  for (size_t i = 0; i < values.size(); ++i) values[i] = 0.1f * float((i * 37) % values.size());
  const Tensor x = Tensor::from_vector(values, {2, 2, 6, 5}, kCpu);
  const std::vector<ops::Pool2DParams> params = {
      {3, 3, 2, 2, 1, 1, true, true},
      {2, 3, 1, 1, 1, 1, false, true},
      {2, 2, 3, 2, 0, 0, false, true},
  };
  for (const ops::Pool2DParams& p : params) {
    const Shape out = ops::max_pool2d(x, p).shape();
    expect_gradients_match(weighted([p](const Tensor& t) { return ops::max_pool2d(t, p); }, out),
                           {x}, 1e-2, 2e-3, 2e-2);
  }
}

TEST(PoolGradient, MaxPoolSendsATiedWindowsGradientToItsFirstMaximum) {
  // One 2x2 window of equal values: the first (row-major) gets all of dy.
  Tensor x = Tensor::full({1, 1, 2, 2}, 3.0f, kCpu);
  x.attach_grad();
  Tensor y;
  {
    autograd::RecordScope record;
    y = ops::max_pool2d(x, {2, 2, 2, 2});
  }
  y.backward(Tensor::from_vector({5.0f}, {1, 1, 1, 1}, kCpu));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{5, 0, 0, 0}));
}

TEST(PoolGradient, MaxPoolPadsWithMinusInfinity) {
  // All inputs negative, 3x3 windows with padding 1: zero padding would win every window.
  const Tensor x = Tensor::from_vector({-4, -3, -2, -1}, {1, 1, 2, 2}, kCpu);
  EXPECT_EQ(ops::max_pool2d(x, {3, 3, 1, 1, 1, 1}).to_vector(),
            (std::vector<float>{-1, -1, -1, -1}));
}

// ---- global average pooling and flatten ----

TEST(GlobalAvgPool, AveragesEachPlaneAndSpreadsTheGradient) {
  const Tensor x = testing::random_tensor({2, 3, 4, 5}, 21, kCpu);
  const Tensor y = ops::global_avg_pool2d(x);
  EXPECT_EQ(y.shape(), (Shape{2, 3, 1, 1}));
  const std::vector<float> xs = x.to_vector(), ys = y.to_vector();
  for (int64_t plane = 0; plane < 6; ++plane) {
    double sum = 0.0;
    for (int64_t i = 0; i < 20; ++i) sum += xs[size_t(plane * 20 + i)];
    EXPECT_NEAR(ys[size_t(plane)], sum / 20.0, 1e-6) << "plane " << plane;
  }
  expect_gradients_match(weighted(ops::global_avg_pool2d, {2, 3, 1, 1}), {x});
  // The same as an average pool whose window is the plane.
  expect_close(y, ops::avg_pool2d(x, {4, 5, 4, 5}), 1e-6, 1e-6, "as avg_pool2d");
}

TEST(Flatten, SharesTheDataAndPassesTheGradient) {
  const Tensor x = testing::random_tensor({2, 3, 4, 5}, 31, kCpu);
  const Tensor y = ops::flatten(x);
  EXPECT_EQ(y.shape(), (Shape{2, 60}));
  EXPECT_EQ(y.data(), x.data());
  expect_gradients_match(weighted(ops::flatten, {2, 60}), {x});
  EXPECT_EQ(ops::flatten(Tensor::zeros({4}, kCpu)).shape(), (Shape{4, 1}));
  EXPECT_EQ(ops::flatten(Tensor::zeros({0, 3, 2}, kCpu)).shape(), (Shape{0, 6}));
  EXPECT_EQ(ops::flatten(Tensor::zeros({3, 7}, kCpu)).shape(), (Shape{3, 7}));
}

// ---- bad input ----

TEST(PoolBadInput, EveryBadArgumentNamesTheOp) {
  const Tensor x = Tensor::zeros({1, 2, 5, 5}, kCpu);
  const ops::Pool2DParams ok{2, 2, 2, 2};
  for (const char* name : {"max_pool2d", "avg_pool2d"}) {
    SCOPED_TRACE(name);
    const bool is_max = std::string(name) == "max_pool2d";
    auto pool = [is_max](const Tensor& t, const ops::Pool2DParams& p) {
      return is_max ? ops::max_pool2d(t, p) : ops::avg_pool2d(t, p);
    };
    expect_error([&] { pool(Tensor::zeros({2, 5, 5}, kCpu), ok); }, {name, "4-d", "(2, 5, 5)"});
    expect_error([&] { pool(Tensor::zeros({1, 1, 2, 5, 5}, kCpu), ok); }, {name, "4-d"});
    expect_error([&] { pool(x, {7, 7, 1, 1}); }, {name, "larger than the padded input"});
    expect_error(
        [&] {
          pool(x, {8, 8, 1, 1, 1, 1});
        },
        {name, "larger than the padded input", "7x7"});
    expect_error([&] { pool(x, {3, 3, 1, 1, 2, 1}); }, {name, "at most half the kernel"});
    expect_error([&] { pool(x, {2, 2, 1, 1, 0, 2}); }, {name, "at most half the kernel"});
    expect_error([&] { pool(x, {2, 2, 1, 1, -1, 0}); }, {name, "padding must be >= 0"});
    expect_error([&] { pool(x, {2, 2, 0, 1}); }, {name, "stride must be positive"});
    expect_error([&] { pool(x, {2, 2, 1, -2}); }, {name, "stride must be positive"});
    expect_error([&] { pool(x, {0, 2, 1, 1}); }, {name, "kernel must be positive"});
    expect_error(
        [&] {
          pool(Tensor::from_int32({1, 2, 3, 4}, {1, 1, 2, 2}, kCpu), ok);
        },
        {name, "float32", "int32"});
    expect_error([&] { pool(Tensor(), ok); }, {name, "undefined"});
    expect_error([&] { pool(Tensor::zeros({1, 1, 0, 4}, kCpu), ok); }, {name, "empty"});
    // An empty batch of planes too large for int32 indices (no memory needed to ask).
    expect_error(
        [&] {
          pool(Tensor::zeros({0, 1, int64_t(1) << 16, int64_t(1) << 16}, kCpu), ok);
        },
        {name, "int32"});
  }
  expect_error(
      [] {
        ops::global_avg_pool2d(Tensor::zeros({2, 3}, kCpu));
      },
      {"global_avg_pool2d", "4-d"});
  expect_error([] { ops::global_avg_pool2d(Tensor()); }, {"global_avg_pool2d", "undefined"});
  expect_error(
      [] {
        ops::global_avg_pool2d(Tensor::from_int32({1, 2, 3, 4}, {1, 1, 2, 2}, kCpu));
      },
      {"global_avg_pool2d", "float32"});
  expect_error([] { ops::flatten(Tensor()); }, {"flatten", "undefined"});
  expect_error([] { ops::flatten(Tensor::scalar(1.0f, kCpu)); }, {"flatten", "0-d"});
  // The op still works afterwards.
  EXPECT_EQ(ops::max_pool2d(Tensor::ones({1, 1, 2, 2}, kCpu), ok).to_vector(),
            (std::vector<float>{1}));
}

TEST(PoolBadInput, TheKernelsRefuseAGeometryTheOpsWouldNotMake) {
  kernels::Pool2DGeometry g;
  g.planes = 1;
  g.in_h = g.in_w = 4;
  g.kernel_h = g.kernel_w = 2;
  g.stride_h = g.stride_w = 2;
  g.out_h = g.out_w = 3;  // the third window would start at 4, past the input
  expect_error([&] { kernels::check_pool2d_geometry("test", g); }, {"test", "past the input"});
  g.out_h = g.out_w = 2;
  g.pad_h = 2;
  expect_error([&] { kernels::check_pool2d_geometry("test", g); }, {"test", "padding"});
}

}  // namespace
}  // namespace cairn
