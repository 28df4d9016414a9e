// 2-D convolution's CUDA kernels: im2col, col2im (a gather per input element, no atomics, so
// deterministic), and the layout changes between a GEMM's (K, images*P*Q) rows and NCHW images.
// The index math is kernels/conv_math.h's, shared with the CPU twins (kernels/cpu/conv.cpp).
#include <cuda_runtime.h>

#include <cstdint>

#include "cairn/base/error.h"
#include "cairn/kernels/conv.h"
#include "cairn/kernels/cuda/launch.cuh"

namespace cairn::kernels::cuda {
namespace {

// x: (images, C, H, W) -> col: (C*R*S, images*P*Q), one thread per column entry; adjacent
// threads write adjacent columns.
__global__ void im2col_kernel(Conv2DGeometry g, const float* x, int64_t images, float* col) {
  const int64_t columns = images * g.out_pixels();
  const int64_t n = g.col_rows() * columns;
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    col[i] = im2col_value(g, x, images, i / columns, i % columns);
  }
}

// col: (C*R*S, images*P*Q) -> dx: (images, C, H, W), one thread per input element.
__global__ void col2im_kernel(Conv2DGeometry g, const float* col, int64_t images, float* dx) {
  const int64_t n = images * g.channels * g.in_pixels();
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t w = i % g.width, h = (i / g.width) % g.height;
    const int64_t c = (i / g.in_pixels()) % g.channels, image = i / (g.in_pixels() * g.channels);
    dx[i] = col2im_value(g, col, images, image, c, h, w);
  }
}

// rows: (K, images*PQ) -> y: (images, K, PQ) (+ bias[k]), one thread per element of y.
__global__ void rows_to_images_kernel(const float* rows, const float* bias, int64_t images,
                                      int64_t k, int64_t pq, float* y) {
  const int64_t n = images * k * pq;
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t pixel = i % pq, channel = (i / pq) % k, image = i / (pq * k);
    const float v = rows[(channel * images + image) * pq + pixel];
    y[i] = bias != nullptr ? v + bias[channel] : v;
  }
}

// y: (images, K, PQ) -> rows: (K, images*PQ), one thread per element of rows.
__global__ void images_to_rows_kernel(const float* y, int64_t images, int64_t k, int64_t pq,
                                      float* rows) {
  const int64_t n = images * k * pq;
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t pixel = i % pq, image = (i / pq) % images, channel = i / (pq * images);
    rows[i] = y[(image * k + channel) * pq + pixel];
  }
}

// y: (images, K, PQ) += bias[k]
__global__ void add_channel_bias_kernel(float* y, const float* bias, int64_t k, int64_t pq,
                                        int64_t n) {
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    y[i] += bias[(i / pq) % k];
  }
}

// The launchers' shared check (the fake device's twin makes the same one): a geometry the op
// layer validated, and sizes whose products fit int64.
void check_geometry(const char* what, const Conv2DGeometry& g, int64_t images) {
  CAIRN_CHECK(images >= 0 && g.channels >= 0 && g.height >= 0 && g.width >= 0 &&
                  g.kernel_h >= 1 && g.kernel_w >= 1 && g.out_h >= 0 && g.out_w >= 0 &&
                  g.stride_h >= 1 && g.stride_w >= 1 && g.pad_h >= 0 && g.pad_w >= 0 &&
                  g.dilation_h >= 1 && g.dilation_w >= 1,
              what, ": invalid geometry (images=", images, " C=", g.channels, " H=", g.height,
              " W=", g.width, " R=", g.kernel_h, " S=", g.kernel_w, " P=", g.out_h, " Q=",
              g.out_w, ")");
}

void check_layout(const char* what, int64_t images, int64_t k, int64_t pq) {
  CAIRN_CHECK(images >= 0 && k >= 0 && pq >= 0, what, ": negative size (images=", images,
              " k=", k, " pq=", pq, ")");
}

}  // namespace

void im2col(const Conv2DGeometry& g, const float* x, int64_t images, float* col,
            StreamHandle stream) {
  check_geometry("im2col", g, images);
  const int64_t n = g.col_rows() * images * g.out_pixels();
  if (n == 0) return;
  im2col_kernel<<<grid_size(n), kBlockThreads, 0, stream>>>(g, x, images, col);
  CAIRN_CHECK_LAUNCH("im2col_kernel", stream);
}

void col2im(const Conv2DGeometry& g, const float* col, int64_t images, float* dx,
            StreamHandle stream) {
  check_geometry("col2im", g, images);
  const int64_t n = images * g.channels * g.in_pixels();
  if (n == 0) return;
  col2im_kernel<<<grid_size(n), kBlockThreads, 0, stream>>>(g, col, images, dx);
  CAIRN_CHECK_LAUNCH("col2im_kernel", stream);
}

void rows_to_images(const float* rows, const float* bias, int64_t images, int64_t k, int64_t pq,
                    float* y, StreamHandle stream) {
  check_layout("rows_to_images", images, k, pq);
  const int64_t n = images * k * pq;
  if (n == 0) return;
  rows_to_images_kernel<<<grid_size(n), kBlockThreads, 0, stream>>>(rows, bias, images, k, pq, y);
  CAIRN_CHECK_LAUNCH("rows_to_images_kernel", stream);
}

void images_to_rows(const float* y, int64_t images, int64_t k, int64_t pq, float* rows,
                    StreamHandle stream) {
  check_layout("images_to_rows", images, k, pq);
  const int64_t n = images * k * pq;
  if (n == 0) return;
  images_to_rows_kernel<<<grid_size(n), kBlockThreads, 0, stream>>>(y, images, k, pq, rows);
  CAIRN_CHECK_LAUNCH("images_to_rows_kernel", stream);
}

void add_channel_bias(float* y, const float* bias, int64_t images, int64_t k, int64_t pq,
                      StreamHandle stream) {
  check_layout("add_channel_bias", images, k, pq);
  const int64_t n = images * k * pq;
  if (n == 0) return;
  add_channel_bias_kernel<<<grid_size(n), kBlockThreads, 0, stream>>>(y, bias, k, pq, n);
  CAIRN_CHECK_LAUNCH("add_channel_bias_kernel", stream);
}

}  // namespace cairn::kernels::cuda
