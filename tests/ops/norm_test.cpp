// batch_norm and layer_norm on the CPU: float64 golden values from numpy
// (tests/data/make_norm_fixture.py: forward, backward for x, weight and bias, the running
// statistics), central finite differences for every input and parameter on random shapes,
// prediction mode, NaN propagation and bad input.
#include "cairn/kernels/norm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
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
using testing::random_tensor;

const Device kCpu = Device::cpu();

// norm_fixture.txt: "<case>.<name> <ndim> <dims...> <values...>" a line.
struct Fixture {
  std::map<std::string, Tensor> tensors;
  Fixture() {
    const std::string path = std::string(CAIRN_TEST_DATA_DIR) + "/norm_fixture.txt";
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open " + path);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string name;
      int ndim = 0;
      fields >> name >> ndim;
      Shape shape(static_cast<size_t>(ndim), 0);
      int64_t count = 1;
      for (int64_t& dim : shape) {
        fields >> dim;
        count *= dim;
      }
      std::vector<float> values(static_cast<size_t>(count));
      for (float& v : values) {
        double d;
        fields >> d;
        v = float(d);
      }
      tensors[name] = Tensor::from_vector(values, shape, kCpu);
    }
  }
  bool has(const std::string& name) const { return tensors.count(name) != 0; }
  Tensor get(const std::string& name) const {
    const auto found = tensors.find(name);
    if (found == tensors.end()) throw std::runtime_error("fixture lacks " + name);
    return found->second.clone();
  }
};

const Fixture& fixture() {
  static const Fixture loaded;
  return loaded;
}

// The float64 references against float32 arithmetic: a few ulps of each O(1) value.
constexpr double kAtol = 2e-5, kRtol = 2e-5;

struct BatchNormRun {
  Tensor y, dx, dweight, dbias, running_mean, running_var;
};

BatchNormRun run_batch_norm(const std::string& name, bool training) {
  const Fixture& f = fixture();
  Tensor x = f.get(name + ".x");
  Tensor weight = f.has(name + ".weight") ? f.get(name + ".weight") : Tensor();
  Tensor bias = f.has(name + ".bias") ? f.get(name + ".bias") : Tensor();
  BatchNormRun run;
  run.running_mean = f.get(name + ".running_mean");
  run.running_var = f.get(name + ".running_var");
  const float momentum = f.get(name + ".momentum").item();
  x.attach_grad();
  if (weight.defined()) weight.attach_grad();
  if (bias.defined()) bias.attach_grad();
  {
    autograd::RecordScope record;
    run.y = ops::batch_norm(x, weight, bias, run.running_mean, run.running_var, training, momentum,
                            1e-5f);
    run.y.backward(f.get(name + ".dy"));
  }
  run.dx = x.grad();
  if (weight.defined()) run.dweight = weight.grad();
  if (bias.defined()) run.dbias = bias.grad();
  return run;
}

void expect_matches_fixture(const BatchNormRun& run, const std::string& name, bool training) {
  const Fixture& f = fixture();
  expect_close(run.y, f.get(name + ".y"), kAtol, kRtol, name + " y");
  expect_close(run.dx, f.get(name + ".dx"), kAtol, kRtol, name + " dx");
  if (f.has(name + ".dweight")) {
    expect_close(run.dweight, f.get(name + ".dweight"), kAtol, kRtol, name + " dweight");
  }
  if (f.has(name + ".dbias")) {
    expect_close(run.dbias, f.get(name + ".dbias"), kAtol, kRtol, name + " dbias");
  }
  if (training) {
    expect_close(run.running_mean, f.get(name + ".running_mean_after"), kAtol, kRtol,
                 name + " running_mean");
    expect_close(run.running_var, f.get(name + ".running_var_after"), kAtol, kRtol,
                 name + " running_var");
  } else {
    // Prediction reads the running statistics and leaves them alone, bit for bit.
    EXPECT_EQ(run.running_mean.to_vector(), f.get(name + ".running_mean").to_vector());
    EXPECT_EQ(run.running_var.to_vector(), f.get(name + ".running_var").to_vector());
  }
}

TEST(BatchNorm, TrainingMatchesNumpyOnOddShapes) {
  for (const char* name : {"bn_train_4d", "bn_train_2d", "bn_train_pair"}) {
    SCOPED_TRACE(name);
    expect_matches_fixture(run_batch_norm(name, true), name, true);
  }
}

TEST(BatchNorm, PredictionMatchesNumpyAndIsAPerChannelAffineMap) {
  expect_matches_fixture(run_batch_norm("bn_predict_4d", false), "bn_predict_4d", false);
}

TEST(BatchNorm, TrainingWithoutRunningStatisticsNormalisesByTheBatch) {
  const BatchNormRun with = run_batch_norm("bn_train_4d", true);
  const Fixture& f = fixture();
  const Tensor x = f.get("bn_train_4d.x");
  const Tensor y = ops::batch_norm(x, f.get("bn_train_4d.weight"), f.get("bn_train_4d.bias"),
                                   Tensor(), Tensor(), true, 0.1f, 1e-5f);
  EXPECT_EQ(y.to_vector(), with.y.to_vector());
}

TEST(BatchNorm, MomentumZeroKeepsAndOneReplacesTheRunningStatistics) {
  const Tensor x = random_tensor({6, 4, 3}, 1, kCpu, -2.0f, 3.0f);
  Tensor mean = random_tensor({4}, 2, kCpu), var = random_tensor({4}, 3, kCpu, 0.5f, 2.0f);
  const std::vector<float> mean0 = mean.to_vector(), var0 = var.to_vector();
  ops::batch_norm(x, Tensor(), Tensor(), mean, var, true, 0.0f, 1e-5f);
  EXPECT_EQ(mean.to_vector(), mean0);
  EXPECT_EQ(var.to_vector(), var0);
  ops::batch_norm(x, Tensor(), Tensor(), mean, var, true, 1.0f, 1e-5f);
  // The batch's own: per channel over 6 * 3 values, the variance unbiased.
  const std::vector<float> values = x.to_vector();
  for (int64_t c = 0; c < 4; ++c) {
    double sum = 0, squares = 0;
    for (int64_t n = 0; n < 6; ++n)
      for (int64_t s = 0; s < 3; ++s) sum += values[size_t((n * 4 + c) * 3 + s)];
    const double m = sum / 18;
    for (int64_t n = 0; n < 6; ++n)
      for (int64_t s = 0; s < 3; ++s) {
        const double d = values[size_t((n * 4 + c) * 3 + s)] - m;
        squares += d * d;
      }
    EXPECT_NEAR(mean.to_vector()[size_t(c)], m, 1e-6);
    EXPECT_NEAR(var.to_vector()[size_t(c)], squares / 17, 1e-6);
  }
}

TEST(BatchNorm, FiniteDifferencesForEveryInputAndParameter) {
  struct Case {
    Shape shape;
    bool training;
  };
  for (const Case& c : {Case{{4, 3}, true}, Case{{2, 3, 3, 1}, true}, Case{{3, 2, 1, 5}, true},
                        Case{{1, 5, 2, 1}, true}, Case{{2, 3, 2, 3}, false}}) {
    SCOPED_TRACE(shape_str(c.shape) + (c.training ? " training" : " predicting"));
    const int64_t channels = c.shape[1];
    const Tensor weights = random_tensor(c.shape, 9, kCpu);  // makes the loss depend on each y
    const Tensor running_mean = random_tensor({channels}, 10, kCpu);
    const Tensor running_var = random_tensor({channels}, 11, kCpu, 0.5f, 2.0f);
    const bool training = c.training;
    expect_gradients_match(
        [&](const std::vector<Tensor>& in) {
          // Running statistics only when predicting: a training forward would move them between
          // the evaluations of the finite differences.
          const Tensor y =
              training ? ops::batch_norm(in[0], in[1], in[2], Tensor(), Tensor(), true, 0.1f, 1e-5f)
                       : ops::batch_norm(in[0], in[1], in[2], running_mean, running_var, false,
                                         0.1f, 1e-5f);
          return ops::sum(y * weights);
        },
        {random_tensor(c.shape, 12, kCpu, -2.0f, 2.0f),
         random_tensor({channels}, 13, kCpu, 0.5f, 1.5f), random_tensor({channels}, 14, kCpu)},
        1e-2, 3e-3, 3e-2);
  }
}

TEST(BatchNorm, GradientOfXAloneAndOfParametersAlone) {
  // Each input's gradient comes out alone, the others not needing any.
  const Fixture& f = fixture();
  const std::string name = "bn_train_4d";
  Tensor x = f.get(name + ".x");
  x.attach_grad();
  {
    autograd::RecordScope record;
    ops::batch_norm(x, f.get(name + ".weight"), f.get(name + ".bias"), Tensor(), Tensor(), true,
                    0.1f, 1e-5f)
        .backward(f.get(name + ".dy"));
  }
  expect_close(x.grad(), f.get(name + ".dx"), kAtol, kRtol, "dx alone");
  Tensor weight = f.get(name + ".weight");
  weight.attach_grad();
  {
    autograd::RecordScope record;
    ops::batch_norm(f.get(name + ".x"), weight, Tensor(), Tensor(), Tensor(), true, 0.1f, 1e-5f)
        .backward(f.get(name + ".dy"));
  }
  expect_close(weight.grad(), f.get(name + ".dweight"), kAtol, kRtol, "dweight alone");
}

TEST(BatchNorm, NaNInAChannelMakesThatChannelNaNAndNoOther) {
  std::vector<float> values = random_tensor({4, 3, 2}, 20, kCpu).to_vector();
  values[size_t((2 * 3 + 1) * 2 + 1)] = std::nanf("");  // n = 2, c = 1, s = 1
  const Tensor x = Tensor::from_vector(values, {4, 3, 2}, kCpu);
  Tensor mean = Tensor::zeros({3}, kCpu), var = Tensor::ones({3}, kCpu);
  const std::vector<float> y =
      ops::batch_norm(x, Tensor(), Tensor(), mean, var, true, 0.1f, 1e-5f).to_vector();
  for (int64_t n = 0; n < 4; ++n)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t s = 0; s < 2; ++s) {
        const float v = y[size_t((n * 3 + c) * 2 + s)];
        EXPECT_EQ(std::isnan(v), c == 1) << n << " " << c << " " << s << ": " << v;
      }
  EXPECT_TRUE(std::isnan(mean.to_vector()[1]));
  EXPECT_FALSE(std::isnan(mean.to_vector()[0]));
  // Predicting, a NaN stays in its own element.
  const std::vector<float> p = ops::batch_norm(x, Tensor(), Tensor(), Tensor::zeros({3}, kCpu),
                                               Tensor::ones({3}, kCpu), false, 0.1f, 1e-5f)
                                   .to_vector();
  for (size_t i = 0; i < p.size(); ++i) EXPECT_EQ(std::isnan(p[i]), std::isnan(values[i])) << i;
}

TEST(BatchNorm, BadInput) {
  const Tensor x = random_tensor({4, 3, 2}, 1, kCpu);
  const Tensor c3 = Tensor::ones({3}, kCpu), c2 = Tensor::ones({2}, kCpu);
  auto call = [&](const Tensor& input, const Tensor& w, const Tensor& b, const Tensor& rm,
                  const Tensor& rv, bool training, float momentum = 0.1f, float eps = 1e-5f) {
    return [=] { ops::batch_norm(input, w, b, rm, rv, training, momentum, eps); };
  };
  expect_error(call(Tensor::ones({3}, kCpu), Tensor(), Tensor(), Tensor(), Tensor(), true),
               {"batch_norm", "(N, C)", "(3,)"});
  expect_error(call(Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), true),
               {"batch_norm", "x is an undefined tensor"});
  expect_error(call(Tensor::from_int32({1, 2, 3, 4}, {2, 2}, kCpu), Tensor(), Tensor(), Tensor(),
                    Tensor(), true),
               {"batch_norm", "x must be float32", "int32"});
  expect_error(call(x, c2, Tensor(), Tensor(), Tensor(), true),
               {"batch_norm", "weight must have shape (3,)", "got (2,)"});
  expect_error(call(x, Tensor::ones({3, 1}, kCpu), Tensor(), Tensor(), Tensor(), true),
               {"batch_norm", "weight must have shape (3,)", "(3, 1)"});
  expect_error(call(x, c3, c2, Tensor(), Tensor(), true), {"batch_norm", "bias must have shape"});
  expect_error(call(x, Tensor(), Tensor(), c2, c3, true),
               {"batch_norm", "running_mean must have shape (3,)"});
  expect_error(call(x, Tensor(), Tensor(), c3, c2, false),
               {"batch_norm", "running_var must have shape (3,)"});
  expect_error(call(x, Tensor(), Tensor(), c3, Tensor(), true), {"batch_norm", "given together"});
  expect_error(call(x, Tensor(), Tensor(), Tensor(), Tensor(), false),
               {"batch_norm", "predicting", "running_mean"});
  expect_error(
      call(x, Tensor::from_int32({1, 1, 1}, {3}, kCpu), Tensor(), Tensor(), Tensor(), true),
      {"batch_norm", "weight must be float32"});
  expect_error(call(x, Tensor(), Tensor(), c3, c3, true, 1.5f), {"batch_norm", "momentum", "1.5"});
  expect_error(call(x, Tensor(), Tensor(), c3, c3, true, -0.1f), {"batch_norm", "momentum"});
  expect_error(call(x, Tensor(), Tensor(), c3, c3, true, std::nanf("")),
               {"batch_norm", "momentum"});
  expect_error(call(x, Tensor(), Tensor(), c3, c3, true, 0.1f, 0.0f), {"batch_norm", "epsilon"});
  expect_error(call(x, Tensor(), Tensor(), c3, c3, true, 0.1f, -1e-5f), {"batch_norm", "epsilon"});
  // One value per channel: PyTorch's "Expected more than 1 value per channel when training".
  for (const Shape& single : {Shape{1, 3}, Shape{1, 3, 1, 1}, Shape{0, 3}}) {
    expect_error(
        call(Tensor::ones(single, kCpu), Tensor(), Tensor(), c3, c3, true),
        {"batch_norm", "expected more than 1 value per channel when training", shape_str(single)});
    // Predicting is fine with any batch.
    EXPECT_EQ(
        ops::batch_norm(Tensor::ones(single, kCpu), c3, c3, c3, c3, false, 0.1f, 1e-5f).shape(),
        single);
  }
}

// ---- layer_norm ----

TEST(LayerNorm, MatchesNumpyIncludingASingleRow) {
  const Fixture& f = fixture();
  for (const std::string name : {"ln_single_row", "ln_3d", "ln_noaffine"}) {
    SCOPED_TRACE(name);
    Tensor x = f.get(name + ".x");
    Tensor weight = f.has(name + ".weight") ? f.get(name + ".weight") : Tensor();
    Tensor bias = f.has(name + ".bias") ? f.get(name + ".bias") : Tensor();
    x.attach_grad();
    if (weight.defined()) weight.attach_grad();
    if (bias.defined()) bias.attach_grad();
    Tensor y;
    {
      autograd::RecordScope record;
      y = ops::layer_norm(x, int64_t(f.get(name + ".axes").item()), weight, bias, 1e-5f);
      y.backward(f.get(name + ".dy"));
    }
    expect_close(y, f.get(name + ".y"), kAtol, kRtol, "y");
    expect_close(x.grad(), f.get(name + ".dx"), kAtol, kRtol, "dx");
    if (weight.defined()) expect_close(weight.grad(), f.get(name + ".dweight"), kAtol, kRtol, "dw");
    if (bias.defined()) expect_close(bias.grad(), f.get(name + ".dbias"), kAtol, kRtol, "db");
  }
}

TEST(LayerNorm, FiniteDifferencesForEveryInputAndParameter) {
  struct Case {
    Shape shape;
    int64_t axes;
  };
  for (const Case& c :
       {Case{{1, 5}, 1}, Case{{3, 7}, 1}, Case{{2, 3, 3}, 2}, Case{{2, 1, 4}, 1}, Case{{5}, 1}}) {
    SCOPED_TRACE(shape_str(c.shape) + " over " + std::to_string(c.axes));
    const Shape normalized(c.shape.end() - c.axes, c.shape.end());
    const Tensor weights = random_tensor(c.shape, 30, kCpu);
    const int64_t axes = c.axes;
    expect_gradients_match(
        [&](const std::vector<Tensor>& in) {
          return ops::sum(ops::layer_norm(in[0], axes, in[1], in[2], 1e-5f) * weights);
        },
        {random_tensor(c.shape, 31, kCpu, -2.0f, 2.0f),
         random_tensor(normalized, 32, kCpu, 0.5f, 1.5f), random_tensor(normalized, 33, kCpu)},
        1e-2, 3e-3, 3e-2);
  }
}

TEST(LayerNorm, NaNInARowMakesThatRowNaNAndNoOther) {
  std::vector<float> values = random_tensor({3, 4}, 40, kCpu).to_vector();
  values[6] = std::nanf("");  // row 1
  const std::vector<float> y =
      ops::layer_norm(Tensor::from_vector(values, {3, 4}, kCpu), 1, Tensor(), Tensor(), 1e-5f)
          .to_vector();
  for (size_t i = 0; i < y.size(); ++i) EXPECT_EQ(std::isnan(y[i]), i / 4 == 1) << i;
}

TEST(LayerNorm, BadInput) {
  const Tensor x = random_tensor({2, 3, 4}, 1, kCpu);
  expect_error([&] { ops::layer_norm(x, 0, Tensor(), Tensor(), 1e-5f); },
               {"layer_norm", "normalized_axes must lie in [1, 3]", "got 0"});
  expect_error([&] { ops::layer_norm(x, 4, Tensor(), Tensor(), 1e-5f); },
               {"layer_norm", "normalized_axes", "got 4"});
  expect_error([&] { ops::layer_norm(x, 2, Tensor::ones({4}, kCpu), Tensor(), 1e-5f); },
               {"layer_norm", "weight must have shape (3, 4)", "got (4,)"});
  expect_error([&] { ops::layer_norm(x, 1, Tensor(), Tensor::ones({3}, kCpu), 1e-5f); },
               {"layer_norm", "bias must have shape (4,)"});
  expect_error([&] { ops::layer_norm(x, 1, Tensor(), Tensor(), 0.0f); }, {"layer_norm", "epsilon"});
  expect_error(
      [&] {
        ops::layer_norm(Tensor::from_int32({1, 2}, {2}, kCpu), 1, Tensor(), Tensor(), 1e-5f);
      },
      {"layer_norm", "x must be float32"});
  expect_error([&] { ops::layer_norm(Tensor::scalar(1.0f, kCpu), 1, Tensor(), Tensor(), 1e-5f); },
               {"layer_norm", "normalized_axes must lie in [1, 0]"});
}

// The CPU twin's statistics do not depend on the thread count: channels are split, each added in
// one order.
TEST(BatchNormKernel, StatisticsAreTheSameBitsOnAnyThreadCount) {
  const kernels::BatchNormShape shape{64, 37, 129};
  const Tensor x = random_tensor({64, 37, 129}, 50, kCpu, -3.0f, 5.0f);
  std::vector<std::vector<float>> results;
  for (int threads : {1, 2, 3}) {
    kernels::cpu::set_threads(threads);
    Tensor mean = Tensor::empty({37}, kCpu), var = Tensor::empty({37}, kCpu);
    kernels::cpu::batch_norm_statistics(x.data(), shape, 0.1f, mean.data(), var.data(), nullptr,
                                        nullptr);
    std::vector<float> both = mean.to_vector();
    for (float v : var.to_vector()) both.push_back(v);
    results.push_back(both);
  }
  kernels::cpu::set_threads(0);
  EXPECT_EQ(results[0], results[1]);
  EXPECT_EQ(results[0], results[2]);
}

}  // namespace
}  // namespace cairn
