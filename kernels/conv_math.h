// The index math of 2-D convolution's im2col and col2im, written once for the CPU twins
// (kernels/cpu/conv.cpp) and the CUDA kernels (kernels/cuda/conv.cu).
//
// The column matrix of a chunk of `images` images is row-major (C*R*S, images*P*Q):
//   row    = (c * R + r) * S + s       the input channel and the kernel tap
//   column = (image * P + p) * Q + q   the image and the output position
//   col[row, column] = x[image, c, p * stride_h - pad_h + r * dilation_h,
//                                  q * stride_w - pad_w + s * dilation_w], 0 outside the input.
// The rows of one group (C/groups channels) are contiguous, so each group's GEMM reads a plain
// sub-matrix. col2im is the adjoint: each input element gathers the column entries it was copied
// to, in a fixed order (r, then s), so the sum is deterministic without atomics on either device.
#pragma once

#include <cstdint>

#include "cairn/kernels/common.h"

namespace cairn::kernels {

struct Conv2DGeometry {
  int64_t channels = 0, height = 0, width = 0;  // C, H, W of one input image
  int64_t filters = 0;                          // K
  int64_t kernel_h = 1, kernel_w = 1;           // R, S
  int64_t out_h = 0, out_w = 0;                 // P, Q
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;

  CAIRN_HOST_DEVICE int64_t taps() const { return kernel_h * kernel_w; }
  CAIRN_HOST_DEVICE int64_t col_rows() const { return channels * taps(); }  // C*R*S
  CAIRN_HOST_DEVICE int64_t out_pixels() const { return out_h * out_w; }    // P*Q
  CAIRN_HOST_DEVICE int64_t in_pixels() const { return height * width; }
  // x itself is the column matrix of one image: no im2col needed.
  CAIRN_HOST_DEVICE bool pointwise() const {
    return kernel_h == 1 && kernel_w == 1 && stride_h == 1 && stride_w == 1 && pad_h == 0 &&
           pad_w == 0;
  }
};

// The output size along one axis (PyTorch's formula); <= 0 when the kernel does not fit.
CAIRN_HOST_DEVICE inline int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride,
                                               int64_t pad, int64_t dilation) {
  const int64_t span = dilation * (kernel - 1) + 1;
  const int64_t room = in + 2 * pad - span;
  return room < 0 ? 0 : room / stride + 1;
}

// The input coordinate output position `out` reads through kernel tap `tap`.
CAIRN_HOST_DEVICE inline int64_t conv_in_index(int64_t out, int64_t tap, int64_t stride,
                                               int64_t pad, int64_t dilation) {
  return out * stride - pad + tap * dilation;
}

// The output positions [*begin, *end) whose input coordinate through `tap` lies inside [0, in):
// im2col copies those and zero-fills the rest of the row.
CAIRN_HOST_DEVICE inline void conv_valid_outputs(int64_t tap, int64_t in, int64_t out,
                                                 int64_t stride, int64_t pad, int64_t dilation,
                                                 int64_t* begin, int64_t* end) {
  const int64_t offset = tap * dilation - pad;  // input coordinate of output 0
  int64_t b = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  int64_t e = in - 1 - offset < 0 ? 0 : (in - 1 - offset) / stride + 1;
  if (e > out) e = out;
  if (b > e) b = e;
  *begin = b;
  *end = e;
}

// col[row, column] as the header comment defines it; x: (images, C, H, W).
CAIRN_HOST_DEVICE inline float im2col_value(const Conv2DGeometry& g, const float* x,
                                            int64_t images, int64_t row, int64_t column) {
  const int64_t s = row % g.kernel_w;
  const int64_t r = (row / g.kernel_w) % g.kernel_h;
  const int64_t c = row / g.taps();
  const int64_t q = column % g.out_w;
  const int64_t p = (column / g.out_w) % g.out_h;
  const int64_t image = column / g.out_pixels();
  (void)images;
  const int64_t ih = conv_in_index(p, r, g.stride_h, g.pad_h, g.dilation_h);
  const int64_t iw = conv_in_index(q, s, g.stride_w, g.pad_w, g.dilation_w);
  if (ih < 0 || ih >= g.height || iw < 0 || iw >= g.width) return 0.0f;
  return x[((image * g.channels + c) * g.height + ih) * g.width + iw];
}

// The output position that reads input coordinate `in_index` through `tap`, or -1 when none does
// (the stride skips it, or it falls outside the output).
CAIRN_HOST_DEVICE inline int64_t conv_out_index(int64_t in_index, int64_t tap, int64_t out,
                                                int64_t stride, int64_t pad, int64_t dilation) {
  const int64_t numerator = in_index + pad - tap * dilation;
  if (numerator < 0 || numerator % stride != 0) return -1;
  const int64_t o = numerator / stride;
  return o < out ? o : -1;
}

// dx[image, c, h, w] = the sum of the column entries x[image, c, h, w] was copied to, added in
// float in the order r = 0.., s = 0.. (at most R*S terms, as PyTorch's col2im adds them), so that
// the CPU's scatter over the rows in that order gives the same bits. col: (C*R*S, images*P*Q).
CAIRN_HOST_DEVICE inline float col2im_value(const Conv2DGeometry& g, const float* col,
                                            int64_t images, int64_t image, int64_t c, int64_t h,
                                            int64_t w) {
  const int64_t columns = images * g.out_pixels();
  const float* image_col = col + image * g.out_pixels();
  float sum = 0.0f;
  for (int64_t r = 0; r < g.kernel_h; ++r) {
    const int64_t p = conv_out_index(h, r, g.out_h, g.stride_h, g.pad_h, g.dilation_h);
    if (p < 0) continue;
    for (int64_t s = 0; s < g.kernel_w; ++s) {
      const int64_t q = conv_out_index(w, s, g.out_w, g.stride_w, g.pad_w, g.dilation_w);
      if (q < 0) continue;
      const int64_t row = (c * g.kernel_h + r) * g.kernel_w + s;
      sum += image_col[row * columns + p * g.out_w + q];
    }
  }
  return sum;
}

}  // namespace cairn::kernels
