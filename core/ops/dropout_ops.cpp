// Inverted dropout, its mask drawn from a DropoutGenerator's device-resident state.
#include "cairn/core/autograd.h"
#include "cairn/core/ops.h"
#include "cairn/core/ops/op_support.h"
#include "cairn/core/random_state.h"
#include "cairn/kernels/dropout.h"

namespace cairn::ops {

Tensor dropout(const Tensor& x, float rate, DropoutGenerator& generator) {
  constexpr const char* kOp = "dropout";
  detail::check_float(kOp, x);
  CAIRN_CHECK(rate >= 0.0f && rate <= 1.0f, kOp, ": rate must be in [0, 1], got ", rate);
  if (!autograd::is_training() || rate == 0.0f || x.numel() == 0) return x;
  // p = 1 drops every element: y = x * 0, as PyTorch's dropout(p=1) computes it.
  const float scale = rate == 1.0f ? 0.0f : 1.0f / (1.0f - rate);
  const int64_t n = x.numel();
  int32_t* state = generator.state(x.device()).data_int32();
  // The mask is kept only for a backward; y = x * mask, and dx = dy * mask with the same bits.
  const bool keep_mask = autograd::should_record({x});
  Tensor y = Tensor::empty(x.shape(), x.device());
  Tensor mask = keep_mask ? Tensor::empty(x.shape(), x.device()) : Tensor();
  float* mask_data = keep_mask ? mask.data() : nullptr;
  detail::dispatch(
      x.device(),
      [&] {
        kernels::cpu::dropout(x.data(), n, rate, scale, state, y.data(), mask_data);
        kernels::cpu::advance_dropout_state(state, n);
      },
      [&](cuda::Stream stream) {
        kernels::cuda::dropout(x.data(), n, rate, scale, state, y.data(), mask_data, stream);
        kernels::cuda::advance_dropout_state(state, n, stream);
      });
  autograd::record(kOp, {x}, y,
                   [mask](const Tensor& dy) { return std::vector<Tensor>{mul(dy, mask)}; });
  return y;
}

}  // namespace cairn::ops
