// CPU elementwise families: fill, unary maps and their backward, binary maps with broadcast or a
// scalar. The scalar functions are the rows of kernels/elementwise_ops.h, the same the CUDA
// kernels instantiate.
#include "cairn/kernels/elementwise.h"

#include <algorithm>
#include <cmath>

#include "cairn/base/error.h"
#include "cairn/kernels/cpu/parallel.h"
#include "cairn/kernels/cpu/vector_dispatch.h"

namespace cairn::kernels::cpu {

namespace {

using detail::run_widest;

// Below this many elements per thread a loop stays on one thread (parallel.h): waking a helper
// costs more than it saves.
constexpr int64_t kElementsPerThread = 32768;

// The op is chosen once, outside the loop, so each loop body is a single inlined scalar function
// (passed as a lambda: a function pointer would be a call per element).
template <typename F>
void map_unary(const float* x, float* y, int64_t n, F f) {
  parallel_for(n, kElementsPerThread, [&](int64_t begin, int64_t end) {
    run_widest([&]() CAIRN_VECTOR_LOOP {
      for (int64_t i = begin; i < end; ++i) y[i] = f(x[i]);
    });
  });
}

// The broadcast is chosen once, outside the loops (a switch per element kept them scalar).
template <typename F>
void map_binary(const float* a, const float* b, float* y, int64_t rows, int64_t cols,
                Broadcast broadcast, F f) {
  // Ranges of rows (of elements, without a per-row operand) on each thread.
  const int64_t n = rows * cols;
  const int64_t rows_per_thread = kElementsPerThread / std::max<int64_t>(1, cols) + 1;
  switch (broadcast) {
    case Broadcast::kNone:
      return parallel_for(n, kElementsPerThread, [&](int64_t begin, int64_t end) {
        run_widest([&]() CAIRN_VECTOR_LOOP {
          for (int64_t i = begin; i < end; ++i) y[i] = f(a[i], b[i]);
        });
      });
    case Broadcast::kScalar:
      return parallel_for(n, kElementsPerThread, [&](int64_t begin, int64_t end) {
        run_widest([&]() CAIRN_VECTOR_LOOP {
          const float bv = b[0];
          for (int64_t i = begin; i < end; ++i) y[i] = f(a[i], bv);
        });
      });
    case Broadcast::kRow:
      return parallel_for(rows, rows_per_thread, [&](int64_t begin, int64_t end) {
        run_widest([&]() CAIRN_VECTOR_LOOP {
          for (int64_t r = begin; r < end; ++r) {
            const float* ar = a + r * cols;
            float* yr = y + r * cols;
            for (int64_t c = 0; c < cols; ++c) yr[c] = f(ar[c], b[c]);
          }
        });
      });
    case Broadcast::kColumn:
      return parallel_for(rows, rows_per_thread, [&](int64_t begin, int64_t end) {
        run_widest([&]() CAIRN_VECTOR_LOOP {
          for (int64_t r = begin; r < end; ++r) {
            const float* ar = a + r * cols;
            float* yr = y + r * cols;
            const float bv = b[r];
            for (int64_t c = 0; c < cols; ++c) yr[c] = f(ar[c], bv);
          }
        });
      });
  }
}

}  // namespace

void fill(float* y, int64_t n, float value) {
  CAIRN_CHECK(n >= 0, "cpu::fill: negative size ", n);
  run_widest([&]() CAIRN_VECTOR_LOOP {
    for (int64_t i = 0; i < n; ++i) y[i] = value;
  });
}

void fill_int32(int32_t* y, int64_t n, int32_t value) {
  CAIRN_CHECK(n >= 0, "cpu::fill_int32: negative size ", n);
  for (int64_t i = 0; i < n; ++i) y[i] = value;
}

void unary(UnaryOp op, const float* x, float* y, int64_t n) {
  CAIRN_CHECK(n >= 0, "cpu::unary: negative size ", n);
  const bool known = visit(op, [&](auto row) {
    using Row = decltype(row);
    map_unary(x, y, n, [](float v) { return Row::forward(v); });
  });
  if (!known) CAIRN_FAIL("cpu::unary: unknown UnaryOp ", static_cast<int>(op));
}

void unary_backward(UnaryOp op, const float* x, const float* y, const float* dy, float* dx,
                    int64_t n) {
  CAIRN_CHECK(n >= 0, "cpu::unary_backward: negative size ", n);
  const bool known = visit(op, [&](auto row) {
    using Row = decltype(row);
    // dy and whatever the row saves are loaded whatever their values, so each loop is loads and
    // the row's arithmetic and selects: no branch around a load, and it vectorises.
    parallel_for(n, kElementsPerThread, [&](int64_t begin, int64_t end) {
      run_widest([&]() CAIRN_VECTOR_LOOP {
        for (int64_t i = begin; i < end; ++i) {
          const float xi = Row::kSaves == Saves::kInput ? x[i] : 0.0f;
          const float yi = Row::kSaves == Saves::kOutput ? y[i] : 0.0f;
          dx[i] = Row::backward(xi, yi, dy[i]);
        }
      });
    });
  });
  if (!known) CAIRN_FAIL("cpu::unary_backward: unknown UnaryOp ", static_cast<int>(op));
}

void binary(BinaryOp op, const float* a, const float* b, float* y, int64_t rows, int64_t cols,
            Broadcast broadcast) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "cpu::binary: negative shape (", rows, ", ", cols, ")");
  switch (broadcast) {
    case Broadcast::kNone:
    case Broadcast::kScalar:
    case Broadcast::kRow:
    case Broadcast::kColumn:
      break;
    default:
      CAIRN_FAIL("cpu::binary: unknown Broadcast ", static_cast<int>(broadcast));
  }
  const bool known = visit(op, [&](auto row) {
    using Row = decltype(row);
    map_binary(a, b, y, rows, cols, broadcast, [](float p, float q) { return Row::forward(p, q); });
  });
  if (!known) CAIRN_FAIL("cpu::binary: unknown BinaryOp ", static_cast<int>(op));
}

void binary_scalar(BinaryOp op, const float* a, float s, ScalarSide side, float* y, int64_t n) {
  CAIRN_CHECK(n >= 0, "cpu::binary_scalar: negative size ", n);
  CAIRN_CHECK(side == ScalarSide::kRight || side == ScalarSide::kLeft,
              "cpu::binary_scalar: unknown ScalarSide ", static_cast<int>(side));
  const bool known = visit(op, [&](auto row) {
    using Row = decltype(row);
    if (side == ScalarSide::kRight) {
      map_unary(a, y, n, [s](float v) { return Row::forward(v, s); });
    } else {
      map_unary(a, y, n, [s](float v) { return Row::forward(s, v); });
    }
  });
  if (!known) CAIRN_FAIL("cpu::binary_scalar: unknown BinaryOp ", static_cast<int>(op));
}

}  // namespace cairn::kernels::cpu
