// Unary elementwise ops and their backward passes.
#include <cmath>

#include "cairn/core/autograd.h"
#include "cairn/core/numerics.h"
#include "cairn/core/ops.h"
#include "cairn/core/ops/op_support.h"
#include "cairn/kernels/elementwise.h"

namespace cairn::ops {
namespace {

using kernels::UnaryOp;

Tensor run_unary(const char* op, UnaryOp kind, const Tensor& x, float scalar) {
  detail::check_float(op, x);
  Tensor y = Tensor::empty(x.shape(), x.device());
  detail::dispatch(
      x.device(), [&] { kernels::cpu::unary(kind, x.data(), y.data(), x.numel(), scalar); },
      [&](cuda::Stream stream) {
        kernels::cuda::unary(kind, x.data(), y.data(), x.numel(), scalar, stream);
      });
  return y;
}

}  // namespace

Tensor relu(const Tensor& x) {
  Tensor y = run_unary("relu", UnaryOp::kRelu, x, 0.0f);
  autograd::record("relu", {x}, y,
                   [x](const Tensor& dy) { return std::vector<Tensor>{relu_backward(x, dy)}; });
  return y;
}

Tensor relu_backward(const Tensor& x, const Tensor& dy) {
  constexpr const char* kOp = "relu_backward";
  detail::check_float(kOp, x, "x");
  detail::check_float(kOp, dy, "dy");
  detail::check_same_device(kOp, x, dy);
  CAIRN_CHECK(x.shape() == dy.shape(), kOp, ": x ", shape_str(x.shape()), " and dy ",
              shape_str(dy.shape()), " differ");
  Tensor dx = Tensor::empty(x.shape(), x.device());
  detail::dispatch(
      x.device(), [&] { kernels::cpu::relu_backward(x.data(), dy.data(), dx.data(), x.numel()); },
      [&](cuda::Stream stream) {
        kernels::cuda::relu_backward(x.data(), dy.data(), dx.data(), x.numel(), stream);
      });
  cairn::detail::check_finite(kOp, {x, dy}, dx);
  return dx;
}

Tensor neg(const Tensor& x) {
  Tensor y = run_unary("neg", UnaryOp::kNeg, x, 0.0f);
  autograd::record("neg", {x}, y, [](const Tensor& dy) { return std::vector<Tensor>{neg(dy)}; });
  return y;
}

Tensor exp(const Tensor& x) {
  Tensor y = run_unary("exp", UnaryOp::kExp, x, 0.0f);
  const Tensor saved = y.detach();
  autograd::record("exp", {x}, y,
                   [saved](const Tensor& dy) { return std::vector<Tensor>{mul(dy, saved)}; });
  return y;
}

Tensor log(const Tensor& x) {
  Tensor y = run_unary("log", UnaryOp::kLog, x, 0.0f);
  autograd::record("log", {x}, y,
                   [x](const Tensor& dy) { return std::vector<Tensor>{div(dy, x.detach())}; });
  return y;
}

Tensor sqrt(const Tensor& x) {
  Tensor y = run_unary("sqrt", UnaryOp::kSqrt, x, 0.0f);
  const Tensor saved = y.detach();
  autograd::record("sqrt", {x}, y, [saved](const Tensor& dy) {
    return std::vector<Tensor>{div(mul_scalar(dy, 0.5f), saved)};
  });
  return y;
}

Tensor abs(const Tensor& x) {
  Tensor y = run_unary("abs", UnaryOp::kAbs, x, 0.0f);
  autograd::record("abs", {x}, y, [x](const Tensor& dy) {
    return std::vector<Tensor>{mul(dy, run_unary("abs_backward", UnaryOp::kSign, x, 0.0f))};
  });
  return y;
}

Tensor square(const Tensor& x) {
  Tensor y = run_unary("square", UnaryOp::kSquare, x, 0.0f);
  autograd::record("square", {x}, y, [x](const Tensor& dy) {
    return std::vector<Tensor>{mul(dy, mul_scalar(x.detach(), 2.0f))};
  });
  return y;
}

Tensor sigmoid(const Tensor& x) {
  Tensor y = run_unary("sigmoid", UnaryOp::kSigmoid, x, 0.0f);
  const Tensor saved = y.detach();
  autograd::record("sigmoid", {x}, y, [saved](const Tensor& dy) {
    // dy * y * (1 - y)
    return std::vector<Tensor>{mul(dy, mul(saved, rsub_scalar(1.0f, saved)))};
  });
  return y;
}

Tensor tanh(const Tensor& x) {
  Tensor y = run_unary("tanh", UnaryOp::kTanh, x, 0.0f);
  const Tensor saved = y.detach();
  autograd::record("tanh", {x}, y, [saved](const Tensor& dy) {
    // dy * (1 - y^2)
    return std::vector<Tensor>{mul(dy, rsub_scalar(1.0f, square(saved)))};
  });
  return y;
}

Tensor add_scalar(const Tensor& x, float s) {
  Tensor y = run_unary("add_scalar", UnaryOp::kAddScalar, x, s);
  autograd::record("add_scalar", {x}, y, [](const Tensor& dy) { return std::vector<Tensor>{dy}; });
  return y;
}

Tensor mul_scalar(const Tensor& x, float s) {
  Tensor y = run_unary("mul_scalar", UnaryOp::kMulScalar, x, s);
  autograd::record("mul_scalar", {x}, y,
                   [s](const Tensor& dy) { return std::vector<Tensor>{mul_scalar(dy, s)}; });
  return y;
}

Tensor div_scalar(const Tensor& x, float s) {
  Tensor y = run_unary("div_scalar", UnaryOp::kDivScalar, x, s);
  autograd::record("div_scalar", {x}, y,
                   [s](const Tensor& dy) { return std::vector<Tensor>{div_scalar(dy, s)}; });
  return y;
}

Tensor rsub_scalar(float s, const Tensor& x) {
  Tensor y = run_unary("rsub_scalar", UnaryOp::kRsubScalar, x, s);
  autograd::record("rsub_scalar", {x}, y,
                   [](const Tensor& dy) { return std::vector<Tensor>{neg(dy)}; });
  return y;
}

}  // namespace cairn::ops
