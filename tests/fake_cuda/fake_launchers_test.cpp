// Tests of the fake device's kernel launchers (launchers.cpp) and NCCL (nccl.cpp): what only the
// fake can be asked. Every launcher refuses a host pointer and a buffer one element short,
// naming itself; launchers run through the fake give the CPU twin's exact bits; NCCL works on one
// rank, and on two ranks in forked processes, where a disagreement between the ranks, an aborted
// peer and a stalled peer each become an asynchronous error instead of a hang.
//
// Not covered here: the kernels' numerics (the CPU twins' own tests do that) and multi-node NCCL.
#include <cuda_runtime_api.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <nccl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "cairn/base/error.h"
#include "cairn/kernels/dropout.h"
#include "cairn/kernels/elementwise.h"
#include "cairn/kernels/gemm.h"
#include "cairn/kernels/loss.h"
#include "cairn/kernels/optimizer.h"
#include "cairn/kernels/pool.h"
#include "cairn/kernels/random.h"
#include "cairn/kernels/reduce.h"
#include "cairn/kernels/softmax.h"
#include "cairn/tests/fake_cuda/control.h"

namespace cairn::fake_cuda {
namespace {

namespace k = cairn::kernels;

// cudaMalloc'd memory of `n` T's, freed at scope end.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    void* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
    p_ = static_cast<T*>(p);
  }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return p_; }

  // Synchronous, so that `host` may be a temporary.
  void upload(const std::vector<T>& host, cudaStream_t stream) {
    EXPECT_EQ(
        cudaMemcpyAsync(p_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, stream),
        cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  }
  std::vector<T> download(cudaStream_t stream) const {
    std::vector<T> host(n_);
    EXPECT_EQ(cudaMemcpyAsync(host.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost, stream),
              cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    return host;
  }

 private:
  size_t n_;
  T* p_ = nullptr;
};

// A non-blocking stream: it never waits on the legacy stream, whose worker a forked child lacks.
class Stream {
 public:
  Stream() { EXPECT_EQ(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), cudaSuccess); }
  ~Stream() { cudaStreamDestroy(s_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

void expect_refused(const std::string& launcher, const std::function<void()>& call) {
  try {
    call();
    ADD_FAILURE() << launcher << " accepted a bad buffer";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find(launcher), std::string::npos) << error.what();
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << launcher << " left a CUDA error behind";
}

// ---- Launchers ----

constexpr int64_t kRows = 4, kCols = 8, kN = kRows * kCols;

// Each case calls one launcher on (kRows, kCols) with good device buffers everywhere except one
// kN-element argument, which gets `bad`.
struct LauncherCase {
  const char* name;
  std::function<void(float* bad, cudaStream_t)> call;
};

class LauncherRefusals : public ::testing::Test {
 protected:
  static k::Pool2DGeometry pool_geometry() {
    k::Pool2DGeometry g;
    g.planes = 2;
    g.in_h = g.in_w = 4;
    g.kernel_h = g.kernel_w = g.stride_h = g.stride_w = 2;
    g.out_h = g.out_w = 2;
    return g;
  }

  void TearDown() override { reset_fault_count(); }

  std::vector<LauncherCase> cases() {
    float *a = a_.get(), *b = b_.get(), *c = c_.get();
    int32_t* labels = labels_.get();
    void* ws = workspace_.get();
    const size_t ws_bytes = 1 << 16;
    const k::SgdConfig sgd{0.1f, 0.9f, 0.0f, 1.0f};
    const k::AdamConfig adam;
    return {
        {"fill", [=](float* x, cudaStream_t s) { k::cuda::fill(x, kN, 1.0f, s); }},
        {"fill_int32",
         [=](float* x, cudaStream_t s) {
           k::cuda::fill_int32(reinterpret_cast<int32_t*>(x), kN, 1, s);
         }},
        {"unary", [=](float* x, cudaStream_t s) { k::cuda::unary(k::UnaryOp::kExp, x, a, kN, s); }},
        {"binary",
         [=](float* x, cudaStream_t s) {
           k::cuda::binary(k::BinaryOp::kAdd, x, b, a, kRows, kCols, k::Broadcast::kNone, s);
         }},
        {"unary_backward",
         [=](float* x, cudaStream_t s) {
           k::cuda::unary_backward(k::UnaryOp::kRelu, a, nullptr, x, b, kN, s);
         }},
        {"binary_scalar",
         [=](float* x, cudaStream_t s) {
           k::cuda::binary_scalar(k::BinaryOp::kSub, x, 2.0f, k::ScalarSide::kLeft, a, kN, s);
         }},
        {"reduce_all",
         [=](float* x, cudaStream_t s) {
           k::cuda::reduce_all(k::ReduceOp::kSum, x, kN, a, ws, ws_bytes, s);
         }},
        {"reduce_rows",
         [=](float* x, cudaStream_t s) {
           k::cuda::reduce_rows(k::ReduceOp::kMax, x, kRows, kCols, a, s);
         }},
        {"sum_columns",
         [=](float* x, cudaStream_t s) {
           k::cuda::sum_columns(x, kRows, kCols, a, k::Accumulate::kAdd, ws, ws_bytes, s);
         }},
        {"argmax_rows",
         [=](float* x, cudaStream_t s) { k::cuda::argmax_rows(x, kRows, kCols, labels, s); }},
        {"l2_loss_forward",
         [=](float* x, cudaStream_t s) { k::cuda::l2_loss_forward(a, x, kRows, kCols, b, s); }},
        {"l2_loss_backward",
         [=](float* x, cudaStream_t s) { k::cuda::l2_loss_backward(a, b, c, kRows, kCols, x, s); }},
        {"sgd_update", [=](float* x, cudaStream_t s) { k::cuda::sgd_update(a, b, x, kN, sgd, s); }},
        {"adam_update",
         [=](float* x, cudaStream_t s) { k::cuda::adam_update(a, b, c, x, kN, adam, s); }},
        {"uniform", [=](float* x, cudaStream_t s) { k::cuda::uniform(x, kN, 7, 0.0f, 1.0f, s); }},
        {"normal", [=](float* x, cudaStream_t s) { k::cuda::normal(x, kN, 7, 0.0f, 1.0f, s); }},
        {"softmax_rows",
         [=](float* x, cudaStream_t s) { k::cuda::softmax_rows(a, kRows, kCols, x, s); }},
        {"softmax_backward_rows",
         [=](float* x, cudaStream_t s) {
           k::cuda::softmax_backward_rows(a, b, kRows, kCols, x, s);
         }},
        {"softmax_xent_forward",
         [=](float* x, cudaStream_t s) {
           k::cuda::softmax_xent_forward(a, labels, kRows, kCols, b, x, s);
         }},
        {"softmax_xent_backward",
         [=](float* x, cudaStream_t s) {
           k::cuda::softmax_xent_backward(a, labels, b, kRows, kCols, x, s);
         }},
        {"scale_matrix",
         [=](float* x, cudaStream_t s) { k::cuda::scale_matrix(x, kCols, kRows, kCols, 2.0f, s); }},
        // Pooling over 2 planes of 4x4 (kN inputs) with 2x2 windows (8 outputs).
        {"max_pool2d_forward",
         [=](float* x, cudaStream_t s) {
           k::cuda::max_pool2d_forward(x, pool_geometry(), a, labels, s);
         }},
        {"max_pool2d_backward",
         [=](float* x, cudaStream_t s) {
           k::cuda::max_pool2d_backward(a, labels, pool_geometry(), x, s);
         }},
        {"avg_pool2d_forward",
         [=](float* x, cudaStream_t s) {
           k::cuda::avg_pool2d_forward(x, pool_geometry(), k::AvgDivisor::kExcludePadding, a, s);
         }},
        {"avg_pool2d_backward",
         [=](float* x, cudaStream_t s) {
           k::cuda::avg_pool2d_backward(a, pool_geometry(), k::AvgDivisor::kIncludePadding, x, s);
         }},
        {"dropout",
         [=](float* x, cudaStream_t s) { k::cuda::dropout(x, kN, 0.5f, 2.0f, labels, b, c, s); }},
    };
  }

  Stream stream_;
  DeviceBuffer<float> a_{kN}, b_{kN}, c_{kN}, d_{kN};
  DeviceBuffer<int32_t> labels_{kN};
  DeviceBuffer<char> workspace_{1 << 16};
};

TEST_F(LauncherRefusals, EveryLauncherRefusesAHostPointerAndAShortBuffer) {
  ASSERT_EQ(cudaMemsetAsync(labels_.get(), 0, kN * sizeof(int32_t), stream_.get()), cudaSuccess);
  std::vector<float> host(kN);
  DeviceBuffer<float> short_buffer(kN - 1);
  for (const LauncherCase& launcher : cases()) {
    SCOPED_TRACE(launcher.name);
    expect_refused(launcher.name, [&] { launcher.call(host.data(), stream_.get()); });
    expect_refused(launcher.name, [&] { launcher.call(short_buffer.get(), stream_.get()); });
    // The same call with a good buffer is accepted: the refusal was about the buffer.
    launcher.call(d_.get(), stream_.get());
  }
  EXPECT_EQ(cudaStreamSynchronize(stream_.get()), cudaSuccess);
}

TEST_F(LauncherRefusals, BroadcastOperandsAreSizedByTheirBroadcast) {
  const cudaStream_t s = stream_.get();
  DeviceBuffer<float> row(kCols), column(kRows), short_row(kCols - 1), short_column(kRows - 1);
  const auto add = [&](const float* b, k::Broadcast how) {
    k::cuda::binary(k::BinaryOp::kAdd, a_.get(), b, c_.get(), kRows, kCols, how, s);
  };
  add(row.get(), k::Broadcast::kRow);
  add(column.get(), k::Broadcast::kColumn);
  add(short_row.get(), k::Broadcast::kScalar);
  expect_refused("binary", [&] { add(short_row.get(), k::Broadcast::kRow); });
  expect_refused("binary", [&] { add(short_column.get(), k::Broadcast::kColumn); });
  expect_refused("binary", [&] { add(column.get(), k::Broadcast::kNone); });
  float host_scalar = 1.0f;
  expect_refused("binary", [&] { add(&host_scalar, k::Broadcast::kScalar); });
  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
}

TEST_F(LauncherRefusals, WorkspacesMustBeAllocatedAtTheQueriedSize) {
  const cudaStream_t s = stream_.get();
  const size_t reduce_bytes = k::cuda::reduce_all_workspace_bytes(k::ReduceOp::kSum, kN);
  EXPECT_GT(reduce_bytes, 0u);
  EXPECT_GT(k::cuda::reduce_all_workspace_bytes(k::ReduceOp::kSum, 100000), reduce_bytes);
  EXPECT_EQ(k::cuda::reduce_all_workspace_bytes(k::ReduceOp::kSum, 0), 0u);
  const auto reduce = [&](void* ws, size_t bytes) {
    k::cuda::reduce_all(k::ReduceOp::kSum, a_.get(), kN, b_.get(), ws, bytes, s);
  };
  expect_refused("reduce_all", [&] { reduce(nullptr, 0); });
  expect_refused("reduce_all", [&] { reduce(workspace_.get(), reduce_bytes - 1); });
  DeviceBuffer<char> small(reduce_bytes - 1);
  expect_refused("reduce_all", [&] { reduce(small.get(), reduce_bytes); });  // claims too much
  std::vector<char> host(reduce_bytes);
  expect_refused("reduce_all", [&] { reduce(host.data(), reduce_bytes); });
  reduce(workspace_.get(), reduce_bytes);
  // An empty reduction writes its one output and needs no workspace.
  k::cuda::reduce_all(k::ReduceOp::kMax, nullptr, 0, b_.get(), nullptr, 0, s);

  // sum_columns asks for a workspace even for a few rows, so that callers always allocate one.
  const size_t columns_bytes = k::cuda::sum_columns_workspace_bytes(2, kCols);
  EXPECT_GT(columns_bytes, 0u);
  expect_refused("sum_columns", [&] {
    k::cuda::sum_columns(a_.get(), 2, kCols, b_.get(), k::Accumulate::kOverwrite, nullptr, 0, s);
  });
  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
}

TEST_F(LauncherRefusals, ArgumentChecksOfTheRealLaunchers) {
  const cudaStream_t s = stream_.get();
  k::SgdConfig sgd;
  sgd.momentum = 0.9f;
  expect_refused("sgd_update",
                 [&] { k::cuda::sgd_update(a_.get(), b_.get(), nullptr, kN, sgd, s); });
  sgd.momentum = -0.5f;  // any momentum but 0 reads the velocity, as the CPU twin does
  expect_refused("sgd_update",
                 [&] { k::cuda::sgd_update(a_.get(), b_.get(), nullptr, kN, sgd, s); });
  sgd.momentum = 0.0f;  // no velocity read, so none is needed
  k::cuda::sgd_update(a_.get(), b_.get(), nullptr, kN, sgd, s);
  k::AdamConfig adam;
  adam.step = 0;
  expect_refused("adam_update", [&] {
    k::cuda::adam_update(a_.get(), b_.get(), c_.get(), d_.get(), kN, adam, s);
  });
  // Hyperparameter ranges are the optimizer layer's to check (blocks/optimizer.cpp, once for both
  // devices): the launchers, like the CPU twins, compute what a config says.
  sgd.momentum = -0.5f;
  k::cuda::sgd_update(a_.get(), b_.get(), c_.get(), kN, sgd, s);
  adam.step = 1;
  adam.beta1 = 1.0f;
  k::cuda::adam_update(a_.get(), b_.get(), c_.get(), d_.get(), kN, adam, s);
  expect_refused("argmax_rows",
                 [&] { k::cuda::argmax_rows(a_.get(), kRows, 0, labels_.get(), s); });
  expect_refused("fill", [&] { k::cuda::fill(a_.get(), -1, 0.0f, s); });
  // The dropout state is read and advanced on the device: a host copy of it is refused.
  int32_t host_state[k::kDropoutStateWords] = {};
  expect_refused("dropout", [&] {
    k::cuda::dropout(a_.get(), kN, 0.5f, 2.0f, host_state, b_.get(), nullptr, s);
  });
  expect_refused("advance_dropout_state",
                 [&] { k::cuda::advance_dropout_state(host_state, kN, s); });
  expect_refused("dropout", [&] {
    k::cuda::dropout(a_.get(), kN, 1.5f, 2.0f, labels_.get(), b_.get(), nullptr, s);
  });
  k::Pool2DGeometry g = pool_geometry();
  g.out_h = 3;  // a window past the input
  expect_refused("max_pool2d_forward",
                 [&] { k::cuda::max_pool2d_forward(a_.get(), g, b_.get(), labels_.get(), s); });
  expect_refused("avg_pool2d_backward", [&] {
    k::cuda::avg_pool2d_backward(a_.get(), pool_geometry(), static_cast<k::AvgDivisor>(7), b_.get(),
                                 s);
  });
  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
}

// ---- The CPU twin's bits ----

template <typename T>
void expect_same_bits(const std::vector<T>& got, const std::vector<T>& want) {
  ASSERT_EQ(got.size(), want.size());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(T)), 0);
}

TEST(FakeLaunchers, RunTheCpuTwinsBitForBit) {
  Stream stream;
  const cudaStream_t s = stream.get();
  constexpr int64_t rows = 33, cols = 70, n = rows * cols;  // odd sizes: no tidy tails
  DeviceBuffer<float> x(n), bias(cols), y(n), loss(rows), probs(n), total(1), columns(cols);
  DeviceBuffer<int32_t> labels(rows);
  std::vector<float> hx(n), hbias(cols);
  std::vector<int32_t> hlabels(rows);
  for (int64_t r = 0; r < rows; ++r) hlabels[r] = int32_t((r * 7) % cols);
  k::cpu::normal(hx.data(), n, 11, 0.0f, 3.0f);
  k::cpu::uniform(hbias.data(), cols, 12, -1.0f, 1.0f);
  k::cuda::normal(x.get(), n, 11, 0.0f, 3.0f, s);
  k::cuda::uniform(bias.get(), cols, 12, -1.0f, 1.0f, s);
  labels.upload(hlabels, s);
  expect_same_bits(x.download(s), hx);

  k::cuda::binary(k::BinaryOp::kAdd, x.get(), bias.get(), y.get(), rows, cols, k::Broadcast::kRow,
                  s);
  k::cuda::softmax_xent_forward(y.get(), labels.get(), rows, cols, loss.get(), probs.get(), s);
  DeviceBuffer<char> ws(k::cuda::reduce_all_workspace_bytes(k::ReduceOp::kMean, n));
  k::cuda::reduce_all(k::ReduceOp::kMean, y.get(), n, total.get(), ws.get(),
                      k::cuda::reduce_all_workspace_bytes(k::ReduceOp::kMean, n), s);
  DeviceBuffer<char> cws(k::cuda::sum_columns_workspace_bytes(rows, cols));
  k::cuda::sum_columns(y.get(), rows, cols, columns.get(), k::Accumulate::kOverwrite, cws.get(),
                       k::cuda::sum_columns_workspace_bytes(rows, cols), s);

  std::vector<float> hy(n), hloss(rows), hprobs(n), htotal(1), hcolumns(cols);
  k::cpu::binary(k::BinaryOp::kAdd, hx.data(), hbias.data(), hy.data(), rows, cols,
                 k::Broadcast::kRow);
  k::cpu::softmax_xent_forward(hy.data(), hlabels.data(), rows, cols, hloss.data(), hprobs.data());
  k::cpu::reduce_all(k::ReduceOp::kMean, hy.data(), n, htotal.data());
  k::cpu::sum_columns(hy.data(), rows, cols, hcolumns.data(), k::Accumulate::kOverwrite);
  expect_same_bits(y.download(s), hy);
  expect_same_bits(loss.download(s), hloss);
  expect_same_bits(probs.download(s), hprobs);
  expect_same_bits(total.download(s), htotal);
  expect_same_bits(columns.download(s), hcolumns);
  EXPECT_EQ(fault_count(), 0);
}

TEST(FakeLaunchers, SgdWithMomentumMatchesTheTwin) {
  Stream stream;
  const cudaStream_t s = stream.get();
  constexpr int64_t n = 1001;
  std::vector<float> w(n), g(n), v(n, 0.25f);
  k::cpu::uniform(w.data(), n, 1, -1.0f, 1.0f);
  k::cpu::uniform(g.data(), n, 2, -1.0f, 1.0f);
  DeviceBuffer<float> dw(n), dg(n), dv(n);
  dw.upload(w, s);
  dg.upload(g, s);
  dv.upload(v, s);
  const k::SgdConfig config{0.05f, 0.9f, 1e-4f, 0.5f};
  for (int step = 0; step < 3; ++step) {
    k::cuda::sgd_update(dw.get(), dg.get(), dv.get(), n, config, s);
    k::cpu::sgd_update(w.data(), g.data(), v.data(), n, config);
  }
  expect_same_bits(dw.download(s), w);
  expect_same_bits(dv.download(s), v);
}

// ---- NCCL, one rank ----

TEST(FakeNccl, OneRankReducesAndBroadcastsWithoutSockets) {
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t comm = nullptr;
  ASSERT_EQ(ncclCommInitRank(&comm, 1, id, 0), ncclSuccess);
  Stream stream;
  const cudaStream_t s = stream.get();
  DeviceBuffer<float> x(5), y(5);
  const std::vector<float> values{1.5f, -2.0f, 3.25f, 0.0f, 7.0f};
  x.upload(values, s);
  EXPECT_EQ(ncclAllReduce(x.get(), x.get(), 5, ncclFloat, ncclSum, comm, s), ncclSuccess);
  EXPECT_EQ(ncclBroadcast(x.get(), y.get(), 5, ncclFloat, 0, comm, s), ncclSuccess);
  expect_same_bits(y.download(s), values);

  std::vector<float> host(5);
  EXPECT_EQ(ncclAllReduce(host.data(), x.get(), 5, ncclFloat, ncclSum, comm, s),
            ncclInvalidArgument);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // a refusal is NCCL's, not a sticky CUDA fault
  EXPECT_EQ(ncclAllReduce(x.get(), x.get(), 6, ncclFloat, ncclSum, comm, s), ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(x.get(), x.get(), 5, ncclFloat, ncclAvg, comm, s), ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(x.get(), x.get(), 5, ncclHalf, ncclSum, comm, s), ncclInvalidArgument);
  EXPECT_EQ(ncclBroadcast(x.get(), y.get(), 5, ncclFloat, 1, comm, s), ncclInvalidArgument);
  ncclResult_t async = ncclInternalError;
  EXPECT_EQ(ncclCommGetAsyncError(comm, &async), ncclSuccess);
  EXPECT_EQ(async, ncclSuccess);
  EXPECT_EQ(ncclCommDestroy(comm), ncclSuccess);
  reset_fault_count();

  ncclUniqueId zeros{};
  EXPECT_EQ(ncclCommInitRank(&comm, 1, zeros, 0), ncclInvalidArgument);
}

TEST(FakeNccl, ACapturedCollectiveRunsAtEveryReplay) {
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t comm = nullptr;
  ASSERT_EQ(ncclCommInitRank(&comm, 1, id, 0), ncclSuccess);
  Stream stream;
  const cudaStream_t s = stream.get();
  DeviceBuffer<float> x(3), y(3);
  x.upload({1.0f, 2.0f, 3.0f}, s);
  y.upload({0.0f, 0.0f, 0.0f}, s);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  EXPECT_EQ(ncclBroadcast(x.get(), y.get(), 3, ncclFloat, 0, comm, s), ncclSuccess);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  EXPECT_EQ(y.download(s), std::vector<float>(3, 0.0f));  // recorded, not run
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  EXPECT_EQ(y.download(s), (std::vector<float>{1.0f, 2.0f, 3.0f}));
  x.upload({4.0f, 5.0f, 6.0f}, s);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  EXPECT_EQ(y.download(s), (std::vector<float>{4.0f, 5.0f, 6.0f}));
  EXPECT_EQ(ncclCommDestroy(comm), ncclSuccess);  // captured work is not waited for
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

// ---- NCCL, two ranks: rank 1 in a forked child ----

// Sets an environment variable for the life of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { setenv(name, value, 1); }
  ~ScopedEnv() { unsetenv(name_); }

 private:
  const char* name_;
};

int thread_count() {
  int count = 0;
  if (DIR* tasks = opendir("/proc/self/task")) {
    while (const dirent* entry = readdir(tasks)) count += entry->d_name[0] != '.';
    closedir(tasks);
  }
  return count;
}

#if defined(__SANITIZE_THREAD__)
constexpr bool kThreadSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr bool kThreadSanitizer = true;
#else
constexpr bool kThreadSanitizer = false;
#endif
#else
constexpr bool kThreadSanitizer = false;
#endif

// Counts failed checks in `failures`: in the child they become its exit status (gtest's own
// assertions would fail only the child's copy of the test).
#define CHILD_CHECK(cond)                                                                        \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      std::fprintf(stderr, "pid %d: check failed: %s [%s:%d]\n", int(getpid()), #cond, __FILE__, \
                   __LINE__);                                                                    \
      ++failures;                                                                                \
    }                                                                                            \
  } while (0)

// Two ranks over `id`: `rank1` runs in a child process (its return value is its exit status),
// `rank0` here. `release` is a pipe the child may block on until rank 0 is done checking.
class TwoRanks {
 public:
  TwoRanks() : threads_before_(thread_count()) {
    // Quiesce this process's streams: the child inherits the fake's state but not its threads.
    drain();
    EXPECT_EQ(ncclGetUniqueId(&id_), ncclSuccess);
    EXPECT_EQ(pipe(release_), 0);
  }

  ~TwoRanks() {
    for (int fd : release_) {
      if (fd >= 0) close(fd);
    }
  }
  TwoRanks(const TwoRanks&) = delete;
  TwoRanks& operator=(const TwoRanks&) = delete;

  // TSan kills a child that starts threads after a multi-threaded fork (the stream workers of
  // earlier tests); its own background thread is the one allowed. TSAN_OPTIONS=die_after_fork=0
  // lets the tests run anyway.
  bool skip() const {
    const char* options = std::getenv("TSAN_OPTIONS");
    const bool allowed = options != nullptr && std::strstr(options, "die_after_fork=0") != nullptr;
    return kThreadSanitizer && !allowed && threads_before_ > 2;
  }

  // Each rank gets a communicator and a stream of its own process.
  void run(const std::function<int(ncclComm_t, cudaStream_t)>& rank1,
           const std::function<void(ncclComm_t, cudaStream_t)>& rank0) {
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      close(release_[1]);
      int status = 99;
      try {
        // Never destroyed: a worker still running at _exit is fine under TSan, one that ended
        // unjoined is reported as a leak.
        const Stream* stream = new Stream;
        ncclComm_t comm = nullptr;
        status =
            ncclCommInitRank(&comm, 2, id_, 1) == ncclSuccess ? rank1(comm, stream->get()) : 98;
      } catch (...) {
      }
      _exit(status);
    }
    close(release_[0]);
    release_[0] = -1;
    ncclComm_t comm = nullptr;
    EXPECT_EQ(ncclCommInitRank(&comm, 2, id_, 0), ncclSuccess);
    Stream stream;
    if (comm != nullptr) rank0(comm, stream.get());
    close(release_[1]);  // lets a waiting child go on
    release_[1] = -1;
    expect_child_succeeded(child);
  }

  // In the child: blocks until rank 0 closes the pipe.
  void wait_for_release() const {
    char byte;
    while (read(release_[0], &byte, 1) < 0 && errno == EINTR) {
    }
  }

  const ncclUniqueId& id() const { return id_; }

 private:
  static void expect_child_succeeded(pid_t child) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
    int status = 0;
    while (waitpid(child, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(child, SIGKILL);
        waitpid(child, &status, 0);
        FAIL() << "rank 1 (child) did not finish";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(WIFEXITED(status)) << "rank 1 (child) died with status " << status;
    EXPECT_EQ(WEXITSTATUS(status), 0) << "rank 1 (child) failed checks (see stderr)";
  }

  int threads_before_;
  ncclUniqueId id_{};
  int release_[2] = {-1, -1};
};

ncclResult_t async_error(ncclComm_t comm) {
  ncclResult_t async = ncclInternalError;
  if (ncclCommGetAsyncError(comm, &async) != ncclSuccess) return ncclInternalError;
  return async;
}

// Rank r's contribution: not exactly representable sums, so the order of addition shows.
std::vector<float> contribution(int rank, size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = 0.1f * float(i + 1) * float(rank + 1) + 1.0f / 3.0f;
  return v;
}

TEST(FakeNccl, TwoRanksSumAndBroadcastInRankOrder) {
  TwoRanks ranks;
  if (ranks.skip()) GTEST_SKIP() << "fork of a multi-threaded process under TSan: run alone";
  ScopedEnv timeout("CAIRN_FAKE_NCCL_TIMEOUT_S", "30");
  constexpr size_t n = 1000;
  std::vector<float> want(n);
  for (size_t i = 0; i < n; ++i) want[i] = contribution(0, n)[i] + contribution(1, n)[i];
  // nccl.cpp's id layout: 16 bytes of magic, then the socket path.
  const std::string path(reinterpret_cast<const char*>(&ranks.id()) + 16);

  // Both ranks run the same collectives; each returns its count of wrong results.
  const auto collectives = [&](ncclComm_t comm, cudaStream_t s, int rank) {
    DeviceBuffer<float> x(n), b(7);
    DeviceBuffer<int32_t> m(5);
    x.upload(contribution(rank, n), s);
    m.upload({rank * 10 + 0, rank * 10 + 1, -rank, 3, 4}, s);
    b.upload(std::vector<float>(7, rank == 1 ? 42.0f : 0.0f), s);
    int failures = 0;
    CHILD_CHECK(ncclAllReduce(x.get(), x.get(), n, ncclFloat, ncclSum, comm, s) == ncclSuccess);
    CHILD_CHECK(ncclAllReduce(m.get(), m.get(), 5, ncclInt32, ncclMax, comm, s) == ncclSuccess);
    CHILD_CHECK(ncclBroadcast(b.get(), b.get(), 7, ncclFloat, 1, comm, s) == ncclSuccess);
    const std::vector<float> sum = x.download(s);
    CHILD_CHECK(std::memcmp(sum.data(), want.data(), n * sizeof(float)) == 0);
    CHILD_CHECK((m.download(s) == std::vector<int32_t>{10, 11, 0, 3, 4}));
    CHILD_CHECK(b.download(s) == std::vector<float>(7, 42.0f));
    CHILD_CHECK(async_error(comm) == ncclSuccess);
    struct stat info;
    CHILD_CHECK(stat(path.c_str(), &info) != 0);  // unlinked once both ranks were in
    CHILD_CHECK(ncclCommDestroy(comm) == ncclSuccess);
    return failures;
  };
  ranks.run([&](ncclComm_t comm, cudaStream_t s) { return collectives(comm, s, 1); },
            [&](ncclComm_t comm, cudaStream_t s) { EXPECT_EQ(collectives(comm, s, 0), 0); });
}

TEST(FakeNccl, RanksThatDisagreeGetAnAsyncErrorNotAHang) {
  TwoRanks ranks;
  if (ranks.skip()) GTEST_SKIP() << "fork of a multi-threaded process under TSan: run alone";
  ScopedEnv timeout("CAIRN_FAKE_NCCL_TIMEOUT_S", "60");
  const auto mismatched = [](ncclComm_t comm, cudaStream_t s, size_t count) {
    DeviceBuffer<float> x(8);
    int failures = 0;
    const auto start = std::chrono::steady_clock::now();
    CHILD_CHECK(ncclAllReduce(x.get(), x.get(), count, ncclFloat, ncclSum, comm, s) == ncclSuccess);
    CHILD_CHECK(cudaStreamSynchronize(s) == cudaSuccess);
    CHILD_CHECK(async_error(comm) == ncclInvalidUsage);
    CHILD_CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));
    CHILD_CHECK(ncclCommDestroy(comm) == ncclSuccess);
    return failures;
  };
  ranks.run([&](ncclComm_t comm, cudaStream_t s) { return mismatched(comm, s, 8); },
            [&](ncclComm_t comm, cudaStream_t s) { EXPECT_EQ(mismatched(comm, s, 4), 0); });
}

TEST(FakeNccl, AnAbortedPeerGivesTheOtherAnAsyncError) {
  TwoRanks ranks;
  if (ranks.skip()) GTEST_SKIP() << "fork of a multi-threaded process under TSan: run alone";
  ScopedEnv timeout("CAIRN_FAKE_NCCL_TIMEOUT_S", "60");
  const auto one_allreduce = [](ncclComm_t comm, cudaStream_t s, DeviceBuffer<float>& x) {
    return ncclAllReduce(x.get(), x.get(), 4, ncclFloat, ncclSum, comm, s) == ncclSuccess &&
           cudaStreamSynchronize(s) == cudaSuccess && async_error(comm) == ncclSuccess;
  };
  ranks.run(
      [&](ncclComm_t comm, cudaStream_t s) {
        DeviceBuffer<float> x(4);
        int failures = 0;
        CHILD_CHECK(one_allreduce(comm, s, x));
        CHILD_CHECK(ncclCommAbort(comm) == ncclSuccess);
        ranks.wait_for_release();  // stays alive: the EOF rank 0 sees is the abort's
        return failures;
      },
      [&](ncclComm_t comm, cudaStream_t s) {
        DeviceBuffer<float> x(4);
        EXPECT_TRUE(one_allreduce(comm, s, x));
        const auto start = std::chrono::steady_clock::now();
        EXPECT_EQ(ncclAllReduce(x.get(), x.get(), 4, ncclFloat, ncclSum, comm, s), ncclSuccess);
        EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
        EXPECT_EQ(async_error(comm), ncclRemoteError);
        EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
        EXPECT_EQ(ncclCommDestroy(comm), ncclSuccess);
      });
}

TEST(FakeNccl, AStalledPeerTimesOutInsteadOfHanging) {
  TwoRanks ranks;
  if (ranks.skip()) GTEST_SKIP() << "fork of a multi-threaded process under TSan: run alone";
  ScopedEnv timeout("CAIRN_FAKE_NCCL_TIMEOUT_S", "1");
  ranks.run(
      [&](ncclComm_t comm, cudaStream_t) {
        ranks.wait_for_release();  // never joins the collective
        return ncclCommDestroy(comm) == ncclSuccess ? 0 : 1;
      },
      [&](ncclComm_t comm, cudaStream_t s) {
        DeviceBuffer<float> x(4);
        const auto start = std::chrono::steady_clock::now();
        EXPECT_EQ(ncclAllReduce(x.get(), x.get(), 4, ncclFloat, ncclSum, comm, s), ncclSuccess);
        EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
        const auto waited = std::chrono::steady_clock::now() - start;
        EXPECT_EQ(async_error(comm), ncclRemoteError);
        EXPECT_GE(waited, std::chrono::milliseconds(900));
        EXPECT_LT(waited, std::chrono::seconds(20));
        EXPECT_EQ(ncclCommDestroy(comm), ncclSuccess);
      });
}

}  // namespace
}  // namespace cairn::fake_cuda
