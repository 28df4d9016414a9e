// Fused optimizer updates: one pass over a parameter per step, not one launch per arithmetic step.
#pragma once

#include <cstdint>

#include "cairn/kernels/common.h"

namespace cairn::kernels {

struct SgdConfig {
  float learning_rate = 0.01f;
  float momentum = 0.0f;      // 0 disables the velocity buffer
  float weight_decay = 0.0f;  // L2 term added to the gradient
  float grad_scale = 1.0f;    // applied to the raw gradient first (1 / batch_size in Trainer::step)
};

// How Adam applies weight_decay: as an L2 term added to the gradient (Adam), or decoupled from
// the gradient, w *= 1 - lr * weight_decay before the step (AdamW, PyTorch's torch.optim.AdamW).
enum class AdamWeightDecay { kL2, kDecoupled };

struct AdamConfig {
  float learning_rate = 0.001f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float epsilon = 1e-8f;
  float weight_decay = 0.0f;
  AdamWeightDecay decay_mode = AdamWeightDecay::kL2;
  float grad_scale = 1.0f;
  int64_t step = 1;  // 1-based step count, for bias correction
};

// The twins check only what would make them touch memory wrongly (sizes, a missing velocity
// buffer, step >= 1) and compute whatever a config says; the ranges of the hyperparameters are
// checked once, for both devices, by SGD and Adam (blocks/optimizer.h). Any momentum but 0 (a
// NaN too) reads and writes the velocity.
namespace cpu {
// g = grad_scale * grad + weight_decay * w
// momentum > 0: v = momentum * v + g; w -= lr * v       (velocity may be null when momentum == 0)
// momentum = 0: w -= lr * g
void sgd_update(float* weight, const float* grad, float* velocity, int64_t n,
                const SgdConfig& config);
// kL2: g as above. kDecoupled: w *= 1 - lr * weight_decay, g = grad_scale * grad. Then
//   m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//   w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// (one formula for both twins: kernels/optimizer_math.h)
void adam_update(float* weight, const float* grad, float* mean, float* variance, int64_t n,
                 const AdamConfig& config);
}  // namespace cpu

namespace cuda {
void sgd_update(float* weight, const float* grad, float* velocity, int64_t n,
                const SgdConfig& config, StreamHandle stream);
void adam_update(float* weight, const float* grad, float* mean, float* variance, int64_t n,
                 const AdamConfig& config, StreamHandle stream);
}  // namespace cuda
}  // namespace cairn::kernels
