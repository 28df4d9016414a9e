// CPU seeded random fills over Philox4x32-10, the same per-element formulas as the CUDA twin.
#include "cairn/kernels/random.h"

#include <cmath>

#include "cairn/base/error.h"
#include "cairn/kernels/philox.h"

namespace cairn::kernels::cpu {

namespace {
constexpr float kTwoPi = 6.2831853071795864769f;
}  // namespace

// Element i takes word i % 4 of Philox block i / 4, so y depends on (seed, i) alone.
// Everything stays in float: the CUDA twin computes the same expression and uniform must match it
// bit for bit.
void uniform(float* y, int64_t n, uint64_t seed, float lo, float hi) {
  CAIRN_CHECK(n >= 0, "cpu::uniform: negative size ", n);
  const float range = hi - lo;
  for (int64_t i = 0; i < n; ++i) {
    const Philox4 words = philox4x32(seed, static_cast<uint64_t>(i / 4));
    y[i] = lo + range * uniform_from_bits(words.v[i % 4]);
  }
}

// Box-Muller: pair p = i / 2 takes words 0 and 1 of Philox block p and yields elements 2p and
// 2p + 1; the last z1 is dropped when n is odd.
void normal(float* y, int64_t n, uint64_t seed, float mean, float stddev) {
  CAIRN_CHECK(n >= 0, "cpu::normal: negative size ", n);
  for (int64_t p = 0; 2 * p < n; ++p) {
    const Philox4 words = philox4x32(seed, static_cast<uint64_t>(p));
    const float u1 = 1.0f - uniform_from_bits(words.v[0]);  // in (0, 1], so log(u1) is finite
    const float u2 = uniform_from_bits(words.v[1]);
    const float r = std::sqrt(-2.0f * std::log(u1));
    const float z0 = r * std::cos(kTwoPi * u2);
    const float z1 = r * std::sin(kTwoPi * u2);
    y[2 * p] = mean + stddev * z0;
    if (2 * p + 1 < n) y[2 * p + 1] = mean + stddev * z1;
  }
}

}  // namespace cairn::kernels::cpu
