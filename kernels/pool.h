// 2-d max and average pooling over (N, C, H, W) tensors, viewed as N * C planes (the per-element
// math: kernels/pool_math.h).
#pragma once

#include <cstdint>

#include "cairn/kernels/common.h"
#include "cairn/kernels/pool_math.h"

namespace cairn::kernels {

// Throws naming `what` unless g describes a pooling both twins can run: sizes >= 0, kernel and
// stride >= 1, padding in [0, kernel / 2], every window starting inside the input or the left
// padding, a plane's indices within int32 (max pooling's argmax), and no element count that
// overflows int64. The CPU twins, the CUDA launchers and the fake device's all call it.
void check_pool2d_geometry(const char* what, const Pool2DGeometry& g);

namespace cpu {

// x: (planes, in_h, in_w) -> y, argmax: (planes, out_h, out_w); argmax is the index within the
// plane (ih * in_w + iw) of the element y came from.
void max_pool2d_forward(const float* x, const Pool2DGeometry& g, float* y, int32_t* argmax);
// dy, argmax: (planes, out_h, out_w) -> dx: (planes, in_h, in_w), overwritten.
void max_pool2d_backward(const float* dy, const int32_t* argmax, const Pool2DGeometry& g,
                         float* dx);
// x: (planes, in_h, in_w) -> y: (planes, out_h, out_w)
void avg_pool2d_forward(const float* x, const Pool2DGeometry& g, AvgDivisor divisor, float* y);
// dy: (planes, out_h, out_w) -> dx: (planes, in_h, in_w), overwritten.
void avg_pool2d_backward(const float* dy, const Pool2DGeometry& g, AvgDivisor divisor, float* dx);

}  // namespace cpu

namespace cuda {

void max_pool2d_forward(const float* x, const Pool2DGeometry& g, float* y, int32_t* argmax,
                        StreamHandle stream);
void max_pool2d_backward(const float* dy, const int32_t* argmax, const Pool2DGeometry& g, float* dx,
                         StreamHandle stream);
void avg_pool2d_forward(const float* x, const Pool2DGeometry& g, AvgDivisor divisor, float* y,
                        StreamHandle stream);
void avg_pool2d_backward(const float* dy, const Pool2DGeometry& g, AvgDivisor divisor, float* dx,
                         StreamHandle stream);

}  // namespace cuda
}  // namespace cairn::kernels
