// Normalisation layers: BatchNorm (Gluon's BatchNorm, PyTorch's BatchNorm1d/2d) and LayerNorm,
// with PyTorch's parameter names, so that a state_dict loads as it is.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cairn/blocks/block.h"

namespace cairn {

struct BatchNormOptions {
  float momentum = 0.1f;    // running = (1 - momentum) * running + momentum * batch; in [0, 1]
  float epsilon = 1e-5f;    // > 0
  bool affine = true;       // learn a per-channel weight and bias
  int64_t in_channels = 0;  // 0: fixed by the first forward (as Dense's in_units)
};

// x: (N, C) or (N, C, ...), normalised per channel (axis 1). Training (autograd::is_training(),
// inside a RecordScope) normalises with the batch's statistics and updates the running ones in
// place; predicting normalises with the running ones and leaves them alone.
// Parameters and state, PyTorch's names: "weight" (ones) and "bias" (zeros) when affine,
// "running_mean" (zeros), "running_var" (ones), "num_batches_tracked" (int32, ()). Their
// initial values are their own: initialize(init::uniform()) leaves them as said. The running
// statistics are state: saved and loaded, never given gradients, never updated by a Trainer. In
// data-parallel training each rank keeps its own (PyTorch DDP with broadcast_buffers=False).
class BatchNorm : public Block {
 public:
  explicit BatchNorm(BatchNormOptions options = {});
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;  // "BatchNorm(3, momentum=0.1, epsilon=1e-05)"

  const BatchNormOptions& options() const { return options_; }
  int64_t in_channels() const { return running_mean_->shape()[0]; }  // 0 until known
  const ParameterPtr& weight() const { return weight_; }             // null without affine
  const ParameterPtr& bias() const { return bias_; }                 // null without affine
  const ParameterPtr& running_mean() const { return running_mean_; }
  const ParameterPtr& running_var() const { return running_var_; }
  const ParameterPtr& num_batches_tracked() const { return num_batches_tracked_; }

 private:
  BatchNormOptions options_;
  ParameterPtr weight_, bias_, running_mean_, running_var_, num_batches_tracked_;
};

struct LayerNormOptions {
  float epsilon = 1e-5f;  // > 0
  bool affine = true;     // learn an elementwise weight and bias of normalized_shape
};

// Normalises each sample over its last normalized_shape.size() axes, which must be
// normalized_shape (PyTorch's LayerNorm). "weight" (ones) and "bias" (zeros) when affine.
class LayerNorm : public Block {
 public:
  explicit LayerNorm(std::vector<int64_t> normalized_shape, LayerNormOptions options = {});
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;  // "LayerNorm((5,), epsilon=1e-05)"

  const Shape& normalized_shape() const { return normalized_shape_; }
  const LayerNormOptions& options() const { return options_; }
  const ParameterPtr& weight() const { return weight_; }  // null without affine
  const ParameterPtr& bias() const { return bias_; }      // null without affine

 private:
  Shape normalized_shape_;
  LayerNormOptions options_;
  ParameterPtr weight_, bias_;
};

}  // namespace cairn
