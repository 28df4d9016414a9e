// cairn from several threads on several streams (issue 9): the cuBLAS handle is leased under a
// lock with a workspace per stream, cuBLASLt plans are per thread, and StreamGuard streams may be
// destroyed and recreated. GPU only (skipped without a device).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "support/test_support.h"

namespace cairn {
namespace {

class StreamsTest : public testing::CudaTest {};

struct Work {
  Tensor x, w, b;
  std::vector<float> matmul, dense;  // computed on cairn's own stream, single-threaded
};

TEST_F(StreamsTest, TwoThreadsOnTwoStreamsRunMatmulAndDenseAtOnce) {
  const Device gpu = Device::cuda(0);
  std::vector<Work> work(2);
  for (size_t t = 0; t < work.size(); ++t) {
    Work& w = work[t];
    w.x = testing::random_tensor({128, 256}, 10 + t, gpu);
    w.w = testing::random_tensor({192, 256}, 20 + t, gpu);
    w.b = testing::random_tensor({192}, 30 + t, gpu);
    w.matmul = ops::matmul(w.x, w.w, ops::Transpose::kNo, ops::Transpose::kYes).to_vector();
    w.dense = ops::dense(w.x, w.w, w.b, ops::DenseActivation::kRelu).to_vector();
  }
  cuda::synchronize(gpu);  // the inputs are read from other streams below
  std::atomic<int> mismatches{0}, errors{0};
  auto body = [&](size_t t) {
    try {
      cudaStream_t stream = nullptr;
      if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) {
        ++errors;
        return;
      }
      {
        cuda::StreamGuard on_own_stream(gpu, stream);
        const Work& w = work[t];
        for (int i = 0; i < 20; ++i) {
          const Tensor m = ops::matmul(w.x, w.w, ops::Transpose::kNo, ops::Transpose::kYes);
          const Tensor d = ops::dense(w.x, w.w, w.b, ops::DenseActivation::kRelu);
          if (m.to_vector() != w.matmul) ++mismatches;
          if (d.to_vector() != w.dense) ++mismatches;
        }
      }
      cudaStreamSynchronize(stream);
      cudaStreamDestroy(stream);
    } catch (const std::exception& error) {
      ADD_FAILURE() << "thread " << t << ": " << error.what();
      ++errors;
    }
  };
  std::thread first(body, 0), second(body, 1);
  first.join();
  second.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(mismatches.load(), 0) << "a result differed from the single-threaded one";
}

TEST_F(StreamsTest, StreamsDestroyedAndRecreatedBetweenGuardsComputeCorrectly) {
  // A new stream often lands at the address of the one just destroyed; the blocks cached for the
  // old one are handed to it only after its work (an event the next guard waits for).
  const Device gpu = Device::cuda(0);
  const Tensor x = testing::random_tensor({64, 100}, 5, Device::cpu());
  const Tensor w = testing::random_tensor({50, 100}, 6, Device::cpu());
  const std::vector<float> expected =
      ops::relu(ops::matmul(x, w, ops::Transpose::kNo, ops::Transpose::kYes)).to_vector();
  const Tensor x_gpu = x.to(gpu), w_gpu = w.to(gpu);
  cuda::synchronize(gpu);
  for (int round = 0; round < 5; ++round) {
    cudaStream_t stream = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    {
      cuda::StreamGuard guard(gpu, stream);
      const Tensor y =
          ops::relu(ops::matmul(x_gpu, w_gpu, ops::Transpose::kNo, ops::Transpose::kYes));
      testing::expect_close(y.to_vector(), expected, 1e-4, 1e-4, "round " + std::to_string(round));
    }
    ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
  }
}

}  // namespace
}  // namespace cairn
