// ops::dense: the fused Dense map. On the CPU it is composed (checked against finite differences);
// on a GPU it is one cuBLASLt call with the bias epilogue (then cairn's ReLU) forward and one with
// the bias-gradient epilogue backward, held against the CPU, and against the GPU's fallback.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <memory>
#include <vector>

#include "support/test_support.h"

namespace cairn {
namespace {

using ops::DenseActivation;

TEST(Dense, ForwardEqualsLinearThenActivation) {
  const Tensor x = testing::random_tensor({5, 7}, 1, Device::cpu());
  const Tensor w = testing::random_tensor({3, 7}, 2, Device::cpu());
  const Tensor b = testing::random_tensor({3}, 3, Device::cpu());
  EXPECT_EQ(ops::dense(x, w, b, DenseActivation::kNone).to_vector(),
            ops::linear(x, w, b).to_vector());
  EXPECT_EQ(ops::dense(x, w, b, DenseActivation::kRelu).to_vector(),
            ops::relu(ops::linear(x, w, b)).to_vector());
}

TEST(Dense, GradientsMatchFiniteDifferences) {
  for (const auto activation : {DenseActivation::kNone, DenseActivation::kRelu}) {
    const Tensor weights = testing::random_tensor({4, 6}, 11, Device::cpu());
    testing::expect_gradients_match(
        [&](const std::vector<Tensor>& in) {
          return ops::sum(ops::mul(ops::dense(in[0], in[1], in[2], activation), weights));
        },
        {testing::random_tensor({4, 5}, 12, Device::cpu()),
         testing::random_tensor({6, 5}, 13, Device::cpu()),
         testing::random_tensor({6}, 14, Device::cpu(), 0.2f, 0.6f)},
        // A smaller step than the default: a bias nudge moves every row's pre-activation, and
        // 1e-2 would carry some of them across the ReLU's kink.
        /*eps=*/1e-3);
  }
}

TEST(Dense, RejectsMismatchedShapes) {
  const Tensor x = Tensor::ones({2, 3}, Device::cpu());
  testing::expect_error(
      [&] {
        ops::dense(x, Tensor::ones({4, 5}, Device::cpu()), Tensor::ones({4}, Device::cpu()),
                   DenseActivation::kNone);
      },
      {"dense", "3 features", "(4, 5)"});
  testing::expect_error(
      [&] {
        ops::dense(x, Tensor::ones({4, 3}, Device::cpu()), Tensor::ones({5}, Device::cpu()),
                   DenseActivation::kRelu);
      },
      {"dense", "bias (5,)"});
}

class DenseParityTest : public testing::CudaTest {
 protected:
  // Forward and all three gradients on both devices from the same inputs.
  void check(int64_t n, int64_t in, int64_t out, DenseActivation activation, double rtol) {
    check_with(n, in, out, activation, rtol, [](const Tensor& t) { return t; });
  }
  // `place` puts each GPU input where the test wants it (a wrapped, misaligned copy, say).
  void check_with(int64_t n, int64_t in, int64_t out, DenseActivation activation, double rtol,
                  const std::function<Tensor(const Tensor&)>& place) {
    SCOPED_TRACE("n=" + std::to_string(n) + " in=" + std::to_string(in) +
                 " out=" + std::to_string(out));
    std::vector<float> results[2][4];
    const Device devices[2] = {Device::cpu(), Device::cuda(0)};
    for (int d = 0; d < 2; ++d) {
      Tensor x = testing::random_tensor({n, in}, 21, devices[d]);
      Tensor w = testing::random_tensor({out, in}, 22, devices[d]);
      Tensor b = testing::random_tensor({out}, 23, devices[d]);
      if (d == 1) {
        x = place(x);
        b = place(b);
      }
      const Tensor head = testing::random_tensor({n, out}, 24, devices[d]);
      x.attach_grad();
      w.attach_grad();
      b.attach_grad();
      Tensor y;
      {
        autograd::RecordScope record;
        y = ops::dense(x, w, b, activation);
      }
      y.backward(head);
      results[d][0] = y.to_vector();
      results[d][1] = x.grad().to_vector();
      results[d][2] = w.grad().to_vector();
      results[d][3] = b.grad().to_vector();
    }
    const char* names[4] = {"y", "dx", "dw", "db"};
    for (int i = 0; i < 4; ++i) {
      testing::expect_close(results[1][i], results[0][i], 1e-4 * std::sqrt(double(in + n)), rtol,
                            names[i]);
    }
  }
};

TEST_F(DenseParityTest, FusedCublasLtMatchesTheComposedCpuPath) {
  struct Wrap {
    Wrap() { set_poison_allocations(true); }
    ~Wrap() { set_poison_allocations(false); }
  } poisoned;
  for (const auto activation : {DenseActivation::kNone, DenseActivation::kRelu}) {
    check(1, 1, 1, activation, 1e-5);
    check(7, 13, 5, activation, 1e-5);
    check(33, 1025, 10, activation, 1e-4);
    check(256, 784, 256, activation, 1e-4);
  }
}

TEST_F(DenseParityTest, Tf32IsAnOptInWithItsOwnTolerance) {
  EXPECT_EQ(matmul_precision(), kernels::MatmulPrecision::kFloat32);
  set_matmul_precision(kernels::MatmulPrecision::kTf32);
  check(64, 512, 128, DenseActivation::kRelu, 1e-2);  // TF32 keeps about 10 mantissa bits
  set_matmul_precision(kernels::MatmulPrecision::kFloat32);
}

// Turns the fused path off (or on) for a scope.
class FusionGuard {
 public:
  explicit FusionGuard(bool enabled) : previous_(ops::fused_dense()) {
    ops::set_fused_dense(enabled);
  }
  ~FusionGuard() { ops::set_fused_dense(previous_); }
  FusionGuard(const FusionGuard&) = delete;
  FusionGuard& operator=(const FusionGuard&) = delete;

 private:
  bool previous_;
};

// A GPU copy of `t` that starts 4 bytes into a buffer cairn does not own, as a CUDA application's
// pointer may: cuBLASLt must be told the smaller alignment, and plans for aligned pointers must
// not be reused for it (the bias's alignment is in the plan key).
struct Misaligned {
  std::vector<std::shared_ptr<void>> buffers;
  Tensor operator()(const Tensor& t) {
    void* raw = nullptr;
    EXPECT_EQ(cudaMalloc(&raw, size_t(t.numel() + 1) * sizeof(float)), cudaSuccess);
    buffers.emplace_back(raw, [](void* p) { cudaFree(p); });
    Tensor wrapped = Tensor::wrap(static_cast<float*>(raw) + 1, t.shape(), t.device());
    wrapped.copy_from(t);
    return wrapped;
  }
};

TEST_F(DenseParityTest, WrappedInputAndBiasFourBytesOffAlignment) {
  for (const auto activation : {DenseActivation::kNone, DenseActivation::kRelu}) {
    // Aligned first, so that a plan for 256-byte pointers is cached when the offset ones come.
    check(33, 65, 17, activation, 1e-5);
    Misaligned misaligned;
    check_with(33, 65, 17, activation, 1e-5, std::ref(misaligned));
    FusionGuard fallback(false);
    check_with(33, 65, 17, activation, 1e-5, std::ref(misaligned));
  }
}

TEST_F(DenseParityTest, TheFallbackMatchesTheCpuAndTheFusedPath) {
  for (const auto activation : {DenseActivation::kNone, DenseActivation::kRelu}) {
    FusionGuard fallback(false);
    check(7, 13, 5, activation, 1e-5);
    check(256, 784, 256, activation, 1e-4);
  }
  // Fused forward, fallback backward: the two halves of the fallback are independent.
  const Device gpu = Device::cuda(0);
  std::vector<float> fused_dw, fused_db;
  for (const bool fused_backward : {true, false}) {
    Tensor x = testing::random_tensor({64, 48}, 31, gpu);
    Tensor w = testing::random_tensor({24, 48}, 32, gpu);
    Tensor b = testing::random_tensor({24}, 33, gpu);
    x.attach_grad();
    w.attach_grad();
    b.attach_grad();
    Tensor y;
    {
      autograd::RecordScope record;
      y = ops::dense(x, w, b, DenseActivation::kRelu);
    }
    FusionGuard backward(fused_backward);
    y.backward(testing::random_tensor({64, 24}, 34, gpu));
    if (fused_backward) {
      fused_dw = w.grad().to_vector();
      fused_db = b.grad().to_vector();
    } else {
      testing::expect_close(w.grad().to_vector(), fused_dw, 1e-5, 1e-5, "dw fallback vs fused");
      testing::expect_close(b.grad().to_vector(), fused_db, 1e-5, 1e-5, "db fallback vs fused");
    }
  }
}

TEST_F(DenseParityTest, NanInputStaysNanThroughTheReluOnBothDevices) {
  // cairn's ReLU propagates NaN (as PyTorch's does); cuBLASLt's RELU_BIAS epilogue would not.
  const int64_t n = 6, in = 9, out = 5;
  std::vector<float> values = testing::random_tensor({n, in}, 41, Device::cpu()).to_vector();
  values[size_t(2 * in + 3)] = std::nanf("");  // row 2 becomes NaN in every output
  const Tensor w = testing::random_tensor({out, in}, 42, Device::cpu());
  const Tensor b = testing::random_tensor({out}, 43, Device::cpu());
  const Tensor x = Tensor::from_vector(values, {n, in}, Device::cpu());
  for (const bool fused : {true, false}) {
    FusionGuard mode(fused);
    for (const auto activation : {DenseActivation::kNone, DenseActivation::kRelu}) {
      const std::vector<float> cpu = ops::dense(x, w, b, activation).to_vector();
      const Device gpu = Device::cuda(0);
      const std::vector<float> on_gpu =
          ops::dense(x.to(gpu), w.to(gpu), b.to(gpu), activation).to_vector();
      for (int64_t j = 0; j < out; ++j) EXPECT_TRUE(std::isnan(cpu[size_t(2 * out + j)]));
      testing::expect_close(on_gpu, cpu, 1e-5, 1e-5, fused ? "fused" : "fallback");
    }
  }
}

TEST_F(DenseParityTest, MatmulAndDenseAreBitIdenticalRunToRun) {
  const Device gpu = Device::cuda(0);
  const Tensor x = testing::random_tensor({300, 784}, 51, gpu);
  const Tensor w = testing::random_tensor({256, 784}, 52, gpu);
  const Tensor b = testing::random_tensor({256}, 53, gpu);
  const Tensor head = testing::random_tensor({300, 256}, 54, gpu);
  auto run = [&] {
    std::vector<std::vector<float>> results;
    results.push_back(ops::matmul(x, w, ops::Transpose::kNo, ops::Transpose::kYes).to_vector());
    Tensor xg = x.clone(), wg = w.clone(), bg = b.clone();
    xg.attach_grad();
    wg.attach_grad();
    bg.attach_grad();
    Tensor y;
    {
      autograd::RecordScope record;
      y = ops::dense(xg, wg, bg, DenseActivation::kRelu);
    }
    y.backward(head);
    for (const Tensor& t : {y, xg.grad(), wg.grad(), bg.grad()}) results.push_back(t.to_vector());
    return results;
  };
  const auto first = run();
  for (int again = 0; again < 3; ++again) {
    const auto next = run();
    for (size_t i = 0; i < first.size(); ++i) {
      EXPECT_EQ(next[i], first[i]) << "result " << i << ", run " << again + 1;
    }
  }
}

}  // namespace
}  // namespace cairn
