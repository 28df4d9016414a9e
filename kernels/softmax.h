// Row softmax and softmax cross-entropy, numerically stable (the row maximum is subtracted first).
#pragma once

#include <cstdint>

#include "cairn/kernels/common.h"

namespace cairn::kernels {
namespace cpu {

// x, y: (rows, cols); y[r] = softmax(x[r])
void softmax_rows(const float* x, int64_t rows, int64_t cols, float* y);
// dx[r] = y[r] * (dy[r] - <dy[r], y[r]>)
void softmax_backward_rows(const float* y, const float* dy, int64_t rows, int64_t cols, float* dx);
// logits: (rows, cols), labels: (rows) in [0, cols)
// loss: (rows), loss[r] = logsumexp(logits[r]) - logits[r, labels[r]]
// probs: (rows, cols), softmax(logits), kept for the backward pass
// An out-of-range label gives loss NaN for that row (callers validate first where they can).
void softmax_xent_forward(const float* logits, const int32_t* labels, int64_t rows, int64_t cols,
                          float* loss, float* probs);
// dlogits[r, c] = dloss[r] * (probs[r, c] - (c == labels[r]))
void softmax_xent_backward(const float* probs, const int32_t* labels, const float* dloss,
                           int64_t rows, int64_t cols, float* dlogits);

}  // namespace cpu

namespace cuda {

void softmax_rows(const float* x, int64_t rows, int64_t cols, float* y, StreamHandle stream);
void softmax_backward_rows(const float* y, const float* dy, int64_t rows, int64_t cols, float* dx,
                           StreamHandle stream);
void softmax_xent_forward(const float* logits, const int32_t* labels, int64_t rows, int64_t cols,
                          float* loss, float* probs, StreamHandle stream);
void softmax_xent_backward(const float* probs, const int32_t* labels, const float* dloss,
                           int64_t rows, int64_t cols, float* dlogits, StreamHandle stream);

}  // namespace cuda
}  // namespace cairn::kernels
