// 2-d max and average pooling, one output (forward) or one input element (backward) at a time:
// the math both twins run (kernels/cpu/pool.cpp loops over it, kernels/cuda/pool.cu gives each
// element a thread), written once so that their results are the same bits.
//
// PyTorch's semantics (aten/src/ATen/native/Pool.h, cpu/MaxPoolKernel.cpp, cpu/AvgPoolKernel.cpp):
// - output size floor((in + 2 pad - k) / s) + 1, or with ceil_mode the ceiling, less one when the
//   last window would start in the right padding or beyond; padding at most half the kernel, so
//   every window holds at least one input element;
// - max: padding is -inf; a window's value is its first maximum in row-major order, or NaN when
//   it holds a NaN, and the index kept for the backward is that first maximum's, or the last
//   NaN's (PyTorch's `val > max || isnan(val)` update rule); a window of -inf keeps its first
//   element's index;
// - average: the sum over the window's input elements in row-major order divided by the window's
//   size clipped to the padded input (count_include_pad) or to the input alone.
// Accumulation is in float in a fixed order, forward and backward: the backward gathers, for each
// input element, the windows covering it in row-major output order (the order PyTorch's CPU
// scatter adds them in), so it needs no atomics and is deterministic.
#pragma once

#include <cmath>
#include <cstdint>

#include "cairn/kernels/common.h"

namespace cairn::kernels {

// The shape of one pooling call. Tensors are (planes, in_h, in_w) -> (planes, out_h, out_w),
// planes = N * C, contiguous.
struct Pool2DGeometry {
  int64_t planes = 0;
  int64_t in_h = 0, in_w = 0;
  int64_t out_h = 0, out_w = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
};

// What an average divides by (PyTorch's count_include_pad): the window clipped to the padded
// input, or to the input alone.
enum class AvgDivisor { kIncludePadding, kExcludePadding };

// PyTorch's pooling_output_shape for dilation 1. May be <= 0 when the kernel is larger than the
// padded input (callers refuse that).
CAIRN_HOST_DEVICE inline int64_t pool_output_size(int64_t in, int64_t kernel, int64_t stride,
                                                  int64_t pad, bool ceil_mode) {
  const int64_t numerator = in + 2 * pad - kernel + (ceil_mode ? stride - 1 : 0);
  // Floor division: the numerator can be negative for a kernel larger than the padded input.
  int64_t out = (numerator >= 0 ? numerator / stride : -((-numerator + stride - 1) / stride)) + 1;
  // The last window must start inside the input or the left padding.
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

// One window along one axis: [start, end) in input coordinates, clipped to the input, and the
// size of the window clipped to the padded input (the include-padding divisor's factor).
struct PoolSpan {
  int64_t start, end, padded_size;
};

CAIRN_HOST_DEVICE inline PoolSpan pool_span(int64_t out_index, int64_t in, int64_t kernel,
                                            int64_t stride, int64_t pad) {
  int64_t start = out_index * stride - pad;
  int64_t end = start + kernel < in + pad ? start + kernel : in + pad;
  const int64_t padded_size = end - start;
  if (start < 0) start = 0;
  if (end > in) end = in;
  return PoolSpan{start, end, padded_size};
}

// The outputs along one axis whose windows cover input index `i`: [first, last], empty when
// first > last.
CAIRN_HOST_DEVICE inline void covering_outputs(int64_t i, int64_t kernel, int64_t stride,
                                               int64_t pad, int64_t out, int64_t* first,
                                               int64_t* last) {
  // Window o covers i when o * stride - pad <= i < o * stride - pad + kernel.
  const int64_t shifted = i + pad;
  *first = shifted < kernel ? 0 : (shifted - kernel) / stride + 1;
  const int64_t top = shifted / stride;
  *last = top < out - 1 ? top : out - 1;
}

// The max over the window hs x ws of one plane x: (in_h, in_w); *argmax gets the plane index
// (ih * in_w + iw) the gradient goes to.
CAIRN_HOST_DEVICE inline float max_pool_over(const float* x, int64_t in_w, const PoolSpan& hs,
                                             const PoolSpan& ws, int32_t* argmax) {
  int64_t best_index = hs.start * in_w + ws.start;
  float best = -INFINITY;
  for (int64_t ih = hs.start; ih < hs.end; ++ih) {
    for (int64_t iw = ws.start; iw < ws.end; ++iw) {
      const int64_t index = ih * in_w + iw;
      const float v = x[index];
      // v != v: NaN, which then stays the max. Written as selects, which the GPU need not
      // diverge on.
      const bool take = (v > best) | (v != v);
      best = take ? v : best;
      best_index = take ? index : best_index;
    }
  }
  *argmax = static_cast<int32_t>(best_index);
  return best;
}

// The max over window (oh, ow) of one plane (the CPU twin looks the spans up instead).
CAIRN_HOST_DEVICE inline float max_pool_at(const float* x, const Pool2DGeometry& g, int64_t oh,
                                           int64_t ow, int32_t* argmax) {
  return max_pool_over(x, g.in_w, pool_span(oh, g.in_h, g.kernel_h, g.stride_h, g.pad_h),
                       pool_span(ow, g.in_w, g.kernel_w, g.stride_w, g.pad_w), argmax);
}

// The average over window (oh, ow) of one plane x: (in_h, in_w).
CAIRN_HOST_DEVICE inline float avg_pool_divisor(const PoolSpan& hs, const PoolSpan& ws,
                                                AvgDivisor divisor) {
  const int64_t count = divisor == AvgDivisor::kIncludePadding
                            ? hs.padded_size * ws.padded_size
                            : (hs.end - hs.start) * (ws.end - ws.start);
  return static_cast<float>(count);
}

CAIRN_HOST_DEVICE inline float avg_pool_at(const float* x, const Pool2DGeometry& g, int64_t oh,
                                           int64_t ow, AvgDivisor divisor) {
  const PoolSpan hs = pool_span(oh, g.in_h, g.kernel_h, g.stride_h, g.pad_h);
  const PoolSpan ws = pool_span(ow, g.in_w, g.kernel_w, g.stride_w, g.pad_w);
  float sum = 0.0f;
  for (int64_t ih = hs.start; ih < hs.end; ++ih) {
    for (int64_t iw = ws.start; iw < ws.end; ++iw) sum += x[ih * g.in_w + iw];
  }
  return sum / avg_pool_divisor(hs, ws, divisor);
}

// dx at an input element of one plane: the sum of dy / divisor over the windows [oh0, oh1] x
// [ow0, ow1] covering it. dy: (out_h, out_w) of that plane.
CAIRN_HOST_DEVICE inline float avg_pool_backward_over(const float* dy, const Pool2DGeometry& g,
                                                      int64_t oh0, int64_t oh1, int64_t ow0,
                                                      int64_t ow1, AvgDivisor divisor) {
  float sum = 0.0f;
  for (int64_t oh = oh0; oh <= oh1; ++oh) {
    const PoolSpan hs = pool_span(oh, g.in_h, g.kernel_h, g.stride_h, g.pad_h);
    for (int64_t ow = ow0; ow <= ow1; ++ow) {
      const PoolSpan ws = pool_span(ow, g.in_w, g.kernel_w, g.stride_w, g.pad_w);
      sum += dy[oh * g.out_w + ow] / avg_pool_divisor(hs, ws, divisor);
    }
  }
  return sum;
}

// dx at input (ih, iw) of one plane.
CAIRN_HOST_DEVICE inline float avg_pool_backward_at(const float* dy, const Pool2DGeometry& g,
                                                    int64_t ih, int64_t iw, AvgDivisor divisor) {
  int64_t oh0, oh1, ow0, ow1;
  covering_outputs(ih, g.kernel_h, g.stride_h, g.pad_h, g.out_h, &oh0, &oh1);
  covering_outputs(iw, g.kernel_w, g.stride_w, g.pad_w, g.out_w, &ow0, &ow1);
  return avg_pool_backward_over(dy, g, oh0, oh1, ow0, ow1, divisor);
}

// dx at input element `self` of one plane: the sum of dy over the windows [oh0, oh1] x [ow0, ow1]
// (those covering it) whose argmax is this element. dy, argmax: (out_h, out_w) of that plane.
CAIRN_HOST_DEVICE inline float max_pool_backward_over(const float* dy, const int32_t* argmax,
                                                      const Pool2DGeometry& g, int64_t self,
                                                      int64_t oh0, int64_t oh1, int64_t ow0,
                                                      int64_t ow1) {
  float sum = 0.0f;
  for (int64_t oh = oh0; oh <= oh1; ++oh) {
    for (int64_t ow = ow0; ow <= ow1; ++ow) {
      const int64_t o = oh * g.out_w + ow;
      if (argmax[o] == self) sum += dy[o];
    }
  }
  return sum;
}

// dx at input (ih, iw) of one plane (the CPU twin looks the covering ranges up instead of
// dividing for them at each element).
CAIRN_HOST_DEVICE inline float max_pool_backward_at(const float* dy, const int32_t* argmax,
                                                    const Pool2DGeometry& g, int64_t ih,
                                                    int64_t iw) {
  int64_t oh0, oh1, ow0, ow1;
  covering_outputs(ih, g.kernel_h, g.stride_h, g.pad_h, g.out_h, &oh0, &oh1);
  covering_outputs(iw, g.kernel_w, g.stride_w, g.pad_w, g.out_w, &ow0, &ow1);
  return max_pool_backward_over(dy, argmax, g, ih * g.in_w + iw, oh0, oh1, ow0, ow1);
}

}  // namespace cairn::kernels
