#include "cairn/blocks/dropout.h"

#include <atomic>
#include <sstream>

#include "cairn/base/error.h"
#include "cairn/core/ops.h"

namespace cairn {
namespace {

// The n-th unseeded Dropout's seed: splitmix64 of n, so consecutive blocks get unrelated keys.
uint64_t default_seed() {
  static std::atomic<uint64_t> unseeded{0};
  uint64_t z = (unseeded.fetch_add(1) + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

Dropout::Dropout(float rate, std::optional<uint64_t> seed)
    : Block("Dropout"), rate_(rate), generator_(seed ? *seed : default_seed()) {
  CAIRN_CHECK(rate >= 0.0f && rate <= 1.0f, "Dropout: rate must be in [0, 1], got ", rate);
}

Tensor Dropout::forward(const Tensor& x) { return ops::dropout(x, rate_, generator_); }

std::string Dropout::describe() const {
  std::ostringstream out;
  out << "Dropout(p = " << rate_ << ")";
  return out.str();
}

}  // namespace cairn
