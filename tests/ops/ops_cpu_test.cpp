// Every op on the CPU against hand-computed values and naive reference loops written here, so that
// the CPU path is a trustworthy oracle for the GPU parity tests.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "cairn/kernels/elementwise_ops.h"
#include "support/test_support.h"

namespace cairn {
namespace {

using kernels::Transpose;
using testing::expect_close;
using testing::expect_error;
using testing::random_tensor;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

const Device kCpu = Device::cpu();

Tensor cpu_tensor(const std::vector<float>& values, const Shape& shape) {
  return Tensor::from_vector(values, shape, kCpu);
}

// Restores the poison switch however the test ends.
class PoisonGuard {
 public:
  PoisonGuard() : previous_(poison_allocations()) { set_poison_allocations(true); }
  ~PoisonGuard() { set_poison_allocations(previous_); }
  PoisonGuard(const PoisonGuard&) = delete;
  PoisonGuard& operator=(const PoisonGuard&) = delete;

 private:
  bool previous_;
};

// ---------------------------------------------------------------------------------------------
// Unary

struct UnaryCase {
  const char* name;
  std::function<Tensor(const Tensor&)> op;
  std::function<double(double)> reference;
  std::vector<float> x;         // hand-picked inputs
  std::vector<float> expected;  // hand-computed outputs for x
};

std::vector<UnaryCase> unary_cases() {
  const double e = std::exp(1.0);
  return {
      {"relu",
       ops::relu,
       [](double v) { return v < 0 ? 0.0 : v; },
       {-2.0f, -0.5f, 0.0f, 0.5f, 3.0f},
       {0.0f, 0.0f, 0.0f, 0.5f, 3.0f}},
      {"neg", ops::neg, [](double v) { return -v; }, {1.5f, -2.0f, 0.0f}, {-1.5f, 2.0f, -0.0f}},
      {"exp",
       ops::exp,
       [](double v) { return std::exp(v); },
       {0.0f, 1.0f, -1.0f, 2.0f},
       {1.0f, float(e), float(1 / e), float(e * e)}},
      {"log",
       ops::log,
       [](double v) { return std::log(v); },
       {1.0f, float(e), 0.5f, 100.0f},
       {0.0f, 1.0f, -0.69314718f, 4.6051702f}},
      {"sqrt",
       ops::sqrt,
       [](double v) { return std::sqrt(v); },
       {0.0f, 1.0f, 4.0f, 0.25f, 2.0f},
       {0.0f, 1.0f, 2.0f, 0.5f, 1.4142135f}},
      {"abs",
       ops::abs,
       [](double v) { return std::fabs(v); },
       {-3.0f, 0.0f, 2.5f, -0.125f},
       {3.0f, 0.0f, 2.5f, 0.125f}},
      {"square",
       ops::square,
       [](double v) { return v * v; },
       {-3.0f, 0.0f, 2.5f, 0.5f},
       {9.0f, 0.0f, 6.25f, 0.25f}},
      {"sigmoid",
       ops::sigmoid,
       [](double v) { return 1.0 / (1.0 + std::exp(-v)); },
       {0.0f, 2.0f, -2.0f, 50.0f, -50.0f},
       {0.5f, 0.88079708f, 0.11920292f, 1.0f, 1.9287498e-22f}},
      {"tanh",
       ops::tanh,
       [](double v) { return std::tanh(v); },
       {0.0f, 0.5f, -1.0f, 20.0f},
       {0.0f, 0.46211716f, -0.76159416f, 1.0f}},
      {"add_scalar",
       [](const Tensor& x) { return ops::add_scalar(x, 2.5f); },
       [](double v) { return v + 2.5; },
       {1.0f, -2.5f, 0.25f},
       {3.5f, 0.0f, 2.75f}},
      {"mul_scalar",
       [](const Tensor& x) { return ops::mul_scalar(x, -3.0f); },
       [](double v) { return v * -3.0; },
       {1.0f, -2.5f, 0.0f},
       {-3.0f, 7.5f, -0.0f}},
      {"div_scalar",
       [](const Tensor& x) { return ops::div_scalar(x, 4.0f); },
       [](double v) { return v / 4.0; },
       {1.0f, -2.0f, 10.0f},
       {0.25f, -0.5f, 2.5f}},
      {"rsub_scalar",
       [](const Tensor& x) { return ops::rsub_scalar(1.0f, x); },
       [](double v) { return 1.0 - v; },
       {1.0f, -2.0f, 0.25f},
       {0.0f, 3.0f, 0.75f}},
  };
}

TEST(OpsCpuUnary, EveryOpMatchesHandComputedValues) {
  for (const UnaryCase& c : unary_cases()) {
    SCOPED_TRACE(c.name);
    const Tensor x = cpu_tensor(c.x, {int64_t(c.x.size())});
    const Tensor y = c.op(x);
    EXPECT_EQ(shape_str(y.shape()), shape_str(x.shape()));
    EXPECT_EQ(y.device(), kCpu);
    expect_close(y.to_vector(), c.expected, 1e-7, 1e-6, c.name);
  }
}

TEST(OpsCpuUnary, EveryOpMatchesADoubleReferenceOnRandomInputsAndKeepsTheShape) {
  // The hand-written cases (the scalar ops among them) on [0.1, 3), which suits every one...
  const Tensor x = random_tensor({4, 3, 5}, 11, kCpu, 0.1f, 3.0f);
  for (const UnaryCase& c : unary_cases()) {
    SCOPED_TRACE(c.name);
    const Tensor y = c.op(x);
    EXPECT_EQ(shape_str(y.shape()), "(4, 3, 5)");
    std::vector<float> expected;
    for (float v : x.to_vector()) expected.push_back(float(c.reference(v)));
    expect_close(y.to_vector(), expected, 1e-6, 1e-6, c.name);
  }
  // ... and every row of the op table on its own domain, against its own float64 reference.
  for (const kernels::UnaryOpInfo& row : kernels::kUnaryOps) {
    SCOPED_TRACE(row.name);
    const Tensor input = random_tensor({4, 3, 5}, 12, kCpu, row.low, row.high);
    const Tensor y = ops::unary(row.op, input);
    EXPECT_EQ(shape_str(y.shape()), "(4, 3, 5)");
    std::vector<float> expected;
    for (float v : input.to_vector()) expected.push_back(float(row.reference(v)));
    testing::expect_within_ulps(y.to_vector(), expected, row.ulps, row.atol, row.name);
  }
}

TEST(OpsCpuUnary, InputIsNotModifiedAndResultIsANewTensor) {
  const Tensor x = cpu_tensor({-1.0f, 2.0f}, {2});
  const Tensor y = ops::neg(x);
  EXPECT_FALSE(y.same(x));
  EXPECT_NE(y.data(), x.data());
  EXPECT_EQ(x.to_vector(), (std::vector<float>{-1.0f, 2.0f}));
}

TEST(OpsCpuUnary, EmptyTensorGivesEmptyResult) {
  const Tensor x = Tensor::empty({0, 3}, kCpu);
  for (const UnaryCase& c : unary_cases()) {
    const Tensor y = c.op(x);
    EXPECT_EQ(shape_str(y.shape()), "(0, 3)") << c.name;
  }
  for (const kernels::UnaryOpInfo& row : kernels::kUnaryOps) {
    EXPECT_EQ(shape_str(ops::unary(row.op, x).shape()), "(0, 3)") << row.name;
  }
}

TEST(OpsCpuUnary, ReluBackwardPassesGradientOnlyWhereInputIsPositive) {
  const Tensor x = cpu_tensor({-2.0f, 0.0f, 0.5f, 3.0f, -0.1f}, {5});
  const Tensor dy = cpu_tensor({10.0f, 20.0f, 30.0f, 40.0f, 50.0f}, {5});
  EXPECT_EQ(ops::relu_backward(x, dy).to_vector(),
            (std::vector<float>{0.0f, 0.0f, 30.0f, 40.0f, 0.0f}));
}

// ---------------------------------------------------------------------------------------------
// Binary with broadcast

enum class Op { kAdd, kSub, kMul, kDiv };

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

double apply(Op op, double p, double q) {
  switch (op) {
    case Op::kAdd:
      return p + q;
    case Op::kSub:
      return p - q;
    case Op::kMul:
      return p * q;
    case Op::kDiv:
      return p / q;
  }
  return 0;
}

// How b's element is found for a[r, c] of a viewed as (rows, cols).
enum class Form { kSame, kScalar, kRow, kColumn };

struct BroadcastCase {
  const char* name;
  Shape b_shape;
  Form form;
};

// a is (3, 4): rows != cols, so a row broadcast and a column broadcast cannot be confused.
const std::vector<BroadcastCase> kBroadcastCases = {
    {"same shape (3, 4)", {3, 4}, Form::kSame},
    {"one element (1,)", {1}, Form::kScalar},
    {"0-d scalar ()", {}, Form::kScalar},
    {"one element (1, 1)", {1, 1}, Form::kScalar},
    {"row (4,)", {4}, Form::kRow},
    {"row (1, 4)", {1, 4}, Form::kRow},
    {"column (3, 1)", {3, 1}, Form::kColumn},
};

std::vector<float> reference_binary(Op op, const std::vector<float>& a, const std::vector<float>& b,
                                    int64_t rows, int64_t cols, Form form) {
  std::vector<float> out(a.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = size_t(r * cols + c);
      float bv = 0;
      switch (form) {
        case Form::kSame:
          bv = b[i];
          break;
        case Form::kScalar:
          bv = b[0];
          break;
        case Form::kRow:
          bv = b[size_t(c)];
          break;
        case Form::kColumn:
          bv = b[size_t(r)];
          break;
      }
      out[i] = float(apply(op, a[i], bv));
    }
  }
  return out;
}

TEST(OpsCpuBinary, EveryOpAndBroadcastFormMatchesANaiveLoop) {
  const Tensor a = random_tensor({3, 4}, 21, kCpu, -2.0f, 2.0f);
  for (Op op : {Op::kAdd, Op::kSub, Op::kMul, Op::kDiv}) {
    for (const BroadcastCase& bc : kBroadcastCases) {
      SCOPED_TRACE(std::string(op_name(op)) + ", b " + bc.name);
      // Denominators in [0.5, 1.5]: away from zero.
      const Tensor b = random_tensor(bc.b_shape, 22, kCpu, 0.5f, 1.5f);
      const Tensor y = run_op(op, a, b);
      EXPECT_EQ(shape_str(y.shape()), "(3, 4)");
      expect_close(y.to_vector(), reference_binary(op, a.to_vector(), b.to_vector(), 3, 4, bc.form),
                   0, 1e-6, std::string(op_name(op)) + " " + bc.name);
    }
  }
}

TEST(OpsCpuBinary, HandComputedBroadcasts) {
  const Tensor a = cpu_tensor({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(ops::add(a, cpu_tensor({10, 20, 30}, {3})).to_vector(),
            (std::vector<float>{11, 22, 33, 14, 25, 36}));
  EXPECT_EQ(ops::sub(a, cpu_tensor({10, 20}, {2, 1})).to_vector(),
            (std::vector<float>{-9, -8, -7, -16, -15, -14}));
  EXPECT_EQ(ops::mul(a, cpu_tensor({2}, {1})).to_vector(),
            (std::vector<float>{2, 4, 6, 8, 10, 12}));
  EXPECT_EQ(ops::div(a, cpu_tensor({1, 2, 4}, {1, 3})).to_vector(),
            (std::vector<float>{1, 1, 0.75f, 4, 2.5f, 1.5f}));
  EXPECT_EQ(ops::div(a, a).to_vector(), std::vector<float>(6, 1.0f));
}

TEST(OpsCpuBinary, RowBroadcastOverAThreeDimensionalTensorUsesTheLastAxis) {
  const Tensor a = random_tensor({2, 3, 4}, 23, kCpu);
  const Tensor b = random_tensor({4}, 24, kCpu, 0.5f, 1.5f);
  for (Op op : {Op::kAdd, Op::kSub, Op::kMul, Op::kDiv}) {
    const Tensor y = run_op(op, a, b);
    EXPECT_EQ(shape_str(y.shape()), "(2, 3, 4)");
    expect_close(y.to_vector(),
                 reference_binary(op, a.to_vector(), b.to_vector(), 6, 4, Form::kRow), 0, 1e-6,
                 op_name(op));
  }
}

TEST(OpsCpuBinary, AddAndMulCommuteTheBroadcastOperand) {
  const Tensor matrix = random_tensor({3, 4}, 25, kCpu);
  for (Op op : {Op::kAdd, Op::kMul}) {
    for (const BroadcastCase& bc : kBroadcastCases) {
      if (bc.form == Form::kSame) continue;
      SCOPED_TRACE(std::string(op_name(op)) + ", small operand first: " + bc.name);
      const Tensor small = random_tensor(bc.b_shape, 26, kCpu);
      const Tensor y = run_op(op, small, matrix);  // e.g. scalar + tensor, bias + matrix
      EXPECT_EQ(shape_str(y.shape()), "(3, 4)");
      expect_close(y.to_vector(),
                   reference_binary(op, matrix.to_vector(), small.to_vector(), 3, 4, bc.form), 0,
                   1e-6, bc.name);
    }
  }
}

TEST(OpsCpuBinary, EmptyOperandsGiveAnEmptyResult) {
  const Tensor a = Tensor::empty({0, 4}, kCpu);
  EXPECT_EQ(shape_str(ops::add(a, a).shape()), "(0, 4)");
  EXPECT_EQ(shape_str(ops::mul(a, cpu_tensor({1, 2, 3, 4}, {4})).shape()), "(0, 4)");
}

TEST(OpsCpuBinary, BiasAddAddsTheBiasToEveryRow) {
  const Tensor x = cpu_tensor({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor bias = cpu_tensor({0.5f, -1, 100}, {3});
  const Tensor y = ops::bias_add(x, bias);
  EXPECT_EQ(shape_str(y.shape()), "(2, 3)");
  EXPECT_EQ(y.to_vector(), (std::vector<float>{1.5f, 1, 103, 4.5f, 4, 106}));
}

// ---------------------------------------------------------------------------------------------
// Reductions

TEST(OpsCpuReduce, WholeTensorReductionsOnHandValues) {
  const Tensor x = cpu_tensor({1, -2, 3, 4}, {2, 2});
  const Tensor s = ops::sum(x);
  EXPECT_EQ(s.ndim(), 0);
  EXPECT_EQ(s.item(), 6.0f);
  EXPECT_EQ(ops::mean(x).item(), 1.5f);
  EXPECT_EQ(ops::max(x).item(), 4.0f);
  EXPECT_EQ(ops::max(cpu_tensor({-5, -1, -3}, {3})).item(), -1.0f);
  EXPECT_EQ(ops::sum_squares(x).item(), 30.0f);
  EXPECT_FLOAT_EQ(ops::norm(x).item(), std::sqrt(30.0f));
  for (const Tensor& r : {ops::mean(x), ops::max(x), ops::sum_squares(x), ops::norm(x)}) {
    EXPECT_EQ(r.ndim(), 0);
  }
}

TEST(OpsCpuReduce, WholeTensorReductionsMatchADoubleLoop) {
  const Tensor x = random_tensor({37, 29}, 31, kCpu);
  const std::vector<float> v = x.to_vector();
  double sum = 0, squares = 0, max = -INFINITY;
  for (float f : v) {
    sum += f;
    squares += double(f) * f;
    max = std::max(max, double(f));
  }
  EXPECT_NEAR(ops::sum(x).item(), sum, 1e-5);
  EXPECT_NEAR(ops::mean(x).item(), sum / double(v.size()), 1e-7);
  EXPECT_EQ(ops::max(x).item(), float(max));
  EXPECT_NEAR(ops::sum_squares(x).item(), squares, 1e-6 * squares);
  EXPECT_NEAR(ops::norm(x).item(), std::sqrt(squares), 1e-6 * std::sqrt(squares));
}

TEST(OpsCpuReduce, EmptyTensorSumIsZeroMeanIsNanMaxIsRefused) {
  for (const Shape& shape : {Shape{0}, Shape{3, 0}}) {
    SCOPED_TRACE(shape_str(shape));
    const Tensor x = Tensor::empty(shape, kCpu);
    EXPECT_EQ(ops::sum(x).item(), 0.0f);
    EXPECT_TRUE(std::isnan(ops::mean(x).item()));
    // -inf, the kernels' identity, is the maximum of nothing: refused rather than returned.
    EXPECT_THROW(ops::max(x), Error);
    EXPECT_EQ(ops::sum_squares(x).item(), 0.0f);
    EXPECT_EQ(ops::norm(x).item(), 0.0f);
  }
}

TEST(OpsCpuReduce, ZeroDimensionalInputReducesToItsValue) {
  const Tensor x = Tensor::scalar(-3.0f, kCpu);
  EXPECT_EQ(ops::sum(x).item(), -3.0f);
  EXPECT_EQ(ops::mean(x).item(), -3.0f);
  EXPECT_EQ(ops::max(x).item(), -3.0f);
  EXPECT_EQ(ops::sum_squares(x).item(), 9.0f);
}

TEST(OpsCpuReduce, RowReductionsOnHandValues) {
  const Tensor x = cpu_tensor({1, 2, 3, 4, -5, 6}, {2, 3});
  EXPECT_EQ(ops::sum_rows(x).to_vector(), (std::vector<float>{6, 5}));
  EXPECT_EQ(shape_str(ops::sum_rows(x).shape()), "(2,)");
  EXPECT_EQ(ops::mean_rows(x).to_vector(), (std::vector<float>{2, 5.0f / 3.0f}));
  EXPECT_EQ(ops::max_rows(x).to_vector(), (std::vector<float>{3, 6}));
  EXPECT_EQ(ops::sum_squares_rows(x).to_vector(), (std::vector<float>{14, 77}));
}

TEST(OpsCpuReduce, RowReductionsUseTheLastAxisOfAnyRank) {
  const Tensor x = random_tensor({2, 3, 5}, 32, kCpu);
  const std::vector<float> v = x.to_vector();
  std::vector<float> sums, means, maxes, squares;
  for (int r = 0; r < 6; ++r) {
    double s = 0, q = 0, m = -INFINITY;
    for (int c = 0; c < 5; ++c) {
      const double f = v[size_t(r * 5 + c)];
      s += f;
      q += f * f;
      m = std::max(m, f);
    }
    sums.push_back(float(s));
    means.push_back(float(s / 5));
    maxes.push_back(float(m));
    squares.push_back(float(q));
  }
  EXPECT_EQ(shape_str(ops::sum_rows(x).shape()), "(2, 3)");
  expect_close(ops::sum_rows(x).to_vector(), sums, 1e-6, 1e-6, "sum_rows");
  expect_close(ops::mean_rows(x).to_vector(), means, 1e-6, 1e-6, "mean_rows");
  expect_close(ops::max_rows(x).to_vector(), maxes, 0, 0, "max_rows");
  expect_close(ops::sum_squares_rows(x).to_vector(), squares, 1e-6, 1e-6, "sum_squares_rows");
  // A 1-d tensor is one row, reduced to a 0-d result.
  const Tensor row = cpu_tensor({1, 5, 2}, {3});
  EXPECT_EQ(ops::sum_rows(row).ndim(), 0);
  EXPECT_EQ(ops::max_rows(row).item(), 5.0f);
}

TEST(OpsCpuReduce, RowReductionsOfEmptyRows) {
  const Tensor x = Tensor::empty({2, 0}, kCpu);
  EXPECT_EQ(ops::sum_rows(x).to_vector(), (std::vector<float>{0, 0}));
  EXPECT_EQ(ops::sum_squares_rows(x).to_vector(), (std::vector<float>{0, 0}));
  for (float v : ops::mean_rows(x).to_vector()) EXPECT_TRUE(std::isnan(v));
  EXPECT_THROW(ops::max_rows(x), Error);
  EXPECT_EQ(ops::sum_rows(Tensor::empty({0, 5}, kCpu)).numel(), 0);
}

TEST(OpsCpuReduce, SumColumnsMatchesHandValuesAndANaiveLoop) {
  EXPECT_EQ(ops::sum_columns(cpu_tensor({1, 2, 3, 4, 5, 6}, {2, 3})).to_vector(),
            (std::vector<float>{5, 7, 9}));
  const Tensor x = random_tensor({37, 5}, 33, kCpu);
  const std::vector<float> v = x.to_vector();
  std::vector<float> expected(5);
  for (int c = 0; c < 5; ++c) {
    double s = 0;
    for (int r = 0; r < 37; ++r) s += v[size_t(r * 5 + c)];
    expected[size_t(c)] = float(s);
  }
  const Tensor y = ops::sum_columns(x);
  EXPECT_EQ(shape_str(y.shape()), "(5,)");
  expect_close(y.to_vector(), expected, 1e-6, 1e-6, "sum_columns");
}

TEST(OpsCpuReduce, SumColumnsOfNoRowsIsZero) {
  PoisonGuard poison;  // the output must be written, not left as it was allocated
  EXPECT_EQ(ops::sum_columns(Tensor::empty({0, 3}, kCpu)).to_vector(),
            (std::vector<float>{0, 0, 0}));
}

TEST(OpsCpuReduce, ArgmaxRowsPicksTheFirstOfTiedMaxima) {
  const Tensor x = cpu_tensor({1, 3, 3, 2, 0, -1, 5, 5, 5, -4, -2, -2}, {4, 3});
  const Tensor idx = ops::argmax_rows(x);
  EXPECT_EQ(idx.dtype(), DType::kInt32);
  EXPECT_EQ(shape_str(idx.shape()), "(4,)");
  EXPECT_EQ(idx.to_int32_vector(), (std::vector<int32_t>{1, 0, 0, 1}));
}

TEST(OpsCpuReduce, ArgmaxRowsMatchesANaiveLoop) {
  const Tensor x = random_tensor({19, 23}, 34, kCpu);
  const std::vector<float> v = x.to_vector();
  std::vector<int32_t> expected;
  for (int r = 0; r < 19; ++r) {
    int best = 0;
    for (int c = 1; c < 23; ++c) {
      if (v[size_t(r * 23 + c)] > v[size_t(r * 23 + best)]) best = c;
    }
    expected.push_back(best);
  }
  EXPECT_EQ(ops::argmax_rows(x).to_int32_vector(), expected);
}

TEST(OpsCpuReduce, ArgmaxRowsOfNoRowsIsEmpty) {
  // The op accepts zero rows whatever the row length (argmax_rows checks cols > 0 || rows == 0).
  EXPECT_EQ(ops::argmax_rows(Tensor::empty({0, 3}, kCpu)).numel(), 0);
  Tensor result;
  EXPECT_NO_THROW(result = ops::argmax_rows(Tensor::empty({0, 0}, kCpu)));
  if (result.defined()) {
    EXPECT_EQ(shape_str(result.shape()), "(0,)");
  }
}

// ---------------------------------------------------------------------------------------------
// Softmax and loss

std::vector<float> reference_softmax(const std::vector<float>& x, int64_t rows, int64_t cols) {
  std::vector<float> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double max = -INFINITY, sum = 0;
    for (int64_t c = 0; c < cols; ++c) max = std::max(max, double(x[size_t(r * cols + c)]));
    for (int64_t c = 0; c < cols; ++c) sum += std::exp(x[size_t(r * cols + c)] - max);
    for (int64_t c = 0; c < cols; ++c) {
      y[size_t(r * cols + c)] = float(std::exp(x[size_t(r * cols + c)] - max) / sum);
    }
  }
  return y;
}

TEST(OpsCpuSoftmax, HandValuesAndRowsSumToOne) {
  const Tensor x = cpu_tensor({0, std::log(2.0f), std::log(3.0f), 1, 1, 1}, {2, 3});
  const Tensor y = ops::softmax(x);
  EXPECT_EQ(shape_str(y.shape()), "(2, 3)");
  expect_close(y.to_vector(), {1.0f / 6, 2.0f / 6, 3.0f / 6, 1.0f / 3, 1.0f / 3, 1.0f / 3}, 1e-7,
               1e-6, "softmax");
  const Tensor random = random_tensor({7, 11}, 41, kCpu, -5.0f, 5.0f);
  const Tensor sums = ops::sum_rows(ops::softmax(random));
  expect_close(sums.to_vector(), std::vector<float>(7, 1.0f), 1e-6, 0, "row sums");
  expect_close(ops::softmax(random).to_vector(), reference_softmax(random.to_vector(), 7, 11), 1e-7,
               1e-6, "reference");
}

TEST(OpsCpuSoftmax, HugeLogitsStayFinite) {
  const Tensor y = ops::softmax(cpu_tensor({1000, 1000, -1000, 0, 88, 89}, {3, 2}));
  expect_close(
      y.to_vector(),
      {0.5f, 0.5f, 0.0f, 1.0f, float(1 / (1 + std::exp(1.0))), float(1 / (1 + std::exp(-1.0)))},
      1e-7, 1e-6, "softmax of huge logits");
}

TEST(OpsCpuSoftmax, AlongTheLastAxisOfAThreeDimensionalTensor) {
  const Tensor x = random_tensor({2, 3, 4}, 42, kCpu, -3.0f, 3.0f);
  const Tensor y = ops::softmax(x);
  EXPECT_EQ(shape_str(y.shape()), "(2, 3, 4)");
  expect_close(y.to_vector(), reference_softmax(x.to_vector(), 6, 4), 1e-7, 1e-6, "3-d");
}

TEST(OpsCpuSoftmax, CrossEntropyMatchesHandValues) {
  const Tensor logits = cpu_tensor({0, 0, 0, 1, 2, 3, 1000, 0, 0}, {3, 3});
  const Tensor labels = Tensor::from_int32({1, 2, 1}, {3}, kCpu);
  const Tensor loss = ops::softmax_cross_entropy(logits, labels);
  EXPECT_EQ(shape_str(loss.shape()), "(3,)");
  // ln 3; log(e + e^2 + e^3) - 3 = log(1 + e^-1 + e^-2); 1000 - 0 + log(1 + 2 e^-1000) = 1000.
  expect_close(
      loss.to_vector(),
      {float(std::log(3.0)), float(std::log(1 + std::exp(-1.0) + std::exp(-2.0))), 1000.0f}, 1e-6,
      1e-6, "softmax_cross_entropy");
}

TEST(OpsCpuSoftmax, CrossEntropyMatchesANaiveLoop) {
  const Tensor logits = random_tensor({9, 6}, 43, kCpu, -4.0f, 4.0f);
  std::vector<int32_t> labels;
  for (int r = 0; r < 9; ++r) labels.push_back((r * 5 + 2) % 6);
  const std::vector<float> v = logits.to_vector();
  std::vector<float> expected;
  for (int r = 0; r < 9; ++r) {
    double sum = 0;
    for (int c = 0; c < 6; ++c) sum += std::exp(double(v[size_t(r * 6 + c)]));
    expected.push_back(float(std::log(sum) - v[size_t(r * 6 + labels[size_t(r)])]));
  }
  expect_close(
      ops::softmax_cross_entropy(logits, Tensor::from_int32(labels, {9}, kCpu)).to_vector(),
      expected, 1e-6, 1e-6, "softmax_cross_entropy");
}

// ---------------------------------------------------------------------------------------------
// Matrix products

// C (m, n) = op(A) op(B), with A stored (m, k) or (k, m) and B stored (k, n) or (n, k).
std::vector<float> naive_matmul(const std::vector<float>& a, const std::vector<float>& b, int64_t m,
                                int64_t n, int64_t k, bool ta, bool tb) {
  std::vector<float> c(size_t(m * n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) {
        const double av = ta ? a[size_t(p * m + i)] : a[size_t(i * k + p)];
        const double bv = tb ? b[size_t(j * k + p)] : b[size_t(p * n + j)];
        s += av * bv;
      }
      c[size_t(i * n + j)] = float(s);
    }
  }
  return c;
}

TEST(OpsCpuMatmul, AllFourTransposeCombinationsMatchANaiveLoop) {
  const int64_t m = 3, n = 5, k = 7;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      SCOPED_TRACE(std::string("transpose_a=") + (ta ? "yes" : "no") +
                   " transpose_b=" + (tb ? "yes" : "no"));
      const Tensor a = random_tensor(ta ? Shape{k, m} : Shape{m, k}, 51, kCpu);
      const Tensor b = random_tensor(tb ? Shape{n, k} : Shape{k, n}, 52, kCpu);
      const Tensor c = ops::matmul(a, b, ta ? Transpose::kYes : Transpose::kNo,
                                   tb ? Transpose::kYes : Transpose::kNo);
      EXPECT_EQ(shape_str(c.shape()), "(3, 5)");
      expect_close(c.to_vector(), naive_matmul(a.to_vector(), b.to_vector(), m, n, k, ta, tb), 1e-6,
                   1e-5, "matmul");
    }
  }
}

TEST(OpsCpuMatmul, HandComputedProduct) {
  const Tensor a = cpu_tensor({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor b = cpu_tensor({7, 8, 9, 10, 11, 12}, {3, 2});
  EXPECT_EQ(ops::matmul(a, b).to_vector(), (std::vector<float>{58, 64, 139, 154}));
}

TEST(OpsCpuMatmul, EmptyInnerDimensionGivesZeros) {
  PoisonGuard poison;  // the zeros must be written, not inherited from the allocation
  const Tensor a = Tensor::empty({3, 0}, kCpu);
  const Tensor b = Tensor::empty({0, 5}, kCpu);
  const Tensor c = ops::matmul(a, b);
  EXPECT_EQ(shape_str(c.shape()), "(3, 5)");
  EXPECT_EQ(c.to_vector(), std::vector<float>(15, 0.0f));
  EXPECT_EQ(ops::matmul(Tensor::empty({0, 3}, kCpu), Tensor::empty({0, 5}, kCpu), Transpose::kYes)
                .to_vector(),
            std::vector<float>(15, 0.0f));
  EXPECT_EQ(
      shape_str(ops::matmul(Tensor::empty({0, 7}, kCpu), random_tensor({7, 5}, 53, kCpu)).shape()),
      "(0, 5)");
}

TEST(OpsCpuMatmul, LinearWithAndWithoutBias) {
  const Tensor x = random_tensor({4, 3}, 54, kCpu);
  const Tensor w = random_tensor({2, 3}, 55, kCpu);
  const Tensor bias = cpu_tensor({0.5f, -2.0f}, {2});
  const std::vector<float> xw = naive_matmul(x.to_vector(), w.to_vector(), 4, 2, 3, false, true);
  const Tensor no_bias = ops::linear(x, w, Tensor());
  EXPECT_EQ(shape_str(no_bias.shape()), "(4, 2)");
  expect_close(no_bias.to_vector(), xw, 1e-6, 1e-5, "linear without bias");
  std::vector<float> expected = xw;
  for (size_t i = 0; i < expected.size(); ++i) expected[i] += i % 2 == 0 ? 0.5f : -2.0f;
  expect_close(ops::linear(x, w, bias).to_vector(), expected, 1e-6, 1e-5, "linear with bias");
}

// ---------------------------------------------------------------------------------------------
// Shape

TEST(OpsCpuShape, ReshapeSharesDataAndInfersMinusOne) {
  const Tensor x = cpu_tensor({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {2, 6});
  const Tensor y = ops::reshape(x, {3, -1});
  EXPECT_EQ(shape_str(y.shape()), "(3, 4)");
  EXPECT_EQ(y.raw_data(), x.raw_data());
  EXPECT_EQ(y.to_vector(), x.to_vector());
  EXPECT_EQ(shape_str(ops::reshape(x, {-1}).shape()), "(12,)");
  EXPECT_EQ(shape_str(x.reshape({2, -1, 3}).shape()), "(2, 2, 3)");
  EXPECT_EQ(shape_str(ops::reshape(cpu_tensor({5}, {1}), {}).shape()), "()");
  EXPECT_EQ(shape_str(ops::reshape(Tensor::empty({0, 4}, kCpu), {4, 0}).shape()), "(4, 0)");
  x.data()[3] = 42;  // a view, not a copy
  EXPECT_EQ(y.to_vector()[3], 42.0f);
}

// ---------------------------------------------------------------------------------------------
// Tensor creation and transfers

TEST(OpsCpuTensor, UniformAndNormalAreReproducibleFromTheSeed) {
  const Tensor u1 = Tensor::uniform({1001}, -2.0f, 3.0f, 7, kCpu);
  const Tensor u2 = Tensor::uniform({1001}, -2.0f, 3.0f, 7, kCpu);
  const Tensor u3 = Tensor::uniform({1001}, -2.0f, 3.0f, 8, kCpu);
  EXPECT_EQ(u1.to_vector(), u2.to_vector());
  EXPECT_NE(u1.to_vector(), u3.to_vector());
  double mean = 0;
  for (float v : u1.to_vector()) {
    EXPECT_GE(v, -2.0f);
    EXPECT_LT(v, 3.0f);
    mean += v / 1001.0;
  }
  EXPECT_NEAR(mean, 0.5, 0.15);  // sd of the mean: 5 / sqrt(12 * 1001) = 0.046

  const Tensor n1 = Tensor::normal({10001}, 1.0f, 2.0f, 7, kCpu);
  EXPECT_EQ(n1.to_vector(), Tensor::normal({10001}, 1.0f, 2.0f, 7, kCpu).to_vector());
  EXPECT_NE(n1.to_vector(), Tensor::normal({10001}, 1.0f, 2.0f, 9, kCpu).to_vector());
  double sum = 0, squares = 0;
  for (float v : n1.to_vector()) {
    EXPECT_TRUE(std::isfinite(v));
    sum += v;
    squares += double(v) * v;
  }
  const double m = sum / 10001, var = squares / 10001 - m * m;
  EXPECT_NEAR(m, 1.0, 0.08);               // sd of the mean: 0.02
  EXPECT_NEAR(std::sqrt(var), 2.0, 0.08);  // sd of the sd: about 0.014
}

TEST(OpsCpuTensor, TransfersOnTheCpu) {
  const Tensor x = cpu_tensor({1, 2, 3}, {3});
  EXPECT_TRUE(x.to(kCpu).same(x));  // already there: the same tensor
  EXPECT_TRUE(x.to_host().same(x));
  const Tensor copy = x.clone();
  EXPECT_FALSE(copy.same(x));
  EXPECT_NE(copy.raw_data(), x.raw_data());
  EXPECT_EQ(copy.to_vector(), x.to_vector());
  Tensor target = Tensor::zeros({3}, kCpu);
  target.copy_from(cpu_tensor({7, 8, 9}, {3}));
  EXPECT_EQ(target.to_vector(), (std::vector<float>{7, 8, 9}));
  target.copy_from(x);
  EXPECT_EQ(target.to_vector(), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(copy.to_vector(), (std::vector<float>{1, 2, 3}));  // clone is independent
  EXPECT_EQ(Tensor::scalar(2.5f, kCpu).item(), 2.5f);
  EXPECT_EQ(cpu_tensor({-4}, {1, 1}).item(), -4.0f);
  const Tensor ints = Tensor::from_int32({3, -1, 2147483647}, {3}, kCpu);
  EXPECT_EQ(ints.dtype(), DType::kInt32);
  EXPECT_EQ(ints.to_int32_vector(), (std::vector<int32_t>{3, -1, 2147483647}));
  EXPECT_EQ(ints.clone().to_int32_vector(), ints.to_int32_vector());
  EXPECT_EQ(Tensor::full({2}, 3.5f, kCpu).to_vector(), (std::vector<float>{3.5f, 3.5f}));
}

// ---------------------------------------------------------------------------------------------
// Operators

TEST(OpsCpuOperators, ArithmeticWithTensorsAndFloats) {
  const Tensor a = cpu_tensor({1, 2, 4}, {3});
  const Tensor b = cpu_tensor({4, 8, 16}, {3});
  EXPECT_EQ((a + b).to_vector(), (std::vector<float>{5, 10, 20}));
  EXPECT_EQ((a - b).to_vector(), (std::vector<float>{-3, -6, -12}));
  EXPECT_EQ((a * b).to_vector(), (std::vector<float>{4, 16, 64}));
  EXPECT_EQ((b / a).to_vector(), (std::vector<float>{4, 4, 4}));
  EXPECT_EQ((-a).to_vector(), (std::vector<float>{-1, -2, -4}));
  EXPECT_EQ((a + 1.0f).to_vector(), (std::vector<float>{2, 3, 5}));
  EXPECT_EQ((1.0f + a).to_vector(), (std::vector<float>{2, 3, 5}));
  EXPECT_EQ((a - 1.0f).to_vector(), (std::vector<float>{0, 1, 3}));
  EXPECT_EQ((1.0f - a).to_vector(), (std::vector<float>{0, -1, -3}));
  EXPECT_EQ((a * 3.0f).to_vector(), (std::vector<float>{3, 6, 12}));
  EXPECT_EQ((3.0f * a).to_vector(), (std::vector<float>{3, 6, 12}));
  EXPECT_EQ((a / 2.0f).to_vector(), (std::vector<float>{0.5f, 1, 2}));
}

TEST(OpsCpuOperators, CompoundAssignmentRebindsAndLeavesTheOldTensorAlone) {
  const Tensor original = cpu_tensor({2, 4, 8}, {3});
  Tensor x = original;
  x /= 2.0f;
  EXPECT_FALSE(x.same(original));
  EXPECT_EQ(x.to_vector(), (std::vector<float>{1, 2, 4}));
  EXPECT_EQ(original.to_vector(), (std::vector<float>{2, 4, 8}));
  x += original;  // {3, 6, 12}
  x -= 1.0f;      // {2, 5, 11}
  x *= 2.0f;      // {4, 10, 22}
  x += 1.0f;      // {5, 11, 23}
  EXPECT_EQ(x.to_vector(), (std::vector<float>{5, 11, 23}));
  x -= cpu_tensor({1}, {1});           // {4, 10, 22}
  x *= cpu_tensor({2, 1, 0.5f}, {3});  // {8, 10, 11}
  x /= cpu_tensor({4}, {});            // {2, 2.5, 2.75}
  EXPECT_EQ(x.to_vector(), (std::vector<float>{2, 2.5f, 2.75f}));
  EXPECT_EQ(original.to_vector(), (std::vector<float>{2, 4, 8}));
}

}  // namespace
}  // namespace cairn
