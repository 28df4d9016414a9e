// Pooling blocks (Gluon's MaxPool2D, AvgPool2D, GlobalAvgPool2D, Flatten) over (N, C, H, W)
// inputs, PyTorch's semantics (core/ops.h, "Pooling and dropout"). They have no parameters.
#pragma once

#include <optional>
#include <string>

#include "cairn/blocks/block.h"
#include "cairn/blocks/size2.h"
#include "cairn/core/ops.h"

namespace cairn {

struct Pool2DOptions {
  std::optional<Size2> stride;  // the pool size when not given (PyTorch's and Gluon's default)
  Size2 padding = 0;            // at most half the pool size
  bool ceil_mode = false;
  bool count_include_pad = true;  // AvgPool2D only
};

// What MaxPool2D and AvgPool2D share: the parameters, checked at construction.
class Pool2DBlock : public Block {
 public:
  const ops::Pool2DParams& params() const { return params_; }

 protected:
  Pool2DBlock(std::string type_name, Size2 pool_size, const Pool2DOptions& options);
  // "size=2x2, stride=2x2, padding=0x0, ceil_mode=false"
  std::string describe_params() const;

 private:
  ops::Pool2DParams params_;
};

class MaxPool2D : public Pool2DBlock {
 public:
  explicit MaxPool2D(Size2 pool_size, Pool2DOptions options = {});
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
};

class AvgPool2D : public Pool2DBlock {
 public:
  explicit AvgPool2D(Size2 pool_size, Pool2DOptions options = {});
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
};

// (N, C, H, W) -> (N, C, 1, 1)
class GlobalAvgPool2D : public Block {
 public:
  GlobalAvgPool2D() : Block("GlobalAvgPool2D") {}
  Tensor forward(const Tensor& x) override { return ops::global_avg_pool2d(x); }
};

// (N, ...) -> (N, prod(...)), a view of the same data.
class Flatten : public Block {
 public:
  Flatten() : Block("Flatten") {}
  Tensor forward(const Tensor& x) override { return ops::flatten(x); }
};

}  // namespace cairn
