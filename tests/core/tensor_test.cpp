// Tensors, devices, transfers, interop with CUDA applications, and the error macros.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>

#include "support/test_support.h"

namespace cairn {
namespace {

using testing::expect_error;

TEST(Device, DetectionNeverThrowsAndExplainsAMissingGpu) {
  const int count = cuda_device_count();  // must not crash without a driver
  EXPECT_GE(count, 0);
  EXPECT_EQ(cuda_available(), count > 0);
  if (count == 0) {
    EXPECT_FALSE(cuda_unavailable_reason().empty());
  } else {
    EXPECT_TRUE(cuda_unavailable_reason().empty());
  }
  EXPECT_EQ(Device::cpu().str(), "cpu");
  EXPECT_EQ(Device::cuda(3).str(), "cuda:3");
  EXPECT_NE(Device::cpu(), Device::cuda(0));
}

TEST(Device, DefaultIsTheGpuWhenThereIsOneElseTheCpu) {
  const Device device = default_device();
  EXPECT_EQ(device.is_cuda(), cuda_available());
}

TEST(Device, UnavailableGpuIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is present";
  expect_error([] { Tensor::zeros({2}, Device::cuda(0)); }, {"cuda:0", "not available"});
  expect_error([] { set_default_device(Device::cuda(0)); }, {"cuda:0", "not available"});
}

TEST(Tensor, ShapesAndProperties) {
  Tensor t = Tensor::zeros({2, 3, 4}, Device::cpu());
  EXPECT_EQ(t.ndim(), 3);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.dim(-1), 4);
  EXPECT_EQ(t.nbytes(), 96u);
  EXPECT_EQ(shape_str(t.shape()), "(2, 3, 4)");
  EXPECT_EQ(shape_str({5}), "(5,)");
  EXPECT_EQ(shape_str({}), "()");
  expect_error([&] { t.dim(3); }, {"Tensor::dim", "axis 3", "(2, 3, 4)"});
  Tensor undefined;
  expect_error([&] { undefined.shape(); }, {"undefined"});
}

TEST(Tensor, HandlesShareDataAndCloneCopies) {
  Tensor a = Tensor::from_vector({1, 2, 3}, {3}, Device::cpu());
  Tensor alias = a;
  Tensor copy = a.clone();
  a.data()[0] = 10;
  EXPECT_EQ(alias.to_vector()[0], 10);
  EXPECT_EQ(copy.to_vector()[0], 1);
}

TEST(Tensor, CopyFromChecksShapeAndDtype) {
  Tensor a = Tensor::zeros({2, 2}, Device::cpu());
  a.copy_from(Tensor::ones({2, 2}, Device::cpu()));
  EXPECT_EQ(a.to_vector(), std::vector<float>(4, 1.0f));
  expect_error([&] { a.copy_from(Tensor::ones({4}, Device::cpu())); },
               {"copy_from", "(4,)", "(2, 2)"});
}

TEST(Tensor, WrapBorrowsHostMemoryWithoutCopying) {
  std::vector<float> buffer = {1, 2, 3, 4, 5, 6};
  {
    Tensor view = Tensor::wrap(buffer.data(), {2, 3}, Device::cpu());
    EXPECT_EQ(view.data(), buffer.data());
    Tensor doubled = ops::mul_scalar(view, 2.0f);
    EXPECT_EQ(doubled.to_vector(), (std::vector<float>{2, 4, 6, 8, 10, 12}));
    view.data()[5] = 60;
  }
  EXPECT_EQ(buffer[5], 60);  // the caller's memory, still alive after the tensor is gone
}

TEST(Tensor, Int32Tensors) {
  Tensor labels = Tensor::from_int32({3, 1, 4}, {3}, Device::cpu());
  EXPECT_EQ(labels.dtype(), DType::kInt32);
  EXPECT_EQ(labels.to_int32_vector(), (std::vector<int32_t>{3, 1, 4}));
  expect_error([&] { labels.data(); }, {"int32", "not float32"});
  expect_error([&] { labels.to_vector(); }, {"to_vector", "int32"});
}

TEST(Tensor, PoisonedAllocationsReadAsNaN) {
  set_poison_allocations(true);
  Tensor fresh = Tensor::empty({4}, Device::cpu());
  set_poison_allocations(false);
  for (float value : fresh.to_vector()) EXPECT_TRUE(std::isnan(value));
}

TEST(Tensor, PrintsShapeDeviceAndValues) {
  const std::string text = Tensor::from_vector({1.5f, -2}, {2}, Device::cpu()).str();
  EXPECT_NE(text.find("(2,)"), std::string::npos) << text;
  EXPECT_NE(text.find("cpu"), std::string::npos) << text;
  EXPECT_NE(text.find("1.5, -2"), std::string::npos) << text;
}

TEST(Errors, CarryFileLineAndTheFailedCall) {
  try {
    CAIRN_CUDA_CHECK(cudaErrorInvalidValue);
    FAIL() << "no throw";
  } catch (const Error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("cudaErrorInvalidValue"), std::string::npos) << message;
    EXPECT_NE(message.find("tensor_test.cpp"), std::string::npos) << message;
  }
  try {
    CAIRN_CUBLAS_CHECK(7);  // CUBLAS_STATUS_INVALID_VALUE
    FAIL() << "no throw";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("CUBLAS_STATUS_INVALID_VALUE"), std::string::npos)
        << error.what();
  }
}

TEST(Errors, SyncAfterLaunchSwitchRoundTrips) {
  const bool before = sync_after_launch();
  set_sync_after_launch(true);
  EXPECT_TRUE(sync_after_launch());
  set_sync_after_launch(before);
}

// ---- On a GPU ----

class CudaTensorTest : public testing::CudaTest {};

TEST_F(CudaTensorTest, RoundTripsThroughTheDevice) {
  Tensor host = testing::random_tensor({3, 5}, 11, Device::cpu());
  Tensor device = host.to(Device::cuda(0));
  EXPECT_TRUE(device.device().is_cuda());
  EXPECT_EQ(device.to_vector(), host.to_vector());
  EXPECT_EQ(device.to(Device::cuda(0)).raw_data(),
            device.raw_data());  // no copy when already there
  EXPECT_FLOAT_EQ(ops::sum(device).item(), ops::sum(host).item());
}

TEST_F(CudaTensorTest, WrapsAnApplicationsDevicePointerAndRunsOnItsStream) {
  constexpr int kCount = 1000;
  float* buffer = nullptr;
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&buffer), kCount * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  std::vector<float> values(kCount);
  for (int i = 0; i < kCount; ++i) values[size_t(i)] = float(i) - 500.0f;
  ASSERT_EQ(cudaMemcpy(buffer, values.data(), kCount * sizeof(float), cudaMemcpyHostToDevice),
            cudaSuccess);
  {
    cuda::StreamGuard on_callers_stream(Device::cuda(0), stream);
    EXPECT_EQ(cuda::current_stream(Device::cuda(0)), stream);
    Tensor wrapped = Tensor::wrap(buffer, {kCount}, Device::cuda(0));
    EXPECT_EQ(wrapped.data(), buffer);
    const float total = ops::sum(ops::relu(wrapped)).item();
    EXPECT_FLOAT_EQ(total, 499.0f * 500.0f / 2.0f);
  }
  EXPECT_NE(cuda::current_stream(Device::cuda(0)), stream);
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
  EXPECT_EQ(cudaFree(buffer), cudaSuccess);  // still ours: cairn never freed it
}

TEST_F(CudaTensorTest, WrapRejectsHostPointersForTheGpu) {
  std::vector<float> host(4);
  expect_error([&] { Tensor::wrap(host.data(), {4}, Device::cuda(0)); },
               {"Tensor::wrap", "not device memory"});
}

TEST_F(CudaTensorTest, WrapRejectsDevicePointersForTheCpuAndShapesLargerThanTheBuffer) {
  void* device = nullptr;
  ASSERT_EQ(cudaMalloc(&device, 16 * sizeof(float)), cudaSuccess);
  expect_error([&] { Tensor::wrap(device, {4}, Device::cpu()); },
               {"Tensor::wrap", "device memory of cuda:0", "cpu"});
  expect_error([&] { Tensor::wrap(device, {5, 4}, Device::cuda(0), DType::kFloat32, 64); },
               {"Tensor::wrap", "80 bytes", "holds 64"});
  const Tensor fits = Tensor::wrap(device, {4, 4}, Device::cuda(0), DType::kFloat32, 64);
  EXPECT_EQ(fits.numel(), 16);
  void* pinned = nullptr;
  ASSERT_EQ(cudaMallocHost(&pinned, 16), cudaSuccess);
  EXPECT_EQ(Tensor::wrap(pinned, {4}, Device::cpu()).numel(), 4);  // pinned host memory is host
  expect_error([&] { Tensor::wrap(pinned, {4}, Device::cuda(0)); },
               {"Tensor::wrap", "pinned host memory"});
  EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);
  EXPECT_EQ(cudaFree(device), cudaSuccess);
}

// Finding C: a peer copy from a temporary. The copy runs on the destination's stream; the
// source's block goes back to its own stream's free list as soon as the temporary dies, and the
// next allocation there overwrites it. The source stream must wait for the copy first.
TEST_F(CudaTensorTest, MultiGpuPeerCopyOfATemporaryReadsItBeforeItsBlockIsReused) {
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs two GPUs";
  const Device first = Device::cuda(0), second = Device::cuda(1);
  for (int round = 0; round < 20; ++round) {
    Tensor copy;
    {
      const Tensor temporary = Tensor::full({1 << 16}, float(round), first);
      copy = temporary.to(second);
    }
    const Tensor reuse = Tensor::full({1 << 16}, -1.0f, first);  // most likely the same block
    const std::vector<float> values = copy.to_vector();
    ASSERT_EQ(values.front(), float(round)) << "round " << round;
    ASSERT_EQ(values.back(), float(round)) << "round " << round;
    EXPECT_EQ(reuse.to_vector().front(), -1.0f);
  }
}

}  // namespace
}  // namespace cairn
