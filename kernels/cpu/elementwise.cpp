// CPU elementwise families: fill, unary maps, binary maps with broadcast, ReLU backward.
#include "cairn/kernels/elementwise.h"

#include <algorithm>
#include <cmath>

#include "cairn/core/error.h"
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

float sigmoid(float x) {
  // exp of a negative argument only, so neither branch overflows to inf/inf.
  if (x >= 0.0f) return 1.0f / (1.0f + std::exp(-x));
  const float e = std::exp(x);
  return e / (1.0f + e);
}

float sign(float x) {
  if (std::isnan(x)) return x;
  return static_cast<float>((x > 0.0f) - (x < 0.0f));
}

// NaN propagates (as in PyTorch), rather than fmaxf's quiet 0: NaN <= 0 is false, so NaN is kept.
// One comparison and a select, which vectorises (isnan(x) || x > 0 did not).
float relu(float x) { return x <= 0.0f ? 0.0f : x; }

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

void unary(UnaryOp op, const float* x, float* y, int64_t n, float scalar) {
  CAIRN_CHECK(n >= 0, "cpu::unary: negative size ", n);
  const float s = scalar;
  switch (op) {
    case UnaryOp::kRelu:
      return map_unary(x, y, n, [](float v) { return relu(v); });
    case UnaryOp::kNeg:
      return map_unary(x, y, n, [](float v) { return -v; });
    case UnaryOp::kExp:
      return map_unary(x, y, n, [](float v) { return std::exp(v); });
    case UnaryOp::kLog:
      return map_unary(x, y, n, [](float v) { return std::log(v); });
    case UnaryOp::kSqrt:
      return map_unary(x, y, n, [](float v) { return std::sqrt(v); });
    case UnaryOp::kAbs:
      return map_unary(x, y, n, [](float v) { return std::fabs(v); });
    case UnaryOp::kSign:
      return map_unary(x, y, n, [](float v) { return sign(v); });
    case UnaryOp::kSquare:
      return map_unary(x, y, n, [](float v) { return v * v; });
    case UnaryOp::kSigmoid:
      return map_unary(x, y, n, [](float v) { return sigmoid(v); });
    case UnaryOp::kTanh:
      return map_unary(x, y, n, [](float v) { return std::tanh(v); });
    case UnaryOp::kAddScalar:
      return map_unary(x, y, n, [s](float v) { return v + s; });
    case UnaryOp::kMulScalar:
      return map_unary(x, y, n, [s](float v) { return v * s; });
    case UnaryOp::kDivScalar:
      return map_unary(x, y, n, [s](float v) { return v / s; });
    case UnaryOp::kRsubScalar:
      return map_unary(x, y, n, [s](float v) { return s - v; });
  }
  CAIRN_FAIL("cpu::unary: unknown UnaryOp ", static_cast<int>(op));
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
  switch (op) {
    case BinaryOp::kAdd:
      return map_binary(a, b, y, rows, cols, broadcast, [](float p, float q) { return p + q; });
    case BinaryOp::kSub:
      return map_binary(a, b, y, rows, cols, broadcast, [](float p, float q) { return p - q; });
    case BinaryOp::kMul:
      return map_binary(a, b, y, rows, cols, broadcast, [](float p, float q) { return p * q; });
    case BinaryOp::kDiv:
      return map_binary(a, b, y, rows, cols, broadcast, [](float p, float q) { return p / q; });
  }
  CAIRN_FAIL("cpu::binary: unknown BinaryOp ", static_cast<int>(op));
}

void relu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  CAIRN_CHECK(n >= 0, "cpu::relu_backward: negative size ", n);
  // dy is loaded whatever x is, so the loop is a compare and a select: no branch around the
  // load, and it vectorises (a NaN in dy where x <= 0 still gives 0, as before).
  parallel_for(n, kElementsPerThread, [&](int64_t begin, int64_t end) {
    run_widest([&]() CAIRN_VECTOR_LOOP {
      for (int64_t i = begin; i < end; ++i) {
        const float g = dy[i];
        dx[i] = x[i] > 0.0f ? g : 0.0f;
      }
    });
  });
}

}  // namespace cairn::kernels::cpu
