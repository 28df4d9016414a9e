// Internal: what communicator.cpp needs from the backend files, which are compiled only when CMake
// found their library (CAIRN_HAVE_MPI, CAIRN_HAVE_NCCL). Not part of the API.
#pragma once

#include "cairn/dist/communicator.h"

namespace cairn::dist::detail {

// mpi_communicator.cpp
CommunicatorPtr make_mpi_communicator();
// Calls MPI_Abort(MPI_COMM_WORLD) when MPI is initialised; returns otherwise.
void mpi_abort_world(int code);
bool mpi_initialized();

// nccl_communicator.cpp
CommunicatorPtr make_nccl_communicator(const Device& device);
// ncclCommAbort on every NCCL communicator still alive in this process.
void nccl_abort_all() noexcept;

}  // namespace cairn::dist::detail

namespace cairn::dist::detail {
// Raw bytes from `root` over an MPI communicator (NCCL's unique id).
void mpi_broadcast_bytes(Communicator& comm, void* data, size_t bytes, int root);
}  // namespace cairn::dist::detail
