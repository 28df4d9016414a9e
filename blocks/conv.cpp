#include "cairn/blocks/conv.h"

#include "cairn/base/error.h"
#include "cairn/blocks/layers.h"
#include "cairn/core/ops.h"

namespace cairn {
namespace {

// "5" for a square pair, "5x3" otherwise.
std::string pair_str(Size2 size) {
  return size.h == size.w ? std::to_string(size.h)
                          : std::to_string(size.h) + "x" + std::to_string(size.w);
}

}  // namespace

Conv2D::Conv2D(int64_t channels, Size2 kernel_size, Conv2DOptions options)
    : Block("Conv2D"),
      channels_(channels),
      kernel_size_(kernel_size),
      options_(std::move(options)) {
  const Conv2DOptions& o = options_;
  CAIRN_CHECK(channels > 0, "Conv2D: channels must be positive, got ", channels);
  CAIRN_CHECK(kernel_size.h > 0 && kernel_size.w > 0, "Conv2D: kernel_size must be positive, got ",
              kernel_size.h, "x", kernel_size.w);
  CAIRN_CHECK(o.stride.h > 0 && o.stride.w > 0, "Conv2D: stride must be positive, got ",
              o.stride.h, "x", o.stride.w);
  CAIRN_CHECK(o.dilation.h > 0 && o.dilation.w > 0, "Conv2D: dilation must be positive, got ",
              o.dilation.h, "x", o.dilation.w);
  CAIRN_CHECK(o.padding.h >= 0 && o.padding.w >= 0, "Conv2D: padding must be non-negative, got ",
              o.padding.h, "x", o.padding.w);
  CAIRN_CHECK(o.groups > 0, "Conv2D: groups must be positive, got ", o.groups);
  CAIRN_CHECK(channels % o.groups == 0, "Conv2D: channels ", channels,
              " are not divisible by groups=", o.groups);
  CAIRN_CHECK(o.in_channels >= 0, "Conv2D: in_channels must be >= 0 (0 = inferred), got ",
              o.in_channels);
  CAIRN_CHECK(o.in_channels % o.groups == 0, "Conv2D: in_channels ", o.in_channels,
              " are not divisible by groups=", o.groups);
  Activation::validate(o.activation);
  weight_ = register_parameter("weight",
                               {channels, o.in_channels / o.groups, kernel_size.h, kernel_size.w});
  if (o.use_bias) {
    bias_ = register_parameter("bias", {channels});
    bias_->set_initializer(init::zeros());  // Gluon's default bias_initializer, as Dense's
  }
  set_owners();
}

void Conv2D::set_owners() {
  weight_->set_owner(describe());
  if (bias_) bias_->set_owner(describe());
}

int64_t Conv2D::in_channels() const { return weight_->shape()[1] * options_.groups; }

std::string Conv2D::describe() const {
  const int64_t in = in_channels();
  const Conv2DOptions& o = options_;
  std::string text = "Conv2D(" + (in > 0 ? std::to_string(in) : "?") +
                     " -> " + std::to_string(channels_) + ", kernel=" +
                     std::to_string(kernel_size_.h) + "x" + std::to_string(kernel_size_.w) +
                     ", stride=" + pair_str(o.stride) + ", padding=" + pair_str(o.padding);
  if (o.dilation != Size2(1)) text += ", dilation=" + pair_str(o.dilation);
  if (o.groups != 1) text += ", groups=" + std::to_string(o.groups);
  if (!o.use_bias) text += ", no bias";
  return text + ", " + (o.activation.empty() ? "linear" : o.activation) + ")";
}

Tensor Conv2D::forward(const Tensor& x) {
  CAIRN_CHECK(x.defined(), describe(), ": input is an undefined tensor");
  CAIRN_CHECK(x.ndim() == 4, describe(), ": input must be (N, C, H, W), got shape ",
              shape_str(x.shape()));
  const int64_t features = x.dim(1);
  if (!weight_->shape_known()) {
    CAIRN_CHECK(features % options_.groups == 0, describe(), ": input has ", features,
                " channels (shape ", shape_str(x.shape()), "), not divisible by groups=",
                options_.groups);
    weight_->infer_shape(  // the first forward fixes in_channels
        {channels_, features / options_.groups, kernel_size_.h, kernel_size_.w});
    set_owners();
  }
  CAIRN_CHECK(features == in_channels(), describe(), ": input has ", features,
              " channels (shape ", shape_str(x.shape()), "), expected ", in_channels());
  const Tensor weight = weight_->data();  // first, so a missing initialize() names the weight
  ops::Conv2DParams params;
  params.stride_h = options_.stride.h;
  params.stride_w = options_.stride.w;
  params.pad_h = options_.padding.h;
  params.pad_w = options_.padding.w;
  params.dilation_h = options_.dilation.h;
  params.dilation_w = options_.dilation.w;
  params.groups = options_.groups;
  const Tensor y = ops::conv2d(x, weight, bias_ ? bias_->data() : Tensor(), params);
  return Activation::apply(options_.activation, y);
}

}  // namespace cairn
