// The caching allocator's policy, proven on a counting host backend, and on the GPU where present.
#include "cairn/core/allocator.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>

#include "support/test_support.h"

namespace cairn {
namespace {

// Hands out host memory and counts calls; can be told to run out.
class CountingRaw final : public RawAllocator {
 public:
  void* allocate(size_t bytes) override {
    if (bytes_live + bytes > capacity) return nullptr;
    ++allocations;
    bytes_live += bytes;
    void* ptr = std::malloc(bytes);
    sizes[ptr] = bytes;
    return ptr;
  }
  void release(void* ptr) noexcept override {
    ++releases;
    bytes_live -= sizes[ptr];
    sizes.erase(ptr);
    std::free(ptr);
  }
  std::string name() const override { return "counting"; }

  size_t capacity = size_t(1) << 40;
  size_t bytes_live = 0;
  int allocations = 0, releases = 0;
  std::map<void*, size_t> sizes;
};

struct Fixture {
  CountingRaw* raw = new CountingRaw();
  CachingAllocator allocator{std::unique_ptr<RawAllocator>(raw)};
};

TEST(CachingAllocator, BucketsWasteAtMostAnEighth) {
  EXPECT_EQ(CachingAllocator::bucket_size(1), 512u);
  EXPECT_EQ(CachingAllocator::bucket_size(512), 512u);
  EXPECT_EQ(CachingAllocator::bucket_size(513), 1024u);
  EXPECT_EQ(CachingAllocator::bucket_size(4096), 4096u);
  for (size_t bytes : {4097ul, 10000ul, 1000003ul, (1ul << 28) + 1}) {
    const size_t bucket = CachingAllocator::bucket_size(bytes);
    EXPECT_GE(bucket, bytes);
    EXPECT_LE(double(bucket - bytes), double(bytes) / 8 + 1) << bytes;
  }
}

TEST(CachingAllocator, ZeroBytesNeedsNoMemory) {
  Fixture f;
  EXPECT_EQ(f.allocator.allocate(0, nullptr), nullptr);
  EXPECT_EQ(f.raw->allocations, 0);
}

TEST(CachingAllocator, RepeatedStepsStopCallingTheBackendAfterWarmUp) {
  Fixture f;
  const std::vector<size_t> step_sizes = {784 * 256 * 4, 256 * 4, 256 * 256 * 4, 10 * 4, 77};
  for (int step = 0; step < 5; ++step) {
    std::vector<void*> live;
    for (size_t bytes : step_sizes) live.push_back(f.allocator.allocate(bytes, nullptr));
    for (void* ptr : live) f.allocator.deallocate(ptr);
  }
  EXPECT_EQ(f.raw->allocations, int(step_sizes.size()));  // the first step only
  const AllocatorStats stats = f.allocator.stats();
  EXPECT_EQ(stats.requests, 25);
  EXPECT_EQ(stats.cache_hits, 20);
  EXPECT_EQ(stats.bytes_in_use, 0);
  EXPECT_GT(stats.peak_bytes_in_use, 0);
}

TEST(CachingAllocator, BlocksAreReusedOnlyOnTheirOwnStream) {
  Fixture f;
  int stream_a = 0, stream_b = 0;
  void* first = f.allocator.allocate(1000, &stream_a);
  f.allocator.deallocate(first);
  void* other = f.allocator.allocate(1000, &stream_b);
  EXPECT_NE(other, first);
  void* again = f.allocator.allocate(1000, &stream_a);
  EXPECT_EQ(again, first);
  EXPECT_EQ(f.raw->allocations, 2);
  f.allocator.deallocate(other);
  f.allocator.deallocate(again);
}

TEST(CachingAllocator, OutOfMemoryEmptiesTheCacheThenReportsSizes) {
  Fixture f;
  f.raw->capacity = 1 << 20;
  void* cached = f.allocator.allocate(600 * 1024, nullptr);
  f.allocator.deallocate(cached);                         // cached, still held from the backend
  void* big = f.allocator.allocate(700 * 1024, nullptr);  // fits only once the cache is released
  EXPECT_NE(big, nullptr);
  EXPECT_EQ(f.raw->releases, 1);
  testing::expect_error([&] { f.allocator.allocate(900 * 1024, nullptr); },
                        {"out of memory on counting", "requested 921600 bytes", "in use"});
  f.allocator.deallocate(big);
  EXPECT_EQ(f.allocator.stats().bytes_in_use, 0);
}

TEST(CachingAllocator, EmptyCacheReturnsEverythingFree) {
  Fixture f;
  void* a = f.allocator.allocate(5000, nullptr);
  void* b = f.allocator.allocate(70000, nullptr);
  f.allocator.deallocate(a);
  f.allocator.empty_cache();
  EXPECT_EQ(f.raw->releases, 1);
  EXPECT_EQ(f.allocator.stats().bytes_reserved, int64_t(CachingAllocator::bucket_size(70000)));
  f.allocator.deallocate(b);
}

TEST(CachingAllocator, BlocksOfADeadGraphPoolGoStraightBackToTheBackend) {
  Fixture f;
  int graph = 0, stream = 0;
  void* cached = f.allocator.allocate(3000, &graph);
  void* still_held = f.allocator.allocate(9000, &graph);  // a graph's output, outliving it
  f.allocator.deallocate(cached);
  f.allocator.release_pool(&graph);  // the graph dies
  EXPECT_EQ(f.raw->releases, 1);
  f.allocator.deallocate(still_held);
  EXPECT_EQ(f.raw->releases, 2);  // not parked in a list nobody draws from
  EXPECT_EQ(f.allocator.stats().bytes_reserved, 0);
  // Other keys are unaffected, and a new pool at the same address caches again.
  f.allocator.deallocate(f.allocator.allocate(3000, &stream));
  void* reborn = f.allocator.allocate(3000, &graph);
  f.allocator.deallocate(reborn);
  EXPECT_EQ(f.raw->releases, 2);
}

TEST(CachingAllocator, UnknownPointersAreIgnoredNotFatal) {
  Fixture f;
  int not_ours = 0;
  f.allocator.deallocate(&not_ours);
  EXPECT_EQ(f.allocator.stats().bytes_in_use, 0);
}

class CudaAllocatorTest : public testing::CudaTest {};

TEST_F(CudaAllocatorTest, TensorOpsStopCallingCudaMallocAfterWarmUp) {
  const Device gpu = Device::cuda(0);
  CachingAllocator& allocator = cuda_allocator(0);
  auto step = [&] {
    Tensor x = Tensor::ones({64, 128}, gpu);
    Tensor w = Tensor::ones({32, 128}, gpu);
    Tensor y = ops::relu(ops::matmul(x, w, ops::Transpose::kNo, ops::Transpose::kYes));
    return ops::sum(y).item();
  };
  EXPECT_FLOAT_EQ(step(), 64 * 32 * 128.0f);
  const int64_t raw_after_warm_up = allocator.stats().raw_allocations;
  for (int i = 0; i < 10; ++i) step();
  EXPECT_EQ(allocator.stats().raw_allocations, raw_after_warm_up);
}

TEST_F(CudaAllocatorTest, AbsurdDeviceRequestIsAnErrorAndTheDeviceStaysUsable) {
  testing::expect_error([] { Tensor::empty({int64_t(1) << 45}, Device::cuda(0)); },
                        {"out of memory on cuda:0"});
  EXPECT_FLOAT_EQ(ops::sum(Tensor::ones({10}, Device::cuda(0))).item(), 10.0f);
}

}  // namespace
}  // namespace cairn
