// CPU kernels against known values and naive references: the oracle the GPU is later held to.
#include <cublas_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <vector>

#include "cairn/base/error.h"
#include "cairn/kernels/cpu/parallel.h"
#include "cairn/kernels/cpu/small_gemm.h"
#include "cairn/kernels/elementwise.h"
#include "cairn/kernels/gemm.h"
#include "cairn/kernels/loss.h"
#include "cairn/kernels/lt_plan.h"
#include "cairn/kernels/optimizer.h"
#include "cairn/kernels/philox.h"
#include "cairn/kernels/random.h"
#include "cairn/kernels/reduce.h"
#include "cairn/kernels/softmax.h"
#include "support/test_support.h"

namespace cairn::kernels {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Deterministic values in [-1, 1) that do not depend on the kernels under test.
std::vector<float> test_values(int64_t n, uint32_t salt) {
  std::vector<float> values(static_cast<size_t>(n));
  uint32_t state = 2463534242u ^ (salt * 0x9E3779B9u);
  for (auto& v : values) {
    state ^= state << 13;  // xorshift32
    state ^= state >> 17;
    state ^= state << 5;
    v = static_cast<float>(state >> 8) / 8388608.0f - 1.0f;
  }
  return values;
}

// ---------------------------------------------------------------------------------------------
// Elementwise

struct UnaryCase {
  UnaryOp op;
  const char* name;
  float scalar;
  std::vector<float> x;
  std::vector<float> expected;  // NaN means "expect NaN"
};

TEST(CpuUnary, EveryOpOnHandPickedValues) {
  const float e = 2.718281828459045f;
  const std::vector<UnaryCase> cases = {
      {UnaryOp::kRelu,
       "relu",
       99.0f,
       {-2.0f, -0.0f, 0.0f, 1.5f, kNaN},
       {0.0f, 0.0f, 0.0f, 1.5f, kNaN}},
      {UnaryOp::kNeg, "neg", 99.0f, {1.5f, -2.0f, 0.0f}, {-1.5f, 2.0f, 0.0f}},
      {UnaryOp::kExp,
       "exp",
       99.0f,
       {0.0f, 1.0f, -1.0f, 2.0f, -200.0f},
       {1.0f, 2.718281828f, 0.3678794412f, 7.389056099f, 0.0f}},
      {UnaryOp::kLog,
       "log",
       99.0f,
       {1.0f, e, 0.5f, 0.0f, -1.0f},
       {0.0f, 1.0f, -0.6931471806f, -kInf, kNaN}},
      {UnaryOp::kSqrt, "sqrt", 99.0f, {0.0f, 4.0f, 2.0f, -1.0f}, {0.0f, 2.0f, 1.414213562f, kNaN}},
      {UnaryOp::kAbs, "abs", 99.0f, {-3.0f, 0.0f, 2.5f, -kInf}, {3.0f, 0.0f, 2.5f, kInf}},
      {UnaryOp::kSign,
       "sign",
       99.0f,
       {-3.0f, 0.0f, 2.5f, -0.0f, 1e-30f, kNaN},
       {-1.0f, 0.0f, 1.0f, 0.0f, 1.0f, kNaN}},
      {UnaryOp::kSquare, "square", 99.0f, {-3.0f, 0.5f, 0.0f}, {9.0f, 0.25f, 0.0f}},
      {UnaryOp::kSigmoid,
       "sigmoid",
       99.0f,
       {0.0f, 2.0f, -2.0f, 100.0f, -100.0f, 1000.0f, -1000.0f},
       {0.5f, 0.8807970780f, 0.1192029220f, 1.0f, 3.720076e-44f, 1.0f, 0.0f}},
      {UnaryOp::kTanh,
       "tanh",
       99.0f,
       {0.0f, 1.0f, -1.0f, 20.0f},
       {0.0f, 0.7615941560f, -0.7615941560f, 1.0f}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    ASSERT_EQ(c.x.size(), c.expected.size());
    std::vector<float> y(c.x.size(), -12345.0f);
    cpu::unary(c.op, c.x.data(), y.data(), static_cast<int64_t>(c.x.size()));
    for (size_t i = 0; i < y.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << "x = " << c.x[i]);
      if (std::isnan(c.expected[i])) {
        EXPECT_TRUE(std::isnan(y[i])) << y[i];
      } else if (std::isinf(c.expected[i])) {
        EXPECT_EQ(y[i], c.expected[i]);
      } else {
        EXPECT_NEAR(y[i], c.expected[i], 1e-6f * (1.0f + std::fabs(c.expected[i])));
      }
    }
  }
}

TEST(CpuUnary, SigmoidStaysFiniteAndInRangeAtExtremes) {
  const std::vector<float> x = {-100.0f, 100.0f, -88.0f, 88.0f, -1e30f, 1e30f};
  std::vector<float> y(x.size());
  cpu::unary(UnaryOp::kSigmoid, x.data(), y.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < y.size(); ++i) {
    EXPECT_TRUE(std::isfinite(y[i])) << "sigmoid(" << x[i] << ") = " << y[i];
    EXPECT_GE(y[i], 0.0f);
    EXPECT_LE(y[i], 1.0f);
  }
  EXPECT_EQ(y[1], 1.0f);
  EXPECT_GT(y[0], 0.0f);  // exp(-100) is a float denormal, not flushed by the stable branch
  EXPECT_LT(y[0], 1e-40f);
}

TEST(CpuUnary, EmptyInputWritesNothing) {
  float y = 7.0f;
  cpu::unary(UnaryOp::kExp, nullptr, &y, 0);
  EXPECT_EQ(y, 7.0f);
}

// Every row of the op table against its float64 reference: on random inputs from its domain
// within its documented ulps, and on the special values bit for bit where the reference is exact
// (NaN where the reference is NaN, an input NaN's own bits kept).
TEST(CpuUnary, EveryRowMatchesItsFloat64Reference) {
  const std::vector<float> specials = testing::special_values();
  for (const UnaryOpInfo& row : kUnaryOps) {
    SCOPED_TRACE(row.name);
    std::vector<float> x = test_values(4096, 7);
    for (float& v : x) v = row.low + (v + 1.0f) * 0.5f * (row.high - row.low);
    x.insert(x.end(), specials.begin(), specials.end());
    std::vector<float> y(x.size()), expected(x.size());
    cpu::unary(row.op, x.data(), y.data(), static_cast<int64_t>(x.size()));
    for (size_t i = 0; i < x.size(); ++i) {
      const double r = row.reference(double(x[i]));
      // NaN's bits are checked below; here only that it is NaN.
      expected[i] = std::isnan(r) ? (std::isnan(y[i]) ? y[i] : kNaN) : static_cast<float>(r);
    }
    testing::expect_within_ulps(y, expected, row.ulps, row.atol, row.name, x);
    for (size_t i = 0; i < x.size(); ++i) {
      if (std::isnan(x[i])) {
        const uint32_t in = testing::float_bits(x[i]), out = testing::float_bits(y[i]);
        // neg and abs are sign-bit operations; every other row keeps a NaN's bits.
        const uint32_t want = row.op == UnaryOp::kNeg   ? in ^ 0x80000000u
                              : row.op == UnaryOp::kAbs ? in & 0x7fffffffu
                                                        : in;
        EXPECT_EQ(out, want) << row.name << " of NaN 0x" << std::hex << in;
      } else if (std::isnan(y[i])) {
        EXPECT_EQ(testing::float_bits(y[i]), 0x7fc00000u) << row.name << "(" << x[i] << ")";
      }
    }
  }
}

// Every row's backward against a central difference of its float64 reference, at points of its
// domain away from its kink; and bit-exact rows' backward on the special values are NaN only
// where an operand is.
TEST(CpuUnary, EveryRowsBackwardMatchesTheReferencesSlope) {
  for (const UnaryOpInfo& row : kUnaryOps) {
    SCOPED_TRACE(row.name);
    std::vector<float> x = test_values(512, 8);
    for (float& v : x) {
      v = row.low + (v + 1.0f) * 0.5f * (row.high - row.low);
      if (!std::isnan(row.kink) && std::fabs(v - row.kink) < 1e-2f) v = row.kink + 0.5f;
    }
    const std::vector<float> dy = test_values(512, 9);
    const int64_t n = static_cast<int64_t>(x.size());
    std::vector<float> y(x.size()), dx(x.size());
    cpu::unary(row.op, x.data(), y.data(), n);
    cpu::unary_backward(row.op, x.data(), y.data(), dy.data(), dx.data(), n);
    for (size_t i = 0; i < x.size(); ++i) {
      const double h = 1e-5 * std::max(1.0, std::fabs(double(x[i])));
      const double slope =
          (row.reference(double(x[i]) + h) - row.reference(double(x[i]) - h)) / (2 * h);
      const double want = double(dy[i]) * slope;
      EXPECT_NEAR(dx[i], want, 2e-5 * (1.0 + std::fabs(want)))
          << row.name << "'(" << x[i] << ") * " << dy[i];
    }
  }
}

// The by-value scalar of the binary ops (x + s, s - x): the same rows as binary().
TEST(CpuBinaryScalar, BothSidesOfEveryRowMatchTheBroadcastOfAOneElementB) {
  const std::vector<float> specials = testing::special_values();
  const std::vector<float> a = test_values(1000, 10);
  for (const BinaryOpInfo& row : kBinaryOps) {
    for (float s : {2.5f, -0.0f, specials[6], specials[2]}) {
      SCOPED_TRACE(std::string(row.name) + " s=" + std::to_string(s));
      const int64_t n = static_cast<int64_t>(a.size());
      std::vector<float> right(a.size()), left(a.size()), broadcast(a.size());
      cpu::binary_scalar(row.op, a.data(), s, ScalarSide::kRight, right.data(), n);
      cpu::binary(row.op, a.data(), &s, broadcast.data(), 1, n, Broadcast::kScalar);
      testing::expect_within_ulps(right, broadcast, 0, 0, "a op s");
      cpu::binary_scalar(row.op, a.data(), s, ScalarSide::kLeft, left.data(), n);
      std::vector<float> ss(a.size(), s);
      cpu::binary(row.op, ss.data(), a.data(), broadcast.data(), 1, n, Broadcast::kNone);
      testing::expect_within_ulps(left, broadcast, 0, 0, "s op a");
    }
  }
  const std::vector<float> x = {1.0f, -1.0f};
  std::vector<float> y(2);
  cpu::binary_scalar(BinaryOp::kSub, x.data(), 1.0f, ScalarSide::kLeft, y.data(), 2);
  EXPECT_EQ(y, (std::vector<float>{0.0f, 2.0f}));
}

// Exact binary rows against float64 (a correctly rounded double result rounds to the float one).
TEST(CpuBinary, EveryRowIsTheCorrectlyRoundedResultAndFollowsTheNanRules) {
  const std::vector<float> specials = testing::special_values();
  for (const BinaryOpInfo& row : kBinaryOps) {
    SCOPED_TRACE(row.name);
    for (float p : specials) {
      std::vector<float> a(specials.size(), p), y(specials.size());
      cpu::binary(row.op, a.data(), specials.data(), y.data(), 1, int64_t(a.size()),
                  Broadcast::kNone);
      for (size_t i = 0; i < y.size(); ++i) {
        const float q = specials[i];
        const uint32_t got = testing::float_bits(y[i]);
        if (std::isnan(p)) {
          EXPECT_EQ(got, testing::float_bits(p)) << p << " " << row.name << " " << q;
        } else if (std::isnan(q)) {
          EXPECT_EQ(got, testing::float_bits(q)) << p << " " << row.name << " " << q;
        } else {
          const double r = row.reference(double(p), double(q));
          const float want = std::isnan(r) ? kNaN : static_cast<float>(r);
          EXPECT_EQ(got, testing::float_bits(want)) << p << " " << row.name << " " << q;
        }
      }
    }
  }
}

TEST(CpuFill, FillsFloatAndInt32) {
  std::vector<float> y(5, kNaN);
  cpu::fill(y.data(), 5, -1.25f);
  for (float v : y) EXPECT_EQ(v, -1.25f);
  std::vector<int32_t> z(3, 0);
  cpu::fill_int32(z.data(), 3, -7);
  for (int32_t v : z) EXPECT_EQ(v, -7);
}

float naive_binary(BinaryOp op, float p, float q) {
  switch (op) {
    case BinaryOp::kAdd:
      return p + q;
    case BinaryOp::kSub:
      return p - q;
    case BinaryOp::kMul:
      return p * q;
    case BinaryOp::kDiv:
      return p / q;
  }
  return kNaN;
}

TEST(CpuBinary, EveryOpAndBroadcastMatchesNaiveLoop) {
  const int64_t rows = 3, cols = 5;
  const std::vector<float> a = test_values(rows * cols, 1);
  const std::vector<BinaryOp> ops = {BinaryOp::kAdd, BinaryOp::kSub, BinaryOp::kMul,
                                     BinaryOp::kDiv};
  const std::vector<Broadcast> broadcasts = {Broadcast::kNone, Broadcast::kScalar, Broadcast::kRow,
                                             Broadcast::kColumn};
  for (BinaryOp op : ops) {
    for (Broadcast broadcast : broadcasts) {
      SCOPED_TRACE(::testing::Message() << "op " << static_cast<int>(op) << " broadcast "
                                        << static_cast<int>(broadcast));
      const int64_t b_size = broadcast == Broadcast::kNone     ? rows * cols
                             : broadcast == Broadcast::kScalar ? 1
                             : broadcast == Broadcast::kRow    ? cols
                                                               : rows;
      // Shifted away from zero so that division is well conditioned.
      std::vector<float> b = test_values(b_size, 2);
      for (auto& v : b) v = v >= 0.0f ? v + 0.5f : v - 0.5f;
      std::vector<float> y(static_cast<size_t>(rows * cols), kNaN);
      cpu::binary(op, a.data(), b.data(), y.data(), rows, cols, broadcast);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          float bv = 0.0f;
          if (broadcast == Broadcast::kNone) bv = b[r * cols + c];
          if (broadcast == Broadcast::kScalar) bv = b[0];
          if (broadcast == Broadcast::kRow) bv = b[c];
          if (broadcast == Broadcast::kColumn) bv = b[r];
          EXPECT_EQ(y[r * cols + c], naive_binary(op, a[r * cols + c], bv))
              << "at (" << r << ", " << c << ")";
        }
      }
    }
  }
}

TEST(CpuBinary, OutputMayAliasA) {
  std::vector<float> a = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};  // (2, 3)
  const std::vector<float> bias = {10.0f, 20.0f, 30.0f};
  cpu::binary(BinaryOp::kAdd, a.data(), bias.data(), a.data(), 2, 3, Broadcast::kRow);
  EXPECT_EQ(a, (std::vector<float>{11.0f, 22.0f, 33.0f, 14.0f, 25.0f, 36.0f}));
  const std::vector<float> scale = {2.0f, -1.0f};
  cpu::binary(BinaryOp::kMul, a.data(), scale.data(), a.data(), 2, 3, Broadcast::kColumn);
  EXPECT_EQ(a, (std::vector<float>{22.0f, 44.0f, 66.0f, -14.0f, -25.0f, -36.0f}));
}

TEST(CpuReluBackward, PassesGradientOnlyWhereInputIsPositive) {
  const std::vector<float> x = {-1.0f, 0.0f, 2.0f, -0.0f, 1e-30f, kNaN};
  const std::vector<float> dy = {5.0f, 6.0f, 7.0f, 8.0f, 9.0f, 10.0f};
  std::vector<float> dx(x.size(), kNaN);
  cpu::unary_backward(UnaryOp::kRelu, x.data(), nullptr, dy.data(), dx.data(),
                      static_cast<int64_t>(x.size()));
  EXPECT_EQ(dx, (std::vector<float>{0.0f, 0.0f, 7.0f, 0.0f, 9.0f, 0.0f}));
}

// ---------------------------------------------------------------------------------------------
// Reductions

TEST(CpuReduceAll, EveryOpOnKnownValues) {
  const std::vector<float> x = {1.0f, -2.0f, 3.5f, 4.0f};
  float out = kNaN;
  cpu::reduce_all(ReduceOp::kSum, x.data(), 4, &out);
  EXPECT_FLOAT_EQ(out, 6.5f);
  cpu::reduce_all(ReduceOp::kMean, x.data(), 4, &out);
  EXPECT_FLOAT_EQ(out, 1.625f);
  cpu::reduce_all(ReduceOp::kMax, x.data(), 4, &out);
  EXPECT_FLOAT_EQ(out, 4.0f);
  cpu::reduce_all(ReduceOp::kSumSquares, x.data(), 4, &out);
  EXPECT_FLOAT_EQ(out, 33.25f);
}

TEST(CpuReduceAll, MaxOfAllNegativeValues) {
  const std::vector<float> x = {-5.0f, -3.0f, -7.0f};
  float out = kNaN;
  cpu::reduce_all(ReduceOp::kMax, x.data(), 3, &out);
  EXPECT_EQ(out, -3.0f);
}

TEST(CpuReduceAll, EmptyInput) {
  float out = 123.0f;
  cpu::reduce_all(ReduceOp::kSum, nullptr, 0, &out);
  EXPECT_EQ(out, 0.0f);
  cpu::reduce_all(ReduceOp::kMean, nullptr, 0, &out);
  EXPECT_TRUE(std::isnan(out));
  cpu::reduce_all(ReduceOp::kMax, nullptr, 0, &out);
  EXPECT_EQ(out, -kInf);
  cpu::reduce_all(ReduceOp::kSumSquares, nullptr, 0, &out);
  EXPECT_EQ(out, 0.0f);
}

TEST(CpuReduceAll, MaxPropagatesNaN) {
  const std::vector<float> x = {1.0f, kNaN, 3.0f};
  float out = 0.0f;
  cpu::reduce_all(ReduceOp::kMax, x.data(), 3, &out);
  EXPECT_TRUE(std::isnan(out));
}

TEST(CpuReduceAll, SumAccumulatesInDouble) {
  // In float, 1e8 + 1 rounds back to 1e8 (the spacing there is 8), so a float sum gives 0.
  const std::vector<float> x = {1e8f, 1.0f, -1e8f};
  float out = kNaN;
  cpu::reduce_all(ReduceOp::kSum, x.data(), 3, &out);
  EXPECT_EQ(out, 1.0f);
}

TEST(CpuReduceRows, EveryOpPerRow) {
  const std::vector<float> x = {1.0f,  2.0f,  3.0f,    // row 0
                                -4.0f, -1.0f, -9.0f,   // row 1
                                0.5f,  0.0f,  -0.5f};  // row 2
  std::vector<float> out(3, kNaN);
  cpu::reduce_rows(ReduceOp::kSum, x.data(), 3, 3, out.data());
  EXPECT_EQ(out, (std::vector<float>{6.0f, -14.0f, 0.0f}));
  cpu::reduce_rows(ReduceOp::kMean, x.data(), 3, 3, out.data());
  EXPECT_FLOAT_EQ(out[0], 2.0f);
  EXPECT_FLOAT_EQ(out[1], -14.0f / 3.0f);
  EXPECT_FLOAT_EQ(out[2], 0.0f);
  cpu::reduce_rows(ReduceOp::kMax, x.data(), 3, 3, out.data());
  EXPECT_EQ(out, (std::vector<float>{3.0f, -1.0f, 0.5f}));
  cpu::reduce_rows(ReduceOp::kSumSquares, x.data(), 3, 3, out.data());
  EXPECT_EQ(out, (std::vector<float>{14.0f, 98.0f, 0.5f}));
}

TEST(CpuReduceRows, EmptyRows) {
  std::vector<float> out(2, 123.0f);
  cpu::reduce_rows(ReduceOp::kSum, nullptr, 2, 0, out.data());
  EXPECT_EQ(out, (std::vector<float>{0.0f, 0.0f}));
  cpu::reduce_rows(ReduceOp::kMean, nullptr, 2, 0, out.data());
  EXPECT_TRUE(std::isnan(out[0]) && std::isnan(out[1]));
  cpu::reduce_rows(ReduceOp::kMax, nullptr, 2, 0, out.data());
  EXPECT_EQ(out, (std::vector<float>{-kInf, -kInf}));
  cpu::reduce_rows(ReduceOp::kSumSquares, nullptr, 2, 0, out.data());
  EXPECT_EQ(out, (std::vector<float>{0.0f, 0.0f}));
  // No rows: nothing is written.
  float untouched = 5.0f;
  cpu::reduce_rows(ReduceOp::kSum, nullptr, 0, 3, &untouched);
  EXPECT_EQ(untouched, 5.0f);
}

TEST(CpuReduceRows, MatchesNaiveDoubleSumOnLargerInput) {
  const int64_t rows = 7, cols = 1001;
  const std::vector<float> x = test_values(rows * cols, 3);
  std::vector<float> out(rows, kNaN);
  cpu::reduce_rows(ReduceOp::kSum, x.data(), rows, cols, out.data());
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0.0;
    for (int64_t c = 0; c < cols; ++c) sum += x[r * cols + c];
    EXPECT_NEAR(out[r], sum, 1e-6 * (1.0 + std::fabs(sum)));
  }
}

TEST(CpuSumColumns, OverwriteAndAdd) {
  const std::vector<float> x = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};  // (3, 2)
  std::vector<float> out = {kNaN, kNaN};
  cpu::sum_columns(x.data(), 3, 2, out.data(), Accumulate::kOverwrite);
  EXPECT_EQ(out, (std::vector<float>{9.0f, 12.0f}));
  out = {10.0f, -20.0f};
  cpu::sum_columns(x.data(), 3, 2, out.data(), Accumulate::kAdd);
  EXPECT_EQ(out, (std::vector<float>{19.0f, -8.0f}));
}

TEST(CpuSumColumns, NoRows) {
  std::vector<float> out = {kNaN, kNaN};
  cpu::sum_columns(nullptr, 0, 2, out.data(), Accumulate::kOverwrite);
  EXPECT_EQ(out, (std::vector<float>{0.0f, 0.0f}));
  out = {3.0f, 4.0f};
  cpu::sum_columns(nullptr, 0, 2, out.data(), Accumulate::kAdd);
  EXPECT_EQ(out, (std::vector<float>{3.0f, 4.0f}));
}

TEST(CpuSumColumns, MatchesNaiveLoop) {
  const int64_t rows = 37, cols = 11;
  const std::vector<float> x = test_values(rows * cols, 4);
  std::vector<float> out(cols, kNaN);
  cpu::sum_columns(x.data(), rows, cols, out.data(), Accumulate::kOverwrite);
  for (int64_t c = 0; c < cols; ++c) {
    double sum = 0.0;
    for (int64_t r = 0; r < rows; ++r) sum += x[r * cols + c];
    EXPECT_NEAR(out[c], sum, 1e-6 * (1.0 + std::fabs(sum)));
  }
}

TEST(CpuArgmaxRows, FirstMaximumWinsTies) {
  const std::vector<float> x = {1.0f,  3.0f,  3.0f,   // tie at 1 and 2
                                5.0f,  5.0f,  5.0f,   // all equal
                                -1.0f, -2.0f, -3.0f,  // all negative
                                -kInf, -kInf, 2.0f};  // max last
  std::vector<int32_t> out(4, -1);
  cpu::argmax_rows(x.data(), 4, 3, out.data());
  EXPECT_EQ(out, (std::vector<int32_t>{1, 0, 0, 2}));
}

TEST(CpuArgmaxRows, NaNCountsAsLargest) {
  const std::vector<float> x = {1.0f, kNaN, 9.0f, kNaN, 2.0f, 3.0f};
  std::vector<int32_t> out(2, -1);
  cpu::argmax_rows(x.data(), 2, 3, out.data());
  EXPECT_EQ(out, (std::vector<int32_t>{1, 0}));
}

TEST(CpuArgmaxRows, RejectsZeroColumns) {
  int32_t out = 0;
  EXPECT_THROW(cpu::argmax_rows(nullptr, 1, 0, &out), Error);
}

// ---------------------------------------------------------------------------------------------
// The semantics both twins share where float and double, or two equal maxima, would differ. The
// same inputs are in ops_parity_test.cpp, held to the CUDA kernels.

// Sums accumulate in double and round to float once: partial sums beyond FLT_MAX stay finite.
TEST(CpuOverflow, SumsAndMeansAccumulateInDouble) {
  const std::vector<float> pair = {3e38f, 3e38f};
  const std::vector<float> triple = {3e38f, 3e38f, -3e38f};
  float out = kNaN;
  cpu::reduce_rows(ReduceOp::kMean, pair.data(), 1, 2, &out);
  EXPECT_EQ(out, 3e38f);
  cpu::reduce_rows(ReduceOp::kSum, triple.data(), 1, 3, &out);
  EXPECT_EQ(out, 3e38f);
  cpu::reduce_all(ReduceOp::kMean, pair.data(), 2, &out);
  EXPECT_EQ(out, 3e38f);
  cpu::reduce_all(ReduceOp::kSum, triple.data(), 3, &out);
  EXPECT_EQ(out, 3e38f);
  cpu::sum_columns(triple.data(), 3, 1, &out, Accumulate::kOverwrite);
  EXPECT_EQ(out, 3e38f);
  // A total beyond FLT_MAX still rounds to inf.
  cpu::reduce_all(ReduceOp::kSum, pair.data(), 2, &out);
  EXPECT_EQ(out, kInf);
}

TEST(CpuOverflow, L2LossWorksInDouble) {
  // (2e19)^2 = 4e38 overflows float, not double: the loss is 0.5 * 4e38.
  const float pred = 2e19f, label = 0.0f;
  float loss = kNaN;
  cpu::l2_loss_forward(&pred, &label, 1, 1, &loss);
  EXPECT_EQ(loss, static_cast<float>(0.5 * double(2e19f) * double(2e19f)));
  EXPECT_TRUE(std::isfinite(loss));
  // 3e38 - (-3e38) = 6e38 overflows float, not double: / 4 columns it is finite again.
  const std::vector<float> preds = {3e38f, 1.0f, 2.0f, 3.0f};
  const std::vector<float> labels = {-3e38f, 1.0f, 2.0f, 3.0f};
  const float dloss = 1.0f;
  std::vector<float> dpred(4, kNaN);
  cpu::l2_loss_backward(preds.data(), labels.data(), &dloss, 1, 4, dpred.data());
  EXPECT_EQ(dpred[0], static_cast<float>(0.25 * (double(3e38f) + double(3e38f))));
  EXPECT_EQ(dpred[1], 0.0f);
}

// +0 is above -0, whatever the order, and argmax points at the element max returns.
TEST(CpuSignedZero, MaxIsPositiveZeroAndArgmaxPointsAtIt) {
  for (const std::vector<float>& x : {std::vector<float>{-0.0f, 0.0f}, {0.0f, -0.0f}}) {
    float out = kNaN;
    cpu::reduce_rows(ReduceOp::kMax, x.data(), 1, 2, &out);
    EXPECT_EQ(out, 0.0f);
    EXPECT_FALSE(std::signbit(out));
    cpu::reduce_all(ReduceOp::kMax, x.data(), 2, &out);
    EXPECT_FALSE(std::signbit(out));
    int32_t index = -1;
    cpu::argmax_rows(x.data(), 1, 2, &index);
    EXPECT_EQ(index, x[0] == 0.0f && !std::signbit(x[0]) ? 0 : 1);
  }
  // All -0: the max is -0 and the first one wins.
  const std::vector<float> negative = {-0.0f, -0.0f, -0.0f};
  float out = kNaN;
  cpu::reduce_rows(ReduceOp::kMax, negative.data(), 1, 3, &out);
  EXPECT_TRUE(std::signbit(out));
  int32_t index = -1;
  cpu::argmax_rows(negative.data(), 1, 3, &index);
  EXPECT_EQ(index, 0);
}

// ---------------------------------------------------------------------------------------------
// Softmax and cross-entropy

TEST(CpuSoftmax, RowsSumToOneAndMatchNaiveDouble) {
  const int64_t rows = 4, cols = 7;
  std::vector<float> x = test_values(rows * cols, 5);
  for (auto& v : x) v *= 5.0f;
  std::vector<float> y(x.size(), kNaN);
  cpu::softmax_rows(x.data(), rows, cols, y.data());
  for (int64_t r = 0; r < rows; ++r) {
    double denominator = 0.0;
    for (int64_t c = 0; c < cols; ++c)
      denominator += std::exp(static_cast<double>(x[r * cols + c]));
    double row_sum = 0.0;
    for (int64_t c = 0; c < cols; ++c) {
      const double expected = std::exp(static_cast<double>(x[r * cols + c])) / denominator;
      EXPECT_NEAR(y[r * cols + c], expected, 1e-7 + 1e-6 * expected);
      row_sum += y[r * cols + c];
    }
    EXPECT_NEAR(row_sum, 1.0, 1e-6);
  }
}

TEST(CpuSoftmax, LargeLogitsStayFinite) {
  const std::vector<float> x = {1000.0f, 1000.0f, -1000.0f, 0.0f};  // (2, 2)
  std::vector<float> y(4, kNaN);
  cpu::softmax_rows(x.data(), 2, 2, y.data());
  EXPECT_FLOAT_EQ(y[0], 0.5f);
  EXPECT_FLOAT_EQ(y[1], 0.5f);
  EXPECT_EQ(y[2], 0.0f);
  EXPECT_FLOAT_EQ(y[3], 1.0f);
}

TEST(CpuSoftmax, BackwardMatchesJacobianProduct) {
  const int64_t rows = 3, cols = 5;
  const std::vector<float> x = test_values(rows * cols, 6);
  const std::vector<float> dy = test_values(rows * cols, 7);
  std::vector<float> y(x.size()), dx(x.size(), kNaN);
  cpu::softmax_rows(x.data(), rows, cols, y.data());
  cpu::softmax_backward_rows(y.data(), dy.data(), rows, cols, dx.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < cols; ++j) {
      // dx_j = sum_i dy_i dy_i/dx_j, with dy_i/dx_j = y_i (delta_ij - y_j).
      double expected = 0.0;
      for (int64_t i = 0; i < cols; ++i) {
        const double yi = y[r * cols + i], yj = y[r * cols + j];
        expected += dy[r * cols + i] * yi * ((i == j ? 1.0 : 0.0) - yj);
      }
      EXPECT_NEAR(dx[r * cols + j], expected, 1e-6);
    }
  }
}

TEST(CpuSoftmaxXent, ForwardMatchesHandComputedValues) {
  const float ln2 = 0.6931471805599453f;
  // Row 0: logsumexp(0, ln 2, 0) = ln(1 + 2 + 1) = ln 4, so loss = ln 4 - ln 2 = ln 2.
  // Row 1: logsumexp(1, 2, 3) - 1 = 2 + ln(e^-2 + e^-1 + 1) = 2.40760596444438.
  // Row 2: logsumexp(1000, 0) - 0 = 1000 (to float precision), finite despite exp(1000).
  const std::vector<float> logits = {0.0f, ln2, 0.0f, 1.0f, 2.0f, 3.0f, 1000.0f, 0.0f, -5.0f};
  const std::vector<int32_t> labels = {1, 0, 1};
  std::vector<float> loss(3, kNaN), probs(9, kNaN);
  cpu::softmax_xent_forward(logits.data(), labels.data(), 3, 3, loss.data(), probs.data());
  EXPECT_NEAR(loss[0], ln2, 1e-6);
  EXPECT_NEAR(loss[1], 2.40760596444438, 1e-6);
  EXPECT_FLOAT_EQ(loss[2], 1000.0f);
  EXPECT_NEAR(probs[0], 0.25, 1e-7);
  EXPECT_NEAR(probs[1], 0.5, 1e-7);
  EXPECT_NEAR(probs[2], 0.25, 1e-7);
  EXPECT_FLOAT_EQ(probs[6], 1.0f);
  EXPECT_EQ(probs[7], 0.0f);
}

TEST(CpuSoftmaxXent, OutOfRangeLabelGivesNaNForThatRowOnly) {
  const std::vector<float> x = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};  // (3, 2)
  const std::vector<int32_t> labels = {-1, 1, 2};
  std::vector<float> loss(3, 0.0f), probs(6, kNaN);
  cpu::softmax_xent_forward(x.data(), labels.data(), 3, 2, loss.data(), probs.data());
  EXPECT_TRUE(std::isnan(loss[0]));
  EXPECT_NEAR(loss[1], std::log(1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_TRUE(std::isnan(loss[2]));
  for (size_t i = 0; i < probs.size(); i += 2) {
    // Probabilities are written for every row, valid label or not.
    EXPECT_NEAR(probs[i], 1.0 / (1.0 + std::exp(1.0)), 1e-7);
    EXPECT_NEAR(probs[i + 1], 1.0 / (1.0 + std::exp(-1.0)), 1e-7);
  }
  const std::vector<float> dloss = {1.0f, 1.0f, 1.0f};
  std::vector<float> dlogits(6, 0.0f);
  cpu::softmax_xent_backward(probs.data(), labels.data(), dloss.data(), 3, 2, dlogits.data());
  EXPECT_TRUE(std::isnan(dlogits[0]) && std::isnan(dlogits[1]));
  EXPECT_NEAR(dlogits[2], probs[2], 1e-7);
  EXPECT_NEAR(dlogits[3], probs[3] - 1.0, 1e-7);
  EXPECT_TRUE(std::isnan(dlogits[4]) && std::isnan(dlogits[5]));
}

TEST(CpuSoftmaxXent, BackwardMatchesCentralDifferences) {
  const int64_t rows = 3, cols = 4;
  std::vector<float> logits = test_values(rows * cols, 8);
  for (auto& v : logits) v *= 2.0f;
  const std::vector<int32_t> labels = {2, 0, 3};
  const std::vector<float> dloss = {1.0f, -0.5f, 2.0f};
  std::vector<float> loss(rows), probs(rows * cols), dlogits(rows * cols, kNaN);
  cpu::softmax_xent_forward(logits.data(), labels.data(), rows, cols, loss.data(), probs.data());
  cpu::softmax_xent_backward(probs.data(), labels.data(), dloss.data(), rows, cols, dlogits.data());

  // L = sum_r dloss[r] * loss[r]; its gradient with respect to the logits is dlogits.
  auto objective = [&](const std::vector<float>& z) {
    std::vector<float> l(rows), p(rows * cols);
    cpu::softmax_xent_forward(z.data(), labels.data(), rows, cols, l.data(), p.data());
    double total = 0.0;
    for (int64_t r = 0; r < rows; ++r) total += static_cast<double>(dloss[r]) * l[r];
    return total;
  };
  const float step = 1e-2f;
  for (int64_t i = 0; i < rows * cols; ++i) {
    std::vector<float> plus = logits, minus = logits;
    plus[i] += step;
    minus[i] -= step;
    const double h = static_cast<double>(plus[i]) - minus[i];  // the step actually taken
    const double numeric = (objective(plus) - objective(minus)) / h;
    EXPECT_NEAR(dlogits[i], numeric, 5e-4) << "logit " << i;
  }
}

// ---------------------------------------------------------------------------------------------
// GEMM

// C = alpha * op(A) op(B) (+ C0), in double, straight from the row-major definitions.
std::vector<float> naive_gemm(const RowMajorGemm& g, const std::vector<float>& a,
                              const std::vector<float>& b, const std::vector<float>& c0) {
  std::vector<float> c(static_cast<size_t>(g.m * g.n));
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = 0; j < g.n; ++j) {
      double sum = 0.0;
      for (int64_t p = 0; p < g.k; ++p) {
        const float av = g.transpose_a == Transpose::kYes ? a[p * g.m + i] : a[i * g.k + p];
        const float bv = g.transpose_b == Transpose::kYes ? b[j * g.k + p] : b[p * g.n + j];
        sum += static_cast<double>(av) * bv;
      }
      double value = g.alpha * sum;
      if (g.accumulate == Accumulate::kAdd) value += c0[i * g.n + j];
      c[i * g.n + j] = static_cast<float>(value);
    }
  }
  return c;
}

using GemmExecutor = void (*)(const ColumnMajorGemmPlan&);

void check_gemm(int64_t m, int64_t n, int64_t k, Transpose ta, Transpose tb, float alpha,
                Accumulate accumulate, GemmExecutor executor = cpu::gemm) {
  SCOPED_TRACE(::testing::Message()
               << "m=" << m << " n=" << n << " k=" << k << " ta=" << (ta == Transpose::kYes)
               << " tb=" << (tb == Transpose::kYes) << " alpha=" << alpha
               << " add=" << (accumulate == Accumulate::kAdd));
  const std::vector<float> a = test_values(m * k, 10), b = test_values(k * n, 11);
  // Overwrite must not read C: poison it so that a stray read shows up as NaN.
  std::vector<float> c0 =
      accumulate == Accumulate::kAdd ? test_values(m * n, 12) : std::vector<float>(m * n, kNaN);
  std::vector<float> c = c0;
  RowMajorGemm request;
  request.a = a.data();
  request.b = b.data();
  request.c = c.data();
  request.m = m;
  request.n = n;
  request.k = k;
  request.transpose_a = ta;
  request.transpose_b = tb;
  request.alpha = alpha;
  request.accumulate = accumulate;
  executor(plan_gemm(request));
  const std::vector<float> expected = naive_gemm(request, a, b, c0);
  for (int64_t i = 0; i < m * n; ++i) {
    EXPECT_NEAR(c[i], expected[i], 1e-5 * (1.0 + std::fabs(expected[i]))) << "element " << i;
  }
}

TEST(CpuGemm, AllTransposeCombinationsMatchNaiveLoop) {
  const struct { int64_t m, n, k; } shapes[] = {{3, 5, 7}, {13, 1, 17}, {1, 9, 4}, {6, 4, 1}};
  for (const auto& s : shapes) {
    for (Transpose ta : {Transpose::kNo, Transpose::kYes}) {
      for (Transpose tb : {Transpose::kNo, Transpose::kYes}) {
        check_gemm(s.m, s.n, s.k, ta, tb, 1.0f, Accumulate::kOverwrite);
        check_gemm(s.m, s.n, s.k, ta, tb, -0.5f, Accumulate::kAdd);
      }
    }
  }
}

// Both executors behind cpu::gemm, on sizes around small_gemm's 8-lane blocks (k = 7, 8, 9, 17)
// and register blocks (n = 1, 5, 9, 33, 41 rows of column-major C: blocks of 32, 8, overlapped
// and single rows).
TEST(CpuGemm, SmallGemmAndOpenBlasBothMatchNaiveLoop) {
  const struct {
    int64_t m, n, k;
  } shapes[] = {{1, 1, 1},   {5, 3, 7},  {9, 2, 8},  {33, 4, 9},
                {16, 1, 17}, {2, 9, 33}, {31, 5, 2}, {3, 41, 6}};
  for (GemmExecutor executor : {&cpu::small_gemm, &cpu::blas_gemm}) {
    for (const auto& s : shapes) {
      for (Transpose ta : {Transpose::kNo, Transpose::kYes}) {
        for (Transpose tb : {Transpose::kNo, Transpose::kYes}) {
          // Row-major B is the column-major plan's `first`: small_gemm reads it untransposed.
          if (tb == Transpose::kYes && executor == &cpu::small_gemm) continue;
          check_gemm(s.m, s.n, s.k, ta, tb, 1.0f, Accumulate::kOverwrite, executor);
          check_gemm(s.m, s.n, s.k, ta, tb, -0.5f, Accumulate::kAdd, executor);
          check_gemm(s.m, s.n, s.k, ta, tb, 2.0f, Accumulate::kOverwrite, executor);
        }
      }
    }
  }
}

// What cpu::gemm sends where: small, `first` not transposed and columns of 8 rows or more to
// small_gemm; the rest to OpenBLAS.
TEST(CpuGemm, SmallGemmTakesOnlySmallProblems) {
  if (std::getenv("CAIRN_CPU_SMALL_GEMM") != nullptr) GTEST_SKIP() << "CAIRN_CPU_SMALL_GEMM is set";
  ColumnMajorGemmPlan plan;
  plan.m = 256, plan.n = 10, plan.k = 2;  // the tiny network's layer 2 dW at batch 2
  plan.transpose_second = true;
  EXPECT_TRUE(cpu::small_gemm_takes(plan));
  plan.transpose_second = false;
  EXPECT_TRUE(cpu::small_gemm_takes(plan));
  plan.transpose_first = true;  // a forward pass's layout
  EXPECT_FALSE(cpu::small_gemm_takes(plan));
  plan.transpose_first = false;
  plan.m = 20;  // the tiny network's layer 1 dW
  EXPECT_TRUE(cpu::small_gemm_takes(plan));
  plan.m = 7;  // shorter than a register block
  EXPECT_FALSE(cpu::small_gemm_takes(plan));
  plan.m = 256, plan.n = 96, plan.k = 10;  // the book's MLP, layer 2 dx of the last batch
  EXPECT_FALSE(cpu::small_gemm_takes(plan));
  plan.m = 256, plan.n = 1, plan.k = 0;
  EXPECT_FALSE(cpu::small_gemm_takes(plan));
}

// small_gemm rounds differently from OpenBLAS (small_gemm.h): both against a double-precision
// reference, on the tiny network's backward shapes (row-major requests). Neither may be more than a
// few float roundings of sum |a_p b_p| away from the exact dot product.
TEST(CpuGemm, SmallGemmIsAsAccurateAsOpenBlas) {
  const struct {
    int64_t m, n, k;
    Transpose ta, tb;
  } shapes[] = {{10, 256, 2, Transpose::kYes, Transpose::kNo},  // layer 2 dW
                {2, 256, 10, Transpose::kNo, Transpose::kNo},   // layer 2 dx
                {256, 20, 2, Transpose::kYes, Transpose::kNo},  // layer 1 dW
                {8, 256, 32, Transpose::kNo, Transpose::kNo},   // dx at batch 8
                {37, 61, 29, Transpose::kNo, Transpose::kNo}};  // nothing round
  for (const auto& s : shapes) {
    SCOPED_TRACE(::testing::Message() << "m=" << s.m << " n=" << s.n << " k=" << s.k);
    const std::vector<float> a = test_values(s.m * s.k, 21), b = test_values(s.k * s.n, 22);
    std::vector<float> small(size_t(s.m * s.n)), blas(size_t(s.m * s.n));
    RowMajorGemm request;
    request.a = a.data(), request.b = b.data();
    request.m = s.m, request.n = s.n, request.k = s.k;
    request.transpose_a = s.ta, request.transpose_b = s.tb;
    request.c = small.data();
    cpu::small_gemm(plan_gemm(request));
    request.c = blas.data();
    cpu::blas_gemm(plan_gemm(request));
    const std::vector<float> exact = naive_gemm(request, a, b, {});
    for (int64_t i = 0; i < s.m; ++i) {
      for (int64_t j = 0; j < s.n; ++j) {
        double magnitude = 0.0;  // sum |a_p b_p|: what the rounding error scales with
        for (int64_t p = 0; p < s.k; ++p) {
          const float av = s.ta == Transpose::kYes ? a[p * s.m + i] : a[i * s.k + p];
          const float bv = s.tb == Transpose::kYes ? b[j * s.k + p] : b[p * s.n + j];
          magnitude += std::fabs(double(av) * bv);
        }
        const double bound = 2.0 * double(s.k) * 0x1p-24 * magnitude + 1e-30;
        const size_t at = size_t(i * s.n + j);
        EXPECT_LE(std::fabs(small[at] - exact[at]), bound) << "small_gemm at " << at;
        EXPECT_LE(std::fabs(blas[at] - exact[at]), bound) << "OpenBLAS at " << at;
      }
    }
  }
}

// beta = 0 over a C with padding rows (ldc > m): cairn zeroes C itself before OpenBLAS adds to it
// (gemm.cpp), so a NaN in C must not survive, and the padding must stay as it was.
TEST(CpuGemm, OverwriteWithPaddedLeadingDimension) {
  const int64_t m = 5, n = 300, k = 3, ldc = m + 2;
  const std::vector<float> first = test_values(m * k, 31), second = test_values(k * n, 32);
  std::vector<float> c(size_t(ldc * n), kNaN);
  for (int64_t j = 0; j < n; ++j) c[size_t(j * ldc + m)] = c[size_t(j * ldc + m + 1)] = 7.0f;
  ColumnMajorGemmPlan plan;
  plan.m = m, plan.n = n, plan.k = k;
  plan.first = first.data(), plan.ld_first = m;
  plan.second = second.data(), plan.ld_second = k;
  plan.c = c.data(), plan.ldc = ldc;
  plan.beta = 0.0f;
  cpu::blas_gemm(plan);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < m; ++i) {
      double sum = 0.0;
      for (int64_t p = 0; p < k; ++p)
        sum += double(first[size_t(i + p * m)]) * second[size_t(p + j * k)];
      ASSERT_NEAR(c[size_t(j * ldc + i)], sum, 1e-5) << "row " << i << " column " << j;
    }
    ASSERT_EQ(c[size_t(j * ldc + m)], 7.0f) << "padding of column " << j;
    ASSERT_EQ(c[size_t(j * ldc + m + 1)], 7.0f) << "padding of column " << j;
  }
}

// Above OpenBLAS's own threading threshold cpu::gemm splits C into one block of columns (or of
// rows, whichever side is longer) per thread, each a single-threaded OpenBLAS call (gemm.cpp).
// Awkward sizes: blocks that do not divide evenly, a side too short to split, every layout,
// accumulation, and a padded C whose padding must survive.
TEST(CpuGemm, SplitAcrossThreadsMatchesNaiveLoop) {
  struct RestoreThreads {
    ~RestoreThreads() { cpu::set_threads(0); }
  } restore;
  const struct {
    int64_t m, n, k;
  } shapes[] = {{37, 301, 97}, {301, 37, 97}, {20, 20, 1000}, {17, 1000, 31}};
  for (int count : {2, 3}) {
    cpu::set_threads(count);
    SCOPED_TRACE(::testing::Message() << "threads=" << count);
    for (const auto& s : shapes) {
      for (Transpose ta : {Transpose::kNo, Transpose::kYes}) {
        for (Transpose tb : {Transpose::kNo, Transpose::kYes}) {
          check_gemm(s.m, s.n, s.k, ta, tb, 1.0f, Accumulate::kOverwrite);
          check_gemm(s.m, s.n, s.k, ta, tb, -0.5f, Accumulate::kAdd);
        }
      }
    }
    const int64_t m = 300, n = 301, k = 40, ldc = m + 3;
    const std::vector<float> first = test_values(m * k, 41), second = test_values(k * n, 42);
    std::vector<float> c(size_t(ldc * n), kNaN);
    for (int64_t j = 0; j < n; ++j) c[size_t(j * ldc + m)] = 7.0f;
    ColumnMajorGemmPlan plan;
    plan.m = m, plan.n = n, plan.k = k;
    plan.first = first.data(), plan.ld_first = m;
    plan.second = second.data(), plan.ld_second = k;
    plan.c = c.data(), plan.ldc = ldc;
    cpu::gemm(plan);
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t i = 0; i < m; i += 13) {
        double sum = 0.0;
        for (int64_t p = 0; p < k; ++p)
          sum += double(first[size_t(i + p * m)]) * second[size_t(p + j * k)];
        ASSERT_NEAR(c[size_t(j * ldc + i)], sum, 1e-4) << "row " << i << " column " << j;
      }
      ASSERT_EQ(c[size_t(j * ldc + m)], 7.0f) << "padding of column " << j;
    }
  }
}

TEST(CpuGemm, EmptyInnerDimension) {
  for (Transpose ta : {Transpose::kNo, Transpose::kYes}) {
    for (Transpose tb : {Transpose::kNo, Transpose::kYes}) {
      check_gemm(3, 5, 0, ta, tb, 1.0f, Accumulate::kOverwrite);  // C = 0, even over NaN
      check_gemm(3, 5, 0, ta, tb, 2.0f, Accumulate::kAdd);        // C unchanged
    }
  }
}

TEST(CpuGemm, EmptyOutputTouchesNothing) {
  float sentinel = 42.0f;
  for (auto [m, n] : {std::pair<int64_t, int64_t>{0, 5}, {5, 0}, {0, 0}}) {
    RowMajorGemm request;
    request.c = &sentinel;
    request.m = m;
    request.n = n;
    request.k = 3;
    cpu::gemm(plan_gemm(request));
    EXPECT_EQ(sentinel, 42.0f);
  }
}

TEST(PlanGemm, SwapsOperandsAndSizesForColumnMajor) {
  float a = 0.0f, b = 0.0f, c = 0.0f;
  RowMajorGemm request;
  request.a = &a;
  request.b = &b;
  request.c = &c;
  request.m = 3;
  request.n = 5;
  request.k = 7;
  request.transpose_a = Transpose::kYes;  // A stored (7, 3)
  request.transpose_b = Transpose::kNo;   // B stored (7, 5)
  request.alpha = 2.0f;
  request.accumulate = Accumulate::kAdd;
  const ColumnMajorGemmPlan plan = plan_gemm(request);
  EXPECT_EQ(plan.first, &b);
  EXPECT_EQ(plan.second, &a);
  EXPECT_EQ(plan.c, &c);
  EXPECT_FALSE(plan.transpose_first);
  EXPECT_TRUE(plan.transpose_second);
  EXPECT_EQ(plan.m, 5);
  EXPECT_EQ(plan.n, 3);
  EXPECT_EQ(plan.k, 7);
  EXPECT_EQ(plan.ld_first, 5);
  EXPECT_EQ(plan.ld_second, 3);
  EXPECT_EQ(plan.ldc, 5);
  EXPECT_EQ(plan.alpha, 2.0f);
  EXPECT_EQ(plan.beta, 1.0f);

  request.transpose_a = Transpose::kNo;   // A stored (3, 7)
  request.transpose_b = Transpose::kYes;  // B stored (5, 7)
  request.accumulate = Accumulate::kOverwrite;
  const ColumnMajorGemmPlan swapped = plan_gemm(request);
  EXPECT_TRUE(swapped.transpose_first);
  EXPECT_FALSE(swapped.transpose_second);
  EXPECT_EQ(swapped.ld_first, 7);
  EXPECT_EQ(swapped.ld_second, 7);
  EXPECT_EQ(swapped.beta, 0.0f);
}

TEST(PlanGemm, LeadingDimensionsAreAtLeastOne) {
  RowMajorGemm request;  // m = n = k = 0
  const ColumnMajorGemmPlan plan = plan_gemm(request);
  EXPECT_EQ(plan.ld_first, 1);
  EXPECT_EQ(plan.ld_second, 1);
  EXPECT_EQ(plan.ldc, 1);
}

TEST(PlanGemm, RejectsNegativeSizes) {
  RowMajorGemm request;
  request.m = 2;
  request.n = 2;
  request.k = -1;
  EXPECT_THROW(plan_gemm(request), Error);
}

// ---------------------------------------------------------------------------------------------
// Philox and random fills

TEST(Philox, MatchesRandom123KnownAnswer) {
  // Random123 kat_vectors: philox4x32 10 rounds, counter {0, 0, 0, 0}, key {0, 0}.
  const Philox4 words = philox4x32(0, 0);
  EXPECT_EQ(words.v[0], 0x6627e8d5u);
  EXPECT_EQ(words.v[1], 0xe169c58du);
  EXPECT_EQ(words.v[2], 0xbc57ac4cu);
  EXPECT_EQ(words.v[3], 0x9b00dbd8u);
}

TEST(Philox, UniformFromBitsCoversZeroToJustBelowOne) {
  EXPECT_EQ(uniform_from_bits(0u), 0.0f);
  EXPECT_EQ(uniform_from_bits(0xffffffffu), 1.0f - 1.0f / 16777216.0f);
  EXPECT_EQ(uniform_from_bits(0x80000000u), 0.5f);
}

TEST(CpuRandom, UniformFollowsThePhiloxLayout) {
  const uint64_t seed = 0x1234567890abcdefull;
  std::vector<float> y(11);
  cpu::uniform(y.data(), 11, seed, -1.0f, 3.0f);
  for (int64_t i = 0; i < 11; ++i) {
    const float u = uniform_from_bits(philox4x32(seed, static_cast<uint64_t>(i / 4)).v[i % 4]);
    EXPECT_EQ(y[i], -1.0f + 4.0f * u) << "element " << i;
  }
}

TEST(CpuRandom, NormalFollowsTheBoxMullerLayout) {
  const uint64_t seed = 99;
  std::vector<float> y(5);
  cpu::normal(y.data(), 5, seed, 0.0f, 1.0f);
  for (int64_t p = 0; p < 3; ++p) {
    const Philox4 w = philox4x32(seed, static_cast<uint64_t>(p));
    const double u1 = 1.0 - uniform_from_bits(w.v[0]);
    const double u2 = uniform_from_bits(w.v[1]);
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double two_pi = 6.283185307179586;
    EXPECT_NEAR(y[2 * p], r * std::cos(two_pi * u2), 1e-5 * (1.0 + r)) << "pair " << p;
    if (2 * p + 1 < 5) {
      EXPECT_NEAR(y[2 * p + 1], r * std::sin(two_pi * u2), 1e-5 * (1.0 + r));
    }
  }
}

TEST(CpuRandom, SameSeedSameNumbersDifferentSeedDifferent) {
  const int64_t n = 1000;
  std::vector<float> a(n), b(n), c(n);
  cpu::uniform(a.data(), n, 7, 0.0f, 1.0f);
  cpu::uniform(b.data(), n, 7, 0.0f, 1.0f);
  cpu::uniform(c.data(), n, 8, 0.0f, 1.0f);
  EXPECT_EQ(a, b);
  int64_t differing = 0;
  for (int64_t i = 0; i < n; ++i) differing += a[i] != c[i];
  EXPECT_GT(differing, 990);

  cpu::normal(a.data(), n, 7, 0.0f, 1.0f);
  cpu::normal(b.data(), n, 7, 0.0f, 1.0f);
  cpu::normal(c.data(), n, 8, 0.0f, 1.0f);
  EXPECT_EQ(a, b);
  differing = 0;
  for (int64_t i = 0; i < n; ++i) differing += a[i] != c[i];
  EXPECT_GT(differing, 990);
}

TEST(CpuRandom, ElementDependsOnSeedAndIndexOnly) {
  std::vector<float> short_fill(9), long_fill(1000);
  cpu::uniform(short_fill.data(), 9, 3, 0.0f, 1.0f);
  cpu::uniform(long_fill.data(), 1000, 3, 0.0f, 1.0f);
  EXPECT_EQ(short_fill, std::vector<float>(long_fill.begin(), long_fill.begin() + 9));
  cpu::normal(short_fill.data(), 9, 3, 0.0f, 1.0f);  // odd: the last pair keeps only z0
  cpu::normal(long_fill.data(), 1000, 3, 0.0f, 1.0f);
  EXPECT_EQ(short_fill, std::vector<float>(long_fill.begin(), long_fill.begin() + 9));
}

TEST(CpuRandom, UniformRangeMeanAndVariance) {
  const int64_t n = 100000;
  const float lo = -2.0f, hi = 3.0f;
  std::vector<float> y(n);
  cpu::uniform(y.data(), n, 2024, lo, hi);
  double sum = 0.0, sum_sq = 0.0;
  for (float v : y) {
    ASSERT_GE(v, lo);
    ASSERT_LT(v, hi);
    sum += v;
    sum_sq += static_cast<double>(v) * v;
  }
  const double mean = sum / n, variance = sum_sq / n - mean * mean;
  // Theory: mean 0.5, variance 25/12; the tolerances are about 5 standard errors.
  EXPECT_NEAR(mean, 0.5, 0.025);
  EXPECT_NEAR(variance, 25.0 / 12.0, 0.03);
}

TEST(CpuRandom, NormalMeanStddevAndShape) {
  const int64_t n = 100001;  // odd on purpose
  const float mean = 1.0f, stddev = 2.0f;
  std::vector<float> y(n);
  cpu::normal(y.data(), n, 77, mean, stddev);
  double sum = 0.0, sum_sq = 0.0;
  int64_t within_one_sigma = 0;
  for (float v : y) {
    ASSERT_TRUE(std::isfinite(v));
    sum += v;
    sum_sq += static_cast<double>(v) * v;
    within_one_sigma += std::fabs(v - mean) < stddev;
  }
  const double sample_mean = sum / n;
  const double sample_std = std::sqrt(sum_sq / n - sample_mean * sample_mean);
  EXPECT_NEAR(sample_mean, 1.0, 0.035);
  EXPECT_NEAR(sample_std, 2.0, 0.025);
  // A normal puts 68.27% of its mass within one sigma; this catches a wrong shape with the right
  // variance.
  EXPECT_NEAR(static_cast<double>(within_one_sigma) / n, 0.6827, 0.008);
}

// ---------------------------------------------------------------------------------------------
// Optimizers

TEST(CpuSgd, PlainStep) {
  std::vector<float> w = {1.0f, -2.0f};
  const std::vector<float> g = {0.5f, 1.0f};
  SgdConfig config;
  config.learning_rate = 0.1f;
  cpu::sgd_update(w.data(), g.data(), nullptr, 2, config);  // no velocity needed without momentum
  EXPECT_NEAR(w[0], 0.95f, 1e-7);
  EXPECT_NEAR(w[1], -2.1f, 1e-7);
}

TEST(CpuSgd, WeightDecayAndGradScale) {
  std::vector<float> w = {1.0f, -2.0f};
  const std::vector<float> g = {0.5f, 1.0f};
  SgdConfig config;
  config.learning_rate = 0.1f;
  config.weight_decay = 0.01f;
  config.grad_scale = 0.5f;
  cpu::sgd_update(w.data(), g.data(), nullptr, 2, config);
  // g = 0.5 * 0.5 + 0.01 * 1 = 0.26 and 0.5 * 1 + 0.01 * -2 = 0.48.
  EXPECT_NEAR(w[0], 0.974f, 1e-7);
  EXPECT_NEAR(w[1], -2.048f, 1e-6);
}

TEST(CpuSgd, MomentumTwoSteps) {
  std::vector<float> w = {1.0f};
  std::vector<float> v = {0.0f};
  const std::vector<float> g = {0.5f};
  SgdConfig config;
  config.learning_rate = 0.1f;
  config.momentum = 0.9f;
  cpu::sgd_update(w.data(), g.data(), v.data(), 1, config);
  EXPECT_NEAR(v[0], 0.5f, 1e-7);
  EXPECT_NEAR(w[0], 0.95f, 1e-7);
  cpu::sgd_update(w.data(), g.data(), v.data(), 1, config);
  EXPECT_NEAR(v[0], 0.95f, 1e-7);   // 0.9 * 0.5 + 0.5
  EXPECT_NEAR(w[0], 0.855f, 1e-7);  // 0.95 - 0.1 * 0.95
}

TEST(CpuSgd, MomentumWithoutVelocityThrows) {
  float w = 1.0f, g = 1.0f;
  SgdConfig config;
  config.momentum = 0.9f;
  EXPECT_THROW(cpu::sgd_update(&w, &g, nullptr, 1, config), Error);
}

// The moments use 1 - beta as float computes it: 1 - 0.999f is 0.00099998713 (exact, by
// Sterbenz), not 0.001, a relative difference of 1.3e-5 that tighter tolerances must allow for.
constexpr double kOneMinusBeta1 = 1.0 - static_cast<double>(0.9f);
constexpr double kOneMinusBeta2 = 1.0 - static_cast<double>(0.999f);

TEST(CpuAdam, OneAndTwoSteps) {
  std::vector<float> w = {1.0f}, m = {0.0f}, v = {0.0f};
  AdamConfig config;
  config.learning_rate = 0.1f;
  std::vector<float> g = {0.5f};
  config.step = 1;
  cpu::adam_update(w.data(), g.data(), m.data(), v.data(), 1, config);
  // m = 0.05, v = 0.00025; bias-corrected 0.5 and 0.25, so the step is lr * 0.5 / (0.5 + eps).
  EXPECT_NEAR(m[0], kOneMinusBeta1 * 0.5, 1e-6 * 0.05);
  EXPECT_NEAR(v[0], kOneMinusBeta2 * 0.25, 1e-6 * 0.00025);
  EXPECT_NEAR(w[0], 0.9f, 1e-6);
  g = {-0.25f};
  config.step = 2;
  cpu::adam_update(w.data(), g.data(), m.data(), v.data(), 1, config);
  // m = 0.02, v = 0.00031225; corrections 0.19 and 0.001999 (computed in double precision).
  const double m2 = 0.9f * (kOneMinusBeta1 * 0.5) + kOneMinusBeta1 * -0.25;
  const double v2 = 0.999f * (kOneMinusBeta2 * 0.25) + kOneMinusBeta2 * 0.0625;
  EXPECT_NEAR(m[0], m2, 1e-6 * 0.02);
  EXPECT_NEAR(v[0], v2, 1e-6 * 0.00031225);
  // The weight, worked out with exact betas (0.8733662987...), is insensitive to their rounding.
  EXPECT_NEAR(w[0], 0.8733662987078463, 2e-6);
}

TEST(CpuAdam, WeightDecayAndGradScaleEnterTheMoments) {
  std::vector<float> w = {1.0f}, m = {0.0f}, v = {0.0f};
  const std::vector<float> g = {0.5f};
  AdamConfig config;
  config.learning_rate = 0.01f;
  config.weight_decay = 0.1f;
  config.grad_scale = 2.0f;
  cpu::adam_update(w.data(), g.data(), m.data(), v.data(), 1, config);
  // g = 2 * 0.5 + 0.1 * 1 = 1.1
  EXPECT_NEAR(m[0], kOneMinusBeta1 * 1.1, 1e-6 * 0.11);
  EXPECT_NEAR(v[0], kOneMinusBeta2 * 1.21, 1e-6 * 0.00121);
  EXPECT_NEAR(w[0], 0.99f, 1e-6);
}

TEST(CpuAdam, RejectsStepZero) {
  float w = 1.0f, g = 1.0f, m = 0.0f, v = 0.0f;
  AdamConfig config;
  config.step = 0;
  EXPECT_THROW(cpu::adam_update(&w, &g, &m, &v, 1, config), Error);
}

// ---- cuBLASLt plan cache decisions (host logic of kernels/cuda/dense_lt.cu) ----

TEST(LtPlan, PointerAlignmentIsTheLargestPowerOfTwoUpTo256) {
  alignas(256) static unsigned char buffer[1024];
  EXPECT_EQ(pointer_alignment(buffer), 256u);
  EXPECT_EQ(pointer_alignment(buffer + 512), 256u);
  EXPECT_EQ(pointer_alignment(buffer + 128), 128u);
  EXPECT_EQ(pointer_alignment(buffer + 16), 16u);
  EXPECT_EQ(pointer_alignment(buffer + 4), 4u);
  EXPECT_EQ(pointer_alignment(buffer + 12), 4u);
  EXPECT_EQ(pointer_alignment(buffer + 1), 4u);  // cuBLASLt's floor for float data
}

TEST(LtPlan, TheBiasAlignmentIsPartOfThePlanKey) {
  alignas(256) static float bias[128];
  LtPlanKey aligned;
  aligned.m = 10;
  aligned.n = 256;
  aligned.k = 784;
  aligned.align_a = aligned.align_b = aligned.align_d = 256;
  aligned.align_bias = pointer_alignment(bias);
  LtPlanKey offset = aligned;
  offset.align_bias = pointer_alignment(bias + 1);  // a wrapped bias 4 bytes in
  EXPECT_EQ(aligned.align_bias, 256u);
  EXPECT_EQ(offset.align_bias, 4u);
  EXPECT_FALSE(aligned == offset);
  EXPECT_TRUE(aligned < offset || offset < aligned);  // two entries in the cache, not one
  LtPlanKey same = aligned;
  EXPECT_TRUE(same == aligned);
  EXPECT_FALSE(same < aligned || aligned < same);
}

TEST(LtPlan, OnlyASuccessfulResultWithASuccessfulStateIsUsable) {
  bool error = true;
  EXPECT_TRUE(lt_heuristic_usable(CUBLAS_STATUS_SUCCESS, 1, CUBLAS_STATUS_SUCCESS, &error));
  EXPECT_FALSE(error);
  // No algorithm: a fallback, not an error.
  EXPECT_FALSE(lt_heuristic_usable(CUBLAS_STATUS_SUCCESS, 0, CUBLAS_STATUS_SUCCESS, &error));
  EXPECT_FALSE(error);
  EXPECT_FALSE(lt_heuristic_usable(CUBLAS_STATUS_NOT_SUPPORTED, 0, 0, &error));
  EXPECT_FALSE(error);
  // A result whose state is not success has no valid algorithm in it.
  EXPECT_FALSE(lt_heuristic_usable(CUBLAS_STATUS_SUCCESS, 1, CUBLAS_STATUS_NOT_SUPPORTED, &error));
  EXPECT_FALSE(error);
  // INVALID_VALUE: the configuration (an alignment, an epilogue's operand) is one cuBLASLt
  // refuses; the composed path can still compute it: a fallback too.
  EXPECT_FALSE(lt_heuristic_usable(CUBLAS_STATUS_INVALID_VALUE, 0, 0, &error));
  EXPECT_FALSE(error);
  // Anything else is a real failure, reported as one.
  EXPECT_FALSE(lt_heuristic_usable(CUBLAS_STATUS_NOT_INITIALIZED, 0, 0, &error));
  EXPECT_TRUE(error);
  EXPECT_FALSE(lt_heuristic_usable(CUBLAS_STATUS_ALLOC_FAILED, 0, 0, &error));
  EXPECT_TRUE(error);
}

TEST(LtPlan, ABiasBelowSixteenByteAlignmentFallsBack) {
  alignas(16) float bias[8] = {};
  EXPECT_TRUE(lt_bias_alignment_ok(bias));
  EXPECT_TRUE(lt_bias_alignment_ok(nullptr));  // no bias, nothing to align
  EXPECT_FALSE(lt_bias_alignment_ok(bias + 1));
  EXPECT_FALSE(lt_bias_alignment_ok(bias + 2));
  EXPECT_TRUE(lt_bias_alignment_ok(bias + 4));
}

}  // namespace
}  // namespace cairn::kernels
