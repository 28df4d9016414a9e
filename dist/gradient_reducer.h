// Averages gradients over the ranks of a communicator, in buckets, as backward produces them
// (PyTorch DDP's Reducer, Horovod's tensor fusion). Trainer::enable_data_parallel() makes one.
//
// The leaves (parameters) are packed, in reverse registration order (roughly the order backward
// finishes them), into buckets of about `bucket_bytes`. When backward() has finished a leaf's
// gradient (autograd::add_grad_ready_hook), it is copied into its bucket; when a bucket is full,
// its sum over the ranks is started (MPI_Iallreduce on the CPU, ncclAllReduce on the stream on a
// GPU) while backward goes on with the earlier layers. Buckets are started strictly in bucket
// order, so that every rank issues the same collectives in the same order. finish() starts what
// is left, waits, and writes sum / size into every gradient, identical bits on every rank.
//
// A leaf that this backward did not reach (a branch not taken) contributes zeros. When no
// backward ran since the last finish() (gradients set by hand), every leaf contributes the
// gradient it holds.
//
// Open MPI makes progress on a non-blocking collective only inside MPI calls (it has no progress
// thread by default), so each hook also tests the buckets in flight: that is where the CPU path
// overlaps.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cairn/dist/communicator.h"

namespace cairn::dist {

struct BucketOptions {
  int64_t bucket_bytes = int64_t(4) << 20;  // 4 MiB: a few collectives per step, each worth it
};

class GradientReducer {
 public:
  // `leaves`: initialised leaf tensors with a gradient, all on communicator->device(); `names`
  // for messages. Adds a grad-ready hook to each; the destructor removes them.
  GradientReducer(std::vector<Tensor> leaves, std::vector<std::string> names,
                  CommunicatorPtr communicator, BucketOptions options = {});
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Before the optimizer update: every gradient becomes its mean over the ranks.
  void finish();

  // The tensors whose gradients this reducer averages (its hooks sit on them).
  const std::vector<Tensor>& leaves() const { return leaves_; }
  size_t bucket_count() const { return buckets_.size(); }
  // The leaf indices in bucket b, in the order they are packed.
  const std::vector<size_t>& bucket_members(size_t b) const { return buckets_[b].members; }
  // Buckets whose reduction was started from a hook, during the last backward (not by finish()).
  size_t buckets_started_in_backward() const { return started_in_backward_; }
  const Communicator& communicator() const { return *communicator_; }

 private:
  struct Bucket {
    std::vector<size_t> members;
    std::vector<int64_t> offsets;  // element offset of each member in `buffer`
    Tensor buffer;                 // the flat gradients, reduced in place
    size_t ready = 0;
    std::unique_ptr<PendingCollective> pending;
  };
  void on_ready(size_t leaf);
  void start_full_buckets();
  void start(Bucket& bucket);

  std::vector<Tensor> leaves_;
  std::vector<std::string> names_;
  CommunicatorPtr communicator_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_, slot_of_;
  std::vector<bool> ready_;
  size_t next_to_start_ = 0;
  bool any_ready_ = false;
  size_t started_in_backward_ = 0;
};

}  // namespace cairn::dist
