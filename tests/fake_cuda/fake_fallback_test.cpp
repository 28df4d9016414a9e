// cairn's fused Dense falls back to cuBLAS GEMM and its own bias kernels whenever cuBLASLt has no
// algorithm (second review, finding B): here the fake's heuristic is told to refuse, with each
// status a real cuBLASLt may give, and the result must still match the CPU. Fake-only: a real GPU
// cannot be told to refuse.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <gtest/gtest.h>

#include <string>

#include "cairn/tests/fake_cuda/control.h"
#include "support/test_support.h"

namespace cairn {
namespace {

// Restores the heuristic's normal answers whatever the test does.
struct HeuristicRule {
  explicit HeuristicRule(std::function<int(const fake_cuda::LtQuery&)> rule) {
    fake_cuda::set_lt_heuristic_rule(std::move(rule));
  }
  ~HeuristicRule() { fake_cuda::set_lt_heuristic_rule(nullptr); }
};

class FakeFallback : public testing::CudaTest {};

TEST_F(FakeFallback, DenseMatchesTheCpuWhenTheHeuristicRefusesEitherWay) {
  const Device gpu = Device::cuda(0);
  // Each status on shapes of its own: plans are cached per shape, so a refusal is decided once.
  int64_t out = 29;
  for (const int status : {int(CUBLAS_STATUS_NOT_SUPPORTED), int(CUBLAS_STATUS_INVALID_VALUE)}) {
    SCOPED_TRACE("heuristic status " + std::to_string(status));
    ++out;
    const int64_t n = 11, in = 37;
    HeuristicRule refuse([&](const fake_cuda::LtQuery& query) {
      return query.m == out || query.n == out ? status : int(CUBLAS_STATUS_SUCCESS);
    });
    const fake_cuda::BlasCounts before = fake_cuda::blas_counts();
    Tensor x = testing::random_tensor({n, in}, 1, gpu);
    Tensor w = testing::random_tensor({out, in}, 2, gpu);
    Tensor b = testing::random_tensor({out}, 3, gpu);
    x.attach_grad();
    w.attach_grad();
    b.attach_grad();
    Tensor y;
    {
      autograd::RecordScope record;
      y = ops::dense(x, w, b, ops::DenseActivation::kRelu);
    }
    const Tensor dy = testing::random_tensor({n, out}, 4, gpu);
    y.backward(dy);
    const fake_cuda::BlasCounts after = fake_cuda::blas_counts();
    EXPECT_EQ(after.lt_matmul, before.lt_matmul) << "cuBLASLt ran although it refused";
    EXPECT_GT(after.sgemm, before.sgemm) << "the fallback's GEMM did not run";

    // The same on the CPU, the oracle.
    Tensor xc = x.detach().to(Device::cpu()), wc = w.detach().to(Device::cpu());
    Tensor bc = b.detach().to(Device::cpu());
    xc.attach_grad();
    wc.attach_grad();
    bc.attach_grad();
    Tensor yc;
    {
      autograd::RecordScope record;
      yc = ops::dense(xc, wc, bc, ops::DenseActivation::kRelu);
    }
    yc.backward(dy.to(Device::cpu()));
    testing::expect_close(y.to_vector(), yc.to_vector(), 1e-5, 1e-5, "y");
    testing::expect_close(w.grad().to_vector(), wc.grad().to_vector(), 1e-5, 1e-5, "dW");
    testing::expect_close(b.grad().to_vector(), bc.grad().to_vector(), 1e-5, 1e-5, "db");
    testing::expect_close(x.grad().to_vector(), xc.grad().to_vector(), 1e-5, 1e-5, "dx");
  }
}

TEST_F(FakeFallback, AHeuristicFailureOtherThanARefusalIsAnError) {
  const Device gpu = Device::cuda(0);
  HeuristicRule broken([](const fake_cuda::LtQuery& query) {
    return query.m == 43 || query.n == 43 ? int(CUBLAS_STATUS_NOT_INITIALIZED)
                                          : int(CUBLAS_STATUS_SUCCESS);
  });
  const Tensor x = testing::random_tensor({5, 7}, 5, gpu);
  const Tensor w = testing::random_tensor({43, 7}, 6, gpu);
  const Tensor b = testing::random_tensor({43}, 7, gpu);
  testing::expect_error([&] { ops::dense(x, w, b, ops::DenseActivation::kNone); },
                        {"cublasLtMatmulAlgoGetHeuristic"});
}

}  // namespace
}  // namespace cairn
