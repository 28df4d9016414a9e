// The NCCL backend: CUDA tensors, reduced on a communication stream of the communicator's own,
// ordered with the compute stream (cuda::current_stream) by events both ways: a collective starts
// once the work queued before it on the compute stream is done, and compute work queued after
// wait() waits for the collective. So gradients are reduced while backward goes on (the overlap
// GradientReducer promises), and the whole exchange can still be captured into a CUDA graph (the
// events fork the capture into the communication stream and join it back). MPI bootstraps it
// (rank 0's ncclUniqueId, broadcast) and carries the host values (metrics) and barriers.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cairn/core/cuda_context.h"
#include "cairn/base/error.h"
#include "cairn/dist/backends.h"
#include "cairn/dist/communicator.h"

namespace cairn::dist {
namespace {

#define CAIRN_NCCL_CHECK(expr)                                                     \
  do {                                                                             \
    const ncclResult_t cairn_nccl_status_ = (expr);                                \
    if (cairn_nccl_status_ != ncclSuccess) {                                       \
      CAIRN_FAIL(#expr, " failed: ", ncclGetErrorString(cairn_nccl_status_), " (", \
                 int(cairn_nccl_status_), ")");                                    \
    }                                                                              \
  } while (0)

// Every live NCCL communicator, for abort_job(): a rank that fails must not leave kernels of the
// others spinning in a collective that will never complete.
std::mutex g_live_mutex;
std::vector<ncclComm_t> g_live;

// A collective queued on the communication stream. wait() orders the compute stream after it (no
// host wait); dropping it unwaited does the same, so the buffer is never reused on the compute
// stream while the collective may still read or write it.
class Queued final : public PendingCollective {
 public:
  Queued(const Device& device, cudaEvent_t done) : device_(device), done_(done) {}
  ~Queued() override {
    if (done_ != nullptr) join();  // destructors never throw: statuses are ignored there
  }
  void wait() override {
    if (done_ == nullptr) return;
    const cudaError_t status = join();
    CAIRN_CUDA_CHECK(status);
  }
  bool test() override { return true; }  // the host never waits for it

 private:
  cudaError_t join() {
    cuda::DeviceGuard guard(device_);
    const cudaError_t status = cudaStreamWaitEvent(
        static_cast<cudaStream_t>(cuda::current_stream(device_)), done_, 0);
    cudaEventDestroy(done_);  // released once the wait is done
    done_ = nullptr;
    return status;
  }
  Device device_;
  cudaEvent_t done_;
};

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(const Device& device)
      : device_(device), host_(detail::make_mpi_communicator()) {
    CAIRN_CHECK(device.is_cuda(), "nccl: the NCCL backend reduces CUDA tensors, not ", device);
    ncclUniqueId id{};
    if (host_->rank() == 0) CAIRN_NCCL_CHECK(ncclGetUniqueId(&id));
    detail::mpi_broadcast_bytes(*host_, &id, sizeof(id), 0);
    cuda::DeviceGuard guard(device_);
    CAIRN_CUDA_CHECK(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
    const ncclResult_t initialised = ncclCommInitRank(&comm_, host_->size(), id, host_->rank());
    if (initialised != ncclSuccess) cudaStreamDestroy(comm_stream_);
    CAIRN_NCCL_CHECK(initialised);
    std::lock_guard<std::mutex> lock(g_live_mutex);
    g_live.push_back(comm_);
  }
  ~NcclCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(g_live_mutex);
      g_live.erase(std::remove(g_live.begin(), g_live.end(), comm_), g_live.end());
    }
    cuda::DeviceGuard guard(device_);
    ncclCommDestroy(comm_);
    cudaStreamDestroy(comm_stream_);  // its queued work still runs first
  }

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  int local_rank() const override { return host_->local_rank(); }
  std::string backend() const override { return "nccl"; }
  Device device() const override { return device_; }

  void allreduce_sum(Tensor& tensor) override { start_allreduce_sum(tensor)->wait(); }
  std::unique_ptr<PendingCollective> start_allreduce_sum(Tensor tensor) override {
    check_tensor(tensor, "allreduce_sum");
    return on_comm_stream("allreduce_sum", [&] {
      return ncclAllReduce(tensor.raw_data(), tensor.raw_data(), size_t(tensor.numel()),
                           ncclFloat, ncclSum, comm_, comm_stream_);
    });
  }
  void broadcast(Tensor& tensor, int root) override {
    check_tensor(tensor, "broadcast");
    CAIRN_CHECK(root >= 0 && root < size(), "nccl broadcast: root ", root, " is not a rank of ",
                size());
    on_comm_stream("broadcast", [&] {
      return ncclBroadcast(tensor.raw_data(), tensor.raw_data(), size_t(tensor.numel()),
                           ncclFloat, root, comm_, comm_stream_);
    })->wait();
  }
  // The host barrier alone would let ranks pass with reductions still queued: drain the stream,
  // polling (not blocking in cudaStreamSynchronize) so that a peer that never comes ends the job
  // after the collective timeout instead of leaving this rank's GPU spinning forever.
  void barrier() override {
    if (!cuda::is_capturing(device_)) {
      join_comm_stream();  // so that draining the compute stream drains collectives too
      drain("barrier");
    }
    host_->barrier();
  }
  void allreduce_sum(std::vector<double>& values) override { host_->allreduce_sum(values); }
  std::vector<std::string> allgather(const std::string& value) override {
    return host_->allgather(value);
  }
  void set_collective_timeout(double seconds) override {
    Communicator::set_collective_timeout(seconds);
    host_->set_collective_timeout(seconds);
  }

 private:
  cudaStream_t stream() const { return static_cast<cudaStream_t>(cuda::current_stream(device_)); }

  // Runs `collective` on the communication stream after the compute stream's queued work.
  template <typename Collective>
  std::unique_ptr<PendingCollective> on_comm_stream(const char* op, Collective&& collective) {
    cuda::DeviceGuard guard(device_);
    cudaEvent_t ready = nullptr, done = nullptr;
    CAIRN_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    cudaError_t status = cudaEventRecord(ready, stream());
    if (status == cudaSuccess) status = cudaStreamWaitEvent(comm_stream_, ready, 0);
    cudaEventDestroy(ready);
    CAIRN_CUDA_CHECK(status);
    CAIRN_NCCL_CHECK(collective());
    CAIRN_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    auto pending = std::make_unique<Queued>(device_, done);  // joins even if the checks throw
    CAIRN_CUDA_CHECK(cudaEventRecord(done, comm_stream_));
    check_async(op);
    return pending;
  }
  void check_tensor(const Tensor& tensor, const char* op) const {
    CAIRN_CHECK(tensor.defined() && tensor.dtype() == DType::kFloat32, "nccl ", op,
                ": expected a float32 tensor");
    CAIRN_CHECK(tensor.device() == device_, "nccl ", op, ": this communicator serves ", device_,
                ", the tensor is on ", tensor.device());
  }
  // Waits for everything queued on the stream, watching NCCL's asynchronous error; past the
  // collective timeout the job ends (abort_job aborts the NCCL communicators first).
  // The compute stream waits for everything queued on the communication stream so far.
  void join_comm_stream() const {
    cuda::DeviceGuard guard(device_);
    cudaEvent_t event = nullptr;
    CAIRN_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    cudaError_t status = cudaEventRecord(event, comm_stream_);
    if (status == cudaSuccess) status = cudaStreamWaitEvent(stream(), event, 0);
    cudaEventDestroy(event);
    CAIRN_CUDA_CHECK(status);
  }
  void drain(const char* op) const {
    cuda::DeviceGuard guard(device_);
    cudaEvent_t event = nullptr;
    CAIRN_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    const cudaError_t recorded = cudaEventRecord(event, stream());
    if (recorded != cudaSuccess) cudaEventDestroy(event);
    CAIRN_CUDA_CHECK(recorded);
    const auto start = std::chrono::steady_clock::now();
    const auto deadline =
        start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                    std::chrono::duration<double>(collective_timeout()));
    for (;;) {
      const cudaError_t state = cudaEventQuery(event);
      if (state == cudaSuccess) break;
      if (state != cudaErrorNotReady) {
        cudaEventDestroy(event);
        CAIRN_CUDA_CHECK(state);
      }
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        cudaEventDestroy(event);
        CAIRN_FAIL("nccl ", op, ": asynchronous error ", ncclGetErrorString(async));
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        char seconds[32];
        std::snprintf(seconds, sizeof(seconds), "%.3g", collective_timeout());
        abort_job(std::string("nccl ") + op + " on rank " + std::to_string(rank()) +
                  ": the work queued on " + device_.str() + " (NCCL collectives included) did "
                  "not complete within " + seconds +
                  " s (the collective timeout: CAIRN_COLLECTIVE_TIMEOUT_S or "
                  "Communicator::set_collective_timeout); NCCL cannot say which ranks are "
                  "missing: the ranks that print no such line are");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    cudaEventDestroy(event);
  }
  // A peer that died shows up here as an asynchronous error rather than a hang.
  void check_async(const char* op) const {
    ncclResult_t async = ncclSuccess;
    CAIRN_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
    CAIRN_CHECK(async == ncclSuccess, "nccl ", op, ": asynchronous error ",
                ncclGetErrorString(async));
  }

  Device device_;
  CommunicatorPtr host_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t comm_stream_ = nullptr;
};

}  // namespace

namespace detail {

CommunicatorPtr make_nccl_communicator(const Device& device) {
  return std::make_shared<NcclCommunicator>(device);
}

void nccl_abort_all() noexcept {
  std::lock_guard<std::mutex> lock(g_live_mutex);
  for (ncclComm_t comm : g_live) ncclCommAbort(comm);
  g_live.clear();
}

}  // namespace detail
}  // namespace cairn::dist
