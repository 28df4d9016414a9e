// The NCCL backend: CUDA tensors, reduced on the tensor's current stream (cuda::current_stream),
// so that a reduction is ordered with the work around it like any other op and can be captured
// into a CUDA graph. MPI bootstraps it (rank 0's ncclUniqueId, broadcast) and carries the host
// values (metrics) and barriers.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "cairn/core/cuda_context.h"
#include "cairn/core/error.h"
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

// Queued work needs no waiting from the host: later work on the stream sees the result.
struct Queued final : PendingCollective {
  void wait() override {}
  bool test() override { return true; }
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
    CAIRN_NCCL_CHECK(ncclCommInitRank(&comm_, host_->size(), id, host_->rank()));
    std::lock_guard<std::mutex> lock(g_live_mutex);
    g_live.push_back(comm_);
  }
  ~NcclCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(g_live_mutex);
      g_live.erase(std::remove(g_live.begin(), g_live.end(), comm_), g_live.end());
    }
    ncclCommDestroy(comm_);
  }

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  int local_rank() const override { return host_->local_rank(); }
  std::string backend() const override { return "nccl"; }
  Device device() const override { return device_; }

  void allreduce_sum(Tensor& tensor) override {
    check_tensor(tensor, "allreduce_sum");
    cuda::DeviceGuard guard(device_);
    CAIRN_NCCL_CHECK(ncclAllReduce(tensor.raw_data(), tensor.raw_data(), size_t(tensor.numel()),
                                   ncclFloat, ncclSum, comm_, stream()));
    check_async("allreduce_sum");
  }
  std::unique_ptr<PendingCollective> start_allreduce_sum(Tensor tensor) override {
    allreduce_sum(tensor);
    return std::make_unique<Queued>();
  }
  void broadcast(Tensor& tensor, int root) override {
    check_tensor(tensor, "broadcast");
    CAIRN_CHECK(root >= 0 && root < size(), "nccl broadcast: root ", root, " is not a rank of ",
                size());
    cuda::DeviceGuard guard(device_);
    CAIRN_NCCL_CHECK(ncclBroadcast(tensor.raw_data(), tensor.raw_data(), size_t(tensor.numel()),
                                   ncclFloat, root, comm_, stream()));
    check_async("broadcast");
  }
  // The host barrier alone would let ranks pass with reductions still queued: drain the stream.
  void barrier() override {
    if (!cuda::is_capturing(device_)) cuda::synchronize(device_);
    host_->barrier();
  }
  void allreduce_sum(std::vector<double>& values) override { host_->allreduce_sum(values); }

 private:
  cudaStream_t stream() const { return static_cast<cudaStream_t>(cuda::current_stream(device_)); }
  void check_tensor(const Tensor& tensor, const char* op) const {
    CAIRN_CHECK(tensor.defined() && tensor.dtype() == DType::kFloat32, "nccl ", op,
                ": expected a float32 tensor");
    CAIRN_CHECK(tensor.device() == device_, "nccl ", op, ": this communicator serves ", device_,
                ", the tensor is on ", tensor.device());
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
