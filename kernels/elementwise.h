// Elementwise families: fill, unary maps, binary maps with broadcast, ReLU backward.
//
// One scalar function per op, one templated grid-stride kernel per family (kernels/cuda/), and the
// same scalar functions applied in a plain loop on the CPU (kernels/cpu/).
#pragma once

#include <cstdint>

#include "cairn/kernels/common.h"

namespace cairn::kernels {

// y = f(x) elementwise; `scalar` is the s of the *Scalar ops and ignored by the others.
enum class UnaryOp {
  kRelu,        // max(x, 0)
  kNeg,         // -x
  kExp,         // exp(x)
  kLog,         // log(x)
  kSqrt,        // sqrt(x)
  kAbs,         // |x|
  kSign,        // -1, 0 or +1
  kSquare,      // x * x
  kSigmoid,     // 1 / (1 + exp(-x)), stable for large |x|
  kTanh,        // tanh(x)
  kAddScalar,   // x + s
  kMulScalar,   // x * s
  kDivScalar,   // x / s
  kRsubScalar,  // s - x
};

enum class BinaryOp { kAdd, kSub, kMul, kDiv };

// How b is laid over a, which is viewed as (rows, cols) row-major:
//   kNone:   b has rows*cols elements, same layout as a
//   kScalar: b has 1 element, used for every element
//   kRow:    b has cols elements, b[c] used for a[r, c] (bias over a batch)
//   kColumn: b has rows elements, b[r] used for a[r, c] (per-sample scale)
enum class Broadcast { kNone, kScalar, kRow, kColumn };

namespace cpu {

void fill(float* y, int64_t n, float value);
void fill_int32(int32_t* y, int64_t n, int32_t value);
void unary(UnaryOp op, const float* x, float* y, int64_t n, float scalar);
// y = a op b, with b broadcast as described above; y may alias a.
void binary(BinaryOp op, const float* a, const float* b, float* y, int64_t rows, int64_t cols,
            Broadcast broadcast);
// dx = dy where x > 0, else 0.
void relu_backward(const float* x, const float* dy, float* dx, int64_t n);

}  // namespace cpu

namespace cuda {

void fill(float* y, int64_t n, float value, StreamHandle stream);
void fill_int32(int32_t* y, int64_t n, int32_t value, StreamHandle stream);
void unary(UnaryOp op, const float* x, float* y, int64_t n, float scalar, StreamHandle stream);
void binary(BinaryOp op, const float* a, const float* b, float* y, int64_t rows, int64_t cols,
            Broadcast broadcast, StreamHandle stream);
void relu_backward(const float* x, const float* dy, float* dx, int64_t n, StreamHandle stream);

}  // namespace cuda
}  // namespace cairn::kernels
