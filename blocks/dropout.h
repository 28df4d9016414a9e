// Dropout (Gluon's and PyTorch's): inverted dropout while training (autograd::is_training(): inside
// autograd::RecordScope or TrainModeScope), the identity when predicting.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "cairn/blocks/block.h"
#include "cairn/core/random_state.h"

namespace cairn {

class Dropout : public Block {
 public:
  // rate in [0, 1]; 1 drops everything (PyTorch's p = 1), outside throws. The masks come from
  // this block's own generator (core/random_state.h): the same seed draws the same sequence of
  // masks, on every device, eager or captured in a CUDA graph. Without a seed, each Dropout gets
  // its own, derived from how many unseeded Dropouts the process made before it, so the layers of
  // one network draw independent masks (as PyTorch's one global generator gives them) and a
  // program that builds its network the same way gets the same seeds on every run.
  explicit Dropout(float rate, std::optional<uint64_t> seed = std::nullopt);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;  // "Dropout(p = 0.5)"

  float rate() const { return rate_; }
  uint64_t seed() const { return generator_.seed(); }
  // Restarts the mask stream at (seed, offset 0) on every device.
  void set_seed(uint64_t seed) { generator_.set_seed(seed); }
  // Philox words used so far on the device used last (a synchronisation).
  uint64_t offset() const { return generator_.offset(); }
  DropoutGenerator& generator() { return generator_; }

 private:
  float rate_;
  DropoutGenerator generator_;
};

}  // namespace cairn
