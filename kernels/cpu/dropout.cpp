// CPU inverted dropout: kernels/dropout_math.h over groups of four elements (one Philox counter
// each), split across threads; each element's bits depend on (seed, offset, i) alone.
#include "cairn/kernels/dropout.h"

#include "cairn/base/error.h"
#include "cairn/kernels/cpu/parallel.h"

namespace cairn::kernels::cpu {

void dropout(const float* x, int64_t n, float rate, float scale, const int32_t* state, float* y,
             float* mask) {
  CAIRN_CHECK(n >= 0, "cpu::dropout: negative size ", n);
  CAIRN_CHECK(rate >= 0.0f && rate <= 1.0f, "cpu::dropout: rate ", rate, " outside [0, 1]");
  const uint64_t seed = dropout_seed(state), offset = dropout_offset(state);
  const int64_t groups = (n + 3) / 4;
  constexpr int64_t kGroupsPerThread = 1 << 12;
  parallel_for(groups, kGroupsPerThread, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      const Philox4 words = dropout_words(seed, offset, g);
      for (int j = 0; j < 4; ++j) {
        const int64_t i = 4 * g + j;
        if (i >= n) break;
        const float m = dropout_mask_value(words.v[j], rate, scale);
        if (mask != nullptr) mask[i] = m;
        y[i] = x[i] * m;
      }
    }
  });
}

void advance_dropout_state(int32_t* state, int64_t n) {
  CAIRN_CHECK(n >= 0, "cpu::advance_dropout_state: negative size ", n);
  set_dropout_state(state, dropout_seed(state), dropout_offset(state) + dropout_offset_step(n));
}

}  // namespace cairn::kernels::cpu
