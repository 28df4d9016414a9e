// Trainer: applies an optimizer to a set of parameters (Gluon's gluon.Trainer).
//
//   Trainer trainer(net->collect_params(), std::make_shared<SGD>(0.1f, 0.9f));
//   for (...) {
//     { autograd::RecordScope record; loss = L2Loss(Reduction::kSum)(net(x), y); loss.backward(); }
//     trainer.step(batch_size);  // the gradient of the batch sum / batch_size
//   }
//
// step() rescales gradients by 1 / batch_size as Gluon does, so it pairs with a summed loss; with a
// loss that already averages over the batch (Reduction::kMean, the default of blocks/loss.h) call
// step(1). Gradients are left as they are: with GradReq::kWrite the next backward() overwrites
// them, with kAdd the caller zeroes them (zero_grad()) when an accumulation is done.
//
// The optimizer's per-parameter state ("slots": SGD's momentum, Adam's mean and variance) is
// created at the first step that updates a parameter, as zeros on that parameter's device, and
// kept here; state()/state_metadata() export it and load_state() brings it back, so that training
// resumed from a checkpoint continues bit for bit (blocks/checkpoint.h).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cairn/blocks/optimizer.h"
#include "cairn/blocks/parameter.h"
#include "cairn/blocks/safetensors.h"
#include "cairn/dist/communicator.h"
#include "cairn/dist/gradient_reducer.h"

namespace cairn {

class Trainer {
 public:
  // Keeps every parameter of `params`; which ones a step updates is decided at each step, so a
  // parameter frozen (set_grad_req(kNull)) or unfrozen later is honoured.
  Trainer(const ParameterDict& params, std::shared_ptr<Optimizer> optimizer);

  // One optimizer update of every trainable parameter (not constants, not GradReq::kNull) with
  // grad_scale = 1 / batch_size. Every such parameter must be initialised by now (a deferred one
  // completes at the network's first forward): the error names the first one that is not.
  void step(int64_t batch_size);

  // Data-parallel training over `communicator` (one process per GPU or CPU worker, launched by
  // mpirun; blocks/trainer_data_parallel.cpp). Every rank calls it with the same network, after
  // the parameters are initialised (run one forward first if shapes are deferred). It checks that
  // the ranks hold the same parameter names and shapes, then broadcasts rank 0's parameters (and
  // optimizer state, after a resume) so every rank starts equal whatever its seed. From then on
  // each backward() starts averaging gradients in buckets as they are produced, and step() waits
  // for the averages before the update: every rank applies the same update and keeps the same
  // optimizer state. step(batch_size) takes this rank's batch size; with equal batches on every
  // rank (DataLoader's shards) the update is the one single-process training on the union of the
  // ranks' batches would make (mean over the global batch).
  //
  // Before any other collective, the ranks compare (dist::check_ranks_agree) the optimizer and
  // its hyperparameters, the step count, the parameters' names, shapes and update counts, and
  // `must_agree`: whatever else decides what each rank computes and how many collectives it
  // calls (the data: data_parallel_quantities(loader); the learning-rate schedule:
  // LearningRateSchedule::quantities()). A difference throws the same cairn::Error on every
  // rank, naming each differing quantity and each rank's value: ranks that disagree on the
  // amount of work would otherwise deadlock when the first runs out of steps.
  void enable_data_parallel(dist::CommunicatorPtr communicator,
                            const dist::BucketOptions& options = {},
                            const dist::Quantities& must_agree = {});
  bool data_parallel() const { return reducer_ != nullptr; }
  // The communicator given to enable_data_parallel(), else null.
  const dist::CommunicatorPtr& communicator() const { return communicator_; }
  const dist::GradientReducer* gradient_reducer() const { return reducer_.get(); }

  // Completed step() calls.
  int64_t steps() const { return steps_; }
  Optimizer& optimizer() { return *optimizer_; }
  const Optimizer& optimizer() const { return *optimizer_; }
  float learning_rate() const { return optimizer_->learning_rate(); }
  void set_learning_rate(float learning_rate) { optimizer_->set_learning_rate(learning_rate); }

  // The slots created so far as host copies named "<parameter>.<slot>" ("0.weight.momentum"),
  // in parameter order.
  NamedTensors state() const;
  // Strings for a safetensors header: the step count, each parameter's own update count, the
  // optimizer's name and its hyperparameters (floats written with "%.9g", which reads back to the
  // same float). Keys: "trainer.steps", "trainer.updates.<parameter>", "optimizer",
  // "optimizer.<hyperparameter>".
  std::map<std::string, std::string> state_metadata() const;
  // Restores what state() and state_metadata() wrote: the optimizer must have the same name; its
  // hyperparameters, the counts and the slots are replaced. Every problem found (unknown names,
  // wrong shapes, a parameter with only some of its slots, unreadable numbers) is listed in one
  // cairn::Error, and nothing changes unless all is well. Slots go to their parameter's device;
  // parameters the file has no slots for start afresh with zeros at their next update.
  void load_state(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata);
  // The host-side bookkeeping a step changes (the step and update counts, which slot tensors
  // exist), so that CapturedStep can put it back after a capture that failed part-way: a failed
  // capture ran none of its kernels, so nothing else moved.
  struct Bookkeeping {
    int64_t steps = 0;
    std::vector<std::vector<Tensor>> slots;
    std::vector<int64_t> updates;
  };
  Bookkeeping bookkeeping() const;
  void restore_bookkeeping(const Bookkeeping& saved);
  // The checks of load_state() without the changes.
  void check_state(const NamedTensors& tensors,
                   const std::map<std::string, std::string>& metadata) const;

 private:
  struct Entry {
    std::string name;
    ParameterPtr parameter;
    std::vector<Tensor> slots;  // empty until the first update; then slot_names() order
    int64_t updates = 0;        // this parameter's update count (Adam's bias correction)
  };
  struct ParsedState;
  ParsedState parse_state(const NamedTensors& tensors,
                          const std::map<std::string, std::string>& metadata) const;

  std::vector<Entry> entries_;
  std::shared_ptr<Optimizer> optimizer_;
  int64_t steps_ = 0;
  void rebind_gradient_reducer_if_stale();
  void trained_leaves(std::vector<Tensor>& leaves, std::vector<std::string>& names) const;
  dist::CommunicatorPtr communicator_;
  std::shared_ptr<dist::GradientReducer> reducer_;
  dist::BucketOptions reducer_options_;
};

}  // namespace cairn
