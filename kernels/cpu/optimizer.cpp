// CPU fused optimizer updates: SGD (with momentum and weight decay), Adam and AdamW.
#include "cairn/kernels/optimizer.h"

#include <cmath>

#include "cairn/base/error.h"
#include "cairn/kernels/cpu/parallel.h"
#include "cairn/kernels/cpu/vector_dispatch.h"
#include "cairn/kernels/optimizer_math.h"

namespace cairn::kernels::cpu {

using detail::run_widest;

// Below this many elements a parameter's update is not worth waking another thread for.
constexpr int64_t kUpdateElementsPerThread = 32768;

void sgd_update(float* weight, const float* grad, float* velocity, int64_t n,
                const SgdConfig& config) {
  CAIRN_CHECK(n >= 0, "cpu::sgd_update: negative size ", n);
  const bool use_momentum = config.momentum != 0.0f;
  CAIRN_CHECK(!use_momentum || velocity != nullptr || n == 0, "cpu::sgd_update: momentum ",
              config.momentum, " needs a velocity buffer");
  // The momentum test is hoisted out of the loops so that each vectorises; the expressions are
  // the ones the single loop computed, in the same order, so the bits are the same.
  const float grad_scale = config.grad_scale, weight_decay = config.weight_decay;
  const float momentum = config.momentum, learning_rate = config.learning_rate;
  // Element by element, so ranges of the parameter can be updated on different threads.
  parallel_for(n, kUpdateElementsPerThread, [&](int64_t begin, int64_t end) {
    if (use_momentum) {
      run_widest([&]() CAIRN_VECTOR_LOOP {
        for (int64_t i = begin; i < end; ++i) {
          const float g = grad_scale * grad[i] + weight_decay * weight[i];
          velocity[i] = momentum * velocity[i] + g;
          weight[i] -= learning_rate * velocity[i];
        }
      });
    } else {
      run_widest([&]() CAIRN_VECTOR_LOOP {
        for (int64_t i = begin; i < end; ++i) {
          const float g = grad_scale * grad[i] + weight_decay * weight[i];
          weight[i] -= learning_rate * g;
        }
      });
    }
  });
}

void adam_update(float* weight, const float* grad, float* mean, float* variance, int64_t n,
                 const AdamConfig& config) {
  CAIRN_CHECK(n >= 0, "cpu::adam_update: negative size ", n);
  CAIRN_CHECK(config.step >= 1, "cpu::adam_update: step is 1-based, got ", config.step);
  const AdamCoefficients coefficients = adam_coefficients(config);
  parallel_for(n, kUpdateElementsPerThread, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      adam_element(weight[i], grad[i], mean[i], variance[i], coefficients);
    }
  });
}

}  // namespace cairn::kernels::cpu
