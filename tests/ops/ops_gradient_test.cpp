// Every differentiable op's backward against central finite differences on the CPU, and the
// autograd semantics users rely on (shared leaves, grad requests, detach, recording scopes).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cairn/kernels/elementwise_ops.h"
#include "support/test_support.h"

namespace cairn {
namespace {

using kernels::Transpose;
using testing::expect_close;
using testing::expect_error;
using testing::expect_gradients_match;
using testing::random_tensor;

const Device kCpu = Device::cpu();

Tensor cpu_tensor(const std::vector<float>& values, const Shape& shape) {
  return Tensor::from_vector(values, shape, kCpu);
}

// Random values with |x| in [0.1, 1.1): away from the kinks of relu and abs, so a central
// difference with eps = 1e-2 never straddles one.
Tensor away_from_zero(const Shape& shape, uint64_t seed) {
  std::vector<float> values = random_tensor(shape, seed, kCpu).to_vector();
  for (float& v : values) v = v < 0 ? v - 0.1f : v + 0.1f;
  return cpu_tensor(values, shape);
}

// sum(y * w) for a fixed random w of y's shape: a scalar whose gradient with respect to y is w,
// so that every element of an op's output gradient is exercised with a different weight.
Tensor weighted_sum(const Tensor& y, uint64_t seed = 99) {
  return ops::sum(ops::mul(y, random_tensor(y.shape(), seed, y.device(), -1.0f, 1.0f)));
}

using UnaryFn = std::function<Tensor(const Tensor&)>;

void check_unary(const char* name, const UnaryFn& op, const Tensor& x) {
  SCOPED_TRACE(name);
  expect_gradients_match([&](const std::vector<Tensor>& in) { return weighted_sum(op(in[0])); },
                         {x});
}

// ---------------------------------------------------------------------------------------------
// Unary

// Every row of the op table (kernels/elementwise_ops.h), on its domain narrowed to [-2, 2] (and to
// at least 0.5 where it is positive: a central difference with eps = 1e-2 near log's pole is not
// accurate), and 0.1 away from its kink.
TEST(OpsGradient, EveryUnaryRowOfTheOpTable) {
  uint64_t seed = 1;
  for (const kernels::UnaryOpInfo& row : kernels::kUnaryOps) {
    float low = std::max(row.low, -2.0f), high = std::min(row.high, 2.0f);
    if (row.low >= 0.0f) low = std::max(low, 0.5f);
    std::vector<float> values = random_tensor({3, 4}, seed++, kCpu, low, high).to_vector();
    if (!std::isnan(row.kink)) {
      for (float& v : values) {
        if (std::fabs(v - row.kink) < 0.1f) v = v < row.kink ? row.kink - 0.1f : row.kink + 0.1f;
      }
    }
    const kernels::UnaryOp op = row.op;
    check_unary(
        row.name, [op](const Tensor& t) { return ops::unary(op, t); }, cpu_tensor(values, {3, 4}));
  }
}

TEST(OpsGradient, ScalarOps) {
  const Tensor x = random_tensor({3, 4}, 10, kCpu);
  check_unary(
      "add_scalar", [](const Tensor& t) { return ops::add_scalar(t, 1.5f); }, x);
  check_unary(
      "mul_scalar", [](const Tensor& t) { return ops::mul_scalar(t, -2.5f); }, x);
  check_unary(
      "div_scalar", [](const Tensor& t) { return ops::div_scalar(t, 4.0f); }, x);
  check_unary(
      "rsub_scalar", [](const Tensor& t) { return ops::rsub_scalar(3.0f, t); }, x);
}

TEST(OpsGradient, UnaryGradientsAreExactOnHandValues) {
  // d/dx of sum(3 x) is exactly 3, of sum(x^2) exactly 2x, of sum(exp x) exp x.
  Tensor x = cpu_tensor({0.5f, -1.25f, 2.0f}, {3});
  x.attach_grad();
  {
    autograd::RecordScope record;
    ops::sum(ops::square(x)).backward();
  }
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{1.0f, -2.5f, 4.0f}));
  {
    autograd::RecordScope record;
    ops::sum(ops::mul_scalar(x, 3.0f)).backward();
  }
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{3, 3, 3}));
}

// ---------------------------------------------------------------------------------------------
// Binary with every broadcast form: gradients for both operands

enum class Op { kAdd, kSub, kMul, kDiv };

Tensor run_op(Op op, const Tensor& a, const Tensor& b) {
  switch (op) {
    case Op::kAdd:
      return ops::add(a, b);
    case Op::kSub:
      return ops::sub(a, b);
    case Op::kMul:
      return ops::mul(a, b);
    case Op::kDiv:
      return ops::div(a, b);
  }
  return Tensor();
}

const char* op_name(Op op) {
  switch (op) {
    case Op::kAdd:
      return "add";
    case Op::kSub:
      return "sub";
    case Op::kMul:
      return "mul";
    case Op::kDiv:
      return "div";
  }
  return "?";
}

const std::vector<Shape> kBShapes = {{3, 4}, {1}, {}, {1, 1}, {4}, {1, 4}, {3, 1}};

TEST(OpsGradient, BinaryOpsEveryBroadcastFormBothOperands) {
  for (Op op : {Op::kAdd, Op::kSub, Op::kMul, Op::kDiv}) {
    for (const Shape& b_shape : kBShapes) {
      SCOPED_TRACE(std::string(op_name(op)) + " (3, 4) with b " + shape_str(b_shape));
      const Tensor a = random_tensor({3, 4}, 20, kCpu, -2.0f, 2.0f);
      // Denominators in [0.5, 1.5], away from zero.
      const Tensor b = random_tensor(b_shape, 21, kCpu, 0.5f, 1.5f);
      expect_gradients_match(
          [op](const std::vector<Tensor>& in) { return weighted_sum(run_op(op, in[0], in[1])); },
          {a, b});
    }
  }
}

TEST(OpsGradient, BinaryOpsRowBroadcastOverThreeDimensions) {
  for (Op op : {Op::kAdd, Op::kSub, Op::kMul, Op::kDiv}) {
    SCOPED_TRACE(op_name(op));
    expect_gradients_match(
        [op](const std::vector<Tensor>& in) { return weighted_sum(run_op(op, in[0], in[1])); },
        {random_tensor({2, 3, 4}, 22, kCpu), random_tensor({4}, 23, kCpu, 0.5f, 1.5f)});
  }
}

TEST(OpsGradient, AddAndMulWithTheBroadcastOperandFirst) {
  for (Op op : {Op::kAdd, Op::kMul}) {
    for (const Shape& small_shape : kBShapes) {
      if (small_shape == Shape{3, 4}) continue;
      SCOPED_TRACE(std::string(op_name(op)) + " " + shape_str(small_shape) + " with (3, 4)");
      expect_gradients_match(
          [op](const std::vector<Tensor>& in) { return weighted_sum(run_op(op, in[0], in[1])); },
          {random_tensor(small_shape, 24, kCpu), random_tensor({3, 4}, 25, kCpu)});
    }
  }
}

TEST(OpsGradient, BinaryOpsWhenOnlyOneOperandNeedsAGradient) {
  // The other operand is a constant: backward must skip it and still get this one right.
  for (Op op : {Op::kAdd, Op::kSub, Op::kMul, Op::kDiv}) {
    SCOPED_TRACE(op_name(op));
    const Tensor constant_row = random_tensor({4}, 26, kCpu, 0.5f, 1.5f);
    expect_gradients_match(
        [&](const std::vector<Tensor>& in) {
          return weighted_sum(run_op(op, in[0], constant_row));
        },
        {random_tensor({3, 4}, 27, kCpu)});
    const Tensor constant_matrix = random_tensor({3, 4}, 28, kCpu);
    expect_gradients_match(
        [&](const std::vector<Tensor>& in) {
          return weighted_sum(run_op(op, constant_matrix, in[0]));
        },
        {random_tensor({3, 1}, 29, kCpu, 0.5f, 1.5f)});
  }
}

TEST(OpsGradient, BiasAdd) {
  expect_gradients_match(
      [](const std::vector<Tensor>& in) { return weighted_sum(ops::bias_add(in[0], in[1])); },
      {random_tensor({5, 3}, 30, kCpu), random_tensor({3}, 31, kCpu)});
}

// ---------------------------------------------------------------------------------------------
// Reductions

TEST(OpsGradient, WholeTensorReductions) {
  const Tensor x = random_tensor({3, 5}, 40, kCpu);
  auto scaled = [](const std::function<Tensor(const Tensor&)>& reduce) {
    // Times a constant that is not 1, so a gradient that ignores the head gradient fails.
    return [reduce](const std::vector<Tensor>& in) { return ops::mul_scalar(reduce(in[0]), 1.7f); };
  };
  {
    SCOPED_TRACE("sum");
    expect_gradients_match(scaled([](const Tensor& t) { return ops::sum(t); }), {x});
  }
  {
    SCOPED_TRACE("mean");
    expect_gradients_match(scaled([](const Tensor& t) { return ops::mean(t); }), {x});
  }
  {
    SCOPED_TRACE("sum_squares");
    expect_gradients_match(scaled([](const Tensor& t) { return ops::sum_squares(t); }), {x});
  }
  {
    SCOPED_TRACE("norm");
    expect_gradients_match(scaled([](const Tensor& t) { return ops::norm(t); }), {x});
  }
}

TEST(OpsGradient, RowReductions) {
  for (const Shape& shape : {Shape{3, 5}, Shape{2, 3, 4}, Shape{6}}) {
    SCOPED_TRACE(shape_str(shape));
    const Tensor x = random_tensor(shape, 41, kCpu);
    expect_gradients_match(
        [](const std::vector<Tensor>& in) { return weighted_sum(ops::sum_rows(in[0])); }, {x});
    expect_gradients_match(
        [](const std::vector<Tensor>& in) { return weighted_sum(ops::mean_rows(in[0])); }, {x});
    expect_gradients_match(
        [](const std::vector<Tensor>& in) { return weighted_sum(ops::sum_squares_rows(in[0])); },
        {x});
  }
}

TEST(OpsGradient, ReductionsOfEmptyTensorsBackpropagateEmptyGradients) {
  // An empty batch: the forward works (sum 0, empty rows), so the backward must too.
  struct Case {
    const char* name;
    Shape shape;
    std::function<Tensor(const Tensor&)> f;
  };
  const std::vector<Case> cases = {
      {"sum", {0}, [](const Tensor& x) { return ops::sum(x); }},
      {"sum_squares", {0, 3}, [](const Tensor& x) { return ops::sum_squares(x); }},
      {"sum_rows", {3, 0}, [](const Tensor& x) { return ops::sum(ops::sum_rows(x)); }},
      {"sum_columns", {0, 4}, [](const Tensor& x) { return ops::sum(ops::sum_columns(x)); }},
      {"add with a row",
       {0, 4},
       [](const Tensor& x) { return ops::sum(ops::add(x, Tensor::ones({4}, kCpu))); }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.name) + " of " + shape_str(c.shape));
    Tensor x = Tensor::empty(c.shape, kCpu);
    x.attach_grad();
    try {
      autograd::RecordScope record;
      const Tensor y = c.f(x);
      EXPECT_EQ(y.item(), 0.0f);
      y.backward();
      EXPECT_EQ(shape_str(x.grad().shape()), shape_str(c.shape));
    } catch (const Error& error) {
      ADD_FAILURE() << "threw: " << error.what();
    }
  }
}

TEST(OpsGradient, SumColumns) {
  expect_gradients_match(
      [](const std::vector<Tensor>& in) { return weighted_sum(ops::sum_columns(in[0])); },
      {random_tensor({4, 3}, 42, kCpu)});
}

// ---------------------------------------------------------------------------------------------
// Softmax and loss

TEST(OpsGradient, SoftmaxUnderAFixedRandomWeight) {
  // sum(softmax(x)) is constant per row, so its gradient is zero: weight the outputs.
  for (const Shape& shape : {Shape{3, 5}, Shape{2, 2, 4}}) {
    SCOPED_TRACE(shape_str(shape));
    expect_gradients_match(
        [](const std::vector<Tensor>& in) { return weighted_sum(ops::softmax(in[0]), 7); },
        {random_tensor(shape, 50, kCpu, -2.0f, 2.0f)});
  }
}

TEST(OpsGradient, SoftmaxCrossEntropySummedOverSamples) {
  const Tensor labels = Tensor::from_int32({0, 3, 2, 3}, {4}, kCpu);
  expect_gradients_match(
      [&](const std::vector<Tensor>& in) {
        return ops::sum(ops::softmax_cross_entropy(in[0], labels));
      },
      {random_tensor({4, 5}, 51, kCpu, -2.0f, 2.0f)});
}

TEST(OpsGradient, SoftmaxCrossEntropyWithPerSampleWeights) {
  // A non-uniform head gradient: each sample's loss gradient must be scaled by its own weight.
  const Tensor labels = Tensor::from_int32({1, 0, 4}, {3}, kCpu);
  expect_gradients_match(
      [&](const std::vector<Tensor>& in) {
        return weighted_sum(ops::softmax_cross_entropy(in[0], labels), 8);
      },
      {random_tensor({3, 5}, 52, kCpu, -2.0f, 2.0f)});
}

TEST(OpsGradient, SoftmaxCrossEntropyGradientIsProbabilitiesMinusOneHot) {
  Tensor logits = cpu_tensor({0, 0, 0, 0}, {1, 4});
  logits.attach_grad();
  {
    autograd::RecordScope record;
    ops::sum(ops::softmax_cross_entropy(logits, Tensor::from_int32({2}, {1}, kCpu))).backward();
  }
  expect_close(logits.grad().to_vector(), {0.25f, 0.25f, -0.75f, 0.25f}, 1e-7, 0, "dlogits");
}

// ---------------------------------------------------------------------------------------------
// Matrix products and shape

TEST(OpsGradient, MatmulAllFourTransposeCombinations) {
  const int64_t m = 3, n = 5, k = 7;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      SCOPED_TRACE(std::string("transpose_a=") + (ta ? "yes" : "no") +
                   " transpose_b=" + (tb ? "yes" : "no"));
      const Transpose op_a = ta ? Transpose::kYes : Transpose::kNo;
      const Transpose op_b = tb ? Transpose::kYes : Transpose::kNo;
      expect_gradients_match(
          [op_a, op_b](const std::vector<Tensor>& in) {
            return weighted_sum(ops::matmul(in[0], in[1], op_a, op_b));
          },
          {random_tensor(ta ? Shape{k, m} : Shape{m, k}, 60, kCpu),
           random_tensor(tb ? Shape{n, k} : Shape{k, n}, 61, kCpu)});
    }
  }
}

TEST(OpsGradient, LinearWithAndWithoutBias) {
  const Tensor x = random_tensor({4, 3}, 62, kCpu);
  const Tensor w = random_tensor({2, 3}, 63, kCpu);
  const Tensor b = random_tensor({2}, 64, kCpu);
  {
    SCOPED_TRACE("with bias");
    expect_gradients_match(
        [](const std::vector<Tensor>& in) {
          return weighted_sum(ops::linear(in[0], in[1], in[2]));
        },
        {x, w, b});
  }
  {
    SCOPED_TRACE("without bias");
    expect_gradients_match(
        [](const std::vector<Tensor>& in) {
          return weighted_sum(ops::linear(in[0], in[1], Tensor()));
        },
        {x, w});
  }
}

TEST(OpsGradient, Reshape) {
  expect_gradients_match(
      [](const std::vector<Tensor>& in) {
        // Weighted in the new shape, so the gradient must be laid back in the old one.
        return weighted_sum(ops::reshape(in[0], {-1, 2}));
      },
      {random_tensor({2, 3, 2}, 70, kCpu)});
}

TEST(OpsGradient, ComposedChainLikeATwoLayerNetwork) {
  const Tensor labels = Tensor::from_int32({2, 0, 1}, {3}, kCpu);
  expect_gradients_match(
      [&](const std::vector<Tensor>& in) {
        const Tensor hidden = ops::tanh(ops::linear(in[0], in[1], in[2]));
        const Tensor logits = ops::linear(hidden, in[3], in[4]);
        return ops::mean(ops::softmax_cross_entropy(logits, labels));
      },
      {random_tensor({3, 4}, 71, kCpu), random_tensor({5, 4}, 72, kCpu),
       random_tensor({5}, 73, kCpu), random_tensor({3, 5}, 74, kCpu),
       random_tensor({3}, 75, kCpu)});
}

// ---------------------------------------------------------------------------------------------
// Autograd semantics

TEST(OpsAutograd, ALeafUsedTwiceGetsTheSumOfBothUses) {
  // Values whose products and sums are exact in float32, so 2x + 1 must come out exactly.
  Tensor x = cpu_tensor({0.5f, -1.25f, 3.0f, 0.75f}, {4});
  x.attach_grad();
  {
    autograd::RecordScope record;
    ops::sum(ops::add(ops::mul(x, x), x)).backward();
  }
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{2.0f, -1.5f, 7.0f, 2.5f}));
}

TEST(OpsAutograd, WriteRequestOverwritesAcrossBackwardCalls) {
  Tensor x = cpu_tensor({1, 2}, {2});
  x.attach_grad(GradReq::kWrite);
  for (int call = 0; call < 2; ++call) {
    autograd::RecordScope record;
    ops::sum(ops::mul_scalar(x, 3.0f)).backward();
  }
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{3, 3}));
}

TEST(OpsAutograd, AddRequestAccumulatesAcrossBackwardCalls) {
  Tensor x = cpu_tensor({1, 2}, {2});
  x.attach_grad(GradReq::kAdd);
  for (int call = 0; call < 2; ++call) {
    autograd::RecordScope record;
    ops::sum(ops::mul_scalar(x, 3.0f)).backward();
  }
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{6, 6}));
  x.zero_grad();
  {
    autograd::RecordScope record;
    ops::sum(ops::mul_scalar(x, 3.0f)).backward();
  }
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{3, 3}));
}

TEST(OpsAutograd, NullRequestLeavesGetNoGradient) {
  Tensor x = cpu_tensor({1, 2}, {2});
  x.attach_grad(GradReq::kNull);
  Tensor w = cpu_tensor({3, 4}, {2});
  w.attach_grad();
  {
    autograd::RecordScope record;
    ops::sum(ops::mul(x, w)).backward();
  }
  EXPECT_FALSE(x.grad().defined());
  EXPECT_FALSE(x.requires_grad());
  EXPECT_EQ(w.grad().to_vector(), (std::vector<float>{1, 2}));
}

TEST(OpsAutograd, DetachCutsTheGraph) {
  Tensor x = cpu_tensor({0.5f, -2.0f, 3.0f}, {3});
  x.attach_grad();
  {
    autograd::RecordScope record;
    // Only the second factor is in the graph: d/dx sum(c * x) with c = x is x, not 2x.
    const Tensor detached = x.detach();
    EXPECT_FALSE(detached.requires_grad());
    EXPECT_TRUE(detached.is_leaf());
    EXPECT_EQ(detached.raw_data(), x.raw_data());
    ops::sum(ops::mul(detached, x)).backward();
  }
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{0.5f, -2.0f, 3.0f}));
  autograd::RecordScope record;
  const Tensor cut = ops::sum(ops::square(x.detach()));
  EXPECT_FALSE(cut.requires_grad());
  expect_error([&] { cut.backward(); }, {"backward", "RecordScope"});
}

TEST(OpsAutograd, OpsOutsideARecordScopeRecordNothing) {
  Tensor x = cpu_tensor({1, 2, 3}, {3});
  x.attach_grad();
  const Tensor y = ops::sum(ops::mul_scalar(x, 2.0f));  // no RecordScope
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(y.is_leaf());
  expect_error([&] { y.backward(); }, {"backward", "not computed inside autograd::RecordScope"});
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{0, 0, 0}));  // untouched
  {
    autograd::RecordScope record;
    autograd::PauseScope pause;
    EXPECT_FALSE(ops::neg(x).requires_grad());
  }
  EXPECT_FALSE(autograd::is_recording());
}

TEST(OpsAutograd, NonScalarBackwardNeedsAHeadGradient) {
  Tensor x = cpu_tensor({1, 2, 3}, {3});
  x.attach_grad();
  autograd::RecordScope record;
  const Tensor y = ops::mul_scalar(x, 2.0f);
  expect_error([&] { y.backward(); }, {"backward", "head gradient", "(3,)"});
  y.backward(cpu_tensor({1, 10, 100}, {3}));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{2, 20, 200}));
}

TEST(OpsAutograd, MaxAndMaxRowsRefuseToRecord) {
  Tensor x = cpu_tensor({1, 5, 3, 2}, {2, 2});
  x.attach_grad();
  {
    autograd::RecordScope record;
    expect_error([&] { ops::max(x); }, {"max", "not differentiable"});
    expect_error([&] { ops::max_rows(x); }, {"max_rows", "not differentiable"});
    // Allowed on a detached copy, and on results of recorded ops once detached.
    EXPECT_EQ(ops::max(x.detach()).item(), 5.0f);
    EXPECT_EQ(ops::max_rows(ops::neg(x).detach()).to_vector(), (std::vector<float>{-1, -2}));
  }
  EXPECT_EQ(ops::max(x).item(), 5.0f);  // outside recording
  EXPECT_EQ(ops::max_rows(x).to_vector(), (std::vector<float>{5, 3}));
}

TEST(OpsAutograd, IntegerLabelsReceiveNoGradient) {
  Tensor logits = random_tensor({2, 3}, 80, kCpu);
  logits.attach_grad();
  const Tensor labels = Tensor::from_int32({0, 2}, {2}, kCpu);
  {
    autograd::RecordScope record;
    ops::sum(ops::softmax_cross_entropy(logits, labels)).backward();
  }
  EXPECT_FALSE(labels.grad().defined());
  EXPECT_TRUE(logits.grad().defined());
}

}  // namespace
}  // namespace cairn
