// Every op's preconditions: each bad input throws a cairn::Error whose message names the op and
// what was wrong, and the process stays usable afterwards.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "cairn/kernels/elementwise_ops.h"
#include "support/test_support.h"

namespace cairn {
namespace {

using kernels::Transpose;
using testing::expect_error;

const Device kCpu = Device::cpu();

Tensor cpu_tensor(const std::vector<float>& values, const Shape& shape) {
  return Tensor::from_vector(values, shape, kCpu);
}

Tensor int_tensor(const Shape& shape) {
  return Tensor::from_int32(std::vector<int32_t>(size_t(checked_numel(shape, "test")), 1), shape,
                            kCpu);
}

// A normal op still works after the errors: nothing was left half-done or locked.
void expect_still_usable() {
  const Tensor y = ops::add(cpu_tensor({1, 2}, {2}), cpu_tensor({10, 20}, {2}));
  EXPECT_EQ(y.to_vector(), (std::vector<float>{11, 22}));
  EXPECT_EQ(ops::sum(Tensor::ones({1000}, kCpu)).item(), 1000.0f);
}

struct NamedUnary {
  const char* name;
  std::function<Tensor(const Tensor&)> op;
};

// Every op that takes one float tensor, under the name its errors carry.
// (Every row of the op table, then the rest.)
std::vector<NamedUnary> single_input_ops() {
  std::vector<NamedUnary> named;
  for (const kernels::UnaryOpInfo& row : kernels::kUnaryOps) {
    const kernels::UnaryOp op = row.op;
    named.push_back({row.name, [op](const Tensor& x) { return ops::unary(op, x); }});
  }
  const std::vector<NamedUnary> others = {
      {"add_scalar", [](const Tensor& x) { return ops::add_scalar(x, 1.0f); }},
      {"mul_scalar", [](const Tensor& x) { return ops::mul_scalar(x, 2.0f); }},
      {"div_scalar", [](const Tensor& x) { return ops::div_scalar(x, 2.0f); }},
      {"rsub_scalar", [](const Tensor& x) { return ops::rsub_scalar(1.0f, x); }},
      {"sum", ops::sum},
      {"mean", ops::mean},
      {"max", ops::max},
      {"sum_squares", ops::sum_squares},
      {"sum_squares", ops::norm},  // norm is sqrt(sum_squares(x)): the inner op reports
      {"sum_rows", ops::sum_rows},
      {"mean_rows", ops::mean_rows},
      {"max_rows", ops::max_rows},
      {"sum_squares_rows", ops::sum_squares_rows},
      {"sum_columns", ops::sum_columns},
      {"argmax_rows", ops::argmax_rows},
      {"softmax", ops::softmax},
  };
  named.insert(named.end(), others.begin(), others.end());
  return named;
}

TEST(OpsBadInput, UnaryRefusesAValueOutsideTheOpTable) {
  const Tensor x = cpu_tensor({1, 2}, {2});
  expect_error([&] { ops::unary(static_cast<kernels::UnaryOp>(kernels::kUnaryOpCount), x); },
               {"unary", "unknown UnaryOp"});
}

TEST(OpsBadInput, EverySingleInputOpRejectsAnUndefinedTensor) {
  for (const NamedUnary& op : single_input_ops()) {
    SCOPED_TRACE(op.name);
    expect_error([&] { op.op(Tensor()); }, {op.name, "undefined tensor"});
  }
  expect_error([] { ops::reshape(Tensor(), {1}); }, {"reshape", "input is an undefined tensor"});
  expect_still_usable();
}

TEST(OpsBadInput, EverySingleInputOpRejectsInt32) {
  const Tensor ints = int_tensor({2, 3});
  for (const NamedUnary& op : single_input_ops()) {
    SCOPED_TRACE(op.name);
    expect_error([&] { op.op(ints); }, {op.name, "must be float32", "int32", "(2, 3)"});
  }
  expect_still_usable();
}

TEST(OpsBadInput, ReluBackwardChecksBothOperands) {
  const Tensor x = cpu_tensor({1, 2}, {2});
  expect_error([&] { ops::relu_backward(Tensor(), x); }, {"relu_backward", "x is an undefined"});
  expect_error([&] { ops::relu_backward(x, Tensor()); }, {"relu_backward", "dy is an undefined"});
  expect_error([&] { ops::relu_backward(int_tensor({2}), x); },
               {"relu_backward", "x must be float32", "int32"});
  expect_error([&] { ops::relu_backward(x, int_tensor({2})); },
               {"relu_backward", "dy must be float32"});
  expect_error(
      [&] {
        ops::relu_backward(x, cpu_tensor({1, 2, 3}, {3}));
      },
      {"relu_backward", "(2,)", "(3,)", "differ"});
  expect_still_usable();
}

using BinaryFn = std::function<Tensor(const Tensor&, const Tensor&)>;
struct NamedBinary {
  const char* name;
  BinaryFn op;
};

const std::vector<NamedBinary> kBinaryOps = {
    {"add", ops::add}, {"sub", ops::sub}, {"mul", ops::mul}, {"div", ops::div}};

TEST(OpsBadInput, BinaryOpsRejectUndefinedAndInt32OnEitherSide) {
  const Tensor x = cpu_tensor({1, 2, 3, 4, 5, 6}, {2, 3});
  for (const NamedBinary& op : kBinaryOps) {
    SCOPED_TRACE(op.name);
    expect_error([&] { op.op(Tensor(), x); }, {op.name, "a is an undefined tensor"});
    expect_error([&] { op.op(x, Tensor()); }, {op.name, "b is an undefined tensor"});
    expect_error([&] { op.op(int_tensor({2, 3}), x); }, {op.name, "a must be float32", "int32"});
    expect_error([&] { op.op(x, int_tensor({2, 3})); }, {op.name, "b must be float32", "int32"});
  }
  expect_still_usable();
}

TEST(OpsBadInput, BinaryOpsRejectShapesThatDoNotBroadcast) {
  const Tensor x = cpu_tensor({1, 2, 3, 4, 5, 6}, {2, 3});
  for (const NamedBinary& op : kBinaryOps) {
    SCOPED_TRACE(op.name);
    expect_error(
        [&] {
          op.op(x, cpu_tensor({1, 2, 3, 4}, {4}));
        },
        {op.name, "cannot broadcast", "(4,)", "(2, 3)"});
    // A per-row vector must be (rows, 1), not (rows): (2,) does not match the last axis 3.
    expect_error(
        [&] {
          op.op(x, cpu_tensor({1, 2}, {2}));
        },
        {op.name, "cannot broadcast", "(2,)", "(2, 3)"});
    expect_error(
        [&] {
          op.op(x, Tensor::ones({3, 2}, kCpu));
        },
        {op.name, "cannot broadcast", "(3, 2)", "(2, 3)"});
  }
  // sub and div do not commute: the broadcast operand may only be b.
  expect_error(
      [&] {
        ops::sub(cpu_tensor({1, 2, 3}, {3}), x);
      },
      {"sub", "cannot broadcast", "(2, 3)", "(3,)"});
  expect_error([&] { ops::div(cpu_tensor({1}, {1}), x); },
               {"div", "cannot broadcast", "(2, 3)", "(1,)"});
  expect_still_usable();
}

TEST(OpsBadInput, BiasAddChecksTheBias) {
  const Tensor x = Tensor::ones({2, 3}, kCpu);
  expect_error([&] { ops::bias_add(x, Tensor::ones({4}, kCpu)); },
               {"bias_add", "x (2, 3)", "bias (4,)"});
  expect_error([&] { ops::bias_add(x, Tensor::ones({1, 3}, kCpu)); }, {"bias_add", "bias (1, 3)"});
  expect_error([&] { ops::bias_add(Tensor::ones({6}, kCpu), Tensor::ones({6}, kCpu)); },
               {"bias_add", "x (6,)"});
  expect_error([&] { ops::bias_add(x, Tensor()); }, {"bias_add", "bias is an undefined tensor"});
  expect_error([&] { ops::bias_add(Tensor(), Tensor::ones({3}, kCpu)); },
               {"bias_add", "x is an undefined tensor"});
  expect_error([&] { ops::bias_add(x, int_tensor({3})); }, {"bias_add", "bias must be float32"});
  expect_still_usable();
}

TEST(OpsBadInput, ReductionsRejectShapesTheyCannotReduce) {
  const Tensor scalar = Tensor::scalar(1.0f, kCpu);
  for (const char* name : {"sum_rows", "mean_rows", "max_rows", "sum_squares_rows"}) {
    SCOPED_TRACE(name);
    const std::string op(name);
    expect_error(
        [&] {
          if (op == "sum_rows") ops::sum_rows(scalar);
          if (op == "mean_rows") ops::mean_rows(scalar);
          if (op == "max_rows") ops::max_rows(scalar);
          if (op == "sum_squares_rows") ops::sum_squares_rows(scalar);
        },
        {name, "0-d"});
  }
  expect_error([] { ops::sum_columns(Tensor::ones({3}, kCpu)); },
               {"sum_columns", "must be 2-d", "(3,)"});
  expect_error(
      [] {
        ops::sum_columns(Tensor::ones({2, 3, 4}, kCpu));
      },
      {"sum_columns", "must be 2-d", "(2, 3, 4)"});
  expect_error([] { ops::argmax_rows(Tensor::ones({3}, kCpu)); },
               {"argmax_rows", "must be 2-d", "(3,)"});
  expect_error(
      [] {
        ops::argmax_rows(Tensor::empty({3, 0}, kCpu));
      },
      {"argmax_rows", "length 0", "(3, 0)"});
  expect_still_usable();
}

TEST(OpsBadInput, SoftmaxNeedsAnAxis) {
  expect_error([] { ops::softmax(Tensor::scalar(1.0f, kCpu)); },
               {"softmax", "non-empty last axis", "()"});
}

TEST(OpsBadInput, SoftmaxCrossEntropyChecksLabels) {
  const Tensor logits = Tensor::zeros({3, 4}, kCpu);
  const Tensor labels = Tensor::from_int32({0, 1, 2}, {3}, kCpu);
  constexpr const char* kOp = "softmax_cross_entropy";
  expect_error([&] { ops::softmax_cross_entropy(Tensor(), labels); },
               {kOp, "logits is an undefined tensor"});
  expect_error([&] { ops::softmax_cross_entropy(logits, Tensor()); },
               {kOp, "labels is an undefined tensor"});
  expect_error(
      [&] {
        ops::softmax_cross_entropy(int_tensor({3, 4}), labels);
      },
      {kOp, "logits must be float32"});
  expect_error(
      [&] {
        ops::softmax_cross_entropy(logits, cpu_tensor({0, 1, 2}, {3}));
      },
      {kOp, "labels must be int32", "float32"});
  expect_error(
      [&] {
        ops::softmax_cross_entropy(logits, Tensor::from_int32({0, 1}, {2}, kCpu));
      },
      {kOp, "logits (3, 4)", "labels (2,)"});
  expect_error(
      [&] {
        ops::softmax_cross_entropy(logits, Tensor::from_int32({0, 1, 2}, {3, 1}, kCpu));
      },
      {kOp, "labels (3, 1)"});
  expect_error([&] { ops::softmax_cross_entropy(Tensor::zeros({12}, kCpu), labels); },
               {kOp, "logits (12,)"});
  expect_error(
      [&] {
        ops::softmax_cross_entropy(logits, Tensor::from_int32({0, 4, 2}, {3}, kCpu));
      },
      {kOp, "label 4", "row 1", "[0, 4)"});
  expect_error(
      [&] {
        ops::softmax_cross_entropy(logits, Tensor::from_int32({0, 1, -1}, {3}, kCpu));
      },
      {kOp, "label -1", "row 2"});
  expect_error(
      [&] {
        ops::softmax_cross_entropy(Tensor::zeros({2, 0}, kCpu),
                                   Tensor::from_int32({0, 0}, {2}, kCpu));
      },
      {kOp, "at least one class", "(2, 0)"});
  expect_still_usable();
}

TEST(OpsBadInput, MatmulNamesBothShapesOnAnInnerMismatch) {
  const Tensor a = Tensor::ones({2, 3}, kCpu);
  const Tensor b = Tensor::ones({4, 5}, kCpu);
  expect_error([&] { ops::matmul(a, b); },
               {"matmul", "inner dimensions differ", "a (2, 3)", "b (4, 5)"});
  expect_error([&] { ops::matmul(a, b, Transpose::kYes, Transpose::kNo); },
               {"matmul", "inner dimensions differ", "(2, 3) transposed", "b (4, 5)"});
  expect_error(
      [&] {
        ops::matmul(a, Tensor::ones({5, 4}, kCpu), Transpose::kNo, Transpose::kYes);
      },
      {"matmul", "inner dimensions differ", "a (2, 3)", "(5, 4) transposed"});
  expect_error([&] { ops::matmul(Tensor::ones({3}, kCpu), b); },
               {"matmul", "a must be 2-d", "(3,)"});
  expect_error(
      [&] {
        ops::matmul(a, Tensor::ones({3, 1, 1}, kCpu));
      },
      {"matmul", "b must be 2-d", "(3, 1, 1)"});
  expect_error([&] { ops::matmul(Tensor(), b); }, {"matmul", "a is an undefined tensor"});
  expect_error([&] { ops::matmul(a, Tensor()); }, {"matmul", "b is an undefined tensor"});
  expect_error(
      [&] {
        ops::matmul(int_tensor({2, 3}), Tensor::ones({3, 2}, kCpu));
      },
      {"matmul", "a must be float32"});
  expect_error([&] { ops::matmul(a, int_tensor({3, 2})); }, {"matmul", "b must be float32"});
  expect_still_usable();
}

TEST(OpsBadInput, LinearChecksFeaturesAndBias) {
  const Tensor x = Tensor::ones({2, 3}, kCpu);
  const Tensor w = Tensor::ones({4, 3}, kCpu);
  expect_error(
      [&] {
        ops::linear(x, Tensor::ones({4, 5}, kCpu), Tensor());
      },
      {"linear", "x (2, 3)", "3 features", "weight (4, 5)", "expects 5"});
  expect_error([&] { ops::linear(x, w, Tensor::ones({3}, kCpu)); },
               {"bias_add", "x (2, 4)", "bias (3,)"});
  expect_error([&] { ops::linear(Tensor(), w, Tensor()); }, {"linear", "x is an undefined tensor"});
  expect_error([&] { ops::linear(x, Tensor(), Tensor()); },
               {"linear", "weight is an undefined tensor"});
  expect_error(
      [&] {
        ops::linear(x, int_tensor({4, 3}), Tensor());
      },
      {"linear", "weight must be float32"});
  expect_error([&] { ops::linear(Tensor::ones({3}, kCpu), w, Tensor()); },
               {"linear", "x must be 2-d", "(3,)"});
  expect_still_usable();
}

TEST(OpsBadInput, ReshapeRejectsWrongCountsAndAmbiguousShapes) {
  const Tensor x = Tensor::ones({2, 3}, kCpu);
  expect_error(
      [&] {
        ops::reshape(x, {4, 2});
      },
      {"reshape", "cannot view (2, 3)", "6 elements", "(4, 2)"});
  expect_error([&] { ops::reshape(x, {-1, -1}); }, {"reshape", "more than one -1", "(-1, -1)"});
  expect_error(
      [&] {
        ops::reshape(x, {-1, 4});
      },
      {"reshape", "cannot infer -1", "(-1, 4)", "6 elements"});
  expect_error([&] { ops::reshape(x, {-1, 0}); }, {"reshape", "cannot infer -1", "(-1, 0)"});
  expect_error([&] { ops::reshape(x, {-2, -3}); }, {"reshape", "negative dimension", "(-2, -3)"});
  expect_error([&] { x.reshape({7}); }, {"reshape", "(7,)"});
  expect_still_usable();
}

TEST(OpsBadInput, TensorAccessorsAndTransfers) {
  const Tensor three = cpu_tensor({1, 2, 3}, {3});
  expect_error([&] { three.item(); }, {"Tensor::item", "3 elements", "(3,)", "needs exactly one"});
  expect_error([] { Tensor::empty({0}, kCpu).item(); }, {"Tensor::item", "0 elements"});
  expect_error([] { Tensor::from_int32({1}, {1}, kCpu).item(); }, {"Tensor::item", "int32"});
  expect_error(
      [] {
        Tensor::from_vector({1, 2, 3, 4, 5}, {2, 3}, kCpu);
      },
      {"Tensor::from_vector", "5 values", "(2, 3)", "6 elements"});
  expect_error(
      [] {
        Tensor::from_int32({1, 2}, {3}, kCpu);
      },
      {"Tensor::from_int32", "2 values", "(3,)"});
  expect_error([] { int_tensor({2}).to_vector(); }, {"Tensor::to_vector", "int32"});
  expect_error([&] { three.to_int32_vector(); }, {"Tensor::to_int32_vector", "float32"});
  expect_error([] { int_tensor({2}).data(); }, {"Tensor::data", "int32"});
  expect_error([&] { three.data_int32(); }, {"Tensor::data_int32", "float32"});
  Tensor target = Tensor::zeros({2}, kCpu);
  expect_error([&] { target.copy_from(three); },
               {"Tensor::copy_from", "(3,)", "does not match", "(2,)"});
  expect_error([&] { target.copy_from(int_tensor({2})); },
               {"Tensor::copy_from", "int32", "float32"});
  expect_error([&] { target.copy_from(Tensor()); }, {"Tensor::copy_from", "undefined"});
  expect_error([&] { three.dim(1); }, {"Tensor::dim", "axis 1", "(3,)"});
  expect_error([] { Tensor().shape(); }, {"Tensor::shape", "undefined"});
  expect_error([] { Tensor().to(Device::cpu()); }, {"Tensor::to", "undefined"});
  expect_error([] { Tensor().clone(); }, {"Tensor::clone", "undefined"});
  expect_error([] { Tensor::uniform({2}, 2.0f, 1.0f, 0, Device::cpu()); },
               {"Tensor::uniform", "low 2 > high 1"});
  expect_error([] { Tensor::normal({2}, 0.0f, -1.0f, 0, Device::cpu()); },
               {"Tensor::normal", "negative stddev"});
  expect_still_usable();
}

TEST(OpsBadInput, NegativeDimensions) {
  expect_error(
      [] {
        Tensor::empty({2, -3}, kCpu);
      },
      {"Tensor::empty", "negative dimension", "(2, -3)"});
  expect_error([] { Tensor::zeros({-1}, kCpu); }, {"negative dimension", "(-1,)"});
  expect_error([] { Tensor::from_vector({}, {-1}, kCpu); },
               {"Tensor::from_vector", "negative dimension"});
  expect_still_usable();
}

TEST(OpsBadInput, AbsurdSizesOverflowOrRunOutOfHostMemory) {
  expect_error(
      [] {
        Tensor::empty({1LL << 62, 1LL << 62}, kCpu);
      },
      {"Tensor::empty", "(4611686018427387904, 4611686018427387904)",
       "more elements than int64_t can count"});
  expect_error(
      [] {
        Tensor::empty({1LL << 31, 1LL << 31, 1LL << 31}, kCpu);
      },
      {"Tensor::empty", "more elements than int64_t can count"});
  // 4 TiB of floats: far beyond this host's memory, so aligned_alloc fails (overcommit heuristic
  // refuses it) and the allocator must say so rather than crash.
  void* probe = std::aligned_alloc(64, size_t(1) << 42);
  if (probe != nullptr) {
    std::free(probe);
    GTEST_SKIP() << "this host grants a 4 TiB allocation (overcommit), cannot test running out";
  }
  expect_error([] { Tensor::empty({1LL << 40}, kCpu); },
               {"out of host memory", "4398046511104 bytes"});
  expect_error([] { Tensor::zeros({1LL << 20, 1LL << 20}, kCpu); }, {"out of host memory"});
  expect_still_usable();
}

TEST(OpsBadInput, CudaDevicesThatDoNotExist) {
  expect_error([] { Device::cuda(-1); }, {"Device::cuda", "index must be >= 0", "-1"});
  expect_error([] { Tensor::zeros({2}, Device::cuda(cuda_device_count() + 3)); },
               {"Tensor::empty", "is not available"});
  if (!cuda_available()) {
    expect_error([] { Tensor::zeros({2}, Device::cuda(0)); },
                 {"Tensor::empty", "cuda:0", "is not available"});
    expect_error(
        [] {
          Tensor::from_vector({1, 2}, {2}, Device::cuda(0));
        },
        {"cuda:0", "is not available"});
    expect_error(
        [] {
          cpu_tensor({1, 2}, {2}).to(Device::cuda(0));
        },
        {"cuda:0", "is not available"});
    expect_error([] { Tensor::uniform({2}, 0.0f, 1.0f, 1, Device::cuda(0)); },
                 {"cuda:0", "is not available"});
  }
  expect_still_usable();
}

TEST(OpsBadInput, BackwardPreconditions) {
  expect_error([] { Tensor().backward(); }, {"backward", "undefined"});
  Tensor x = cpu_tensor({1, 2, 3}, {3});
  x.attach_grad();
  autograd::RecordScope record;
  const Tensor y = ops::mul_scalar(x, 2.0f);
  expect_error(
      [&] {
        y.backward(cpu_tensor({1, 2}, {2}));
      },
      {"backward", "head gradient shape (2,)", "(3,)"});
  expect_error([] { Tensor::from_int32({1}, {1}, kCpu).attach_grad(); },
               {"attach_grad", "float32"});
  expect_still_usable();
}

}  // namespace
}  // namespace cairn
