// cairn from several threads on several streams (issue 9): the cuBLAS handle is leased under a
// lock with a workspace per stream, cuBLASLt plans are per thread, and StreamGuard streams may be
// destroyed and recreated. GPU only (skipped without a device).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cairn/core/allocator.h"
#include "cairn/core/cuda_graph.h"
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

// Finding G: the last StreamGuard on a stream ended while that stream was being captured. No event
// can be recorded there then; the next guard must neither wait on a missing event nor drop the
// stream's cached blocks (which the error path used to do).
TEST_F(StreamsTest, TheLastGuardEndingDuringACaptureKeepsTheStreamsBlocks) {
  const Device gpu = Device::cuda(0);
  CachingAllocator& allocator = cuda_allocator(0);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  {
    cuda::StreamGuard guard(gpu, stream);
    Tensor::zeros({4099}, gpu);  // a block cached for this stream
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaSuccess);
  }  // the last guard ends mid-capture
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  const AllocatorStats before = allocator.stats();
  {
    cuda::StreamGuard guard(gpu, stream);
    const Tensor again = Tensor::zeros({4099}, gpu);
    cuda::synchronize(gpu);
  }
  const AllocatorStats after = allocator.stats();
  EXPECT_EQ(after.raw_allocations, before.raw_allocations) << "the cached block was dropped";
  EXPECT_EQ(after.cache_hits, before.cache_hits + 1);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

// Finding D: a graph captured on one stream and replayed on another, while eager cuBLAS calls run
// on the capture stream. The graph's cuBLAS calls have a workspace of their own, so the two never
// share one (ThreadSanitizer on the fake device reports a shared one as a race).
TEST_F(StreamsTest, AReplayElsewhereAndEagerCublasOnTheCaptureStreamShareNoWorkspace) {
  const Device gpu = Device::cuda(0);
  const Tensor x = testing::random_tensor({64, 96}, 41, gpu);
  const Tensor w = testing::random_tensor({80, 96}, 42, gpu);
  const std::vector<float> expected =
      ops::matmul(x, w, ops::Transpose::kNo, ops::Transpose::kYes).to_vector();
  cudaStream_t capture_stream = nullptr, replay_stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&capture_stream, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&replay_stream, cudaStreamNonBlocking), cudaSuccess);
  cuda::synchronize(gpu);
  {
    cuda::StreamGuard on_capture(gpu, capture_stream);
    Tensor captured_out;
    auto graph = cuda::Graph::capture(gpu, [&] {
      captured_out = ops::matmul(x, w, ops::Transpose::kNo, ops::Transpose::kYes);
    });
    std::vector<float> eager_result;
    std::thread replayer([&] {
      cuda::StreamGuard on_replay(gpu, replay_stream);
      for (int i = 0; i < 10; ++i) graph->replay();
      graph->synchronize();
    });
    for (int i = 0; i < 10; ++i) {
      eager_result = ops::matmul(x, w, ops::Transpose::kNo, ops::Transpose::kYes).to_vector();
    }
    replayer.join();
    EXPECT_EQ(eager_result, expected);
    EXPECT_EQ(captured_out.to_vector(), expected);
  }
  ASSERT_EQ(cudaStreamDestroy(capture_stream), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(replay_stream), cudaSuccess);
}

// Finding E: a graph destroyed on one thread while another thread captures. ~Graph used to
// synchronise the whole device and free its pool at once, both of which break (or are refused
// during) the other thread's capture.
TEST_F(StreamsTest, DestroyingAGraphDoesNotBreakAnotherThreadsCapture) {
  const Device gpu = Device::cuda(0);
  const Tensor x = testing::random_tensor({32, 32}, 43, gpu);
  std::unique_ptr<cuda::Graph> old_graph =
      cuda::Graph::capture(gpu, [&] { ops::relu(ops::add_scalar(x, 1.0f)); });
  old_graph->replay();
  std::atomic<bool> capturing{false}, destroyed{false};
  std::string capture_error;
  std::thread capturer([&] {
    cudaStream_t stream = nullptr;
    if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) return;
    {
      cuda::StreamGuard guard(gpu, stream);
      try {
        auto graph = cuda::Graph::capture(gpu, [&] {
          Tensor y = ops::relu(x);
          capturing.store(true);
          while (!destroyed.load()) std::this_thread::yield();
          y = ops::add_scalar(y, 2.0f);
        });
        graph->replay();
        graph->synchronize();
      } catch (const std::exception& error) {
        capture_error = error.what();
        capturing.store(true);
      }
    }
    cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
  });
  while (!capturing.load()) std::this_thread::yield();
  old_graph.reset();  // while the other thread is inside its capture
  destroyed.store(true);
  capturer.join();
  EXPECT_EQ(capture_error, "") << "the other thread's capture broke";
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

}  // namespace
}  // namespace cairn
