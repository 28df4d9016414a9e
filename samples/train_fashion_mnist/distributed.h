// --distributed: the sample's data-parallel parts (one process per GPU or CPU worker under
// mpirun), kept out of main.cpp's way.
//
//   mpirun -np 4 build/samples/train_fashion_mnist --distributed                # CPU workers
//   mpirun -np 4 build/samples/train_fashion_mnist --distributed --device cuda  # one GPU per rank
//
// Every rank trains on its shard of each epoch with --batch-size samples per step (the global
// batch is size x that), gradients are averaged over the ranks, and only rank 0 prints and writes
// the checkpoint and curves; metrics are summed over the ranks first. A rank that fails aborts the
// job (dist::abort_job) instead of leaving the others waiting.
#pragma once

#include <cairn/blocks/block.h>
#include <cairn/blocks/data_loader.h>
#include <cairn/blocks/trainer.h>
#include <cairn/core/autograd.h>
#include <cairn/core/device.h>
#include <cairn/dist/communicator.h>

#include <cstdio>
#include <string>
#include <vector>

namespace distributed {

// "cuda" means this rank's GPU: local rank modulo the GPUs this machine has. Any other name
// (cpu, cuda:N) is taken as it is; called before MPI starts, so it reads the launcher's
// environment.
inline std::string device_name(const std::string& requested) {
  if (requested != "cuda") return requested;
  const int gpus = cairn::cuda_device_count();
  if (gpus == 0) return requested;  // pick_device() then says why there is no GPU
  return "cuda:" + std::to_string(cairn::dist::launcher_local_rank() % gpus);
}

// Only rank 0 prints: the others' standard output goes nowhere (errors still reach stderr).
inline void quiet_unless_root(const cairn::dist::Communicator& comm) {
  if (comm.rank() != 0) std::freopen("/dev/null", "w", stdout);
}

// This rank's shard: equal shards for training (the remainder dropped, a different one each
// epoch), every sample once for evaluation (whose counts are summed, so shards may differ by one).
inline void shard(cairn::LoaderOptions& options, const cairn::dist::Communicator& comm,
                  cairn::ShardRemainder remainder) {
  options.shards = comm.size();
  options.shard = comm.rank();
  options.shard_remainder = remainder;
}

// Completes deferred shapes with one unrecorded forward, checks that the ranks agree, then
// broadcasts rank 0's parameters (and state, after a resume) and turns on gradient averaging.
// `must_agree`: what else the ranks must hold equal (data, schedule, epochs); a difference ends
// the job before the first step, naming each rank's value.
inline void start(cairn::Block& net, cairn::Trainer& trainer,
                  const cairn::dist::CommunicatorPtr& comm, int64_t features,
                  const cairn::Device& device, const cairn::dist::Quantities& must_agree) {
  {
    cairn::autograd::PauseScope no_recording;
    net(cairn::Tensor::zeros({1, features}, device));
  }
  trainer.enable_data_parallel(comm, {}, must_agree);
}

// Sums over the ranks, in place; nothing without a communicator.
inline void sum(cairn::dist::Communicator* comm, std::vector<double>& values) {
  if (comm != nullptr) comm->allreduce_sum(values);
}

}  // namespace distributed
