// DropoutGenerator: where a dropout's masks come from, kept in the device memory of the tensors
// it masks, so that a captured CUDA graph draws a new mask on every replay.
//
// A stream of Philox words (kernels/dropout_math.h) under a 64-bit seed, and a 64-bit offset: the
// next word to use. Each device the generator is used on keeps its own (seed, offset) pair as a
// small int32 tensor there, made at the first use (PyTorch keeps one generator per device too);
// the dropout kernel reads it through a pointer and a second launch advances it on the device,
// with no host round trip, eagerly and inside captured graphs alike. The same seed gives the same
// sequence of masks on every device, eager or captured.
//
// Not thread-safe: one generator serves one thread's calls (a block's forward).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "cairn/core/device.h"
#include "cairn/core/tensor.h"

namespace cairn {

class DropoutGenerator {
 public:
  explicit DropoutGenerator(uint64_t seed = 0) : seed_(seed) {}
  DropoutGenerator(const DropoutGenerator&) = delete;
  DropoutGenerator& operator=(const DropoutGenerator&) = delete;
  DropoutGenerator(DropoutGenerator&&) = default;
  DropoutGenerator& operator=(DropoutGenerator&&) = default;

  uint64_t seed() const { return seed_; }
  // Restarts every device's stream at (seed, 0). The state tensors are written in place, in
  // stream order, so graphs captured with them stay valid and replay from the new state. Not
  // during a capture.
  void set_seed(uint64_t seed);
  // How many Philox words the calls on `device` have used so far (0 before the first), read
  // back from the device (a synchronisation). Calls advance it by their element count rounded up
  // to a multiple of 4.
  uint64_t offset(const Device& device) const;
  // On the device this generator was used on last (the CPU before any use).
  uint64_t offset() const { return offset(last_device_); }

  // The state the kernels read and advance on `device`: int32 (4) = seed low and high words,
  // offset low and high words. Made, at (seed, 0), at the first call for that device: a call
  // that queues work, outside any capture (a CapturedStep's and a hybridized block's warm-up run
  // is eager, so their captures find it made).
  const Tensor& state(const Device& device);

 private:
  uint64_t seed_;
  std::vector<std::pair<Device, Tensor>> states_;
  Device last_device_ = Device::cpu();
};

}  // namespace cairn
