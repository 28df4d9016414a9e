// CPU elementwise families: fill, unary maps, binary maps with broadcast, ReLU backward.
#include "cairn/kernels/elementwise.h"

#include <cmath>

#include "cairn/core/error.h"

namespace cairn::kernels::cpu {

namespace {

// The op is chosen once, outside the loop, so each loop body is a single inlined scalar function.
template <typename F>
void map_unary(const float* x, float* y, int64_t n, F f) {
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
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

// NaN propagates (as in PyTorch), rather than fmaxf's quiet 0.
float relu(float x) { return std::isnan(x) || x > 0.0f ? x : 0.0f; }

template <typename F>
void map_binary(const float* a, const float* b, float* y, int64_t rows, int64_t cols,
                Broadcast broadcast, F f) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      float bv = 0.0f;
      switch (broadcast) {
        case Broadcast::kNone:
          bv = b[i];
          break;
        case Broadcast::kScalar:
          bv = b[0];
          break;
        case Broadcast::kRow:
          bv = b[c];
          break;
        case Broadcast::kColumn:
          bv = b[r];
          break;
      }
      y[i] = f(a[i], bv);
    }
  }
}

}  // namespace

void fill(float* y, int64_t n, float value) {
  CAIRN_CHECK(n >= 0, "cpu::fill: negative size ", n);
  for (int64_t i = 0; i < n; ++i) y[i] = value;
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
      return map_unary(x, y, n, relu);
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
      return map_unary(x, y, n, sign);
    case UnaryOp::kSquare:
      return map_unary(x, y, n, [](float v) { return v * v; });
    case UnaryOp::kSigmoid:
      return map_unary(x, y, n, sigmoid);
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
  for (int64_t i = 0; i < n; ++i) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}

}  // namespace cairn::kernels::cpu
