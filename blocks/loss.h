// Losses as Gluon writes them: callable objects that compute the per-sample loss with the op of
// the same name and then reduce it over the batch.
//
//   SoftmaxCrossEntropyLoss loss;              // mean over the batch
//   Tensor l = loss(net(x), labels);           // shape ()
//   l.backward();
//
// Gluon's losses return the per-sample vector and let backward() sum it; cairn's default is the
// mean instead, so that a loss value does not grow with the batch size. Trainer::step(batch_size)
// divides the gradient by batch_size as Gluon does, so with Reduction::kMean pass step(1), and
// with Reduction::kSum pass step(batch_size): both give the gradient of the batch mean.
#pragma once

#include <string>

#include "cairn/core/tensor.h"

namespace cairn {

// How a loss turns the per-sample values (N) into its result.
enum class Reduction {
  kMean,  // shape (), the batch average
  kSum,   // shape (), the batch total
  kNone,  // shape (N), one value a sample
};

std::string reduction_name(Reduction reduction);

// logits: (N, C), labels: int32 (N) in [0, C).
class SoftmaxCrossEntropyLoss {
 public:
  explicit SoftmaxCrossEntropyLoss(Reduction reduction = Reduction::kMean)
      : reduction_(reduction) {}
  Tensor operator()(const Tensor& logits, const Tensor& labels) const;
  Reduction reduction() const { return reduction_; }

 private:
  Reduction reduction_;
};

// 0.5 * mean over the features of (pred - label)^2 a sample; pred: (N, C) or (N), label alike.
class L2Loss {
 public:
  explicit L2Loss(Reduction reduction = Reduction::kMean) : reduction_(reduction) {}
  Tensor operator()(const Tensor& pred, const Tensor& label) const;
  Reduction reduction() const { return reduction_; }

 private:
  Reduction reduction_;
};

}  // namespace cairn
