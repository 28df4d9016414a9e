// CPU L2 loss (Gluon's L2Loss), per sample, accumulated in double.
#include "cairn/kernels/loss.h"

#include <limits>

#include "cairn/base/error.h"

namespace cairn::kernels::cpu {

// pred, label: (rows, cols) -> loss: (rows)
void l2_loss_forward(const float* pred, const float* label, int64_t rows, int64_t cols,
                     float* loss) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "cpu::l2_loss_forward: negative shape (", rows, ", ", cols,
              ")");
  // A row of no columns has an empty mean: NaN, like ops::mean of an empty tensor.
  const double inv_cols = cols > 0 ? 1.0 / static_cast<double>(cols) : 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* pr = pred + r * cols;
    const float* lr = label + r * cols;
    double sum = 0.0;
    for (int64_t c = 0; c < cols; ++c) {
      const double d = static_cast<double>(pr[c]) - static_cast<double>(lr[c]);
      sum += d * d;
    }
    loss[r] = cols > 0 ? static_cast<float>(0.5 * sum * inv_cols)
                       : std::numeric_limits<float>::quiet_NaN();
  }
}

// dpred[r, c] = dloss[r] * (pred[r, c] - label[r, c]) / cols
void l2_loss_backward(const float* pred, const float* label, const float* dloss, int64_t rows,
                      int64_t cols, float* dpred) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "cpu::l2_loss_backward: negative shape (", rows, ", ", cols,
              ")");
  if (cols == 0) return;
  const double inv_cols = 1.0 / static_cast<double>(cols);
  for (int64_t r = 0; r < rows; ++r) {
    const double scale = static_cast<double>(dloss[r]) * inv_cols;
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      dpred[i] = static_cast<float>(scale *
                                    (static_cast<double>(pred[i]) - static_cast<double>(label[i])));
    }
  }
}

}  // namespace cairn::kernels::cpu
