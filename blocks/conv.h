// Convolution blocks: Conv2D, and Size2, the (height, width) pair that kernel sizes, strides,
// paddings and dilations of 2-D layers are given as (the pooling blocks take it too).
#pragma once

#include <cstdint>
#include <string>

#include "cairn/blocks/block.h"
#include "cairn/blocks/size2.h"

namespace cairn {

struct Conv2DOptions {
  Size2 stride = 1;
  Size2 padding = 0;
  Size2 dilation = 1;
  int64_t groups = 1;
  // "" / "linear" / any Activation name ("relu", ...), applied after the bias.
  std::string activation;
  bool use_bias = true;
  // 0: deferred, fixed by the first forward (like Dense's in_units).
  int64_t in_channels = 0;
};

// y = activation(conv2d(x, weight) + bias) on (N, C, H, W) inputs, PyTorch's Conv2d semantics.
// weight: (channels, in_channels / groups, kh, kw), bias: (channels), PyTorch's names and layout,
// so a PyTorch state_dict loads. Depthwise is groups == in_channels.
class Conv2D : public Block {
 public:
  Conv2D(int64_t channels, Size2 kernel_size, Conv2DOptions options = {});
  Tensor forward(const Tensor& x) override;
  // "Conv2D(1 -> 6, kernel=5x5, stride=1, padding=2, relu)"
  std::string describe() const override;

  int64_t channels() const { return channels_; }
  int64_t in_channels() const;  // 0 until known (the first forward, or a loaded file)
  Size2 kernel_size() const { return kernel_size_; }
  const Conv2DOptions& options() const { return options_; }
  const ParameterPtr& weight() const { return weight_; }
  const ParameterPtr& bias() const { return bias_; }  // null without bias

 private:
  void set_owners();

  int64_t channels_;
  Size2 kernel_size_;
  Conv2DOptions options_;
  ParameterPtr weight_;
  ParameterPtr bias_;
};

}  // namespace cairn
