// 2-D convolution as im2col + GEMM (no cuDNN), and its backward as GEMM + col2im.
//
// The pieces (both devices): im2col and col2im (kernels/conv_math.h defines the column matrix),
// and the two layout changes between a GEMM's (K, images*P*Q) rows and NCHW images. The GPU op
// chains them around cuBLAS one chunk of the batch at a time (core/ops/conv_ops.cpp). The CPU has
// its own drivers below, which hand whole images to each thread (im2col, then one GEMM per group
// straight into the image's NCHW output, with the column matrix still in that core's cache).
#pragma once

#include <cstdint>

#include "cairn/kernels/common.h"
#include "cairn/kernels/conv_math.h"

namespace cairn::kernels {
namespace cpu {

// x: (images, C, H, W) -> col: (C*R*S, images*P*Q)
void im2col(const Conv2DGeometry& g, const float* x, int64_t images, float* col);
// col: (C*R*S, images*P*Q) -> dx: (images, C, H, W), overwritten (col2im_value)
void col2im(const Conv2DGeometry& g, const float* col, int64_t images, float* dx);
// rows: (K, images*PQ) -> y: (images, K, PQ), y[n, k, i] = rows[k, n*PQ + i] (+ bias[k] unless
// bias is null)
void rows_to_images(const float* rows, const float* bias, int64_t images, int64_t k, int64_t pq,
                    float* y);
// y: (images, K, PQ) -> rows: (K, images*PQ), the inverse of rows_to_images without a bias
void images_to_rows(const float* y, int64_t images, int64_t k, int64_t pq, float* rows);
// y: (images, K, PQ), y[n, k, i] += bias[k]
void add_channel_bias(float* y, const float* bias, int64_t images, int64_t k, int64_t pq);

// The CPU drivers. x: (N, C, H, W), w: (K, C/groups, R, S), bias: (K) or null, y: (N, K, P, Q).
void conv2d_forward(const Conv2DGeometry& g, int64_t n, const float* x, const float* w,
                    const float* bias, float* y);
// dy: (N, K, P, Q) -> dx: (N, C, H, W), overwritten
void conv2d_backward_data(const Conv2DGeometry& g, int64_t n, const float* dy, const float* w,
                          float* dx);
// dy, x -> dw: (K, C/groups, R, S), overwritten. The per-thread partial sums are added in a
// fixed order, so the bits depend on the thread count only.
void conv2d_backward_weight(const Conv2DGeometry& g, int64_t n, const float* dy, const float* x,
                            float* dw);

}  // namespace cpu

namespace cuda {

void im2col(const Conv2DGeometry& g, const float* x, int64_t images, float* col,
            StreamHandle stream);
void col2im(const Conv2DGeometry& g, const float* col, int64_t images, float* dx,
            StreamHandle stream);
void rows_to_images(const float* rows, const float* bias, int64_t images, int64_t k, int64_t pq,
                    float* y, StreamHandle stream);
void images_to_rows(const float* y, int64_t images, int64_t k, int64_t pq, float* rows,
                    StreamHandle stream);
void add_channel_bias(float* y, const float* bias, int64_t images, int64_t k, int64_t pq,
                      StreamHandle stream);

}  // namespace cuda
}  // namespace cairn::kernels
