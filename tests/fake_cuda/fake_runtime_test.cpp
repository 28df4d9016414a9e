// The fake CUDA runtime refuses and reports what a real device would (tests/fake_cuda/runtime.cpp),
// and its streams are really asynchronous. Fake-only: these tests ask the fake to slow down or
// count things (control.h) and use its internal queue (fake_device.h) to observe ordering.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "cairn/tests/fake_cuda/control.h"
#include "cairn/tests/fake_cuda/fake_device.h"

namespace cairn::fake_cuda {
namespace {

// Every test starts with the default delays and no pending error, and ends drained.
class FakeRuntime : public ::testing::Test {
 protected:
  void SetUp() override {
    cudaGetLastError();
    set_delays(200, 10);
  }
  void TearDown() override {
    drain();
    set_delays(200, 10);
    cudaGetLastError();
  }
};

// Slows every operation down by 20 ms, so that "not yet" is certain, not likely.
void make_every_op_slow() { set_delays(20001, 100); }

TEST_F(FakeRuntime, ReportsAnH200) {
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  EXPECT_GE(count, 1);
  cudaDeviceProp prop{};
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  EXPECT_EQ(prop.major, 9);
  EXPECT_EQ(prop.minor, 0);
  EXPECT_EQ(prop.multiProcessorCount, 132);
  EXPECT_GT(prop.totalGlobalMem, size_t(140) << 30);
  EXPECT_NE(std::string(prop.name).find("fake"), std::string::npos);
  int major = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess);
  EXPECT_EQ(major, 9);
  EXPECT_EQ(cudaSetDevice(count), cudaErrorInvalidDevice);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidDevice);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // cleared by the read
}

TEST_F(FakeRuntime, NewDeviceMemoryReadsAsNaNAndFreedMemoryIsGone) {
  float* device = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&device), 16 * sizeof(float)), cudaSuccess);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(device) % 256, 0u);
  std::vector<float> host(16, 0.0f);
  ASSERT_EQ(cudaMemcpy(host.data(), device, 64, cudaMemcpyDeviceToHost), cudaSuccess);
  for (float value : host) EXPECT_TRUE(std::isnan(value));
  EXPECT_TRUE(is_device_range(device, 64));
  EXPECT_FALSE(is_device_range(device, 65));
  EXPECT_FALSE(is_device_range(device + 1, 64));
  EXPECT_EQ(cudaFree(device + 1), cudaErrorInvalidValue);  // not the start of an allocation
  cudaGetLastError();
  ASSERT_EQ(cudaFree(device), cudaSuccess);
  EXPECT_FALSE(is_device_range(device, 4));
  EXPECT_EQ(cudaFree(device), cudaErrorInvalidValue);  // twice
  cudaGetLastError();
}

TEST_F(FakeRuntime, CopiesCheckDirectionAndBounds) {
  float* device = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&device), 64), cudaSuccess);
  std::vector<float> host(32, 1.0f);
  const int faults = fault_count();
  EXPECT_EQ(cudaMemcpy(device, host.data(), 128, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(host.data(), device, 64, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(device, host.data(), 64, cudaMemcpyDeviceToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemsetAsync(host.data(), 0, 64, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(fault_count(), faults + 4);
  EXPECT_EQ(cudaMemcpy(device, host.data(), 64, cudaMemcpyHostToDevice), cudaSuccess);
  std::vector<float> back(16, 0.0f);
  EXPECT_EQ(cudaMemcpy(back.data(), device, 64, cudaMemcpyDefault), cudaSuccess);
  EXPECT_EQ(back[15], 1.0f);
  cudaGetLastError();
  ASSERT_EQ(cudaFree(device), cudaSuccess);
}

TEST_F(FakeRuntime, PointerAttributesTellTheMemoryKind) {
  void* device = nullptr;
  void* pinned = nullptr;
  ASSERT_EQ(cudaMalloc(&device, 100), cudaSuccess);
  ASSERT_EQ(cudaMallocHost(&pinned, 100), cudaSuccess);
  int pageable = 0;
  cudaPointerAttributes attributes{};
  ASSERT_EQ(cudaPointerGetAttributes(&attributes, static_cast<char*>(device) + 10), cudaSuccess);
  EXPECT_EQ(attributes.type, cudaMemoryTypeDevice);
  EXPECT_EQ(attributes.device, 0);
  ASSERT_EQ(cudaPointerGetAttributes(&attributes, pinned), cudaSuccess);
  EXPECT_EQ(attributes.type, cudaMemoryTypeHost);
  ASSERT_EQ(cudaPointerGetAttributes(&attributes, &pageable), cudaSuccess);
  EXPECT_EQ(attributes.type, cudaMemoryTypeUnregistered);
  EXPECT_EQ(cudaFreeHost(device), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFree(pinned), cudaErrorInvalidValue);
  cudaGetLastError();
  ASSERT_EQ(cudaFreeHost(pinned), cudaSuccess);
  ASSERT_EQ(cudaFree(device), cudaSuccess);
}

TEST_F(FakeRuntime, OutOfMemoryIsAnError) {
  const size_t limit = memory_limit();
  set_memory_limit(size_t(1) << 20);
  void* ptr = nullptr;
  EXPECT_EQ(cudaMalloc(&ptr, size_t(2) << 20), cudaErrorMemoryAllocation);
  EXPECT_EQ(cudaGetLastError(), cudaErrorMemoryAllocation);
  set_memory_limit(limit);
  size_t free_bytes = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total), cudaSuccess);
  EXPECT_GT(total, size_t(140) << 30);
}

TEST_F(FakeRuntime, StreamsRunLaterThanTheCallThatQueuedThem) {
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  float* device = nullptr;
  float* pinned = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&device), 4), cudaSuccess);
  ASSERT_EQ(cudaMallocHost(reinterpret_cast<void**>(&pinned), 4), cudaSuccess);
  *pinned = 5.0f;
  make_every_op_slow();
  ASSERT_EQ(cudaMemsetAsync(device, 0, 4, stream), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(pinned, device, 4, cudaMemcpyDeviceToHost, stream), cudaSuccess);
  // Pinned memory is written when the copy runs: not yet. (Reading it now races with the copy on
  // purpose; ThreadSanitizer would rightly say so, so under it only the stream's state is asked.)
#if !defined(__SANITIZE_THREAD__)
  EXPECT_EQ(*pinned, 5.0f);
#endif
  EXPECT_EQ(cudaStreamQuery(stream), cudaErrorNotReady);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(*pinned, 0.0f);
  EXPECT_EQ(cudaStreamQuery(stream), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaErrorInvalidResourceHandle);
  cudaGetLastError();
  ASSERT_EQ(cudaFreeHost(pinned), cudaSuccess);
  ASSERT_EQ(cudaFree(device), cudaSuccess);
}

TEST_F(FakeRuntime, PageableCopiesStageOrWaitAsDocumented) {
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  float* device = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&device), 4), cudaSuccess);
  make_every_op_slow();
  float value = 3.0f;
  ASSERT_EQ(cudaMemcpyAsync(device, &value, 4, cudaMemcpyHostToDevice, stream), cudaSuccess);
  value = 4.0f;  // allowed at once: the source was staged
  float back = 0.0f;
  ASSERT_EQ(cudaMemcpyAsync(&back, device, 4, cudaMemcpyDeviceToHost, stream), cudaSuccess);
  EXPECT_EQ(back, 3.0f);  // to pageable memory: returns once the copy is done
  ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
  ASSERT_EQ(cudaFree(device), cudaSuccess);
}

TEST_F(FakeRuntime, EventsOrderStreamsAndTime) {
  cudaStream_t first = nullptr, second = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&first, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&second, cudaStreamNonBlocking), cudaSuccess);
  cudaEvent_t start = nullptr, done = nullptr, untimed = nullptr;
  ASSERT_EQ(cudaEventCreate(&start), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&done), cudaSuccess);
  ASSERT_EQ(cudaEventCreateWithFlags(&untimed, cudaEventDisableTiming), cudaSuccess);
  EXPECT_EQ(cudaEventQuery(done), cudaSuccess);  // never recorded
  std::atomic<int> step{0};
  int seen_by_second = -1;
  make_every_op_slow();
  ASSERT_EQ(cudaEventRecord(start, first), cudaSuccess);
  ASSERT_EQ(enqueue(first, "test: write", [&] { step.store(1); }), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(done, first), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(untimed, first), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(second, done, 0), cudaSuccess);
  ASSERT_EQ(enqueue(second, "test: read", [&] { seen_by_second = step.load(); }), cudaSuccess);
  EXPECT_EQ(cudaEventQuery(done), cudaErrorNotReady);
  float ms = 0.0f;
  EXPECT_EQ(cudaEventElapsedTime(&ms, start, done), cudaErrorNotReady);
  ASSERT_EQ(cudaEventSynchronize(done), cudaSuccess);
  EXPECT_EQ(cudaEventQuery(done), cudaSuccess);
  ASSERT_EQ(cudaEventElapsedTime(&ms, start, done), cudaSuccess);
  EXPECT_GT(ms, 10.0f);  // at least the write's 20 ms delay
  EXPECT_EQ(cudaEventElapsedTime(&ms, start, untimed), cudaErrorInvalidResourceHandle);
  ASSERT_EQ(cudaStreamSynchronize(second), cudaSuccess);
  EXPECT_EQ(seen_by_second, 1);
  cudaGetLastError();
  for (cudaEvent_t event : {start, done, untimed}) ASSERT_EQ(cudaEventDestroy(event), cudaSuccess);
  EXPECT_EQ(cudaEventDestroy(done), cudaErrorInvalidResourceHandle);
  cudaGetLastError();
  ASSERT_EQ(cudaStreamDestroy(first), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(second), cudaSuccess);
}

TEST_F(FakeRuntime, TheLegacyStreamSynchronisesWithBlockingStreamsOnly) {
  cudaStream_t blocking = nullptr, non_blocking = nullptr;
  ASSERT_EQ(cudaStreamCreate(&blocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&non_blocking, cudaStreamNonBlocking), cudaSuccess);
  std::atomic<bool> legacy_ran{false};
  bool blocking_saw = false;
  make_every_op_slow();
  ASSERT_EQ(enqueue(nullptr, "test: legacy", [&] { legacy_ran.store(true); }), cudaSuccess);
  ASSERT_EQ(enqueue(blocking, "test: blocking", [&] { blocking_saw = legacy_ran.load(); }),
            cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(blocking), cudaSuccess);
  EXPECT_TRUE(blocking_saw);
  // A non-blocking stream does not wait for the legacy stream.
  set_delays(0, 0);
  std::atomic<bool> slow_done{false};
  bool non_blocking_saw = true;
  ASSERT_EQ(enqueue(nullptr, "test: slow legacy",
                    [&] {
                      std::this_thread::sleep_for(std::chrono::milliseconds(50));
                      slow_done.store(true);
                    }),
            cudaSuccess);
  ASSERT_EQ(enqueue(non_blocking, "test: free", [&] { non_blocking_saw = slow_done.load(); }),
            cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(non_blocking), cudaSuccess);
  EXPECT_FALSE(non_blocking_saw);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(blocking), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(non_blocking), cudaSuccess);
}

TEST_F(FakeRuntime, CapturedWorkRunsOnlyWhenTheGraphIsLaunched) {
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  std::atomic<int> runs{0};
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaSuccess);
  EXPECT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaErrorIllegalState);
  cudaGetLastError();
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  ASSERT_EQ(cudaStreamIsCapturing(stream, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusActive);
  EXPECT_TRUE(stream_is_capturing(stream));
  ASSERT_EQ(enqueue(stream, "test: count", [&] { runs.fetch_add(1); }), cudaSuccess);
  ASSERT_EQ(enqueue(stream, "test: count", [&] { runs.fetch_add(10); }), cudaSuccess);
  void* relaxed_ok = nullptr;
  EXPECT_EQ(cudaMalloc(&relaxed_ok, 16), cudaSuccess);  // relaxed mode allows it
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_NE(graph, nullptr);
  size_t nodes = 0;
  ASSERT_EQ(cudaGraphGetNodes(graph, nullptr, &nodes), cudaSuccess);
  EXPECT_EQ(nodes, 2u);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(runs.load(), 0);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);  // pending launches keep their nodes
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(runs.load(), 22);
  ASSERT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  ASSERT_EQ(cudaFree(relaxed_ok), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

TEST_F(FakeRuntime, CaptureRefusesWhatARealDeviceRefuses) {
  cudaStream_t stream = nullptr, other = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking), cudaSuccess);
  EXPECT_EQ(cudaStreamBeginCapture(nullptr, cudaStreamCaptureModeGlobal),
            cudaErrorStreamCaptureUnsupported);
  cudaGetLastError();

  // Global mode: cudaMalloc is refused and breaks the capture.
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  void* ptr = nullptr;
  EXPECT_EQ(cudaMalloc(&ptr, 16), cudaErrorStreamCaptureUnsupported);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(graph, nullptr);
  cudaGetLastError();

  // Synchronising the capturing stream, or the device, breaks the capture in any mode.
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaErrorStreamCaptureInvalidated);
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaErrorStreamCaptureInvalidated);
  cudaGetLastError();

  // cudaFree synchronises the device: refused while capturing.
  void* block = nullptr;
  ASSERT_EQ(cudaMalloc(&block, 16), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaSuccess);
  EXPECT_EQ(cudaFree(block), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaErrorStreamCaptureInvalidated);
  ASSERT_EQ(cudaFree(block), cudaSuccess);
  cudaGetLastError();

  // Pageable copies cannot enter a graph; events: captured ones cannot be queried, outside ones
  // cannot be waited for.
  ASSERT_EQ(cudaMalloc(&block, 16), cudaSuccess);
  cudaEvent_t outside = nullptr, inside = nullptr;
  ASSERT_EQ(cudaEventCreate(&outside), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&inside), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(outside, other), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(inside, stream), cudaSuccess);
  EXPECT_EQ(cudaEventQuery(inside), cudaErrorCapturedEvent);
  EXPECT_EQ(cudaEventSynchronize(inside), cudaErrorCapturedEvent);
  float host = 1.0f;
  EXPECT_EQ(cudaMemcpyAsync(block, &host, 4, cudaMemcpyHostToDevice, stream),
            cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaErrorStreamCaptureInvalidated);
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaSuccess);
  EXPECT_EQ(cudaStreamWaitEvent(stream, outside, 0), cudaErrorStreamCaptureIsolation);
  EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaErrorIllegalState);  // not capturing
  cudaGetLastError();
  ASSERT_EQ(cudaEventDestroy(outside), cudaSuccess);
  ASSERT_EQ(cudaEventDestroy(inside), cudaSuccess);
  ASSERT_EQ(cudaFree(block), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(other), cudaSuccess);
}

TEST_F(FakeRuntime, TheLegacyStreamCannotBeUsedWhileABlockingStreamCaptures) {
  cudaStream_t blocking = nullptr;
  ASSERT_EQ(cudaStreamCreate(&blocking), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(blocking, cudaStreamCaptureModeRelaxed), cudaSuccess);
  cudaStreamCaptureStatus status{};
  EXPECT_EQ(cudaStreamIsCapturing(nullptr, &status), cudaErrorStreamCaptureImplicit);
  EXPECT_EQ(enqueue(nullptr, "test: legacy", [] {}), cudaErrorStreamCaptureImplicit);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(blocking, &graph), cudaErrorStreamCaptureInvalidated);
  cudaGetLastError();
  ASSERT_EQ(cudaStreamDestroy(blocking), cudaSuccess);
}

TEST_F(FakeRuntime, ACaptureForksAndJoinsThroughEvents) {
  cudaStream_t origin = nullptr, side = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&origin, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking), cudaSuccess);
  cudaEvent_t fork = nullptr, join = nullptr;
  ASSERT_EQ(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming), cudaSuccess);
  ASSERT_EQ(cudaEventCreateWithFlags(&join, cudaEventDisableTiming), cudaSuccess);
  std::vector<int> order;
  std::mutex order_mutex;
  auto note = [&](int value) {
    return [&, value] {
      std::lock_guard<std::mutex> lock(order_mutex);
      order.push_back(value);
    };
  };
  // Without the join, the capture cannot end.
  ASSERT_EQ(cudaStreamBeginCapture(origin, cudaStreamCaptureModeRelaxed), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(fork, origin), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(side, fork, 0), cudaSuccess);
  EXPECT_TRUE(stream_is_capturing(side));
  ASSERT_EQ(enqueue(side, "test: side", note(2)), cudaSuccess);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(side, &graph), cudaErrorStreamCaptureUnmatched);
  EXPECT_EQ(cudaStreamEndCapture(origin, &graph), cudaErrorStreamCaptureUnjoined);
  EXPECT_FALSE(stream_is_capturing(side));
  cudaGetLastError();
  // With it, it does, and the replay keeps the captured order.
  ASSERT_EQ(cudaStreamBeginCapture(origin, cudaStreamCaptureModeRelaxed), cudaSuccess);
  ASSERT_EQ(enqueue(origin, "test: origin", note(1)), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(fork, origin), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(side, fork, 0), cudaSuccess);
  ASSERT_EQ(enqueue(side, "test: side", note(2)), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(join, side), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(origin, join, 0), cudaSuccess);
  ASSERT_EQ(enqueue(origin, "test: after", note(3)), cudaSuccess);
  ASSERT_EQ(cudaStreamEndCapture(origin, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, origin), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(origin), cudaSuccess);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  ASSERT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  ASSERT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  ASSERT_EQ(cudaEventDestroy(fork), cudaSuccess);
  ASSERT_EQ(cudaEventDestroy(join), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(origin), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(side), cudaSuccess);
}

TEST_F(FakeRuntime, ThreadLocalCaptureRefusesOnlyTheCapturingThread) {
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  cudaError_t from_other_thread = cudaErrorUnknown;
  void* other_ptr = nullptr;
  std::thread([&] { from_other_thread = cudaMalloc(&other_ptr, 16); }).join();
  EXPECT_EQ(from_other_thread, cudaSuccess);
  void* own_ptr = nullptr;
  EXPECT_EQ(cudaMalloc(&own_ptr, 16), cudaErrorStreamCaptureUnsupported);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaErrorStreamCaptureInvalidated);
  cudaGetLastError();
  ASSERT_EQ(cudaFree(other_ptr), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

TEST_F(FakeRuntime, ADestroyedStreamStillRunsWhatWasQueued) {
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  std::atomic<bool> ran{false};
  make_every_op_slow();
  ASSERT_EQ(enqueue(stream, "test: late", [&] { ran.store(true); }), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
  EXPECT_FALSE(ran.load());  // destroy returned at once
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_TRUE(ran.load());
}

}  // namespace
}  // namespace cairn::fake_cuda
