// CPU reductions: whole tensor, per row, per column (the bias gradient), argmax per row.
#include "cairn/kernels/reduce.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cairn/base/error.h"
#include "cairn/kernels/cpu/parallel.h"
#include "cairn/kernels/cpu/vector_dispatch.h"

namespace cairn::kernels::cpu {

namespace {

// One contiguous run of n values, accumulated in double so that this is the accurate oracle.
float reduce_span(ReduceOp op, const float* x, int64_t n) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kMean: {
      double sum = 0.0;
      for (int64_t i = 0; i < n; ++i) sum += x[i];
      if (op == ReduceOp::kSum) return static_cast<float>(sum);
      // 0.0 / 0 is NaN: the mean of nothing.
      return n == 0 ? std::numeric_limits<float>::quiet_NaN()
                    : static_cast<float>(sum / static_cast<double>(n));
    }
    case ReduceOp::kMax: {
      // The order of kernels/cuda/max_combine.cuh's NanMax, which any combining order gives the
      // same answer with: a NaN anywhere makes the max NaN, and +0 is above -0.
      float best = -std::numeric_limits<float>::infinity();
      for (int64_t i = 0; i < n; ++i) {
        if (std::isnan(x[i])) return x[i];
        if (x[i] > best || (x[i] == best && !std::signbit(x[i]))) best = x[i];
      }
      return best;
    }
    case ReduceOp::kSumSquares: {
      double sum = 0.0;
      for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
      return static_cast<float>(sum);
    }
  }
  CAIRN_FAIL("cpu reduce: unknown ReduceOp ", static_cast<int>(op));
}

}  // namespace

void reduce_all(ReduceOp op, const float* x, int64_t n, float* out) {
  CAIRN_CHECK(n >= 0, "cpu::reduce_all: negative size ", n);
  out[0] = reduce_span(op, x, n);
}

void reduce_rows(ReduceOp op, const float* x, int64_t rows, int64_t cols, float* out) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "cpu::reduce_rows: negative shape (", rows, ", ", cols, ")");
  for (int64_t r = 0; r < rows; ++r) out[r] = reduce_span(op, x + r * cols, cols);
}

void sum_columns(const float* x, int64_t rows, int64_t cols, float* out, Accumulate accumulate) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "cpu::sum_columns: negative shape (", rows, ", ", cols, ")");
  // Row-major walk (cache friendly) into one double accumulator per column. Each column's sum
  // keeps its order (row by row); the columns are independent, so the inner loop vectorises
  // across them, and ranges of columns go to different threads, without changing a bit.
  thread_local std::vector<double> scratch;
  if (scratch.size() < size_t(cols)) scratch.resize(size_t(cols));
  double* column_sums = scratch.data();
  const int64_t columns_per_thread = std::max<int64_t>(64, 32768 / std::max<int64_t>(1, rows));
  parallel_for(cols, columns_per_thread, [&](int64_t begin, int64_t end) {
    detail::run_widest([&]() CAIRN_VECTOR_LOOP {
      for (int64_t c = begin; c < end; ++c) column_sums[c] = 0.0;
      for (int64_t r = 0; r < rows; ++r) {
        const float* row = x + r * cols;
        for (int64_t c = begin; c < end; ++c) column_sums[c] += row[c];
      }
    });
  });
  for (int64_t c = 0; c < cols; ++c) {
    out[c] = accumulate == Accumulate::kAdd ? static_cast<float>(out[c] + column_sums[c])
                                            : static_cast<float>(column_sums[c]);
  }
}

void argmax_rows(const float* x, int64_t rows, int64_t cols, int32_t* out) {
  CAIRN_CHECK(rows >= 0, "cpu::argmax_rows: negative rows ", rows);
  CAIRN_CHECK(cols >= 1, "cpu::argmax_rows: needs cols >= 1, got ", cols);
  CAIRN_CHECK(cols <= std::numeric_limits<int32_t>::max(), "cpu::argmax_rows: cols ", cols,
              " does not fit an int32 index");
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * cols;
    int64_t best = 0;
    // Strictly above keeps the first of equal maxima, in the order reduce_rows' max uses: a NaN
    // counts as the largest value (numpy and PyTorch agree), so the first NaN wins and nothing
    // displaces it, and +0 is above -0, so that row[argmax] is the row's max bit for bit.
    for (int64_t c = 1; c < cols; ++c) {
      if (std::isnan(row[best])) break;
      const bool above = row[c] > row[best] ||
                         (row[c] == row[best] && std::signbit(row[best]) && !std::signbit(row[c]));
      if (std::isnan(row[c]) || above) best = c;
    }
    out[r] = static_cast<int32_t>(best);
  }
}

}  // namespace cairn::kernels::cpu
