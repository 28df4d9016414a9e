// GPU against CPU: (a) every kernels::cuda:: launcher against its CPU twin on awkward sizes, with
// the GPU output poisoned with NaN first so that an element the kernel forgets fails; (b) every op
// forward and backward on both devices with poisoned allocations; (c) ops given tensors on two
// devices; (d) run-to-run determinism of the reductions.
//
// Every test derives from CudaTest and skips, saying why, without a usable GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cairn/kernels/elementwise.h"
#include "cairn/kernels/gemm.h"
#include "cairn/kernels/loss.h"
#include "cairn/kernels/optimizer.h"
#include "cairn/kernels/random.h"
#include "cairn/kernels/reduce.h"
#include "cairn/kernels/softmax.h"
#include "support/test_support.h"

namespace cairn {
namespace {

using kernels::Accumulate;
using kernels::BinaryOp;
using kernels::Broadcast;
using kernels::ReduceOp;
using kernels::Transpose;
using kernels::UnaryOp;
using testing::expect_close;
using testing::expect_error;
using testing::poison;
using testing::random_tensor;

namespace kc = kernels::cpu;
namespace kg = kernels::cuda;

const Device kCpu = Device::cpu();
Device gpu() { return Device::cuda(0); }  // a function: no CUDA-related work at static init
cuda::Stream stream() { return cuda::current_stream(gpu()); }

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int64_t kBig = (int64_t(1) << 20) + 3;
const std::vector<int64_t> kSizes = {0, 1, 7, 97, 1031, kBig};

struct RowsCols {
  int64_t rows, cols;
};
const std::vector<RowsCols> kRowShapes = {{1, 1},    {3, 7},    {257, 10}, {1031, 3},
                                          {5, 1025}, {2, 4099}, {0, 5}};

std::string shape_name(int64_t rows, int64_t cols) {
  return "(" + std::to_string(rows) + ", " + std::to_string(cols) + ")";
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

// A GPU float tensor full of NaN.
Tensor poisoned_gpu(const Shape& shape) {
  Tensor t = Tensor::empty(shape, gpu());
  poison(t);
  return t;
}

// The same host values on both devices.
struct Pair {
  Tensor host, device;
};
Pair pair_of(const Tensor& host) { return {host.clone(), host.to(gpu())}; }
Pair random_pair(const Shape& shape, uint64_t seed, float low = -1.0f, float high = 1.0f) {
  return pair_of(random_tensor(shape, seed, kCpu, low, high));
}

// Scratch memory for a CUDA reduction: a float tensor covering `bytes` (at least one element so
// that the pointer is never null).
Tensor workspace(size_t bytes) {
  return Tensor::empty({std::max<int64_t>(1, int64_t((bytes + 3) / 4))}, gpu());
}

// Reduction tolerance: both twins sum in double, CUB and the row kernels in a tree, the CPU in
// order, so they differ by the order of their roundings (and the GPU's fused multiply-adds).
double reduce_atol(int64_t n) { return 1e-4 * std::max(1.0, std::sqrt(double(n)) / 8.0); }

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

// =============================================================================================
// (a) Kernel level

class KernelParity : public testing::CudaTest {};

TEST_F(KernelParity, FillWritesEveryElement) {
  for (int64_t n : kSizes) {
    SCOPED_TRACE(n);
    Tensor y = poisoned_gpu({n});
    kg::fill(y.data(), n, 3.25f, stream());
    EXPECT_EQ(y.to_vector(), std::vector<float>(size_t(n), 3.25f));
    PoisonGuard poison_ints;  // int32 allocations start as 0xFFFFFFFF = -1
    Tensor ints = Tensor::empty({n}, gpu(), DType::kInt32);
    kg::fill_int32(ints.data_int32(), n, 7, stream());
    EXPECT_EQ(ints.to_int32_vector(), std::vector<int32_t>(size_t(n), 7));
  }
}

// A row's random inputs: its domain from the op table.
Pair row_pair(const kernels::UnaryOpInfo& row, int64_t n, uint64_t seed) {
  return random_pair({n}, seed, row.low, row.high);
}

// The GPU against the CPU for every row of the op table: bit-exact for the exact rows
// (ulps == 0), within twice the row's bound against float64 for the others (each side is within
// the bound).
TEST_F(KernelParity, UnaryEveryOpEverySize) {
  for (const kernels::UnaryOpInfo& row : kernels::kUnaryOps) {
    for (int64_t n : kSizes) {
      SCOPED_TRACE(std::string(row.name) + " n=" + std::to_string(n));
      const Pair x = row_pair(row, n, 100 + n);
      Tensor expected = Tensor::empty({n}, kCpu);
      kc::unary(row.op, x.host.data(), expected.data(), n);
      Tensor y = poisoned_gpu({n});
      kg::unary(row.op, x.device.data(), y.data(), n, stream());
      testing::expect_within_ulps(y.to_vector(), expected.to_vector(), 2 * row.ulps, 2 * row.atol,
                                  row.name);
    }
  }
}

// The special values bit for bit on every row: NaN payloads and signs, zeros' signs, infinities,
// subnormals, the largest floats (kernels/elementwise_ops.h's rules hold on both devices).
TEST_F(KernelParity, UnaryAndBackwardSpecialValuesAreBitExact) {
  const std::vector<float> specials = testing::special_values();
  const int64_t n = int64_t(specials.size());
  // dy: the specials again, reversed, so that NaN meets ordinary values and NaN.
  const std::vector<float> dys(specials.rbegin(), specials.rend());
  const Pair x = pair_of(Tensor::from_vector(specials, {n}, kCpu));
  const Pair dy = pair_of(Tensor::from_vector(dys, {n}, kCpu));
  for (const kernels::UnaryOpInfo& row : kernels::kUnaryOps) {
    SCOPED_TRACE(row.name);
    Tensor expected = Tensor::empty({n}, kCpu);
    kc::unary(row.op, x.host.data(), expected.data(), n);
    Tensor y = poisoned_gpu({n});
    kg::unary(row.op, x.device.data(), y.data(), n, stream());
    testing::expect_within_ulps(y.to_vector(), expected.to_vector(), 0, 0,
                                std::string(row.name) + " forward", specials);
    if (row.backward_ulps != 0) continue;  // transcendental backward: within ulps (below)
    Tensor dx_expected = Tensor::empty({n}, kCpu);
    kc::unary_backward(row.op, x.host.data(), expected.data(), dy.host.data(), dx_expected.data(),
                       n);
    Tensor dx = poisoned_gpu({n});
    kg::unary_backward(row.op, x.device.data(), y.data(), dy.device.data(), dx.data(), n, stream());
    testing::expect_within_ulps(dx.to_vector(), dx_expected.to_vector(), 0, 0,
                                std::string(row.name) + " backward", specials);
  }
  for (const kernels::BinaryOpInfo& row : kernels::kBinaryOps) {
    SCOPED_TRACE(row.name);
    for (Broadcast bc : {Broadcast::kNone, Broadcast::kScalar}) {
      Tensor expected = Tensor::empty({n}, kCpu);
      kc::binary(row.op, x.host.data(), dy.host.data() + (bc == Broadcast::kScalar ? 4 : 0),
                 expected.data(), 1, n, bc);
      Tensor y = poisoned_gpu({n});
      kg::binary(row.op, x.device.data(), dy.device.data() + (bc == Broadcast::kScalar ? 4 : 0),
                 y.data(), 1, n, bc, stream());
      testing::expect_within_ulps(y.to_vector(), expected.to_vector(), 0, 0, row.name, specials);
    }
    for (float s : {-0.0f, 0.0f, std::numeric_limits<float>::infinity(), specials[6], 3.0f}) {
      for (kernels::ScalarSide side : {kernels::ScalarSide::kRight, kernels::ScalarSide::kLeft}) {
        Tensor expected = Tensor::empty({n}, kCpu);
        kc::binary_scalar(row.op, x.host.data(), s, side, expected.data(), n);
        Tensor y = poisoned_gpu({n});
        kg::binary_scalar(row.op, x.device.data(), s, side, y.data(), n, stream());
        testing::expect_within_ulps(y.to_vector(), expected.to_vector(), 0, 0,
                                    std::string(row.name) + " scalar", specials);
      }
    }
  }
}

// Every row's backward kernel on awkward sizes, from the x and y the CPU computed (so that only
// the backward formula is compared): bit-exact where the row is, else within ulps.
TEST_F(KernelParity, UnaryBackwardEveryOpEverySize) {
  for (const kernels::UnaryOpInfo& row : kernels::kUnaryOps) {
    for (int64_t n : kSizes) {
      SCOPED_TRACE(std::string(row.name) + " n=" + std::to_string(n));
      std::vector<float> xs = random_tensor({n}, 140, kCpu, row.low, row.high).to_vector();
      if (!std::isnan(row.kink)) {
        for (size_t i = 0; i < xs.size(); i += 5) xs[i] = row.kink;  // the kink's own side
      }
      const Pair x = pair_of(Tensor::from_vector(xs, {n}, kCpu));
      Tensor y_host = Tensor::empty({n}, kCpu);
      kc::unary(row.op, x.host.data(), y_host.data(), n);
      const Pair y = pair_of(y_host);
      const Pair dy = random_pair({n}, 141);
      Tensor expected = Tensor::empty({n}, kCpu);
      kc::unary_backward(row.op, x.host.data(), y.host.data(), dy.host.data(), expected.data(), n);
      Tensor dx = poisoned_gpu({n});
      kg::unary_backward(row.op, x.device.data(), y.device.data(), dy.device.data(), dx.data(), n,
                         stream());
      // Bit-exact where the backward is arithmetic on x or y; the others call exp/erf/tanh.
      testing::expect_within_ulps(dx.to_vector(), expected.to_vector(), row.backward_ulps,
                                  row.backward_ulps ? 4 * row.atol + 1e-7 : 0.0, row.name);
    }
  }
}

TEST_F(KernelParity, UnaryAndBinaryOnMisalignedPointers) {
  // One float past an aligned allocation: the float4 path must not be taken, or must cope.
  const int64_t n = 1031;
  const Pair x = random_pair({n + 1}, 110);
  const Pair b = random_pair({n + 1}, 111, 0.5f, 1.5f);
  Tensor expected = Tensor::empty({n}, kCpu);
  kc::unary(UnaryOp::kTanh, x.host.data() + 1, expected.data(), n);
  Tensor y = poisoned_gpu({n + 1});
  kg::unary(UnaryOp::kTanh, x.device.data() + 1, y.data() + 1, n, stream());
  std::vector<float> got = y.to_vector();
  EXPECT_TRUE(std::isnan(got[0])) << "wrote before the output";
  expect_close(std::vector<float>(got.begin() + 1, got.end()), expected.to_vector(), 1e-5, 1e-5,
               "tanh misaligned");

  kc::binary(BinaryOp::kDiv, x.host.data() + 1, b.host.data() + 1, expected.data(), 1, n,
             Broadcast::kNone);
  Tensor z = poisoned_gpu({n + 1});
  kg::binary(BinaryOp::kDiv, x.device.data() + 1, b.device.data() + 1, z.data() + 1, 1, n,
             Broadcast::kNone, stream());
  got = z.to_vector();
  EXPECT_TRUE(std::isnan(got[0])) << "wrote before the output";
  expect_close(std::vector<float>(got.begin() + 1, got.end()), expected.to_vector(), 1e-5, 1e-5,
               "div misaligned");
}

TEST_F(KernelParity, BinaryEveryOpEveryBroadcast) {
  std::vector<RowsCols> shapes = kRowShapes;
  shapes.push_back({1, kBig});
  shapes.push_back({1031, 1017});
  const BinaryOp ops_list[] = {BinaryOp::kAdd, BinaryOp::kSub, BinaryOp::kMul, BinaryOp::kDiv};
  const Broadcast broadcasts[] = {Broadcast::kNone, Broadcast::kScalar, Broadcast::kRow,
                                  Broadcast::kColumn};
  for (const RowsCols& s : shapes) {
    const int64_t n = s.rows * s.cols;
    const Pair a = random_pair({n}, 120 + n, -2.0f, 2.0f);
    for (Broadcast bc : broadcasts) {
      const int64_t b_count = bc == Broadcast::kNone     ? n
                              : bc == Broadcast::kScalar ? 1
                              : bc == Broadcast::kRow    ? s.cols
                                                         : s.rows;
      const Pair b = random_pair({b_count}, 121 + n, 0.5f, 1.5f);
      for (BinaryOp op : ops_list) {
        SCOPED_TRACE(shape_name(s.rows, s.cols) + " op " + std::to_string(int(op)) + " broadcast " +
                     std::to_string(int(bc)));
        Tensor expected = Tensor::empty({n}, kCpu);
        kc::binary(op, a.host.data(), b.host.data(), expected.data(), s.rows, s.cols, bc);
        Tensor y = poisoned_gpu({n});
        kg::binary(op, a.device.data(), b.device.data(), y.data(), s.rows, s.cols, bc, stream());
        expect_close(y.to_vector(), expected.to_vector(), 1e-5, 1e-5, "binary");
      }
    }
  }
}

TEST_F(KernelParity, BinaryInPlaceOverA) {
  // y may alias a (kernels/elementwise.h).
  for (Broadcast bc : {Broadcast::kNone, Broadcast::kRow, Broadcast::kColumn}) {
    SCOPED_TRACE(int(bc));
    const int64_t rows = 257, cols = 10;
    const Pair a = random_pair({rows * cols}, 130);
    const int64_t b_count = bc == Broadcast::kNone  ? rows * cols
                            : bc == Broadcast::kRow ? cols
                                                    : rows;
    const Pair b = random_pair({b_count}, 131);
    Tensor expected = Tensor::empty({rows * cols}, kCpu);
    kc::binary(BinaryOp::kMul, a.host.data(), b.host.data(), expected.data(), rows, cols, bc);
    kg::binary(BinaryOp::kMul, a.device.data(), b.device.data(), a.device.data(), rows, cols, bc,
               stream());
    expect_close(a.device.to_vector(), expected.to_vector(), 1e-6, 1e-6, "in place");
  }
}

const ReduceOp kReduceOps[] = {ReduceOp::kSum, ReduceOp::kMean, ReduceOp::kMax,
                               ReduceOp::kSumSquares};

TEST_F(KernelParity, ReduceAllEveryOpEverySize) {
  for (int64_t n : kSizes) {
    const Pair x = random_pair({n}, 150 + n);
    for (ReduceOp op : kReduceOps) {
      SCOPED_TRACE("n=" + std::to_string(n) + " op " + std::to_string(int(op)));
      float expected = 0;
      kc::reduce_all(op, x.host.data(), n, &expected);
      const size_t bytes = kg::reduce_all_workspace_bytes(op, n);
      Tensor scratch = workspace(bytes);
      Tensor out = poisoned_gpu({1});
      kg::reduce_all(op, x.device.data(), n, out.data(), scratch.raw_data(), bytes, stream());
      double atol = op == ReduceOp::kMax ? 0.0 : reduce_atol(n);
      if (op == ReduceOp::kMean && n > 0) atol /= double(n);
      expect_close(out.to_vector(), {expected}, atol, op == ReduceOp::kMax ? 0.0 : 1e-4,
                   "reduce_all");
    }
  }
}

TEST_F(KernelParity, ReduceAllRefusesATooSmallWorkspace) {
  const int64_t n = 1031;
  const size_t bytes = kg::reduce_all_workspace_bytes(ReduceOp::kSum, n);
  if (bytes == 0) GTEST_SKIP() << "CUB needs no workspace here";
  const Pair x = random_pair({n}, 155);
  Tensor out = poisoned_gpu({1});
  Tensor scratch = workspace(bytes);
  expect_error(
      [&] {
        kg::reduce_all(ReduceOp::kSum, x.device.data(), n, out.data(), scratch.raw_data(),
                       bytes - 1, stream());
      },
      {"reduce_all", "workspace"});
}

TEST_F(KernelParity, ReduceRowsEveryOpEveryShape) {
  std::vector<RowsCols> shapes = kRowShapes;
  shapes.push_back({3, 0});  // empty rows: 0, NaN, -inf, 0
  shapes.push_back({97, 33});
  for (const RowsCols& s : shapes) {
    const Pair x = random_pair({s.rows * s.cols}, 160 + s.rows * 7 + s.cols);
    for (ReduceOp op : kReduceOps) {
      SCOPED_TRACE(shape_name(s.rows, s.cols) + " op " + std::to_string(int(op)));
      Tensor expected = Tensor::empty({s.rows}, kCpu);
      kc::reduce_rows(op, x.host.data(), s.rows, s.cols, expected.data());
      Tensor out = poisoned_gpu({s.rows});
      kg::reduce_rows(op, x.device.data(), s.rows, s.cols, out.data(), stream());
      double atol = op == ReduceOp::kMax ? 0.0 : reduce_atol(s.cols);
      if (op == ReduceOp::kMean && s.cols > 0) atol /= double(s.cols);
      expect_close(out.to_vector(), expected.to_vector(), atol, op == ReduceOp::kMax ? 0.0 : 1e-4,
                   "reduce_rows");
    }
  }
}

TEST_F(KernelParity, SumColumnsOverwriteAndAdd) {
  std::vector<RowsCols> shapes = kRowShapes;
  shapes.push_back({0, 0});
  shapes.push_back({70001, 15});  // many row chunks: the two-pass path
  shapes.push_back({kBig, 1});
  for (const RowsCols& s : shapes) {
    const Pair x = random_pair({s.rows * s.cols}, 170 + s.rows + s.cols);
    const double atol = reduce_atol(s.rows);
    const size_t bytes = kg::sum_columns_workspace_bytes(s.rows, s.cols);
    {
      SCOPED_TRACE(shape_name(s.rows, s.cols) + " overwrite");
      Tensor expected = Tensor::empty({s.cols}, kCpu);
      kc::sum_columns(x.host.data(), s.rows, s.cols, expected.data(), Accumulate::kOverwrite);
      Tensor out = poisoned_gpu({s.cols});
      Tensor scratch = workspace(bytes);
      kg::sum_columns(x.device.data(), s.rows, s.cols, out.data(), Accumulate::kOverwrite,
                      scratch.raw_data(), bytes, stream());
      expect_close(out.to_vector(), expected.to_vector(), atol, 1e-4, "sum_columns overwrite");
    }
    {
      SCOPED_TRACE(shape_name(s.rows, s.cols) + " add");
      const Pair start = random_pair({s.cols}, 171);
      Tensor expected = start.host.clone();
      kc::sum_columns(x.host.data(), s.rows, s.cols, expected.data(), Accumulate::kAdd);
      Tensor out = start.device.clone();
      Tensor scratch = workspace(bytes);
      kg::sum_columns(x.device.data(), s.rows, s.cols, out.data(), Accumulate::kAdd,
                      scratch.raw_data(), bytes, stream());
      expect_close(out.to_vector(), expected.to_vector(), atol, 1e-4, "sum_columns add");
    }
  }
}

TEST_F(KernelParity, ArgmaxRowsWithTies) {
  std::vector<RowsCols> shapes = kRowShapes;
  shapes.push_back({1031, 1});
  for (const RowsCols& s : shapes) {
    SCOPED_TRACE(shape_name(s.rows, s.cols));
    // Quantised to quarters, so most rows hold tied maxima: the first one must win.
    std::vector<float> values = random_tensor({s.rows * s.cols}, 180, kCpu, -2, 2).to_vector();
    for (float& v : values) v = std::round(v * 2.0f) / 4.0f;
    const Pair x = pair_of(Tensor::from_vector(values, {s.rows * s.cols}, kCpu));
    std::vector<int32_t> expected(size_t(s.rows));
    kc::argmax_rows(x.host.data(), s.rows, s.cols, expected.data());
    PoisonGuard poison_ints;
    Tensor out = Tensor::empty({s.rows}, gpu(), DType::kInt32);
    kg::argmax_rows(x.device.data(), s.rows, s.cols, out.data_int32(), stream());
    EXPECT_EQ(out.to_int32_vector(), expected);
  }
}

// The inputs where the twins once disagreed (issue 19), each held to the CPU twin bit for bit: the
// results are exact in double, so accumulation order cannot move them.
// Sums accumulate in double on both devices, rounding to float once.
TEST_F(KernelParity, SumsBeyondFloatRangeInTheMiddleStayFinite) {
  const std::vector<float> pair = {3e38f, 3e38f}, triple = {3e38f, 3e38f, -3e38f};
  const Pair x2 = pair_of(Tensor::from_vector(pair, {2}, kCpu));
  const Pair x3 = pair_of(Tensor::from_vector(triple, {3}, kCpu));
  const auto rows = [&](ReduceOp op, const Pair& x, int64_t cols) {
    float expected = kNaN;
    kc::reduce_rows(op, x.host.data(), 1, cols, &expected);
    Tensor out = poisoned_gpu({1});
    kg::reduce_rows(op, x.device.data(), 1, cols, out.data(), stream());
    EXPECT_TRUE(same_bits(out.to_vector(), {expected})) << out.to_vector()[0] << " vs " << expected;
    EXPECT_EQ(expected, 3e38f);
  };
  const auto all = [&](ReduceOp op, const Pair& x, int64_t n) {
    float expected = kNaN;
    kc::reduce_all(op, x.host.data(), n, &expected);
    const size_t bytes = kg::reduce_all_workspace_bytes(op, n);
    Tensor scratch = workspace(bytes);
    Tensor out = poisoned_gpu({1});
    kg::reduce_all(op, x.device.data(), n, out.data(), scratch.raw_data(), bytes, stream());
    EXPECT_TRUE(same_bits(out.to_vector(), {expected})) << out.to_vector()[0] << " vs " << expected;
    EXPECT_EQ(expected, 3e38f);
  };
  rows(ReduceOp::kMean, x2, 2);
  rows(ReduceOp::kSum, x3, 3);
  all(ReduceOp::kMean, x2, 2);
  all(ReduceOp::kSum, x3, 3);
  // Down a column too (the bias gradient), on the one-pass and the two-pass paths.
  for (int64_t rows_count : {int64_t(3), int64_t(70001)}) {
    SCOPED_TRACE("sum_columns rows " + std::to_string(rows_count));
    std::vector<float> column(size_t(rows_count), 0.0f);
    column[0] = 3e38f;
    column[1] = 3e38f;
    column[size_t(rows_count) - 1] = -3e38f;
    const Pair x = pair_of(Tensor::from_vector(column, {rows_count}, kCpu));
    float expected = kNaN;
    kc::sum_columns(x.host.data(), rows_count, 1, &expected, Accumulate::kOverwrite);
    const size_t bytes = kg::sum_columns_workspace_bytes(rows_count, 1);
    Tensor scratch = workspace(bytes);
    Tensor out = poisoned_gpu({1});
    kg::sum_columns(x.device.data(), rows_count, 1, out.data(), Accumulate::kOverwrite,
                    scratch.raw_data(), bytes, stream());
    EXPECT_TRUE(same_bits(out.to_vector(), {expected})) << out.to_vector()[0] << " vs " << expected;
    EXPECT_EQ(expected, 3e38f);
  }
}

TEST_F(KernelParity, L2LossBeyondFloatRangeInTheMiddleStaysFinite) {
  {
    // (2e19 - 0)^2 = 4e38: beyond float, not double.
    const Pair pred = pair_of(Tensor::from_vector({2e19f}, {1}, kCpu));
    const Pair label = pair_of(Tensor::zeros({1}, kCpu));
    float expected = kNaN;
    kc::l2_loss_forward(pred.host.data(), label.host.data(), 1, 1, &expected);
    Tensor out = poisoned_gpu({1});
    kg::l2_loss_forward(pred.device.data(), label.device.data(), 1, 1, out.data(), stream());
    EXPECT_TRUE(std::isfinite(expected));
    EXPECT_TRUE(same_bits(out.to_vector(), {expected})) << out.to_vector()[0] << " vs " << expected;
  }
  {
    // 3e38 - (-3e38) = 6e38 in double; / 4 columns back in float range.
    const Pair pred = pair_of(Tensor::from_vector({3e38f, 1.0f, -2.0f, 0.5f}, {1, 4}, kCpu));
    const Pair label = pair_of(Tensor::from_vector({-3e38f, 0.0f, 1.0f, 0.5f}, {1, 4}, kCpu));
    const Pair dloss = pair_of(Tensor::ones({1}, kCpu));
    std::vector<float> expected(4, kNaN);
    kc::l2_loss_backward(pred.host.data(), label.host.data(), dloss.host.data(), 1, 4,
                         expected.data());
    Tensor out = poisoned_gpu({1, 4});
    kg::l2_loss_backward(pred.device.data(), label.device.data(), dloss.device.data(), 1, 4,
                         out.data(), stream());
    EXPECT_TRUE(std::isfinite(expected[0]));
    EXPECT_TRUE(same_bits(out.to_vector(), expected));
  }
}

// +0 is above -0 on both devices whatever the order or the team that combines them, and argmax
// points at the element max returns.
TEST_F(KernelParity, MaxOfSignedZerosIsPositiveZero) {
  struct Case {
    int64_t cols, positive_at;  // -0 everywhere else; -1: nowhere
  };
  // Two elements either way round; a warp-wide row and a block-wide row, +0 on another lane.
  for (const Case c : {Case{2, 1}, Case{2, 0}, Case{64, 37}, Case{300, 299}, Case{300, -1}}) {
    SCOPED_TRACE("cols " + std::to_string(c.cols) + " +0 at " + std::to_string(c.positive_at));
    std::vector<float> values(size_t(c.cols), -0.0f);
    if (c.positive_at >= 0) values[size_t(c.positive_at)] = 0.0f;
    const Pair x = pair_of(Tensor::from_vector(values, {1, c.cols}, kCpu));
    float expected = kNaN;
    kc::reduce_rows(ReduceOp::kMax, x.host.data(), 1, c.cols, &expected);
    EXPECT_EQ(std::signbit(expected), c.positive_at < 0);
    Tensor out = poisoned_gpu({1});
    kg::reduce_rows(ReduceOp::kMax, x.device.data(), 1, c.cols, out.data(), stream());
    EXPECT_TRUE(same_bits(out.to_vector(), {expected})) << "reduce_rows";
    float expected_all = kNaN;
    kc::reduce_all(ReduceOp::kMax, x.host.data(), c.cols, &expected_all);
    EXPECT_TRUE(same_bits({expected_all}, {expected}));
    const size_t bytes = kg::reduce_all_workspace_bytes(ReduceOp::kMax, c.cols);
    Tensor scratch = workspace(bytes);
    kg::reduce_all(ReduceOp::kMax, x.device.data(), c.cols, out.data(), scratch.raw_data(), bytes,
                   stream());
    EXPECT_TRUE(same_bits(out.to_vector(), {expected})) << "reduce_all";
    int32_t expected_index = -1;
    kc::argmax_rows(x.host.data(), 1, c.cols, &expected_index);
    EXPECT_EQ(expected_index, std::max<int64_t>(c.positive_at, 0));
    PoisonGuard poison_ints;
    Tensor index = Tensor::empty({1}, gpu(), DType::kInt32);
    kg::argmax_rows(x.device.data(), 1, c.cols, index.data_int32(), stream());
    EXPECT_EQ(index.to_int32_vector(), std::vector<int32_t>{expected_index});
  }
}

TEST_F(KernelParity, SoftmaxRowsAndBackward) {
  std::vector<RowsCols> shapes = kRowShapes;
  shapes.push_back({4, 0});
  for (const RowsCols& s : shapes) {
    SCOPED_TRACE(shape_name(s.rows, s.cols));
    std::vector<float> values = random_tensor({s.rows * s.cols}, 190, kCpu, -8, 8).to_vector();
    if (s.rows > 1 && s.cols > 1) {
      values[0] = 1000.0f;  // a huge row must stay finite
      values[1] = 1000.0f;
    }
    const Pair x = pair_of(Tensor::from_vector(values, {s.rows * s.cols}, kCpu));
    const double rtol = 1e-5 * std::max(1.0, std::sqrt(double(s.cols)) / 8.0);
    Tensor expected = Tensor::empty({s.rows * s.cols}, kCpu);
    kc::softmax_rows(x.host.data(), s.rows, s.cols, expected.data());
    Tensor y = poisoned_gpu({s.rows * s.cols});
    kg::softmax_rows(x.device.data(), s.rows, s.cols, y.data(), stream());
    expect_close(y.to_vector(), expected.to_vector(), 1e-6, rtol, "softmax_rows");

    // The backward from the same (CPU) probabilities on both sides.
    const Pair probs = pair_of(expected);
    const Pair dy = random_pair({s.rows * s.cols}, 191);
    Tensor expected_dx = Tensor::empty({s.rows * s.cols}, kCpu);
    kc::softmax_backward_rows(probs.host.data(), dy.host.data(), s.rows, s.cols,
                              expected_dx.data());
    Tensor dx = poisoned_gpu({s.rows * s.cols});
    kg::softmax_backward_rows(probs.device.data(), dy.device.data(), s.rows, s.cols, dx.data(),
                              stream());
    expect_close(dx.to_vector(), expected_dx.to_vector(), 1e-6, rtol, "softmax_backward_rows");
  }
}

TEST_F(KernelParity, SoftmaxCrossEntropyWithOneInvalidLabelRow) {
  for (const RowsCols& s : kRowShapes) {
    SCOPED_TRACE(shape_name(s.rows, s.cols));
    const Pair logits = random_pair({s.rows * s.cols}, 200, -5, 5);
    std::vector<int32_t> label_values;
    for (int64_t r = 0; r < s.rows; ++r) label_values.push_back(int32_t((r * 7 + 3) % s.cols));
    // The last row's label is out of range: NaN in that row on both devices.
    if (s.rows > 1) label_values.back() = int32_t(s.cols);
    if (s.rows > 2) label_values[1] = -1;
    const Tensor labels_host = Tensor::from_int32(label_values, {s.rows}, kCpu);
    const Tensor labels_gpu = labels_host.to(gpu());
    const double scale = std::max(1.0, std::sqrt(double(s.cols)) / 8.0);

    Tensor loss_expected = Tensor::empty({s.rows}, kCpu);
    Tensor probs_expected = Tensor::empty({s.rows * s.cols}, kCpu);
    kc::softmax_xent_forward(logits.host.data(), labels_host.data_int32(), s.rows, s.cols,
                             loss_expected.data(), probs_expected.data());
    Tensor loss = poisoned_gpu({s.rows});
    Tensor probs = poisoned_gpu({s.rows * s.cols});
    kg::softmax_xent_forward(logits.device.data(), labels_gpu.data_int32(), s.rows, s.cols,
                             loss.data(), probs.data(), stream());
    const std::vector<float> loss_values = loss_expected.to_vector();
    if (s.rows > 1) {
      EXPECT_TRUE(std::isnan(loss_values.back())) << "CPU, invalid label";
    }
    expect_close(loss.to_vector(), loss_values, 1e-5 * scale, 1e-5 * scale, "xent loss");
    expect_close(probs.to_vector(), probs_expected.to_vector(), 1e-6, 1e-5 * scale, "xent probs");

    const Pair dloss = random_pair({s.rows}, 201);
    const Pair saved_probs = pair_of(probs_expected);
    Tensor dlogits_expected = Tensor::empty({s.rows * s.cols}, kCpu);
    kc::softmax_xent_backward(saved_probs.host.data(), labels_host.data_int32(), dloss.host.data(),
                              s.rows, s.cols, dlogits_expected.data());
    Tensor dlogits = poisoned_gpu({s.rows * s.cols});
    kg::softmax_xent_backward(saved_probs.device.data(), labels_gpu.data_int32(),
                              dloss.device.data(), s.rows, s.cols, dlogits.data(), stream());
    expect_close(dlogits.to_vector(), dlogits_expected.to_vector(), 1e-6, 1e-5, "xent backward");
  }
}

TEST_F(KernelParity, GemmAllTransposesOverwriteAndAdd) {
  struct Mnk {
    int64_t m, n, k;
  };
  const Mnk sizes[] = {{1, 1, 1}, {3, 5, 7}, {127, 33, 65}, {513, 257, 129}, {3, 5, 0}};
  for (const Mnk& s : sizes) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        for (Accumulate acc : {Accumulate::kOverwrite, Accumulate::kAdd}) {
          SCOPED_TRACE("m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) +
                       " k=" + std::to_string(s.k) + (ta ? " A^T" : " A") + (tb ? " B^T" : " B") +
                       (acc == Accumulate::kAdd ? " add" : " overwrite"));
          const Pair a = random_pair({s.m * s.k}, 210 + s.m);
          const Pair b = random_pair({s.k * s.n}, 211 + s.n);
          const Pair c0 = random_pair({s.m * s.n}, 212);
          kernels::RowMajorGemm request;
          request.m = s.m;
          request.n = s.n;
          request.k = s.k;
          request.transpose_a = ta ? Transpose::kYes : Transpose::kNo;
          request.transpose_b = tb ? Transpose::kYes : Transpose::kNo;
          request.alpha = acc == Accumulate::kAdd ? 0.5f : 1.0f;
          request.accumulate = acc;

          Tensor expected = c0.host.clone();
          request.a = a.host.data();
          request.b = b.host.data();
          request.c = expected.data();
          kc::gemm(kernels::plan_gemm(request));

          Tensor c = acc == Accumulate::kAdd ? c0.device.clone() : poisoned_gpu({s.m * s.n});
          request.a = a.device.data();
          request.b = b.device.data();
          request.c = c.data();
          kg::gemm(kernels::plan_gemm(request), cuda::BlasLease(gpu()).handle());
          expect_close(c.to_vector(), expected.to_vector(), 1e-4, 1e-4, "gemm");
        }
      }
    }
  }
}

TEST_F(KernelParity, UniformIsBitIdenticalAndNormalAgreesToRoundoff) {
  for (int64_t n : kSizes) {
    for (uint64_t seed : {uint64_t(0), uint64_t(12345), uint64_t(0xDEADBEEFCAFEull)}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " seed=" + std::to_string(seed));
      Tensor expected = Tensor::empty({n}, kCpu);
      kc::uniform(expected.data(), n, seed, -3.0f, 5.0f);
      Tensor y = poisoned_gpu({n});
      kg::uniform(y.data(), n, seed, -3.0f, 5.0f, stream());
      EXPECT_TRUE(same_bits(y.to_vector(), expected.to_vector())) << "uniform differs";

      kc::normal(expected.data(), n, seed, 0.5f, 2.0f);
      Tensor z = poisoned_gpu({n});
      kg::normal(z.data(), n, seed, 0.5f, 2.0f, stream());
      expect_close(z.to_vector(), expected.to_vector(), 2e-6, 1e-5, "normal");
    }
  }
}

TEST_F(KernelParity, SgdUpdates) {
  for (int64_t n : kSizes) {
    // -0.5 and NaN: out of range, refused by SGD itself (blocks/optimizer.cpp) for both devices;
    // the kernels compute what the config says, the same on both.
    for (float momentum : {0.0f, 0.9f, -0.5f, kNaN}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " momentum=" + std::to_string(momentum));
      kernels::SgdConfig config;
      config.learning_rate = 0.1f;
      config.momentum = momentum;
      config.weight_decay = 0.01f;
      config.grad_scale = 0.25f;
      Pair w = random_pair({n}, 220);
      const Pair g = random_pair({n}, 221);
      Pair v = random_pair({n}, 222, -0.1f, 0.1f);
      for (int step = 0; step < 2; ++step) {
        const bool velocity = momentum != 0.0f;
        kc::sgd_update(w.host.data(), g.host.data(), velocity ? v.host.data() : nullptr, n, config);
        kg::sgd_update(w.device.data(), g.device.data(), velocity ? v.device.data() : nullptr, n,
                       config, stream());
      }
      expect_close(w.device.to_vector(), w.host.to_vector(), 1e-6, 1e-5, "weight");
      expect_close(v.device.to_vector(), v.host.to_vector(), 1e-6, 1e-5, "velocity");
    }
  }
}

TEST_F(KernelParity, AdamUpdates) {
  struct Case {
    int64_t n;
    float beta1;
  };
  std::vector<Case> cases;
  for (int64_t n : kSizes) cases.push_back({n, 0.9f});
  // beta1 = 1: refused by Adam itself for both devices; the kernels compute the same NaNs (0 / 0).
  cases.push_back({97, 1.0f});
  for (const auto& [n, beta1] : cases) {
    SCOPED_TRACE(std::to_string(n) + " beta1 " + std::to_string(beta1));
    kernels::AdamConfig config;
    config.beta1 = beta1;
    config.learning_rate = 0.01f;
    config.weight_decay = 0.001f;
    config.grad_scale = 0.5f;
    Pair w = random_pair({n}, 230);
    Pair m = pair_of(Tensor::zeros({n}, kCpu));
    Pair v = pair_of(Tensor::zeros({n}, kCpu));
    for (int64_t step = 1; step <= 3; ++step) {
      const Pair g = random_pair({n}, 231 + uint64_t(step));
      config.step = step;
      kc::adam_update(w.host.data(), g.host.data(), m.host.data(), v.host.data(), n, config);
      kg::adam_update(w.device.data(), g.device.data(), m.device.data(), v.device.data(), n, config,
                      stream());
    }
    expect_close(w.device.to_vector(), w.host.to_vector(), 1e-6, 1e-5, "weight");
    expect_close(m.device.to_vector(), m.host.to_vector(), 1e-6, 1e-5, "mean");
    expect_close(v.device.to_vector(), v.host.to_vector(), 1e-7, 1e-5, "variance");
  }
}

// =============================================================================================
// (b) Op level: forward and gradients on both devices, every allocation poisoned

class OpParity : public testing::CudaTest {
 protected:
  void SetUp() override {
    testing::CudaTest::SetUp();
    if (IsSkipped()) return;
    poison_ = std::make_unique<PoisonGuard>();
  }
  void TearDown() override { poison_.reset(); }

 private:
  std::unique_ptr<PoisonGuard> poison_;
};

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

struct Tolerance {
  double atol = 1e-5, rtol = 1e-5;
};

// Runs `f` on `inputs` (CPU tensors; int32 ones are passed through and never differentiated) on
// both devices. Compares the outputs, then runs backward with the same random head gradient on
// both and compares every float input's gradient.
void expect_op_parity(const std::string& name, const OpFn& f, const std::vector<Tensor>& inputs,
                      Tolerance forward = {}, Tolerance backward = {}, bool differentiable = true) {
  SCOPED_TRACE(name);
  std::vector<Tensor> on_cpu, on_gpu;
  for (const Tensor& input : inputs) {
    on_cpu.push_back(input.clone());
    on_gpu.push_back(input.to(gpu()));
    if (differentiable && input.dtype() == DType::kFloat32) {
      on_cpu.back().attach_grad();
      on_gpu.back().attach_grad();
    }
  }
  autograd::RecordScope record;
  Tensor y_cpu, y_gpu;
  // An op that throws fails this case only, so that the cases after it still run.
  try {
    y_cpu = f(on_cpu);
    y_gpu = f(on_gpu);
  } catch (const Error& error) {
    ADD_FAILURE() << name << ": forward threw: " << error.what();
    return;
  }
  ASSERT_EQ(y_gpu.device(), gpu()) << name << ": result left the GPU";
  ASSERT_EQ(shape_str(y_gpu.shape()), shape_str(y_cpu.shape()));
  if (y_cpu.dtype() == DType::kInt32) {
    EXPECT_EQ(y_gpu.to_int32_vector(), y_cpu.to_int32_vector()) << name;
    return;
  }
  expect_close(y_gpu.to_vector(), y_cpu.to_vector(), forward.atol, forward.rtol, name + " forward");
  if (!differentiable) return;
  const Tensor head = random_tensor(y_cpu.shape(), 999, kCpu);
  try {
    y_cpu.backward(head);
    y_gpu.backward(head.to(gpu()));
  } catch (const Error& error) {
    ADD_FAILURE() << name << ": backward threw: " << error.what();
    return;
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].dtype() != DType::kFloat32) continue;
    ASSERT_TRUE(on_gpu[i].grad().defined());
    expect_close(on_gpu[i].grad().to_vector(), on_cpu[i].grad().to_vector(), backward.atol,
                 backward.rtol, name + " gradient of input " + std::to_string(i));
  }
}

OpFn unary_fn(Tensor (*op)(const Tensor&)) {
  return [op](const std::vector<Tensor>& in) { return op(in[0]); };
}

TEST_F(OpParity, UnaryOpsForwardAndBackward) {
  struct Case {
    std::string name;
    OpFn f;
    float low, high;
    Tolerance tolerance;
  };
  std::vector<Case> cases;
  for (const kernels::UnaryOpInfo& row : kernels::kUnaryOps) {
    const UnaryOp op = row.op;
    // Exact rows agree bit for bit; these tolerances cover the transcendental ones.
    cases.push_back({row.name,
                     [op](const std::vector<Tensor>& in) { return ops::unary(op, in[0]); }, row.low,
                     row.high, row.ulps == 0 ? Tolerance{0, 0} : Tolerance{}});
  }
  cases.push_back({"add_scalar",
                   [](const std::vector<Tensor>& in) { return ops::add_scalar(in[0], 0.5f); },
                   -3.0f, 3.0f, Tolerance{0, 0}});
  cases.push_back({"mul_scalar",
                   [](const std::vector<Tensor>& in) { return ops::mul_scalar(in[0], -1.5f); },
                   -3.0f, 3.0f, Tolerance{0, 0}});
  cases.push_back({"div_scalar",
                   [](const std::vector<Tensor>& in) { return ops::div_scalar(in[0], 3.0f); },
                   -3.0f, 3.0f, Tolerance{0, 0}});
  cases.push_back({"rsub_scalar",
                   [](const std::vector<Tensor>& in) { return ops::rsub_scalar(2.0f, in[0]); },
                   -3.0f, 3.0f, Tolerance{0, 0}});
  for (const Shape& shape : {Shape{0}, Shape{1}, Shape{7}, Shape{33, 97}, Shape{kBig}}) {
    for (const Case& c : cases) {
      const Tensor x = random_tensor(shape, 300, kCpu, c.low, c.high);
      // The head gradient is random: backward formulas round like the forward ones.
      expect_op_parity(c.name + " " + shape_str(shape), c.f, {x}, c.tolerance,
                       c.tolerance.atol == 0 ? Tolerance{0, 0} : Tolerance{1e-5, 1e-5});
    }
  }
  const Tensor x = random_tensor({1031}, 301, kCpu);
  const Tensor dy = random_tensor({1031}, 302, kCpu);
  expect_op_parity(
      "relu_backward",
      [](const std::vector<Tensor>& in) { return ops::relu_backward(in[0], in[1]); }, {x, dy}, {},
      {}, /*differentiable=*/false);
}

TEST_F(OpParity, BinaryOpsEveryBroadcastBothGradients) {
  const std::vector<Shape> b_shapes = {{257, 10}, {1}, {}, {10}, {1, 10}, {257, 1}};
  using Binary = Tensor (*)(const Tensor&, const Tensor&);
  const std::pair<const char*, Binary> binaries[] = {
      {"add", ops::add}, {"sub", ops::sub}, {"mul", ops::mul}, {"div", ops::div}};
  const Tensor a = random_tensor({257, 10}, 310, kCpu, -2.0f, 2.0f);
  for (const auto& [name, op] : binaries) {
    for (const Shape& b_shape : b_shapes) {
      const Tensor b = random_tensor(b_shape, 311, kCpu, 0.5f, 1.5f);
      // Broadcast operands collect sums over up to 257 elements in their gradient.
      expect_op_parity(std::string(name) + " b " + shape_str(b_shape),
                       [op = op](const std::vector<Tensor>& in) { return op(in[0], in[1]); },
                       {a, b}, {}, {1e-4, 1e-4});
      if (std::string(name) == "add" || std::string(name) == "mul") {
        expect_op_parity(std::string(name) + " commuted " + shape_str(b_shape),
                         [op = op](const std::vector<Tensor>& in) { return op(in[1], in[0]); },
                         {a, b}, {}, {1e-4, 1e-4});
      }
    }
  }
  expect_op_parity(
      "bias_add", [](const std::vector<Tensor>& in) { return ops::bias_add(in[0], in[1]); },
      {random_tensor({1031, 3}, 312, kCpu), random_tensor({3}, 313, kCpu)}, {}, {1e-4, 1e-4});
}

TEST_F(OpParity, ReductionsForwardAndBackward) {
  for (const Shape& shape : {Shape{0}, Shape{1}, Shape{5, 1025}, Shape{1031, 3}, Shape{kBig}}) {
    const int64_t n = checked_numel(shape, "test");
    const Tensor x = random_tensor(shape, 320, kCpu);
    const Tolerance whole{reduce_atol(n), 1e-4};
    expect_op_parity("sum " + shape_str(shape), unary_fn(ops::sum), {x}, whole);
    if (n > 0) expect_op_parity("mean " + shape_str(shape), unary_fn(ops::mean), {x}, whole);
    expect_op_parity("sum_squares " + shape_str(shape), unary_fn(ops::sum_squares), {x}, whole);
    if (n > 0) expect_op_parity("norm " + shape_str(shape), unary_fn(ops::norm), {x}, whole);
    // An empty tensor has no maximum: max refuses it (Reliability.EmptyMaximaAreRefused).
    if (n > 0)
      expect_op_parity("max " + shape_str(shape), unary_fn(ops::max), {x}, {0, 0}, {}, false);
  }
  for (const Shape& shape : {Shape{257, 10}, Shape{2, 4099}, Shape{4, 6, 33}, Shape{3, 0}}) {
    const Tensor x = random_tensor(shape, 321, kCpu);
    const Tolerance rows{reduce_atol(shape.back()), 1e-4};
    expect_op_parity("sum_rows " + shape_str(shape), unary_fn(ops::sum_rows), {x}, rows);
    expect_op_parity("mean_rows " + shape_str(shape), unary_fn(ops::mean_rows), {x}, rows);
    expect_op_parity("sum_squares_rows " + shape_str(shape), unary_fn(ops::sum_squares_rows), {x},
                     rows);
    if (shape.back() > 0) {  // rows of length 0 have no maximum: refused
      expect_op_parity("max_rows " + shape_str(shape), unary_fn(ops::max_rows), {x}, {0, 0}, {},
                       false);
    }
  }
  for (const Shape& shape : {Shape{1031, 3}, Shape{70001, 15}, Shape{0, 4}}) {
    const Tensor x = random_tensor(shape, 322, kCpu);
    expect_op_parity("sum_columns " + shape_str(shape), unary_fn(ops::sum_columns), {x},
                     {reduce_atol(shape[0]), 1e-4});
  }
  for (const Shape& shape : {Shape{257, 10}, Shape{2, 4099}, Shape{0, 3}}) {
    std::vector<float> values = random_tensor(shape, 323, kCpu, -2, 2).to_vector();
    for (float& v : values) v = std::round(v * 2.0f) / 4.0f;  // ties
    expect_op_parity("argmax_rows " + shape_str(shape), unary_fn(ops::argmax_rows),
                     {Tensor::from_vector(values, shape, kCpu)}, {}, {}, false);
  }
}

TEST_F(OpParity, SoftmaxAndCrossEntropy) {
  for (const Shape& shape : {Shape{257, 10}, Shape{5, 1025}, Shape{2, 3, 7}}) {
    expect_op_parity("softmax " + shape_str(shape), unary_fn(ops::softmax),
                     {random_tensor(shape, 330, kCpu, -5, 5)}, {1e-6, 1e-5}, {1e-6, 1e-4});
  }
  for (const RowsCols& s : {RowsCols{257, 10}, RowsCols{5, 1025}, RowsCols{64, 10}}) {
    std::vector<int32_t> labels;
    for (int64_t r = 0; r < s.rows; ++r) labels.push_back(int32_t((r * 13 + 1) % s.cols));
    expect_op_parity(
        "softmax_cross_entropy " + shape_name(s.rows, s.cols),
        [](const std::vector<Tensor>& in) { return ops::softmax_cross_entropy(in[0], in[1]); },
        {random_tensor({s.rows, s.cols}, 331, kCpu, -5, 5),
         Tensor::from_int32(labels, {s.rows}, kCpu)},
        {1e-5, 1e-5}, {1e-6, 1e-5});
  }
}

TEST_F(OpParity, CrossEntropyWithAnInvalidLabelGivesNanOnTheGpu) {
  // The GPU does not validate labels (that would cost a synchronisation): the row turns NaN.
  const Tensor logits = random_tensor({3, 4}, 332, gpu());
  const Tensor labels = Tensor::from_int32({0, 4, 2}, {3}, gpu());
  const std::vector<float> loss = ops::softmax_cross_entropy(logits, labels).to_vector();
  EXPECT_FALSE(std::isnan(loss[0]));
  EXPECT_TRUE(std::isnan(loss[1]));
  EXPECT_FALSE(std::isnan(loss[2]));
}

TEST_F(OpParity, MatmulAllTransposesLinearAndReshape) {
  const int64_t m = 127, n = 33, k = 65;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const Transpose op_a = ta ? Transpose::kYes : Transpose::kNo;
      const Transpose op_b = tb ? Transpose::kYes : Transpose::kNo;
      expect_op_parity(std::string("matmul") + (ta ? " A^T" : " A") + (tb ? " B^T" : " B"),
                       [op_a, op_b](const std::vector<Tensor>& in) {
                         return ops::matmul(in[0], in[1], op_a, op_b);
                       },
                       {random_tensor(ta ? Shape{k, m} : Shape{m, k}, 340, kCpu),
                        random_tensor(tb ? Shape{n, k} : Shape{k, n}, 341, kCpu)},
                       {1e-4, 1e-4}, {1e-4, 1e-4});
    }
  }
  expect_op_parity("matmul k=0",
                   [](const std::vector<Tensor>& in) { return ops::matmul(in[0], in[1]); },
                   {Tensor::empty({3, 0}, kCpu), Tensor::empty({0, 5}, kCpu)});
  const Tensor x = random_tensor({64, 30}, 342, kCpu);
  const Tensor w = random_tensor({20, 30}, 343, kCpu);
  const Tensor b = random_tensor({20}, 344, kCpu);
  expect_op_parity("linear with bias",
                   [](const std::vector<Tensor>& in) { return ops::linear(in[0], in[1], in[2]); },
                   {x, w, b}, {1e-4, 1e-4}, {1e-4, 1e-4});
  expect_op_parity(
      "linear without bias",
      [](const std::vector<Tensor>& in) { return ops::linear(in[0], in[1], Tensor()); }, {x, w},
      {1e-4, 1e-4}, {1e-4, 1e-4});
  expect_op_parity("reshape",
                   [](const std::vector<Tensor>& in) {
                     return ops::reshape(in[0], {-1, 6});
                   },
                   {random_tensor({4, 3, 2}, 345, kCpu)});
}

TEST_F(OpParity, TwoLayerNetworkGradientsMatch) {
  const int64_t batch = 64, in = 784, hidden = 128, classes = 10;
  std::vector<int32_t> labels;
  for (int64_t r = 0; r < batch; ++r) labels.push_back(int32_t((r * 7 + 3) % classes));
  const float s1 = 1.0f / std::sqrt(float(in)), s2 = 1.0f / std::sqrt(float(hidden));
  const std::vector<Tensor> host = {
      random_tensor({batch, in}, 350, kCpu, 0.0f, 1.0f),  // like pixels
      random_tensor({hidden, in}, 351, kCpu, -s1, s1),
      random_tensor({hidden}, 352, kCpu, -s1, s1),
      random_tensor({classes, hidden}, 353, kCpu, -s2, s2),
      random_tensor({classes}, 354, kCpu, -s2, s2),
  };
  const Tensor labels_host = Tensor::from_int32(labels, {batch}, kCpu);
  const Tensor labels_gpu = labels_host.to(gpu());
  const char* names[] = {"x", "W1", "b1", "W2", "b2"};

  std::vector<Tensor> params_cpu, params_gpu;
  for (const Tensor& t : host) {
    params_cpu.push_back(t.clone());
    params_gpu.push_back(t.to(gpu()));
    params_cpu.back().attach_grad();
    params_gpu.back().attach_grad();
  }
  auto loss_of = [](const std::vector<Tensor>& p, const Tensor& labels) {
    const Tensor h = ops::relu(ops::linear(p[0], p[1], p[2]));
    return ops::mean(ops::softmax_cross_entropy(ops::linear(h, p[3], p[4]), labels));
  };
  autograd::RecordScope record;
  const Tensor loss_cpu = loss_of(params_cpu, labels_host);
  const Tensor loss_gpu = loss_of(params_gpu, labels_gpu);
  EXPECT_NEAR(loss_gpu.item(), loss_cpu.item(), 1e-5 * std::abs(loss_cpu.item()) + 1e-6);
  loss_cpu.backward();
  loss_gpu.backward();
  for (size_t i = 0; i < host.size(); ++i) {
    const std::vector<float> expected = params_cpu[i].grad().to_vector();
    float largest = 0;
    for (float g : expected) largest = std::max(largest, std::abs(g));
    EXPECT_GT(largest, 0.0f) << names[i] << ": a zero gradient proves nothing";
    expect_close(params_gpu[i].grad().to_vector(), expected, 1e-4 * largest, 1e-3,
                 std::string("gradient of ") + names[i]);
  }
}

TEST_F(OpParity, CreationAndTransfers) {
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(1031), kBig}) {
    SCOPED_TRACE(n);
    EXPECT_TRUE(same_bits(Tensor::uniform({n}, -1, 2, 77, gpu()).to_vector(),
                          Tensor::uniform({n}, -1, 2, 77, kCpu).to_vector()));
    expect_close(Tensor::normal({n}, 0, 1, 77, gpu()).to_vector(),
                 Tensor::normal({n}, 0, 1, 77, kCpu).to_vector(), 1e-6, 1e-5, "normal");
    EXPECT_EQ(Tensor::full({n}, -2.5f, gpu()).to_vector(), std::vector<float>(size_t(n), -2.5f));
  }
  const Tensor host = random_tensor({3, 5}, 360, kCpu);
  const Tensor device = host.to(gpu());
  EXPECT_EQ(device.device(), gpu());
  EXPECT_TRUE(device.to(gpu()).same(device));
  EXPECT_TRUE(same_bits(device.to_host().to_vector(), host.to_vector()));
  Tensor copy = device.clone();
  EXPECT_NE(copy.raw_data(), device.raw_data());
  copy.copy_from(Tensor::zeros({3, 5}, kCpu));  // host to device
  EXPECT_EQ(copy.to_vector(), std::vector<float>(15, 0.0f));
  EXPECT_TRUE(same_bits(device.to_vector(), host.to_vector()));  // the clone was independent
  Tensor back = Tensor::zeros({3, 5}, kCpu);
  back.copy_from(device);  // device to host
  EXPECT_TRUE(same_bits(back.to_vector(), host.to_vector()));
  EXPECT_EQ(Tensor::scalar(4.5f, gpu()).item(), 4.5f);
  EXPECT_EQ(Tensor::from_int32({1, -2, 3}, {3}, gpu()).to_int32_vector(),
            (std::vector<int32_t>{1, -2, 3}));
}

// =============================================================================================
// (c) Mixed devices

class MixedDevices : public testing::CudaTest {};

TEST_F(MixedDevices, OpsNameBothDevices) {
  const Tensor c = Tensor::ones({2, 3}, kCpu);
  const Tensor g = Tensor::ones({2, 3}, gpu());
  using Binary = Tensor (*)(const Tensor&, const Tensor&);
  const std::pair<const char*, Binary> binaries[] = {
      {"add", ops::add}, {"sub", ops::sub}, {"mul", ops::mul}, {"div", ops::div}};
  for (const auto& [name, op] : binaries) {
    SCOPED_TRACE(name);
    expect_error([&, op = op] { op(c, g); }, {name, "different devices", "cpu", "cuda:0"});
    expect_error([&, op = op] { op(g, c); }, {name, "different devices", "cpu", "cuda:0"});
  }
  expect_error([&] { ops::bias_add(g, Tensor::ones({3}, kCpu)); },
               {"bias_add", "different devices", "cuda:0", "cpu"});
  expect_error([&] { ops::relu_backward(c, g); }, {"relu_backward", "cpu", "cuda:0"});
  expect_error(
      [&] {
        ops::matmul(c, Tensor::ones({3, 2}, gpu()));
      },
      {"matmul", "different devices", "cpu", "cuda:0"});
  expect_error(
      [&] {
        ops::linear(c, Tensor::ones({4, 3}, gpu()), Tensor());
      },
      {"different devices", "cpu", "cuda:0"});
  expect_error(
      [&] {
        ops::softmax_cross_entropy(g, Tensor::from_int32({0, 1}, {2}, kCpu));
      },
      {"softmax_cross_entropy", "different devices", "cuda:0", "cpu"});
  Tensor x = Tensor::ones({3}, gpu());
  x.attach_grad();
  autograd::RecordScope record;
  const Tensor y = ops::mul_scalar(x, 2.0f);
  expect_error([&] { y.backward(Tensor::ones({3}, kCpu)); },
               {"backward", "head gradient on cpu", "cuda:0"});
  // Still usable afterwards.
  EXPECT_EQ(ops::add(g, g).to_vector(), std::vector<float>(6, 2.0f));
}

// =============================================================================================
// (d) Determinism

class Determinism : public testing::CudaTest {};

TEST_F(Determinism, SumColumnsIsBitIdenticalAcrossRuns) {
  for (const Shape& shape : {Shape{kBig, 1}, Shape{149797, 7}}) {  // 149797 * 7 == 2^20 + 3
    SCOPED_TRACE(shape_str(shape));
    const Tensor x = random_tensor(shape, 400, gpu());
    const std::vector<float> first = ops::sum_columns(x).to_vector();
    const std::vector<float> second = ops::sum_columns(x).to_vector();
    EXPECT_TRUE(same_bits(first, second));

    const size_t bytes = kg::sum_columns_workspace_bytes(shape[0], shape[1]);
    std::vector<float> runs[2];
    for (auto& run : runs) {
      Tensor out = poisoned_gpu({shape[1]});
      Tensor scratch = workspace(bytes);
      kg::sum_columns(x.data(), shape[0], shape[1], out.data(), Accumulate::kOverwrite,
                      scratch.raw_data(), bytes, stream());
      run = out.to_vector();
    }
    EXPECT_TRUE(same_bits(runs[0], runs[1]));
    EXPECT_TRUE(same_bits(runs[0], first));
  }
}

TEST_F(Determinism, ReduceAllIsBitIdenticalAcrossRuns) {
  const Tensor x = random_tensor({kBig}, 401, gpu());
  for (ReduceOp op : kReduceOps) {
    SCOPED_TRACE(int(op));
    const size_t bytes = kg::reduce_all_workspace_bytes(op, kBig);
    std::vector<float> runs[2];
    for (auto& run : runs) {
      Tensor out = poisoned_gpu({1});
      Tensor scratch = workspace(bytes);
      kg::reduce_all(op, x.data(), kBig, out.data(), scratch.raw_data(), bytes, stream());
      run = out.to_vector();
    }
    EXPECT_TRUE(same_bits(runs[0], runs[1]));
  }
  for (auto reduce : {ops::sum, ops::mean, ops::sum_squares, ops::max}) {
    EXPECT_TRUE(same_bits(reduce(x).to_vector(), reduce(x).to_vector()));
  }
}

}  // namespace
}  // namespace cairn
