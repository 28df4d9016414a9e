#include "cairn/dist/communicator.h"

#include <cstdio>
#include <cstdlib>

#include "cairn/core/error.h"
#include "cairn/dist/backends.h"

namespace cairn::dist {
namespace {

class SingleProcessCommunicator final : public Communicator {
 public:
  explicit SingleProcessCommunicator(const Device& device) : device_(device) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  std::string backend() const override { return "single-process"; }
  Device device() const override { return device_; }

  void allreduce_sum(Tensor& tensor) override { check(tensor, "allreduce_sum"); }
  std::unique_ptr<PendingCollective> start_allreduce_sum(Tensor tensor) override {
    check(tensor, "start_allreduce_sum");
    return std::make_unique<Done>();
  }
  void broadcast(Tensor& tensor, int root) override {
    check(tensor, "broadcast");
    CAIRN_CHECK(root == 0, "broadcast: root ", root, " is not a rank of a single-process job");
  }
  void barrier() override {}
  void allreduce_sum(std::vector<double>&) override {}

 private:
  struct Done final : PendingCollective {
    void wait() override {}
    bool test() override { return true; }
  };
  void check(const Tensor& tensor, const char* op) const {
    CAIRN_CHECK(tensor.defined() && tensor.dtype() == DType::kFloat32, op,
                ": expected a float32 tensor");
  }
  Device device_;
};

int env_int(std::initializer_list<const char*> names, int fallback) {
  for (const char* name : names) {
    if (const char* value = std::getenv(name)) return std::atoi(value);
  }
  return fallback;
}

}  // namespace

bool mpi_built() {
#if CAIRN_HAVE_MPI
  return true;
#else
  return false;
#endif
}

bool nccl_built() {
#if CAIRN_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

CommunicatorPtr single_process_communicator(const Device& device) {
  return std::make_shared<SingleProcessCommunicator>(device);
}

CommunicatorPtr make_communicator(const Device& device) {
  if (device.is_cuda()) {
#if CAIRN_HAVE_NCCL
    return detail::make_nccl_communicator(device);
#else
    CAIRN_FAIL(
        "make_communicator: this cairn was built without NCCL, so it cannot reduce tensors on ",
        device,
        " (NCCL comes with the CUDA Toolkit or as libnccl-dev; it needs MPI too: "
        "reconfigure with both found)");
#endif
  }
#if CAIRN_HAVE_MPI
  return detail::make_mpi_communicator();
#else
  CAIRN_FAIL(
      "make_communicator: this cairn was built without MPI (on Debian: apt-get install "
      "libopenmpi-dev openmpi-bin, then reconfigure); it trains single-process only");
#endif
}

int launcher_rank() {
  return env_int({"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"}, 0);
}
int launcher_size() { return env_int({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"}, 1); }
int launcher_local_rank() {
  return env_int({"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"}, 0);
}

void abort_job(const std::string& message) {
  std::fprintf(stderr, "cairn: rank %d of %d failed: %s; aborting the job\n", launcher_rank(),
               launcher_size(), message.c_str());
  std::fflush(stderr);
#if CAIRN_HAVE_NCCL
  detail::nccl_abort_all();
#endif
#if CAIRN_HAVE_MPI
  detail::mpi_abort_world(1);
#endif
  std::abort();
}

}  // namespace cairn::dist
