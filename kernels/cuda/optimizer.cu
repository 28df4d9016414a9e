// Fused optimizer updates: one grid-stride pass over a parameter per step, every intermediate in
// registers. The formulas are those of kernels/optimizer.h, term for term.
//
// The hyperparameters' ranges (momentum and betas in [0, 1), ...) are the optimizer layer's to
// check (blocks/optimizer.cpp), once for both devices: these launchers, like the CPU twins, check
// only what would make them touch memory wrongly, and compute whatever a config says.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cairn/base/error.h"
#include "cairn/kernels/cuda/launch.cuh"
#include "cairn/kernels/optimizer.h"
#include "cairn/kernels/optimizer_math.h"

namespace cairn::kernels::cuda {
namespace {

// weight, grad, velocity: (n); velocity is read and written only when kMomentum.
template <bool kMomentum>
__global__ void sgd_update_kernel(float* weight, const float* grad, float* velocity, int64_t n,
                                  float learning_rate, float momentum, float weight_decay,
                                  float grad_scale) {
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const float w = weight[i];
    const float g = grad_scale * grad[i] + weight_decay * w;
    if constexpr (kMomentum) {
      const float v = momentum * velocity[i] + g;
      velocity[i] = v;
      weight[i] = w - learning_rate * v;
    } else {
      weight[i] = w - learning_rate * g;
    }
  }
}

// weight, grad, mean, variance: (n). The step-dependent coefficients come from the host
// (adam_coefficients: beta^t in double).
__global__ void adam_update_kernel(float* weight, const float* grad, float* mean, float* variance,
                                   int64_t n, AdamCoefficients coefficients) {
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    float w = weight[i], m = mean[i], v = variance[i];
    adam_element(w, grad[i], m, v, coefficients);
    weight[i] = w;
    mean[i] = m;
    variance[i] = v;
  }
}

}  // namespace

void sgd_update(float* weight, const float* grad, float* velocity, int64_t n,
                const SgdConfig& config, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "sgd_update: negative size ", n);
  if (n == 0) return;  // nothing to update, and no buffer needed for it
  // Any momentum but 0 (a NaN too) takes the velocity path, as in the CPU twin.
  const bool use_momentum = config.momentum != 0.0f;
  CAIRN_CHECK(!use_momentum || velocity != nullptr, "sgd_update: momentum ", config.momentum,
              " needs a velocity buffer");
  if (use_momentum) {
    sgd_update_kernel<true><<<grid_size(n), kBlockThreads, 0, stream>>>(
        weight, grad, velocity, n, config.learning_rate, config.momentum, config.weight_decay,
        config.grad_scale);
  } else {
    sgd_update_kernel<false><<<grid_size(n), kBlockThreads, 0, stream>>>(
        weight, grad, velocity, n, config.learning_rate, config.momentum, config.weight_decay,
        config.grad_scale);
  }
  CAIRN_CHECK_LAUNCH("sgd_update_kernel", stream);
}

void adam_update(float* weight, const float* grad, float* mean, float* variance, int64_t n,
                 const AdamConfig& config, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "adam_update: negative size ", n);
  CAIRN_CHECK(config.step >= 1, "adam_update: step is 1-based, got ", config.step);
  if (n == 0) return;
  adam_update_kernel<<<grid_size(n), kBlockThreads, 0, stream>>>(weight, grad, mean, variance, n,
                                                                 adam_coefficients(config));
  CAIRN_CHECK_LAUNCH("adam_update_kernel", stream);
}

}  // namespace cairn::kernels::cuda
