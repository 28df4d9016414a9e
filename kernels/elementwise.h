// Elementwise families: fill, unary maps and their backward, binary maps with broadcast or with a
// scalar.
//
// The ops themselves are rows of kernels/elementwise_ops.h: one scalar function per op, written
// once and instantiated by one templated grid-stride kernel per family (kernels/cuda/) and by a
// plain loop per family on the CPU (kernels/cpu/).
#pragma once

#include <cstdint>

#include "cairn/kernels/common.h"
#include "cairn/kernels/elementwise_ops.h"

namespace cairn::kernels {

// How b is laid over a, which is viewed as (rows, cols) row-major:
//   kNone:   b has rows*cols elements, same layout as a
//   kScalar: b has 1 element, used for every element
//   kRow:    b has cols elements, b[c] used for a[r, c] (bias over a batch)
//   kColumn: b has rows elements, b[r] used for a[r, c] (per-sample scale)
enum class Broadcast { kNone, kScalar, kRow, kColumn };

// Which side of the op a by-value scalar takes: y = a op s, or y = s op a (2 - x).
enum class ScalarSide { kRight, kLeft };

namespace cpu {

void fill(float* y, int64_t n, float value);
void fill_int32(int32_t* y, int64_t n, int32_t value);
// y = f(x); y may alias x.
void unary(UnaryOp op, const float* x, float* y, int64_t n);
// dx = the row's backward from x, y = f(x) and dy; x or y is read only where the row's kSaves
// names it (the other may be null); dx may alias dy.
void unary_backward(UnaryOp op, const float* x, const float* y, const float* dy, float* dx,
                    int64_t n);
// y = a op b, with b broadcast as described above; y may alias a.
void binary(BinaryOp op, const float* a, const float* b, float* y, int64_t rows, int64_t cols,
            Broadcast broadcast);
// y = a op s or s op a: Broadcast::kScalar with the scalar by value (x * 0.5f); y may alias a.
void binary_scalar(BinaryOp op, const float* a, float s, ScalarSide side, float* y, int64_t n);

}  // namespace cpu

namespace cuda {

void fill(float* y, int64_t n, float value, StreamHandle stream);
void fill_int32(int32_t* y, int64_t n, int32_t value, StreamHandle stream);
void unary(UnaryOp op, const float* x, float* y, int64_t n, StreamHandle stream);
void unary_backward(UnaryOp op, const float* x, const float* y, const float* dy, float* dx,
                    int64_t n, StreamHandle stream);
void binary(BinaryOp op, const float* a, const float* b, float* y, int64_t rows, int64_t cols,
            Broadcast broadcast, StreamHandle stream);
void binary_scalar(BinaryOp op, const float* a, float s, ScalarSide side, float* y, int64_t n,
                   StreamHandle stream);

}  // namespace cuda
}  // namespace cairn::kernels
