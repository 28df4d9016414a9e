#include "cairn/blocks/pooling.h"

#include "cairn/base/error.h"

namespace cairn {
namespace {

std::string pair_str(int64_t h, int64_t w) { return std::to_string(h) + "x" + std::to_string(w); }

ops::Pool2DParams checked_params(const std::string& type_name, Size2 size,
                                 const Pool2DOptions& options) {
  const Size2 stride = options.stride.value_or(size);
  CAIRN_CHECK(size.h > 0 && size.w > 0, type_name, ": pool_size must be positive, got ",
              pair_str(size.h, size.w));
  CAIRN_CHECK(stride.h > 0 && stride.w > 0, type_name, ": stride must be positive, got ",
              pair_str(stride.h, stride.w));
  const Size2 pad = options.padding;
  CAIRN_CHECK(pad.h >= 0 && pad.w >= 0 && pad.h <= size.h / 2 && pad.w <= size.w / 2, type_name,
              ": padding ", pair_str(pad.h, pad.w), " must be in [0, pool_size / 2] for pool_size ",
              pair_str(size.h, size.w));
  ops::Pool2DParams params{size.h, size.w, stride.h, stride.w};
  params.pad_h = pad.h;
  params.pad_w = pad.w;
  params.ceil_mode = options.ceil_mode;
  params.count_include_pad = options.count_include_pad;
  return params;
}

}  // namespace

Pool2DBlock::Pool2DBlock(std::string type_name, Size2 pool_size, const Pool2DOptions& options)
    : Block(type_name), params_(checked_params(type_name, pool_size, options)) {}

std::string Pool2DBlock::describe_params() const {
  const ops::Pool2DParams& p = params_;
  return "size=" + pair_str(p.kernel_h, p.kernel_w) +
         ", stride=" + pair_str(p.stride_h, p.stride_w) +
         ", padding=" + pair_str(p.pad_h, p.pad_w) +
         ", ceil_mode=" + (p.ceil_mode ? "true" : "false");
}

MaxPool2D::MaxPool2D(Size2 pool_size, Pool2DOptions options)
    : Pool2DBlock("MaxPool2D", pool_size, options) {}

Tensor MaxPool2D::forward(const Tensor& x) { return ops::max_pool2d(x, params()); }

std::string MaxPool2D::describe() const { return "MaxPool2D(" + describe_params() + ")"; }

AvgPool2D::AvgPool2D(Size2 pool_size, Pool2DOptions options)
    : Pool2DBlock("AvgPool2D", pool_size, options) {}

Tensor AvgPool2D::forward(const Tensor& x) { return ops::avg_pool2d(x, params()); }

std::string AvgPool2D::describe() const {
  return "AvgPool2D(" + describe_params() +
         ", count_include_pad=" + (params().count_include_pad ? "true" : "false") + ")";
}

}  // namespace cairn
