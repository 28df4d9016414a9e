// AdamW's kernel (kernels/optimizer.h, AdamWeightDecay::kDecoupled) on the GPU against its CPU
// twin on awkward sizes, and one Trainer step on both devices. Skips, saying why, without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cairn/blocks/optimizer.h"
#include "cairn/blocks/trainer.h"
#include "cairn/kernels/optimizer.h"
#include "support/test_support.h"

namespace cairn {
namespace {

using testing::expect_close;
using testing::random_tensor;

const Device kCpu = Device::cpu();
Device gpu() { return Device::cuda(0); }

class AdamWParity : public testing::CudaTest {};

TEST_F(AdamWParity, KernelMatchesTheCpuTwin) {
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(7), int64_t(1031), (int64_t(1) << 20) + 3}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    kernels::AdamConfig config;
    config.learning_rate = 0.01f;
    config.weight_decay = 0.05f;
    config.grad_scale = 0.5f;
    config.decay_mode = kernels::AdamWeightDecay::kDecoupled;
    Tensor w_host = random_tensor({n}, 230, kCpu), w_gpu = w_host.to(gpu());
    Tensor m_host = Tensor::zeros({n}, kCpu), m_gpu = m_host.to(gpu());
    Tensor v_host = Tensor::zeros({n}, kCpu), v_gpu = v_host.to(gpu());
    for (int64_t step = 1; step <= 3; ++step) {
      const Tensor g = random_tensor({n}, 231 + uint64_t(step), kCpu);
      const Tensor g_gpu = g.to(gpu());
      config.step = step;
      kernels::cpu::adam_update(w_host.data(), g.data(), m_host.data(), v_host.data(), n, config);
      kernels::cuda::adam_update(w_gpu.data(), g_gpu.data(), m_gpu.data(), v_gpu.data(), n, config,
                                 cuda::current_stream(gpu()));
    }
    expect_close(w_gpu.to_vector(), w_host.to_vector(), 1e-6, 1e-5, "weight");
    expect_close(m_gpu.to_vector(), m_host.to_vector(), 1e-6, 1e-5, "mean");
    expect_close(v_gpu.to_vector(), v_host.to_vector(), 1e-7, 1e-5, "variance");
  }
}

TEST_F(AdamWParity, TrainerStepsAgreeAcrossDevices) {
  std::vector<std::vector<float>> results;
  for (const Device& device : {kCpu, gpu()}) {
    auto w = std::make_shared<Parameter>("w", Shape{3, 5});
    w->set_data(random_tensor({3, 5}, 7, kCpu), device);
    ParameterDict params;
    params.insert("w", w);
    Trainer trainer(params, std::make_shared<AdamW>(0.05f));
    for (int step = 0; step < 3; ++step) {
      {
        autograd::RecordScope record;
        const Tensor c = random_tensor({3, 5}, 20 + uint64_t(step), device);
        ops::sum(ops::square(w->data()) * c).backward();
      }
      trainer.step(2);
    }
    results.push_back(w->data().to_vector());
  }
  expect_close(results[1], results[0], 1e-6, 1e-5, "GPU against CPU");
}

}  // namespace
}  // namespace cairn
