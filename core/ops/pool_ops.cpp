// 2-d max and average pooling, global average pooling and flatten.
#include <climits>

#include "cairn/core/autograd.h"
#include "cairn/core/ops.h"
#include "cairn/core/ops/op_support.h"
#include "cairn/kernels/pool.h"

namespace cairn::ops {
namespace {

using kernels::AvgDivisor;
using kernels::Pool2DGeometry;

// Checks x and params as PyTorch's pool2d_shape_check does, naming `op`, and returns the geometry.
Pool2DGeometry pool_geometry(const char* op, const Tensor& x, const Pool2DParams& p) {
  detail::check_float(op, x);
  CAIRN_CHECK(x.ndim() == 4, op, ": expects a 4-d input (N, C, H, W), got shape ",
              shape_str(x.shape()));
  const int64_t h = x.dim(2), w = x.dim(3);
  CAIRN_CHECK(h > 0 && w > 0, op, ": the input's planes are empty, shape ", shape_str(x.shape()));
  CAIRN_CHECK(p.kernel_h > 0 && p.kernel_w > 0, op, ": kernel must be positive, got ", p.kernel_h,
              "x", p.kernel_w);
  CAIRN_CHECK(p.stride_h > 0 && p.stride_w > 0, op, ": stride must be positive, got ", p.stride_h,
              "x", p.stride_w);
  CAIRN_CHECK(p.pad_h >= 0 && p.pad_w >= 0, op, ": padding must be >= 0, got ", p.pad_h, "x",
              p.pad_w);
  CAIRN_CHECK(p.pad_h <= p.kernel_h / 2 && p.pad_w <= p.kernel_w / 2, op, ": padding ", p.pad_h,
              "x", p.pad_w, " must be at most half the kernel ", p.kernel_h, "x", p.kernel_w);
  // Sizes beyond int32 are refused before any arithmetic on them can overflow (a plane's indices
  // are int32 anyway, for the argmax).
  CAIRN_CHECK(p.kernel_h <= INT32_MAX && p.kernel_w <= INT32_MAX && p.stride_h <= INT32_MAX &&
                  p.stride_w <= INT32_MAX,
              op, ": kernel ", p.kernel_h, "x", p.kernel_w, " or stride ", p.stride_h, "x",
              p.stride_w, " out of range");
  CAIRN_CHECK(h <= INT32_MAX / w, op, ": a plane of ", h, "x", w,
              " has more elements than int32 indices reach");
  Pool2DGeometry g;
  g.planes = x.dim(0) * x.dim(1);
  g.in_h = h;
  g.in_w = w;
  g.kernel_h = p.kernel_h;
  g.kernel_w = p.kernel_w;
  g.stride_h = p.stride_h;
  g.stride_w = p.stride_w;
  g.pad_h = p.pad_h;
  g.pad_w = p.pad_w;
  g.out_h = kernels::pool_output_size(h, p.kernel_h, p.stride_h, p.pad_h, p.ceil_mode);
  g.out_w = kernels::pool_output_size(w, p.kernel_w, p.stride_w, p.pad_w, p.ceil_mode);
  CAIRN_CHECK(g.out_h >= 1 && g.out_w >= 1, op, ": kernel ", p.kernel_h, "x", p.kernel_w,
              " is larger than the padded input ", h + 2 * p.pad_h, "x", w + 2 * p.pad_w,
              " (input ", shape_str(x.shape()), ", padding ", p.pad_h, "x", p.pad_w,
              "): the output would be ", g.out_h, "x", g.out_w);
  return g;
}

Shape output_shape(const Tensor& x, const Pool2DGeometry& g) {
  return {x.dim(0), x.dim(1), g.out_h, g.out_w};
}

Tensor max_pool2d_backward(const Tensor& dy, const Tensor& argmax, const Pool2DGeometry& g,
                           const Shape& x_shape) {
  Tensor dx = Tensor::empty(x_shape, dy.device());
  detail::dispatch(
      dy.device(),
      [&] { kernels::cpu::max_pool2d_backward(dy.data(), argmax.data_int32(), g, dx.data()); },
      [&](cuda::Stream stream) {
        kernels::cuda::max_pool2d_backward(dy.data(), argmax.data_int32(), g, dx.data(), stream);
      });
  return dx;
}

Tensor avg_pool2d_backward(const Tensor& dy, const Pool2DGeometry& g, AvgDivisor divisor,
                           const Shape& x_shape) {
  Tensor dx = Tensor::empty(x_shape, dy.device());
  detail::dispatch(
      dy.device(), [&] { kernels::cpu::avg_pool2d_backward(dy.data(), g, divisor, dx.data()); },
      [&](cuda::Stream stream) {
        kernels::cuda::avg_pool2d_backward(dy.data(), g, divisor, dx.data(), stream);
      });
  return dx;
}

}  // namespace

Tensor max_pool2d(const Tensor& x, const Pool2DParams& params) {
  constexpr const char* kOp = "max_pool2d";
  const Pool2DGeometry g = pool_geometry(kOp, x, params);
  Tensor y = Tensor::empty(output_shape(x, g), x.device());
  Tensor argmax = Tensor::empty(output_shape(x, g), x.device(), DType::kInt32);
  detail::dispatch(
      x.device(),
      [&] { kernels::cpu::max_pool2d_forward(x.data(), g, y.data(), argmax.data_int32()); },
      [&](cuda::Stream stream) {
        kernels::cuda::max_pool2d_forward(x.data(), g, y.data(), argmax.data_int32(), stream);
      });
  autograd::record(kOp, {x}, y, [argmax, g, shape = x.shape()](const Tensor& dy) {
    return std::vector<Tensor>{max_pool2d_backward(dy, argmax, g, shape)};
  });
  return y;
}

Tensor avg_pool2d(const Tensor& x, const Pool2DParams& params) {
  constexpr const char* kOp = "avg_pool2d";
  const Pool2DGeometry g = pool_geometry(kOp, x, params);
  const AvgDivisor divisor =
      params.count_include_pad ? AvgDivisor::kIncludePadding : AvgDivisor::kExcludePadding;
  Tensor y = Tensor::empty(output_shape(x, g), x.device());
  detail::dispatch(
      x.device(), [&] { kernels::cpu::avg_pool2d_forward(x.data(), g, divisor, y.data()); },
      [&](cuda::Stream stream) {
        kernels::cuda::avg_pool2d_forward(x.data(), g, divisor, y.data(), stream);
      });
  autograd::record(kOp, {x}, y, [g, divisor, shape = x.shape()](const Tensor& dy) {
    return std::vector<Tensor>{avg_pool2d_backward(dy, g, divisor, shape)};
  });
  return y;
}

Tensor global_avg_pool2d(const Tensor& x) {
  constexpr const char* kOp = "global_avg_pool2d";
  detail::check_float(kOp, x);
  CAIRN_CHECK(x.ndim() == 4, kOp, ": expects a 4-d input (N, C, H, W), got shape ",
              shape_str(x.shape()));
  CAIRN_CHECK(x.dim(2) > 0 && x.dim(3) > 0, kOp, ": the input's planes are empty, shape ",
              shape_str(x.shape()));
  // A plane is a row of H * W: the row mean (deterministic on both devices), recorded with its
  // backward, between two views.
  const int64_t n = x.dim(0), c = x.dim(1);
  return reshape(mean_rows(reshape(x, {n * c, x.dim(2) * x.dim(3)})), {n, c, 1, 1});
}

Tensor flatten(const Tensor& x) {
  constexpr const char* kOp = "flatten";
  detail::check_defined(kOp, x, "input");
  CAIRN_CHECK(x.ndim() >= 1, kOp, ": expects an input with a batch axis, got a 0-d tensor");
  // The product is counted here rather than left to reshape's -1, which cannot infer it when the
  // batch is empty.
  int64_t features = 1;
  for (int64_t axis = 1; axis < x.ndim(); ++axis) features *= x.dim(axis);
  return reshape(x, {x.dim(0), features});
}

}  // namespace cairn::ops
