// The per-element Adam and AdamW step, written once for the CPU twin (kernels/cpu/optimizer.cpp)
// and the CUDA kernel (kernels/cuda/optimizer.cu).
#pragma once

#include <cmath>
#include <cstdint>

#include "cairn/kernels/common.h"
#include "cairn/kernels/optimizer.h"

namespace cairn::kernels {

// What one Adam step needs per element, the step-dependent terms computed on the host first.
struct AdamCoefficients {
  float learning_rate;
  float beta1;
  float beta2;
  float epsilon;
  float grad_scale;
  AdamWeightDecay decay_mode;
  float weight_decay;      // kL2: added to the gradient as weight_decay * w
  float decay_factor;      // kDecoupled: w *= 1 - lr * weight_decay before the Adam step
  float bias_correction1;  // 1 - beta1^t
  float bias_correction2;  // 1 - beta2^t
};

// beta^t and 1 - lr * wd in double: beta2^t for t in the thousands loses most of its digits in
// float. PyTorch's AdamW multiplies by (1 - lr * wd) formed in double and rounded once, as here.
inline AdamCoefficients adam_coefficients(const AdamConfig& config) {
  const double t = static_cast<double>(config.step);
  AdamCoefficients c;
  c.learning_rate = config.learning_rate;
  c.beta1 = config.beta1;
  c.beta2 = config.beta2;
  c.epsilon = config.epsilon;
  c.grad_scale = config.grad_scale;
  c.decay_mode = config.decay_mode;
  c.weight_decay = config.weight_decay;
  c.decay_factor = static_cast<float>(1.0 - static_cast<double>(config.learning_rate) *
                                                static_cast<double>(config.weight_decay));
  c.bias_correction1 = static_cast<float>(1.0 - std::pow(static_cast<double>(config.beta1), t));
  c.bias_correction2 = static_cast<float>(1.0 - std::pow(static_cast<double>(config.beta2), t));
  return c;
}

// One element: kL2 folds the decay into the gradient (Adam's weight_decay); kDecoupled shrinks
// the weight first and leaves the gradient alone (AdamW, Loshchilov & Hutter). Then
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  w -= lr * (m / bc1) / (sqrt(v / bc2) + eps)
CAIRN_HOST_DEVICE inline void adam_element(float& weight, float grad, float& mean, float& variance,
                                           const AdamCoefficients& c) {
  float w = weight;
  float g = c.grad_scale * grad;
  if (c.decay_mode == AdamWeightDecay::kDecoupled) {
    w = w * c.decay_factor;
  } else {
    g = g + c.weight_decay * w;
  }
  const float m = c.beta1 * mean + (1.0f - c.beta1) * g;
  const float v = c.beta2 * variance + (1.0f - c.beta2) * g * g;
  mean = m;
  variance = v;
#if defined(__CUDA_ARCH__)
  const float root = sqrtf(v / c.bias_correction2);
#else
  const float root = std::sqrt(v / c.bias_correction2);
#endif
  weight = w - c.learning_rate * (m / c.bias_correction1) / (root + c.epsilon);
}

}  // namespace cairn::kernels
