// L2 loss, per sample (Gluon's L2Loss). Softmax cross-entropy lives in softmax_ops.cpp, beside the
// softmax it is built on.
#include "cairn/core/autograd.h"
#include "cairn/core/ops.h"
#include "cairn/core/ops/op_support.h"
#include "cairn/kernels/loss.h"

namespace cairn::ops {
namespace {

// pred and label as (rows, cols): a 1-d pred is one value a sample.
int64_t l2_cols(const Tensor& pred) { return pred.ndim() == 2 ? pred.dim(1) : 1; }

Tensor l2_loss_backward(const Tensor& pred, const Tensor& label, const Tensor& dloss) {
  const int64_t rows = pred.dim(0), cols = l2_cols(pred);
  Tensor dpred = Tensor::empty(pred.shape(), pred.device());
  detail::dispatch(
      pred.device(),
      [&] {
        kernels::cpu::l2_loss_backward(pred.data(), label.data(), dloss.data(), rows, cols,
                                       dpred.data());
      },
      [&](cuda::Stream stream) {
        kernels::cuda::l2_loss_backward(pred.data(), label.data(), dloss.data(), rows, cols,
                                        dpred.data(), stream);
      });
  return dpred;
}

}  // namespace

Tensor l2_loss(const Tensor& pred, const Tensor& label) {
  constexpr const char* kOp = "l2_loss";
  detail::check_float(kOp, pred, "pred");
  detail::check_float(kOp, label, "label");
  detail::check_same_device(kOp, pred, label);
  CAIRN_CHECK(pred.ndim() == 1 || pred.ndim() == 2, kOp, ": expects pred (N, C) or (N), got ",
              shape_str(pred.shape()));
  // The label may carry or drop a trailing 1 (a Dense(1) output against a vector of targets), as
  // Gluon reshapes the label like the prediction; anything else is a mistake worth reporting.
  const bool same_shape = label.shape() == pred.shape();
  const bool trailing_one = label.ndim() >= 1 && label.dim(0) == pred.dim(0) &&
                            label.numel() == pred.numel() && l2_cols(pred) == 1 &&
                            (label.ndim() == 1 || (label.ndim() == 2 && label.dim(1) == 1));
  CAIRN_CHECK(same_shape || trailing_one, kOp, ": label shape ", shape_str(label.shape()),
              " does not match pred shape ", shape_str(pred.shape()));
  const int64_t rows = pred.dim(0), cols = l2_cols(pred);
  CAIRN_CHECK(cols > 0, kOp, ": pred needs at least one value a sample, got shape ",
              shape_str(pred.shape()));
  const Tensor target = same_shape ? label : label.detach().reshape(pred.shape());

  Tensor loss = Tensor::empty({rows}, pred.device());
  detail::dispatch(
      pred.device(),
      [&] { kernels::cpu::l2_loss_forward(pred.data(), target.data(), rows, cols, loss.data()); },
      [&](cuda::Stream stream) {
        kernels::cuda::l2_loss_forward(pred.data(), target.data(), rows, cols, loss.data(), stream);
      });
  const Tensor saved_pred = pred.detach();
  const Tensor saved_label = target.detach();
  autograd::record(kOp, {pred, label}, loss, [saved_pred, saved_label](const Tensor& dloss) {
    return std::vector<Tensor>{l2_loss_backward(saved_pred, saved_label, dloss), Tensor()};
  });
  return loss;
}

}  // namespace cairn::ops
