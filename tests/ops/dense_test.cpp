// ops::dense: the fused Dense map. On the CPU it is composed (checked against finite differences);
// on a GPU it is one cuBLASLt call with the bias/ReLU epilogue forward and one with the
// bias-gradient epilogue backward, held against the CPU.
#include <gtest/gtest.h>

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
    SCOPED_TRACE("n=" + std::to_string(n) + " in=" + std::to_string(in) +
                 " out=" + std::to_string(out));
    std::vector<float> results[2][4];
    const Device devices[2] = {Device::cpu(), Device::cuda(0)};
    for (int d = 0; d < 2; ++d) {
      Tensor x = testing::random_tensor({n, in}, 21, devices[d]);
      Tensor w = testing::random_tensor({out, in}, 22, devices[d]);
      Tensor b = testing::random_tensor({out}, 23, devices[d]);
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

}  // namespace
}  // namespace cairn
