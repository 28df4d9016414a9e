#include "cairn/blocks/loss.h"

#include "cairn/base/error.h"
#include "cairn/core/ops.h"

namespace cairn {
namespace {

Tensor reduce(const Tensor& per_sample, Reduction reduction) {
  switch (reduction) {
    case Reduction::kMean:
      return ops::mean(per_sample);
    case Reduction::kSum:
      return ops::sum(per_sample);
    case Reduction::kNone:
      return per_sample;
  }
  CAIRN_FAIL("loss: unknown reduction ", static_cast<int>(reduction));
}

}  // namespace

std::string reduction_name(Reduction reduction) {
  switch (reduction) {
    case Reduction::kMean:
      return "mean";
    case Reduction::kSum:
      return "sum";
    case Reduction::kNone:
      return "none";
  }
  return "unknown";
}

Tensor SoftmaxCrossEntropyLoss::operator()(const Tensor& logits, const Tensor& labels) const {
  return reduce(ops::softmax_cross_entropy(logits, labels), reduction_);
}

Tensor L2Loss::operator()(const Tensor& pred, const Tensor& label) const {
  return reduce(ops::l2_loss(pred, label), reduction_);
}

}  // namespace cairn
