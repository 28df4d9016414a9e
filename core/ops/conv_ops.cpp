// 2-D convolution, PyTorch's conv2d: im2col + GEMM forward, GEMM + col2im and GEMM backward.
//
// The CPU runs kernels::cpu's drivers (whole images per thread). A GPU works a chunk of the batch
// at a time: im2col of the chunk into one (C*R*S, chunk*P*Q) matrix, one cuBLAS GEMM per group,
// then one pass that lays the (K, chunk*P*Q) product out as NCHW with the bias added. A chunk of
// one image needs no layout change (its product is already (K, P*Q)), nor, for a 1x1 kernel with
// stride 1 and no padding, an im2col (x is its own column matrix).
#include <algorithm>
#include <atomic>
#include <memory>

#include "cairn/core/autograd.h"
#include "cairn/core/ops.h"
#include "cairn/core/ops/op_support.h"
#include "cairn/kernels/conv.h"
#include "cairn/kernels/gemm.h"

namespace cairn::ops {
namespace {

using kernels::Accumulate;
using kernels::Conv2DGeometry;

constexpr const char* kOp = "conv2d";
// The default bound on a GPU chunk's column matrix (and its product): big enough that a batch of
// small images is one chunk, small enough to leave the device's memory to the network.
constexpr size_t kDefaultChunkBytes = size_t(256) << 20;
std::atomic<size_t> g_chunk_bytes{0};

size_t chunk_bytes() {
  const size_t set = g_chunk_bytes.load(std::memory_order_relaxed);
  return set == 0 ? kDefaultChunkBytes : set;
}

// Images per GPU chunk: the column matrix, the GEMM's product and the layout change of dy within
// the budget, at least one image.
int64_t chunk_images(const Conv2DGeometry& g, int64_t n) {
  const int64_t per_image =
      int64_t(sizeof(float)) * g.out_pixels() * std::max<int64_t>(1, g.col_rows() + g.filters);
  return std::max<int64_t>(1, std::min<int64_t>(n, int64_t(chunk_bytes()) / per_image));
}

// A float buffer from the device's caching allocator, for one op's scratch.
struct Scratch {
  std::shared_ptr<Storage> storage;
  float* data = nullptr;
  Scratch(const Device& device, int64_t floats) {
    if (floats <= 0) return;
    storage = detail::workspace(device, size_t(floats) * sizeof(float));
    data = static_cast<float*>(storage->data());
  }
};

// c (m, n) = op(a) op(b), row-major, on the handle (bound to the op's stream).
void gpu_gemm(kernels::BlasHandle handle, const float* a, const float* b, float* c, int64_t m,
              int64_t n, int64_t k, Transpose ta, Transpose tb, Accumulate accumulate) {
  kernels::RowMajorGemm request;
  request.a = a;
  request.b = b;
  request.c = c;
  request.m = m;
  request.n = n;
  request.k = k;
  request.transpose_a = ta;
  request.transpose_b = tb;
  request.accumulate = accumulate;
  kernels::cuda::gemm(kernels::plan_gemm(request), handle);
}

void forward_gpu(const Conv2DGeometry& g, int64_t n, const Tensor& x, const Tensor& weight,
                 const Tensor& bias, Tensor& y, cuda::Stream stream) {
  const int64_t kg = g.filters / g.groups, rows_g = g.col_rows() / g.groups, pq = g.out_pixels();
  const int64_t chunk = chunk_images(g, n);
  const bool need_col = !(g.pointwise() && chunk == 1);
  Scratch col(x.device(), need_col ? g.col_rows() * chunk * pq : 0);
  Scratch product(x.device(), chunk > 1 ? g.filters * chunk * pq : 0);
  const float* b = bias.defined() ? bias.data() : nullptr;
  for (int64_t first = 0; first < n; first += chunk) {
    const int64_t images = std::min(chunk, n - first);
    const float* x_chunk = x.data() + first * g.channels * g.in_pixels();
    float* y_chunk = y.data() + first * g.filters * pq;
    const float* matrix = x_chunk;
    if (need_col) {
      kernels::cuda::im2col(g, x_chunk, images, col.data, stream);
      matrix = col.data;
    }
    float* out = chunk > 1 ? product.data : y_chunk;
    const int64_t columns = images * pq;
    {
      const cuda::BlasLease blas(x.device());
      for (int64_t group = 0; group < g.groups; ++group) {
        gpu_gemm(blas.handle(), weight.data() + group * kg * rows_g,
                 matrix + group * rows_g * columns, out + group * kg * columns, kg, columns,
                 rows_g, Transpose::kNo, Transpose::kNo, Accumulate::kOverwrite);
      }
    }
    if (chunk > 1) {
      kernels::cuda::rows_to_images(product.data, b, images, g.filters, pq, y_chunk, stream);
    } else if (b != nullptr) {
      kernels::cuda::add_channel_bias(y_chunk, b, 1, g.filters, pq, stream);
    }
  }
}

// dx and dw (either may be undefined: not wanted) from dy, chunk by chunk.
void backward_gpu(const Conv2DGeometry& g, int64_t n, const Tensor& x, const Tensor& weight,
                  const Tensor& dy, Tensor& dx, Tensor& dw, cuda::Stream stream) {
  const int64_t kg = g.filters / g.groups, rows_g = g.col_rows() / g.groups, pq = g.out_pixels();
  const int64_t chunk = chunk_images(g, n);
  const bool single = chunk == 1;
  // One column buffer serves both: dx's d col, then dw's im2col of x.
  const bool need_col = !(g.pointwise() && single);
  Scratch col(x.device(), need_col ? g.col_rows() * chunk * pq : 0);
  Scratch dy_rows(x.device(), single ? 0 : g.filters * chunk * pq);
  for (int64_t first = 0; first < n; first += chunk) {
    const int64_t images = std::min(chunk, n - first);
    const int64_t columns = images * pq;
    const float* x_chunk = x.data() + first * g.channels * g.in_pixels();
    const float* dy_chunk = dy.data() + first * g.filters * pq;
    const float* dy_matrix = dy_chunk;  // (K, images*P*Q)
    if (!single) {
      kernels::cuda::images_to_rows(dy_chunk, images, g.filters, pq, dy_rows.data, stream);
      dy_matrix = dy_rows.data;
    }
    if (dx.defined()) {
      float* dx_chunk = dx.data() + first * g.channels * g.in_pixels();
      float* target = need_col ? col.data : dx_chunk;
      {
        const cuda::BlasLease blas(x.device());
        for (int64_t group = 0; group < g.groups; ++group) {
          gpu_gemm(blas.handle(), weight.data() + group * kg * rows_g,
                   dy_matrix + group * kg * columns, target + group * rows_g * columns, rows_g,
                   columns, kg, Transpose::kYes, Transpose::kNo, Accumulate::kOverwrite);
        }
      }
      if (need_col) kernels::cuda::col2im(g, col.data, images, dx_chunk, stream);
    }
    if (dw.defined()) {
      const float* matrix = x_chunk;
      if (need_col) {
        kernels::cuda::im2col(g, x_chunk, images, col.data, stream);
        matrix = col.data;
      }
      const cuda::BlasLease blas(x.device());
      for (int64_t group = 0; group < g.groups; ++group) {
        gpu_gemm(blas.handle(), dy_matrix + group * kg * columns,
                 matrix + group * rows_g * columns, dw.data() + group * kg * rows_g, kg, rows_g,
                 columns, Transpose::kNo, Transpose::kYes,
                 first == 0 ? Accumulate::kOverwrite : Accumulate::kAdd);
      }
    }
  }
}

Tensor run_forward(const Conv2DGeometry& g, int64_t n, const Tensor& x, const Tensor& weight,
                   const Tensor& bias) {
  Tensor y = Tensor::empty({n, g.filters, g.out_h, g.out_w}, x.device());
  if (y.numel() == 0) return y;
  detail::dispatch(
      x.device(),
      [&] {
        kernels::cpu::conv2d_forward(g, n, x.data(), weight.data(),
                                     bias.defined() ? bias.data() : nullptr, y.data());
      },
      [&](cuda::Stream stream) { forward_gpu(g, n, x, weight, bias, y, stream); });
  return y;
}

// The gradients the flags ask for (undefined where not asked); x and weight detached.
struct Wanted {
  bool x, weight, bias;
};
std::vector<Tensor> run_backward(const Conv2DGeometry& g, int64_t n, const Tensor& x,
                                 const Tensor& weight, const Tensor& dy, Wanted wanted) {
  const Device device = x.device();
  Tensor dx, dw, db;
  if (wanted.x) dx = Tensor::empty(x.shape(), device);
  if (wanted.weight) dw = Tensor::empty(weight.shape(), device);
  if (wanted.bias) {
    // sum over N, P, Q: the rows of (N*K, P*Q), then the columns of (N, K).
    const Tensor per_image = sum_rows(reshape(dy, {n * g.filters, g.out_pixels()}));
    db = sum_columns(reshape(per_image, {n, g.filters}));
  }
  if (dy.numel() == 0) {
    // An empty batch or no filters: nothing reads x, nothing is read through the weight.
    if (dx.defined()) dx = Tensor::zeros(x.shape(), device);
    if (dw.defined()) dw = Tensor::zeros(weight.shape(), device);
    return {dx, dw, db};
  }
  detail::dispatch(
      device,
      [&] {
        if (dx.defined()) {
          kernels::cpu::conv2d_backward_data(g, n, dy.data(), weight.data(), dx.data());
        }
        if (dw.defined()) {
          kernels::cpu::conv2d_backward_weight(g, n, dy.data(), x.data(), dw.data());
        }
      },
      [&](cuda::Stream stream) { backward_gpu(g, n, x, weight, dy, dx, dw, stream); });
  return {dx, dw, db};
}

void check_params(const Conv2DParams& p) {
  CAIRN_CHECK(p.stride_h > 0 && p.stride_w > 0, kOp, ": stride must be positive, got (",
              p.stride_h, ", ", p.stride_w, ")");
  CAIRN_CHECK(p.dilation_h > 0 && p.dilation_w > 0, kOp, ": dilation must be positive, got (",
              p.dilation_h, ", ", p.dilation_w, ")");
  CAIRN_CHECK(p.pad_h >= 0 && p.pad_w >= 0, kOp, ": padding must be non-negative, got (", p.pad_h,
              ", ", p.pad_w, ")");
  CAIRN_CHECK(p.groups > 0, kOp, ": groups must be positive, got ", p.groups);
}

}  // namespace

void set_conv2d_chunk_bytes(size_t bytes) { g_chunk_bytes.store(bytes); }

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
              const Conv2DParams& params) {
  detail::check_float(kOp, x, "x");
  detail::check_float(kOp, weight, "weight");
  detail::check_same_device(kOp, x, weight);
  if (bias.defined()) {
    detail::check_float(kOp, bias, "bias");
    detail::check_same_device(kOp, x, bias);
  }
  check_params(params);
  CAIRN_CHECK(x.ndim() == 4, kOp, ": x must be 4-d (N, C, H, W), got shape ",
              shape_str(x.shape()));
  CAIRN_CHECK(weight.ndim() == 4, kOp, ": weight must be 4-d (K, C / groups, R, S), got shape ",
              shape_str(weight.shape()));
  const int64_t n = x.dim(0), groups = params.groups;
  Conv2DGeometry g;
  g.channels = x.dim(1);
  g.height = x.dim(2);
  g.width = x.dim(3);
  g.filters = weight.dim(0);
  g.kernel_h = weight.dim(2);
  g.kernel_w = weight.dim(3);
  g.stride_h = params.stride_h;
  g.stride_w = params.stride_w;
  g.pad_h = params.pad_h;
  g.pad_w = params.pad_w;
  g.dilation_h = params.dilation_h;
  g.dilation_w = params.dilation_w;
  g.groups = groups;
  CAIRN_CHECK(g.channels % groups == 0, kOp, ": in-channel count ", g.channels, " of x ",
              shape_str(x.shape()), " is not divisible by groups=", groups);
  CAIRN_CHECK(g.filters % groups == 0, kOp, ": out-channel count ", g.filters, " of weight ",
              shape_str(weight.shape()), " is not divisible by groups=", groups);
  CAIRN_CHECK(weight.dim(1) * groups == g.channels, kOp, ": weight ", shape_str(weight.shape()),
              " expects ", weight.dim(1), " channels per group (", weight.dim(1) * groups,
              " in all with groups=", groups, ") but x ", shape_str(x.shape()), " has ",
              g.channels);
  CAIRN_CHECK(g.kernel_h > 0 && g.kernel_w > 0, kOp, ": kernel must be at least 1x1, got weight ",
              shape_str(weight.shape()));
  if (bias.defined()) {
    CAIRN_CHECK(bias.ndim() == 1 && bias.dim(0) == g.filters, kOp, ": bias must be (",
                g.filters, ") to match weight ", shape_str(weight.shape()), ", got ",
                shape_str(bias.shape()));
  }
  const int64_t span_h = g.dilation_h * (g.kernel_h - 1) + 1;
  const int64_t span_w = g.dilation_w * (g.kernel_w - 1) + 1;
  CAIRN_CHECK(span_h <= g.height + 2 * g.pad_h && span_w <= g.width + 2 * g.pad_w, kOp,
              ": kernel larger than the padded input: kernel spans ", span_h, "x", span_w,
              " (weight ", shape_str(weight.shape()), ", dilation ", g.dilation_h, "x",
              g.dilation_w, ") but x ", shape_str(x.shape()), " padded by ", g.pad_h, "x",
              g.pad_w, " is ", g.height + 2 * g.pad_h, "x", g.width + 2 * g.pad_w);
  g.out_h = kernels::conv_out_size(g.height, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h);
  g.out_w = kernels::conv_out_size(g.width, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w);

  Tensor y = run_forward(g, n, x, weight, bias);
  // A node's inputs must all be defined: without a bias there are two.
  std::vector<Tensor> inputs{x, weight};
  if (bias.defined()) inputs.push_back(bias);
  autograd::record(kOp, inputs, y, [g, n, x, weight, bias](const Tensor& dy) {
    const Wanted wanted{x.requires_grad(), weight.requires_grad(),
                        bias.defined() && bias.requires_grad()};
    std::vector<Tensor> grads = run_backward(g, n, x.detach(), weight.detach(), dy, wanted);
    if (!bias.defined()) grads.pop_back();
    return grads;
  });
  return y;
}

}  // namespace cairn::ops
