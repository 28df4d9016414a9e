#include "cairn/core/random_state.h"

#include "cairn/base/error.h"
#include "cairn/core/cuda_context.h"
#include "cairn/kernels/dropout_math.h"

namespace cairn {
namespace {

Tensor state_tensor(uint64_t seed, uint64_t offset, const Device& device) {
  std::vector<int32_t> words(kernels::kDropoutStateWords);
  kernels::set_dropout_state(words.data(), seed, offset);
  return Tensor::from_int32(words, {kernels::kDropoutStateWords}, device);
}

}  // namespace

void DropoutGenerator::set_seed(uint64_t seed) {
  seed_ = seed;
  for (auto& [device, state] : states_) state.copy_from(state_tensor(seed, 0, Device::cpu()));
}

uint64_t DropoutGenerator::offset(const Device& device) const {
  for (const auto& [where, state] : states_) {
    if (where == device) return kernels::dropout_offset(state.to_int32_vector().data());
  }
  return 0;
}

const Tensor& DropoutGenerator::state(const Device& device) {
  last_device_ = device;
  for (const auto& [where, state] : states_) {
    if (where == device) return state;
  }
  CAIRN_CHECK(!(device.is_cuda() && cuda::is_capturing(device)), "DropoutGenerator: first use on ",
              device,
              " inside a CUDA graph capture; its state must exist before the capture (run the "
              "step once eagerly first)");
  states_.emplace_back(device, state_tensor(seed_, 0, device));
  return states_.back().second;
}

}  // namespace cairn
