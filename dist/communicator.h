// Communicators for data-parallel training: one process per GPU (or per CPU worker), launched by
// mpirun, each holding one rank of the job.
//
//   auto comm = dist::make_communicator(device);  // MPI for CPU tensors, NCCL for CUDA tensors
//   comm->allreduce_sum(gradient);                 // in place: the sum over every rank
//   comm->broadcast(weights, 0);                   // rank 0's values everywhere
//
// The backends are the existing engines, not anything home-made: MPI (Open MPI) launches the
// processes, hands out NCCL's unique id and reduces CPU tensors; NCCL reduces CUDA tensors on the
// tensor's current stream (cuda::current_stream), so a reduction queues like any other op and can
// be captured into a CUDA graph. Which backends this build has: mpi_built(), nccl_built(); CMake
// says so when it configures. Without MPI, cairn builds and runs single-process as before, and
// make_communicator() throws saying how to get MPI.
//
// Collectives must be called by every rank in the same order, with tensors of the same size, as
// with MPI and NCCL themselves. This header carries no MPI or NCCL types: an application includes
// it without their include paths.
//
// No collective waits forever: one that has not completed within collective_timeout() seconds
// (CAIRN_COLLECTIVE_TIMEOUT_S, else 600, as PyTorch's process groups bound theirs) ends the job
// through abort_job(), naming the collective, its sequence number and, for each rank, where it
// was (inside which collective, or not answering at all: stuck, busy outside cairn, or dead).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cairn/core/device.h"
#include "cairn/core/tensor.h"

namespace cairn::dist {

// Whether CMake found the backend when this cairn was built.
bool mpi_built();
bool nccl_built();

// A collective started by start_allreduce_sum(). wait() returns once the result can be used: on
// the CPU, once it is in the tensor; with NCCL, once it is queued on the tensor's stream (later
// work on that stream sees it). test() lets MPI progress and says whether wait() would return at
// once. Destroying a pending collective waits for it.
class PendingCollective {
 public:
  virtual ~PendingCollective() = default;
  virtual void wait() = 0;
  virtual bool test() = 0;
};

// Seconds a collective may wait for the other ranks by default.
constexpr double kDefaultCollectiveTimeoutSeconds = 600;
// CAIRN_COLLECTIVE_TIMEOUT_S when set (a number of seconds in (0, 1e8]; anything else is a
// cairn::Error naming the variable), else kDefaultCollectiveTimeoutSeconds.
double default_collective_timeout();

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // This process's rank among the job's processes on this machine: which GPU to take.
  virtual int local_rank() const = 0;
  virtual std::string backend() const = 0;  // "single-process", "mpi" or "nccl"
  // The device kind whose tensors the collectives take (CPU for MPI, a CUDA device for NCCL).
  virtual Device device() const = 0;

  // In place, float32, on device(): every rank ends with the elementwise sum over all ranks.
  virtual void allreduce_sum(Tensor& tensor) = 0;
  virtual std::unique_ptr<PendingCollective> start_allreduce_sum(Tensor tensor) = 0;
  // In place: every rank ends with `root`'s values.
  virtual void broadcast(Tensor& tensor, int root) = 0;
  virtual void barrier() = 0;
  // Host values, for metrics (losses, counts) and consistency checks; always over MPI.
  virtual void allreduce_sum(std::vector<double>& values) = 0;
  // Every rank's `value`, in rank order (the strings may differ in length); over MPI.
  virtual std::vector<std::string> allgather(const std::string& value) = 0;

  // How long one collective may wait for the others, in seconds (0 < seconds <= 1e8; throws
  // otherwise). Past it the job ends (abort_job) with a message naming the collective and the
  // ranks that did not join it. Every rank should use the same value.
  virtual void set_collective_timeout(double seconds);
  double collective_timeout() const { return timeout_seconds_; }

 protected:
  Communicator();  // the timeout from default_collective_timeout()

 private:
  double timeout_seconds_;
};

using CommunicatorPtr = std::shared_ptr<Communicator>;

// Every process of the job (MPI_COMM_WORLD) for tensors on `device`: MPI for the CPU, NCCL for a
// CUDA device (the caller picks the GPU, usually cuda(local_rank() % count)). MPI is initialised
// on first use and finalised at exit. Run without mpirun, the job is this one process (size 1).
// Throws cairn::Error when the backend for `device` was not built, saying what to install.
CommunicatorPtr make_communicator(const Device& device);

// A job of one: rank 0 of 1, every collective leaves its tensor as it is. Needs no MPI.
CommunicatorPtr single_process_communicator(const Device& device = Device::cpu());

// This process's rank and the job's size as the launcher set them, read from the environment
// (Open MPI, MPICH/PMI, Slurm), without initialising MPI: 0 and 1 when not launched by one.
int launcher_rank();
int launcher_size();
int launcher_local_rank();

// Ends the whole job now, on every rank: prints "cairn: rank R of N failed: <message>; aborting
// the job" to stderr, aborts the NCCL communicators (ncclCommAbort) so that no GPU waits in a
// collective, then calls MPI_Abort, which makes mpirun stop the other ranks. Without MPI it
// calls std::abort(). Meant for a program's top-level catch: a rank that throws while the others
// wait in a collective would otherwise leave them waiting forever.
[[noreturn]] void abort_job(const std::string& message);

// Named quantities ("batch size", "8") that every rank must hold equal before training starts.
using Quantities = std::vector<std::pair<std::string, std::string>>;

// A collective (one allgather): every rank sends its `quantities` and compares all ranks' lists.
// Where any quantity differs, or a rank lacks one, every rank throws the same cairn::Error, which
// starts with `who` and lists each such quantity with each rank's value ("steps per epoch: '4' on
// rank 0; '3' on rank 1"), so that a job whose ranks would compute different things (and deadlock
// when one runs out of steps first) stops before its first step with the reason. Returns quietly
// when all agree, and at once in a job of one.
void check_ranks_agree(Communicator& comm, const Quantities& quantities, const std::string& who);

}  // namespace cairn::dist
