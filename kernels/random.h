// Seeded random fills. Element i of a fill with seed s is a function of (s, i) alone (Philox), so
// the CPU and the GPU produce the same numbers for the same seed: uniform bit for bit; normal to
// within the last bits of log/cos, which the two math libraries round differently.
#pragma once

#include <cstdint>

#include "cairn/kernels/common.h"

namespace cairn::kernels {
namespace cpu {
// y[i] = lo + (hi - lo) * u_i, u_i in [0, 1)
void uniform(float* y, int64_t n, uint64_t seed, float lo, float hi);
// y[i] = mean + stddev * z_i (Box-Muller over Philox words)
void normal(float* y, int64_t n, uint64_t seed, float mean, float stddev);
}  // namespace cpu

namespace cuda {
void uniform(float* y, int64_t n, uint64_t seed, float lo, float hi, StreamHandle stream);
void normal(float* y, int64_t n, uint64_t seed, float mean, float stddev, StreamHandle stream);
}  // namespace cuda
}  // namespace cairn::kernels
