// Softmax along the last axis and softmax cross-entropy from logits.
#include "cairn/core/autograd.h"
#include "cairn/core/ops.h"
#include "cairn/core/ops/op_support.h"
#include "cairn/kernels/softmax.h"

namespace cairn::ops {
namespace {

Tensor softmax_backward(const Tensor& y, const Tensor& dy) {
  const int64_t rows = detail::rows_of(y), cols = detail::cols_of(y);
  Tensor dx = Tensor::empty(y.shape(), y.device());
  detail::dispatch(
      y.device(),
      [&] { kernels::cpu::softmax_backward_rows(y.data(), dy.data(), rows, cols, dx.data()); },
      [&](cuda::Stream stream) {
        kernels::cuda::softmax_backward_rows(y.data(), dy.data(), rows, cols, dx.data(), stream);
      });
  return dx;
}

Tensor softmax_xent_backward(const Tensor& probs, const Tensor& labels, const Tensor& dloss) {
  const int64_t rows = probs.dim(0), cols = probs.dim(1);
  Tensor dlogits = Tensor::empty(probs.shape(), probs.device());
  detail::dispatch(
      probs.device(),
      [&] {
        kernels::cpu::softmax_xent_backward(probs.data(), labels.data_int32(), dloss.data(), rows,
                                            cols, dlogits.data());
      },
      [&](cuda::Stream stream) {
        kernels::cuda::softmax_xent_backward(probs.data(), labels.data_int32(), dloss.data(), rows,
                                             cols, dlogits.data(), stream);
      });
  return dlogits;
}

}  // namespace

Tensor softmax(const Tensor& x) {
  constexpr const char* kOp = "softmax";
  detail::check_float(kOp, x);
  CAIRN_CHECK(x.ndim() >= 1 && (detail::cols_of(x) > 0 || x.numel() == 0), kOp,
              ": needs a non-empty last axis, got shape ", shape_str(x.shape()));
  const int64_t rows = detail::rows_of(x), cols = detail::cols_of(x);
  Tensor y = Tensor::empty(x.shape(), x.device());
  detail::dispatch(
      x.device(), [&] { kernels::cpu::softmax_rows(x.data(), rows, cols, y.data()); },
      [&](cuda::Stream stream) {
        kernels::cuda::softmax_rows(x.data(), rows, cols, y.data(), stream);
      });
  const Tensor saved = y.detach();
  autograd::record(kOp, {x}, y, [saved](const Tensor& dy) {
    return std::vector<Tensor>{softmax_backward(saved, dy)};
  });
  return y;
}

Tensor softmax_cross_entropy(const Tensor& logits, const Tensor& labels) {
  constexpr const char* kOp = "softmax_cross_entropy";
  detail::check_float(kOp, logits, "logits");
  detail::check_defined(kOp, labels, "labels");
  detail::check_same_device(kOp, logits, labels);
  CAIRN_CHECK(labels.dtype() == DType::kInt32, kOp, ": labels must be int32, got ",
              dtype_name(labels.dtype()));
  CAIRN_CHECK(logits.ndim() == 2 && labels.ndim() == 1 && labels.dim(0) == logits.dim(0), kOp,
              ": expects logits (N, C) and labels (N), got logits ", shape_str(logits.shape()),
              " and labels ", shape_str(labels.shape()));
  const int64_t rows = logits.dim(0), cols = logits.dim(1);
  CAIRN_CHECK(cols > 0, kOp, ": logits need at least one class, got shape ",
              shape_str(logits.shape()));
  if (labels.device().is_cpu()) {
    // On the host the check is free; on a GPU it would cost a synchronisation, so there an
    // out-of-range label shows up as a NaN loss for its row instead (kernels/softmax.h).
    const int32_t* label = labels.data_int32();
    for (int64_t r = 0; r < rows; ++r) {
      CAIRN_CHECK(label[r] >= 0 && label[r] < cols, kOp, ": label ", label[r], " at row ", r,
                  " is outside [0, ", cols, ")");
    }
  }
  Tensor loss = Tensor::empty({rows}, logits.device());
  Tensor probs = Tensor::empty(logits.shape(), logits.device());
  detail::dispatch(
      logits.device(),
      [&] {
        kernels::cpu::softmax_xent_forward(logits.data(), labels.data_int32(), rows, cols,
                                           loss.data(), probs.data());
      },
      [&](cuda::Stream stream) {
        kernels::cuda::softmax_xent_forward(logits.data(), labels.data_int32(), rows, cols,
                                            loss.data(), probs.data(), stream);
      });
  autograd::record(kOp, {logits, labels}, loss, [probs, labels](const Tensor& dloss) {
    return std::vector<Tensor>{softmax_xent_backward(probs, labels, dloss), Tensor()};
  });
  return loss;
}

}  // namespace cairn::ops
