// CPU tensors' memory (issue 13): the host caching allocator behind Storage, and backward()
// handing a leaf its gradient's buffer instead of copying it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "cairn/core/host_allocator.h"
#include "support/test_support.h"

namespace cairn {
namespace {

const Device kCpu = Device::cpu();

TEST(HostAllocator, AFreedBlockIsReusedForTheSameBucketAndIsAligned) {
  void* first = nullptr;
  {
    Tensor t = Tensor::empty({1000}, kCpu);
    first = t.data();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % 64, 0u);
  }
  const AllocatorStats before = host_allocator().stats();
  Tensor again = Tensor::empty({999}, kCpu);  // 3996 bytes: the same 4 KiB bucket
  const AllocatorStats after = host_allocator().stats();
  EXPECT_EQ(again.data(), first);
  EXPECT_EQ(after.raw_allocations, before.raw_allocations);
  EXPECT_EQ(after.cache_hits, before.cache_hits + 1);
}

TEST(HostAllocator, ATrainingStepAllocatesNoHostMemoryAfterWarmUp) {
  Tensor w = Tensor::uniform({16, 12}, -1.0f, 1.0f, 1, kCpu);
  Tensor b = Tensor::zeros({16}, kCpu);
  w.attach_grad();
  b.attach_grad(GradReq::kAdd);
  const Tensor x = Tensor::uniform({5, 12}, -1.0f, 1.0f, 2, kCpu);
  auto step = [&] {
    Tensor loss;
    {
      autograd::RecordScope record;
      loss = ops::mean(ops::relu(ops::linear(x, w, b)));
    }
    loss.backward();
  };
  step();
  step();
  const int64_t raw_after_warm_up = host_allocator().stats().raw_allocations;
  for (int i = 0; i < 5; ++i) step();
  EXPECT_EQ(host_allocator().stats().raw_allocations, raw_after_warm_up);
}

TEST(HostAllocator, PoisoningAppliesToReusedBlocks) {
  { Tensor warm = Tensor::ones({300}, kCpu); }  // leaves a block of this bucket in the cache
  set_poison_allocations(true);
  Tensor t = Tensor::empty({300}, kCpu);
  set_poison_allocations(false);
  for (float v : t.to_vector()) ASSERT_TRUE(std::isnan(v));
}

TEST(HostAllocator, RunningOutSaysSoWithTheSize) {
  testing::expect_error([] { host_allocate(size_t(1) << 61); },
                        {"out of host memory", "2305843009213693952 bytes"});
  // 1 PiB: beyond the x86-64 user address space, so aligned_alloc itself fails.
  testing::expect_error([] { host_allocate(size_t(1) << 50); },
                        {"out of host memory", "1125899906842624 bytes"});
  Tensor still_usable = Tensor::ones({4}, kCpu);
  EXPECT_EQ(still_usable.to_vector(), (std::vector<float>{1, 1, 1, 1}));
}

// Two leaves fed the same gradient tensor (add passes dy through to both) must not end up sharing
// one buffer, and a handle to the grad taken before backward() sees the new values.
TEST(GradientBuffers, LeavesGivenOneGradientTensorKeepSeparateBuffers) {
  Tensor a = Tensor::from_vector({1, 2, 3}, {3}, kCpu);
  Tensor b = Tensor::from_vector({4, 5, 6}, {3}, kCpu);
  a.attach_grad();
  b.attach_grad();
  const Tensor a_grad = a.grad();
  {
    autograd::RecordScope record;
    ops::sum(ops::mul_scalar(ops::add(a, b), 2.0f)).backward();
  }
  EXPECT_NE(a.grad().data(), b.grad().data());
  EXPECT_EQ(a_grad.to_vector(), (std::vector<float>{2, 2, 2}));
  EXPECT_EQ(b.grad().to_vector(), (std::vector<float>{2, 2, 2}));
  a.grad().data()[0] = 100.0f;  // writing one leaves the other alone
  EXPECT_EQ(b.grad().to_vector(), (std::vector<float>{2, 2, 2}));
}

TEST(GradientBuffers, OnTheCpuAFreshGradientIsMovedInNotCopied) {
  Tensor w = Tensor::from_vector({1, 2, 3}, {3}, kCpu);
  w.attach_grad();
  const Tensor handle = w.grad();  // the same grad tensor: follows the move
  const float* before = w.grad().data();
  {
    autograd::RecordScope record;
    ops::sum(ops::mul_scalar(w, 4.0f)).backward();
  }
  EXPECT_NE(w.grad().data(), before);  // took the computed gradient's buffer
  EXPECT_EQ(handle.data(), w.grad().data());
  EXPECT_EQ(w.grad().to_vector(), (std::vector<float>{4, 4, 4}));
}

TEST(GradientBuffers, AViewOfTheGradStaysTrueAcrossBackward) {
  Tensor w = Tensor::from_vector({1, 2, 3, 4}, {2, 2}, kCpu);
  w.attach_grad();
  const Tensor flat = w.grad().reshape({4});  // shares the grad's buffer: must not go stale
  for (float scale : {3.0f, 5.0f}) {
    autograd::RecordScope record;
    ops::sum(ops::mul_scalar(ops::square(w), scale)).backward();  // d/dw = 2 scale w
    EXPECT_EQ(flat.to_vector(), (std::vector<float>{2 * scale, 4 * scale, 6 * scale, 8 * scale}));
  }
}

TEST(GradientBuffers, AddRequestsAccumulateAcrossBackwardCalls) {
  Tensor w = Tensor::from_vector({1, -2}, {2}, kCpu);
  w.attach_grad(GradReq::kAdd);
  for (int i = 0; i < 3; ++i) {
    autograd::RecordScope record;
    ops::sum(ops::mul(w, w)).backward();  // d/dw = 2w each time
  }
  EXPECT_EQ(w.grad().to_vector(), (std::vector<float>{6, -12}));
}

}  // namespace
}  // namespace cairn
