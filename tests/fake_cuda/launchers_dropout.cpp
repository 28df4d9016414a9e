// The fake device's dropout kernels (kernels/dropout.h): the checks kernels/cuda/dropout.cu makes,
// the ranges its kernels touch (the state included: a host pointer there is refused), then the CPU
// twin queued on the stream, where a captured graph records it with its pointers, as a real graph
// records the kernel: each replay reads and advances the state.
#include "cairn/base/error.h"
#include "cairn/kernels/dropout.h"
#include "cairn/tests/fake_cuda/launch_support.h"

namespace cairn::kernels::cuda {

using fake_cuda::floats;
using fake_cuda::int32s;
using fake_cuda::launch;

void dropout(const float* x, int64_t n, float rate, float scale, const int32_t* state, float* y,
             float* mask, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "dropout: negative size ", n);
  CAIRN_CHECK(rate >= 0.0f && rate <= 1.0f, "dropout: rate ", rate, " outside [0, 1]");
  if (n == 0) return;
  const char* what = "dropout";
  fake_cuda::Ranges ranges = {floats(what, "x", x, n), floats(what, "y", y, n),
                              int32s(what, "state", state, kDropoutStateWords)};
  if (mask != nullptr) ranges.push_back(floats(what, "mask", mask, n));
  launch(what, stream, ranges, [=] { cpu::dropout(x, n, rate, scale, state, y, mask); });
}

void advance_dropout_state(int32_t* state, int64_t n, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "advance_dropout_state: negative size ", n);
  if (n == 0) return;
  const char* what = "advance_dropout_state";
  launch(what, stream, {int32s(what, "state", state, kDropoutStateWords)},
         [=] { cpu::advance_dropout_state(state, n); });
}

}  // namespace cairn::kernels::cuda
