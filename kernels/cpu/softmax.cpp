// CPU row softmax and softmax cross-entropy, in double, with the row maximum subtracted first.
#include "cairn/kernels/softmax.h"

#include <cmath>
#include <limits>
#include <vector>

#include "cairn/base/error.h"

namespace cairn::kernels::cpu {

namespace {

// Largest value of a row (cols >= 1); a NaN is skipped here but poisons the sum of exps later.
double row_max(const float* row, int64_t cols) {
  float best = row[0];
  for (int64_t c = 1; c < cols; ++c) {
    if (row[c] > best) best = row[c];
  }
  return best;
}

// exps[c] = exp(row[c] - max); returns their sum, added in order c = 0, 1, ...: at least 1 (the
// max term), so its log and reciprocal are finite. Each exp is computed once and kept for the
// probabilities (it was computed twice; the same calls give the same values).
double exp_shifted(const float* row, int64_t cols, double max, double* exps) {
  double sum = 0.0;
  for (int64_t c = 0; c < cols; ++c) {
    exps[c] = std::exp(static_cast<double>(row[c]) - max);
    sum += exps[c];
  }
  return sum;
}

// Room for one row's exps.
double* row_scratch(int64_t cols) {
  thread_local std::vector<double> scratch;
  if (int64_t(scratch.size()) < cols) scratch.resize(size_t(cols));
  return scratch.data();
}

}  // namespace

void softmax_rows(const float* x, int64_t rows, int64_t cols, float* y) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "cpu::softmax_rows: negative shape (", rows, ", ", cols, ")");
  if (cols == 0) return;
  double* exps = row_scratch(cols);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    const double max = row_max(xr, cols);
    const double sum = exp_shifted(xr, cols, max, exps);
    for (int64_t c = 0; c < cols; ++c) yr[c] = static_cast<float>(exps[c] / sum);
  }
}

void softmax_backward_rows(const float* y, const float* dy, int64_t rows, int64_t cols, float* dx) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "cpu::softmax_backward_rows: negative shape (", rows, ", ",
              cols, ")");
  for (int64_t r = 0; r < rows; ++r) {
    const float* yr = y + r * cols;
    const float* dyr = dy + r * cols;
    float* dxr = dx + r * cols;
    double dot = 0.0;
    for (int64_t c = 0; c < cols; ++c) dot += static_cast<double>(dyr[c]) * yr[c];
    for (int64_t c = 0; c < cols; ++c) {
      dxr[c] = static_cast<float>(yr[c] * (static_cast<double>(dyr[c]) - dot));
    }
  }
}

void softmax_xent_forward(const float* logits, const int32_t* labels, int64_t rows, int64_t cols,
                          float* loss, float* probs) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "cpu::softmax_xent_forward: negative shape (", rows, ", ",
              cols, ")");
  double* exps = row_scratch(cols);
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t label = labels[r];
    const bool label_ok = label >= 0 && label < cols;
    if (cols == 0) {
      loss[r] = std::numeric_limits<float>::quiet_NaN();  // no class can be the label
      continue;
    }
    const float* xr = logits + r * cols;
    float* pr = probs + r * cols;
    const double max = row_max(xr, cols);
    const double sum = exp_shifted(xr, cols, max, exps);
    for (int64_t c = 0; c < cols; ++c) pr[c] = static_cast<float>(exps[c] / sum);
    // logsumexp(x) - x[label] = log(sum) - (x[label] - max), both terms small.
    loss[r] = label_ok ? static_cast<float>(std::log(sum) - (static_cast<double>(xr[label]) - max))
                       : std::numeric_limits<float>::quiet_NaN();
  }
}

void softmax_xent_backward(const float* probs, const int32_t* labels, const float* dloss,
                           int64_t rows, int64_t cols, float* dlogits) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "cpu::softmax_xent_backward: negative shape (", rows, ", ",
              cols, ")");
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t label = labels[r];
    const bool label_ok = label >= 0 && label < cols;
    const float* pr = probs + r * cols;
    float* dr = dlogits + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      if (!label_ok) {
        dr[c] = std::numeric_limits<float>::quiet_NaN();
        continue;
      }
      const float target = c == label ? 1.0f : 0.0f;
      dr[c] = dloss[r] * (pr[c] - target);
    }
  }
}

}  // namespace cairn::kernels::cpu
