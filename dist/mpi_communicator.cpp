// The MPI backend: CPU tensors, MPI_COMM_WORLD duplicated per communicator (so that two
// communicators' collectives never match each other's), MPI initialised on first use.
#include <mpi.h>

#include <climits>
#include <cstdlib>
#include <mutex>
#include <string>

#include "cairn/core/error.h"
#include "cairn/dist/backends.h"
#include "cairn/dist/communicator.h"

namespace cairn::dist {
namespace {

#define CAIRN_MPI_CHECK(expr)                                                                  \
  do {                                                                                         \
    const int cairn_mpi_status_ = (expr);                                                      \
    if (cairn_mpi_status_ != MPI_SUCCESS) {                                                    \
      char cairn_mpi_text_[MPI_MAX_ERROR_STRING];                                              \
      int cairn_mpi_length_ = 0;                                                               \
      MPI_Error_string(cairn_mpi_status_, cairn_mpi_text_, &cairn_mpi_length_);                \
      CAIRN_FAIL(#expr, " failed: ", std::string(cairn_mpi_text_, size_t(cairn_mpi_length_))); \
    }                                                                                          \
  } while (0)

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

// MPI_Init_thread once per process. FUNNELED: cairn calls MPI from the thread that trains only.
void ensure_initialized() {
  static std::once_flag once;
  std::call_once(once, [] {
    int initialized = 0;
    CAIRN_MPI_CHECK(MPI_Initialized(&initialized));
    if (initialized) return;  // the application did it (and finalises it)
    int provided = 0;
    CAIRN_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
    std::atexit(finalize_at_exit);
  });
}

void check_tensor(const Tensor& tensor, const char* op) {
  CAIRN_CHECK(tensor.defined(), "mpi ", op, ": the tensor is undefined");
  CAIRN_CHECK(tensor.dtype() == DType::kFloat32, "mpi ", op, ": expected float32, got ",
              dtype_name(tensor.dtype()));
  CAIRN_CHECK(tensor.device().is_cpu(), "mpi ", op,
              ": the MPI backend reduces CPU tensors, got one on ", tensor.device(),
              " (CUDA tensors go through NCCL: make_communicator(Device::cuda(i)))");
  CAIRN_CHECK(tensor.numel() <= INT_MAX, "mpi ", op, ": ", tensor.numel(),
              " elements is more than one MPI call takes (", INT_MAX, ")");
}

class MpiPending final : public PendingCollective {
 public:
  explicit MpiPending(Tensor tensor) : tensor_(std::move(tensor)) {}
  ~MpiPending() override {
    if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);
  }
  void wait() override {
    if (request_ != MPI_REQUEST_NULL) CAIRN_MPI_CHECK(MPI_Wait(&request_, MPI_STATUS_IGNORE));
  }
  bool test() override {
    if (request_ == MPI_REQUEST_NULL) return true;
    int done = 0;
    CAIRN_MPI_CHECK(MPI_Test(&request_, &done, MPI_STATUS_IGNORE));
    return done != 0;
  }
  MPI_Request request_ = MPI_REQUEST_NULL;

 private:
  Tensor tensor_;  // keeps the buffer alive while MPI writes into it
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    ensure_initialized();
    CAIRN_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
    CAIRN_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    CAIRN_MPI_CHECK(MPI_Comm_size(comm_, &size_));
    MPI_Comm local;
    CAIRN_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local));
    CAIRN_MPI_CHECK(MPI_Comm_rank(local, &local_rank_));
    MPI_Comm_free(&local);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  std::string backend() const override { return "mpi"; }
  Device device() const override { return Device::cpu(); }

  void allreduce_sum(Tensor& tensor) override {
    check_tensor(tensor, "allreduce_sum");
    CAIRN_MPI_CHECK(
        MPI_Allreduce(MPI_IN_PLACE, tensor.data(), int(tensor.numel()), MPI_FLOAT, MPI_SUM, comm_));
  }
  std::unique_ptr<PendingCollective> start_allreduce_sum(Tensor tensor) override {
    check_tensor(tensor, "start_allreduce_sum");
    auto pending = std::make_unique<MpiPending>(tensor);
    CAIRN_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, tensor.data(), int(tensor.numel()), MPI_FLOAT,
                                   MPI_SUM, comm_, &pending->request_));
    return pending;
  }
  void broadcast(Tensor& tensor, int root) override {
    check_tensor(tensor, "broadcast");
    CAIRN_CHECK(root >= 0 && root < size_, "mpi broadcast: root ", root, " is not a rank of ",
                size_);
    CAIRN_MPI_CHECK(MPI_Bcast(tensor.data(), int(tensor.numel()), MPI_FLOAT, root, comm_));
  }
  void barrier() override { CAIRN_MPI_CHECK(MPI_Barrier(comm_)); }
  void allreduce_sum(std::vector<double>& values) override {
    CAIRN_CHECK(values.size() <= size_t(INT_MAX), "mpi allreduce_sum: too many values");
    CAIRN_MPI_CHECK(
        MPI_Allreduce(MPI_IN_PLACE, values.data(), int(values.size()), MPI_DOUBLE, MPI_SUM, comm_));
  }
  void broadcast_bytes(void* data, size_t bytes, int root) {
    CAIRN_CHECK(bytes <= size_t(INT_MAX), "mpi broadcast: too many bytes");
    CAIRN_MPI_CHECK(MPI_Bcast(data, int(bytes), MPI_BYTE, root, comm_));
  }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0;
};

}  // namespace

namespace detail {

CommunicatorPtr make_mpi_communicator() { return std::make_shared<MpiCommunicator>(); }

bool mpi_initialized() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

void mpi_abort_world(int code) {
  if (mpi_initialized()) MPI_Abort(MPI_COMM_WORLD, code);
}

void mpi_broadcast_bytes(Communicator& comm, void* data, size_t bytes, int root) {
  auto* mpi = dynamic_cast<MpiCommunicator*>(&comm);
  CAIRN_CHECK(mpi != nullptr, "mpi_broadcast_bytes: not an MPI communicator (", comm.backend(),
              ")");
  mpi->broadcast_bytes(data, bytes, root);
}

}  // namespace detail
}  // namespace cairn::dist
