// Binary elementwise ops with broadcast or with a scalar by value, and their backward passes.
#include <optional>

#include "cairn/core/autograd.h"
#include "cairn/core/ops.h"
#include "cairn/core/ops/op_support.h"
#include "cairn/kernels/elementwise.h"

namespace cairn::ops {
namespace {

using kernels::BinaryOp;
using kernels::Broadcast;
using kernels::ScalarSide;

// How b lies over a, if it can.
std::optional<Broadcast> try_broadcast(const Tensor& a, const Tensor& b) {
  if (a.shape() == b.shape()) return Broadcast::kNone;
  if (b.numel() == 1) return Broadcast::kScalar;
  const int64_t cols = detail::cols_of(a);
  const int64_t rows = detail::rows_of(a);
  const bool b_is_row =
      (b.ndim() == 1 && b.dim(0) == cols) || (b.ndim() == 2 && b.dim(0) == 1 && b.dim(1) == cols);
  if (a.ndim() >= 1 && b_is_row) return Broadcast::kRow;
  const bool b_is_column = a.ndim() == 2 && b.ndim() == 2 && b.dim(0) == rows && b.dim(1) == 1;
  if (b_is_column) return Broadcast::kColumn;
  return std::nullopt;
}

[[noreturn]] void fail_broadcast(const char* op, const Tensor& a, const Tensor& b) {
  CAIRN_FAIL(op, ": cannot broadcast shape ", shape_str(b.shape()), " over ", shape_str(a.shape()),
             " (b must match a, have one element, match a's last dimension, or be (rows, 1))");
}

Tensor run_binary(BinaryOp kind, const Tensor& a, const Tensor& b, Broadcast broadcast) {
  Tensor y = Tensor::empty(a.shape(), a.device());
  const int64_t rows = detail::rows_of(a), cols = detail::cols_of(a);
  detail::dispatch(
      a.device(),
      [&] { kernels::cpu::binary(kind, a.data(), b.data(), y.data(), rows, cols, broadcast); },
      [&](cuda::Stream stream) {
        kernels::cuda::binary(kind, a.data(), b.data(), y.data(), rows, cols, broadcast, stream);
      });
  return y;
}

// x op s (kRight) or s op x (kLeft), s by value.
Tensor run_scalar(const char* op, BinaryOp kind, const Tensor& x, float s, ScalarSide side) {
  detail::check_float(op, x);
  Tensor y = Tensor::empty(x.shape(), x.device());
  detail::dispatch(
      x.device(),
      [&] { kernels::cpu::binary_scalar(kind, x.data(), s, side, y.data(), x.numel()); },
      [&](cuda::Stream stream) {
        kernels::cuda::binary_scalar(kind, x.data(), s, side, y.data(), x.numel(), stream);
      });
  return y;
}

// The gradient of a broadcast operand: the output gradient summed over the broadcast axes.
Tensor reduce_to(const Tensor& grad, const Tensor& like, Broadcast broadcast) {
  switch (broadcast) {
    case Broadcast::kNone:
      return grad;
    case Broadcast::kScalar:
      return reshape(sum(grad), like.shape());
    case Broadcast::kRow:
      return reshape(sum_columns(reshape(grad, {detail::rows_of(grad), detail::cols_of(grad)})),
                     like.shape());
    case Broadcast::kColumn:
      return reshape(sum_rows(grad), like.shape());
  }
  return grad;
}

struct Checked {
  Tensor a, b;
  Broadcast broadcast;
};

// Validates, and moves a broadcast operand to b's side where the op commutes.
Checked check_binary(const char* op, const Tensor& a, const Tensor& b, bool commutes) {
  detail::check_float(op, a, "a");
  detail::check_float(op, b, "b");
  detail::check_same_device(op, a, b);
  if (const auto broadcast = try_broadcast(a, b)) return Checked{a, b, *broadcast};
  // A commuting op also takes the broadcast operand first (bias + x); the recorded node keeps
  // the swapped order, so the gradients still reach the right inputs.
  if (commutes) {
    if (const auto broadcast = try_broadcast(b, a)) return Checked{b, a, *broadcast};
  }
  fail_broadcast(op, a, b);
}

}  // namespace

Tensor add(const Tensor& a_in, const Tensor& b_in) {
  auto [a, b, bc] = check_binary("add", a_in, b_in, /*commutes=*/true);
  Tensor y = run_binary(BinaryOp::kAdd, a, b, bc);
  autograd::record("add", {a, b}, y, [a = a, b = b, bc = bc](const Tensor& dy) {
    return std::vector<Tensor>{dy, b.requires_grad() ? reduce_to(dy, b, bc) : Tensor()};
  });
  return y;
}

Tensor sub(const Tensor& a_in, const Tensor& b_in) {
  auto [a, b, bc] = check_binary("sub", a_in, b_in, /*commutes=*/false);
  Tensor y = run_binary(BinaryOp::kSub, a, b, bc);
  autograd::record("sub", {a, b}, y, [b = b, bc = bc](const Tensor& dy) {
    return std::vector<Tensor>{dy, b.requires_grad() ? neg(reduce_to(dy, b, bc)) : Tensor()};
  });
  return y;
}

Tensor mul(const Tensor& a_in, const Tensor& b_in) {
  auto [a, b, bc] = check_binary("mul", a_in, b_in, /*commutes=*/true);
  Tensor y = run_binary(BinaryOp::kMul, a, b, bc);
  autograd::record("mul", {a, b}, y, [a = a, b = b, bc = bc](const Tensor& dy) {
    Tensor da, db;
    if (a.requires_grad()) da = run_binary(BinaryOp::kMul, dy, b.detach(), bc);
    if (b.requires_grad()) db = reduce_to(mul(dy, a.detach()), b, bc);
    return std::vector<Tensor>{da, db};
  });
  return y;
}

Tensor div(const Tensor& a_in, const Tensor& b_in) {
  auto [a, b, bc] = check_binary("div", a_in, b_in, /*commutes=*/false);
  Tensor y = run_binary(BinaryOp::kDiv, a, b, bc);
  const Tensor saved_y = y.detach();
  autograd::record("div", {a, b}, y, [a = a, b = b, bc = bc, saved_y](const Tensor& dy) {
    Tensor da, db;
    const Tensor dy_over_b = run_binary(BinaryOp::kDiv, dy, b.detach(), bc);
    if (a.requires_grad()) da = dy_over_b;
    // d(a/b)/db = -a/b^2 = -y/b
    if (b.requires_grad()) db = neg(reduce_to(mul(dy_over_b, saved_y), b, bc));
    return std::vector<Tensor>{da, db};
  });
  return y;
}

Tensor add_scalar(const Tensor& x, float s) {
  Tensor y = run_scalar("add_scalar", BinaryOp::kAdd, x, s, ScalarSide::kRight);
  autograd::record("add_scalar", {x}, y, [](const Tensor& dy) { return std::vector<Tensor>{dy}; });
  return y;
}

Tensor mul_scalar(const Tensor& x, float s) {
  Tensor y = run_scalar("mul_scalar", BinaryOp::kMul, x, s, ScalarSide::kRight);
  autograd::record("mul_scalar", {x}, y,
                   [s](const Tensor& dy) { return std::vector<Tensor>{mul_scalar(dy, s)}; });
  return y;
}

Tensor div_scalar(const Tensor& x, float s) {
  Tensor y = run_scalar("div_scalar", BinaryOp::kDiv, x, s, ScalarSide::kRight);
  autograd::record("div_scalar", {x}, y,
                   [s](const Tensor& dy) { return std::vector<Tensor>{div_scalar(dy, s)}; });
  return y;
}

Tensor rsub_scalar(float s, const Tensor& x) {
  Tensor y = run_scalar("rsub_scalar", BinaryOp::kSub, x, s, ScalarSide::kLeft);
  autograd::record("rsub_scalar", {x}, y,
                   [](const Tensor& dy) { return std::vector<Tensor>{neg(dy)}; });
  return y;
}

Tensor bias_add(const Tensor& x, const Tensor& bias) {
  constexpr const char* kOp = "bias_add";
  detail::check_float(kOp, x, "x");
  detail::check_float(kOp, bias, "bias");
  detail::check_same_device(kOp, x, bias);
  CAIRN_CHECK(x.ndim() == 2 && bias.ndim() == 1 && bias.dim(0) == x.dim(1), kOp,
              ": expects x (N, C) and bias (C), got x ", shape_str(x.shape()), " and bias ",
              shape_str(bias.shape()));
  Tensor y = run_binary(BinaryOp::kAdd, x, bias, Broadcast::kRow);
  autograd::record(kOp, {x, bias}, y, [bias](const Tensor& dy) {
    return std::vector<Tensor>{dy, bias.requires_grad() ? sum_columns(dy) : Tensor()};
  });
  return y;
}

}  // namespace cairn::ops
