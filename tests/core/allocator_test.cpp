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
  // Events are host tokens here: what matters is which stream recorded and which waited.
  bool record_event(const void* stream, void*& event) noexcept override {
    if (!events_work) return false;
    if (event == nullptr) event = new int(0);
    ++*static_cast<int*>(event);
    recorded_on = stream;
    ++records;
    return true;
  }
  bool wait_event(const void* stream, void* event) noexcept override {
    if (!events_work) return false;
    waited_on = stream;
    waited_for = event;
    ++waits;
    return true;
  }
  void destroy_event(void* event) noexcept override { delete static_cast<int*>(event); }

  size_t capacity = size_t(1) << 40;
  size_t bytes_live = 0;
  int allocations = 0, releases = 0;
  std::map<void*, size_t> sizes;
  bool events_work = true;
  int records = 0, waits = 0;
  const void* recorded_on = nullptr;
  const void* waited_on = nullptr;
  const void* waited_for = nullptr;
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

TEST(CachingAllocator, ALiveGraphPoolSurvivesEmptyCache) {
  Fixture f;
  int graph = 0, stream = 0;
  f.allocator.begin_capture(&graph);
  void* in_graph = f.allocator.allocate(3000, &graph);
  f.allocator.deallocate(in_graph, &graph);  // freed inside the capture: the graph's list
  f.allocator.end_capture(&graph);
  void* eager = f.allocator.allocate(3000, &stream);
  f.allocator.deallocate(eager);
  f.allocator.empty_cache();
  EXPECT_EQ(f.raw->releases, 1);  // the eager block only
  EXPECT_EQ(f.raw->sizes.count(in_graph), 1u);
  EXPECT_EQ(f.raw->sizes.count(eager), 0u);
  // The replaying graph still owns its address.
  EXPECT_EQ(f.allocator.allocate(3000, &graph), in_graph);
  f.allocator.deallocate(in_graph);
  f.allocator.release_pool(&graph);  // the graph dies: now its blocks go
  EXPECT_EQ(f.raw->releases, 2);
  EXPECT_EQ(f.allocator.stats().bytes_reserved, 0);
}

TEST(CachingAllocator, ALiveGraphPoolSurvivesAnOutOfMemoryRetry) {
  Fixture f;
  f.raw->capacity = 1 << 20;
  int graph = 0, stream = 0;
  f.allocator.begin_capture(&graph);
  void* in_graph = f.allocator.allocate(300 * 1024, &graph);
  f.allocator.deallocate(in_graph, &graph);
  f.allocator.end_capture(&graph);
  void* eager = f.allocator.allocate(300 * 1024, &stream);
  f.allocator.deallocate(eager);
  // 600 KiB fits only once a cached block goes: the retry may take the eager one, not the graph's.
  void* big = f.allocator.allocate(600 * 1024, &stream);
  EXPECT_NE(big, nullptr);
  EXPECT_EQ(f.raw->releases, 1);
  EXPECT_EQ(f.raw->sizes.count(in_graph), 1u);
  // With only the graph's block left to give, the request fails rather than take it.
  testing::expect_error([&] { f.allocator.allocate(700 * 1024, &stream); },
                        {"out of memory on counting", "requested 716800 bytes"});
  EXPECT_EQ(f.raw->sizes.count(in_graph), 1u);
  f.allocator.deallocate(big);
  f.allocator.release_pool(&graph);
  f.allocator.empty_cache();
  EXPECT_EQ(f.allocator.stats().bytes_reserved, 0);  // a dead pool's blocks are released
}

TEST(CachingAllocator, NothingIsFreedWhileAGraphIsBeingCaptured) {
  Fixture f;
  f.raw->capacity = 1 << 20;
  int graph = 0, stream = 0;
  void* eager = f.allocator.allocate(600 * 1024, &stream);
  f.allocator.deallocate(eager);  // cached
  f.allocator.begin_capture(&graph);
  EXPECT_TRUE(f.allocator.capturing());
  testing::expect_error([&] { f.allocator.empty_cache(); },
                        {"empty_cache on counting", "refused", "being captured"});
  // Out of memory in the capture: no retry (the half-built graph may use any cached block).
  testing::expect_error([&] { f.allocator.allocate(700 * 1024, &graph); },
                        {"out of memory on counting", "not emptied", "being captured"});
  EXPECT_EQ(f.raw->releases, 0);
  f.allocator.end_capture(&graph);
  EXPECT_FALSE(f.allocator.capturing());
  f.allocator.empty_cache();  // allowed again once the capture is over
  EXPECT_EQ(f.raw->releases, 1);
  f.allocator.release_pool(&graph);
}

TEST(CachingAllocator, AnEagerBlockFreedDuringACaptureJoinsTheGraphsPool) {
  Fixture f;
  int graph = 0, stream = 0;
  void* eager = f.allocator.allocate(5000, &stream);
  f.allocator.begin_capture(&graph);
  f.allocator.deallocate(eager, &graph);  // the graph may read it on every replay
  f.allocator.end_capture(&graph);
  void* next_eager = f.allocator.allocate(5000, &stream);
  EXPECT_NE(next_eager, eager);  // never handed to eager work
  EXPECT_EQ(f.allocator.allocate(5000, &graph), eager);
  f.allocator.deallocate(eager);
  f.allocator.deallocate(next_eager);
  f.allocator.empty_cache();
  EXPECT_EQ(f.raw->sizes.count(eager), 1u);  // the graph is alive
  f.allocator.release_pool(&graph);
  EXPECT_EQ(f.raw->sizes.count(eager), 0u);
  // A block freed outside any capture, or by a thread not capturing, stays on its stream.
  void* plain = f.allocator.allocate(5000, &stream);
  f.allocator.deallocate(plain, nullptr);
  EXPECT_EQ(f.allocator.allocate(5000, &stream), plain);
  f.allocator.deallocate(plain);
}

TEST(CachingAllocator, AGuardedStreamsNextGuardWaitsForTheLastOnesWork) {
  Fixture f;
  int user_stream = 0;
  f.allocator.guard_stream(&user_stream);
  f.allocator.guard_stream(&user_stream);  // nested, or a second thread
  void* block = f.allocator.allocate(2048, &user_stream);
  f.allocator.deallocate(block);
  f.allocator.unguard_stream(&user_stream);
  EXPECT_EQ(f.raw->records, 0);  // a guard on it is still alive
  f.allocator.unguard_stream(&user_stream);
  EXPECT_EQ(f.raw->records, 1);
  EXPECT_EQ(f.raw->recorded_on, &user_stream);
  // Whatever stream now lives at that address waits for the old one before reusing its blocks.
  f.allocator.guard_stream(&user_stream);
  EXPECT_EQ(f.raw->waits, 1);
  EXPECT_EQ(f.raw->waited_on, &user_stream);
  EXPECT_NE(f.raw->waited_for, nullptr);
  EXPECT_EQ(f.allocator.allocate(2048, &user_stream), block);  // still cached: no new allocation
  EXPECT_EQ(f.raw->allocations, 1);
  f.allocator.deallocate(block);
  f.allocator.unguard_stream(&user_stream);
  EXPECT_EQ(f.raw->records, 2);
}

TEST(CachingAllocator, WithoutEventsAnUnguardedStreamsBlocksAreForgotten) {
  Fixture f;
  f.raw->events_work = false;
  int user_stream = 0;
  f.allocator.guard_stream(&user_stream);
  void* cached = f.allocator.allocate(2048, &user_stream);
  void* held = f.allocator.allocate(8192, &user_stream);  // a tensor outliving the guard
  f.allocator.deallocate(cached);
  f.allocator.unguard_stream(&user_stream);
  EXPECT_EQ(f.raw->releases, 1);  // the free block
  f.allocator.deallocate(held);
  EXPECT_EQ(f.raw->releases, 2);  // straight back, never parked under that address
  f.allocator.guard_stream(&user_stream);
  void* fresh = f.allocator.allocate(2048, &user_stream);
  EXPECT_EQ(f.raw->allocations, 3);
  EXPECT_EQ(f.allocator.stats().bytes_in_use, 2048);
  f.allocator.deallocate(fresh);
  f.allocator.unguard_stream(&user_stream);
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
