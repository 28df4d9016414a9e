// L2 loss, per sample (Gluon's L2Loss): loss[r] = 0.5 * mean_c (pred[r, c] - label[r, c])^2.
// Both twins work in double and round to float once (a difference of 2e19 squares to a finite
// 4e38 on both); the backward's bits are the same on both devices.
// Softmax cross-entropy lives in softmax.h, beside the softmax it is built on.
#pragma once

#include <cstdint>

#include "cairn/kernels/common.h"

namespace cairn::kernels {
namespace cpu {
// pred, label: (rows, cols) -> loss: (rows)
void l2_loss_forward(const float* pred, const float* label, int64_t rows, int64_t cols,
                     float* loss);
// dpred[r, c] = dloss[r] * (pred[r, c] - label[r, c]) / cols
void l2_loss_backward(const float* pred, const float* label, const float* dloss, int64_t rows,
                      int64_t cols, float* dpred);
}  // namespace cpu

namespace cuda {
void l2_loss_forward(const float* pred, const float* label, int64_t rows, int64_t cols, float* loss,
                     StreamHandle stream);
void l2_loss_backward(const float* pred, const float* label, const float* dloss, int64_t rows,
                      int64_t cols, float* dpred, StreamHandle stream);
}  // namespace cuda
}  // namespace cairn::kernels
