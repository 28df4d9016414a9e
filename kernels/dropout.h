// Inverted dropout over a flat tensor, its mask drawn from a device-resident Philox state (the
// math and the state's layout: kernels/dropout_math.h).
#pragma once

#include <cstdint>

#include "cairn/kernels/common.h"
#include "cairn/kernels/dropout_math.h"

namespace cairn::kernels {
namespace cpu {

// x, y: (n); state: int32 (4), read, not changed; mask: (n) or null (not kept).
// mask[i] = scale if element i is kept else 0, y[i] = x[i] * mask[i] (a dropped inf or NaN gives
// NaN, as PyTorch's x * mask * scale does). rate in [0, 1].
void dropout(const float* x, int64_t n, float rate, float scale, const int32_t* state, float* y,
             float* mask);
// Moves state's offset past a call over n elements (dropout_offset_step).
void advance_dropout_state(int32_t* state, int64_t n);

}  // namespace cpu

namespace cuda {

void dropout(const float* x, int64_t n, float rate, float scale, const int32_t* state, float* y,
             float* mask, StreamHandle stream);
void advance_dropout_state(int32_t* state, int64_t n, StreamHandle stream);

}  // namespace cuda
}  // namespace cairn::kernels
