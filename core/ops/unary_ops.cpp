// Unary elementwise ops and their backward passes: every row of kernels/elementwise_ops.h through
// one function, so that a new row needs no code here beyond its named entry point.
#include <string>

#include "cairn/core/autograd.h"
#include "cairn/core/numerics.h"
#include "cairn/core/ops.h"
#include "cairn/core/ops/op_support.h"
#include "cairn/kernels/elementwise.h"

namespace cairn::ops {
namespace {

using kernels::Saves;

const kernels::UnaryOpInfo& checked_row(UnaryOp op) {
  CAIRN_CHECK(kernels::valid(op), "unary: unknown UnaryOp ", static_cast<int>(op));
  return kernels::info(op);
}

// dx from dy and what the row saves (x or y, or nothing).
Tensor run_backward(const char* op_name, UnaryOp op, const Tensor& saved, Saves saves,
                    const Tensor& dy) {
  const float* x = saves == Saves::kInput ? saved.data() : nullptr;
  const float* y = saves == Saves::kOutput ? saved.data() : nullptr;
  Tensor dx = Tensor::empty(dy.shape(), dy.device());
  detail::dispatch(
      dy.device(),
      [&] { kernels::cpu::unary_backward(op, x, y, dy.data(), dx.data(), dy.numel()); },
      [&](cuda::Stream stream) {
        kernels::cuda::unary_backward(op, x, y, dy.data(), dx.data(), dy.numel(), stream);
      });
  if (cairn::check_numerics()) {
    const std::string name = std::string(op_name) + "_backward";
    cairn::detail::check_finite(name.c_str(), {saved, dy}, dx);
  }
  return dx;
}

}  // namespace

Tensor unary(UnaryOp op, const Tensor& x) {
  const kernels::UnaryOpInfo& row = checked_row(op);
  detail::check_float(row.name, x);
  Tensor y = Tensor::empty(x.shape(), x.device());
  detail::dispatch(
      x.device(), [&] { kernels::cpu::unary(op, x.data(), y.data(), x.numel()); },
      [&](cuda::Stream stream) {
        kernels::cuda::unary(op, x.data(), y.data(), x.numel(), stream);
      });
  const Saves saves = row.saves;
  const Tensor saved = saves == Saves::kInput    ? x.detach()
                       : saves == Saves::kOutput ? y.detach()
                                                 : Tensor();
  autograd::record(row.name, {x}, y, [op, saved, saves](const Tensor& dy) {
    return std::vector<Tensor>{run_backward(kernels::info(op).name, op, saved, saves, dy)};
  });
  return y;
}

Tensor relu_backward(const Tensor& x, const Tensor& dy) {
  constexpr const char* kOp = "relu_backward";
  detail::check_float(kOp, x, "x");
  detail::check_float(kOp, dy, "dy");
  detail::check_same_device(kOp, x, dy);
  CAIRN_CHECK(x.shape() == dy.shape(), kOp, ": x ", shape_str(x.shape()), " and dy ",
              shape_str(dy.shape()), " differ");
  return run_backward("relu", UnaryOp::kRelu, x, Saves::kInput, dy);
}

Tensor relu(const Tensor& x) { return unary(UnaryOp::kRelu, x); }
Tensor neg(const Tensor& x) { return unary(UnaryOp::kNeg, x); }
Tensor exp(const Tensor& x) { return unary(UnaryOp::kExp, x); }
Tensor log(const Tensor& x) { return unary(UnaryOp::kLog, x); }
Tensor sqrt(const Tensor& x) { return unary(UnaryOp::kSqrt, x); }
Tensor abs(const Tensor& x) { return unary(UnaryOp::kAbs, x); }
Tensor square(const Tensor& x) { return unary(UnaryOp::kSquare, x); }
Tensor sigmoid(const Tensor& x) { return unary(UnaryOp::kSigmoid, x); }
Tensor tanh(const Tensor& x) { return unary(UnaryOp::kTanh, x); }
Tensor gelu(const Tensor& x, GeluApproximation approximation) {
  return unary(approximation == GeluApproximation::kTanh ? UnaryOp::kGeluTanh : UnaryOp::kGelu, x);
}
Tensor silu(const Tensor& x) { return unary(UnaryOp::kSilu, x); }

}  // namespace cairn::ops
