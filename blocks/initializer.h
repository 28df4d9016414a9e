// Initializers fill a parameter's tensor. Each is seeded explicitly: Block::initialize() gives
// every parameter a seed mixed from the user's seed and the parameter's name, so a network
// initialises to the same values on every device and run, deferred parameters included.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "cairn/core/tensor.h"

namespace cairn {

class Initializer {
 public:
  virtual ~Initializer() = default;
  // Fills `data` (already allocated, on its device) for the parameter `name`.
  virtual void fill(Tensor& data, const std::string& name, uint64_t seed) const = 0;
  virtual std::string str() const = 0;
};

using InitializerPtr = std::shared_ptr<const Initializer>;

namespace init {

InitializerPtr constant(float value);
InitializerPtr zeros();
InitializerPtr ones();
// Each throws cairn::Error naming its argument when that is not finite (or, for a scale, sigma
// or magnitude, negative).
// U(-scale, scale); Gluon's default initializer is Uniform(0.07).
InitializerPtr uniform(float scale = 0.07f);
// N(0, sigma^2)
InitializerPtr normal(float sigma = 0.01f);
// Xavier/Glorot: uniform in +-sqrt(magnitude / fan), fan by `factor` ("avg", "in" or "out"),
// Gluon's defaults. fan_in / fan_out come from a weight of shape (out, in).
InitializerPtr xavier(float magnitude = 3.0f, const std::string& factor = "avg");

}  // namespace init

// Mixes a seed with a name (FNV-1a then splitmix64), so that parameters draw independent streams.
uint64_t mix_seed(uint64_t seed, const std::string& name);

}  // namespace cairn
