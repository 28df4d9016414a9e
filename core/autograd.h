// Define-by-run autograd.
//
// Inside an autograd::RecordScope (Gluon's `with autograd.record():`), every op whose inputs need a
// gradient records a Node on its result: the op's name, its inputs, and a function from the
// result's gradient to the inputs' gradients. backward() sorts the recorded nodes reachable from
// the loss (reverse recording order is a valid order) and runs those functions, which are ordinary
// ops on the tensors' device. Gradients reaching a leaf from several uses add up, so a parameter
// shared by two layers receives the sum; the leaf's GradReq then overwrites or adds into its grad.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "cairn/core/tensor.h"

namespace cairn::autograd {

// From the gradient of an op's result to the gradients of its inputs, in input order. An entry may
// be left undefined where that input needs no gradient.
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

struct Node {
  std::string op;
  std::vector<Tensor> inputs;
  BackwardFn backward;
  const TensorImpl* output = nullptr;  // identity only; the output owns this node

  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  // Iterative: a node owns its inputs, which own their nodes, so a graph recorded by a long loop
  // is a chain as long as the loop, and letting shared_ptr destroy it recursively would overflow
  // the stack.
  ~Node();
};

// ---- Training and prediction mode (Gluon's model; docs/DESIGN.md, "Training mode") ----
// Blocks whose forward differs when training (Dropout, BatchNorm) ask is_training(). It is true
// only inside a RecordScope (Gluon's autograd.record(train_mode=True)) or a TrainModeScope, so a
// forward outside recording, which is what evaluation is, always predicts: dropout off, running
// statistics used and left alone. PredictModeScope and RecordScope(Mode::kPredict) record a tape
// in prediction mode (gradients of a network as deployed); TrainModeScope trains without a tape.
enum class Mode { kTraining, kPredict };

// Records ops while alive, in training mode unless told otherwise; nests; restores the previous
// state on exit.
class RecordScope {
 public:
  explicit RecordScope(Mode mode = Mode::kTraining);
  ~RecordScope();
  RecordScope(const RecordScope&) = delete;
  RecordScope& operator=(const RecordScope&) = delete;

 private:
  bool previous_recording_;
  bool previous_training_;
};

// Stops recording while alive (inside a RecordScope), e.g. for metrics computed mid-step, and
// predicts meanwhile, as Gluon's autograd.pause(train_mode=False) does.
class PauseScope {
 public:
  explicit PauseScope(Mode mode = Mode::kPredict);
  ~PauseScope();
  PauseScope(const PauseScope&) = delete;
  PauseScope& operator=(const PauseScope&) = delete;

 private:
  bool previous_recording_;
  bool previous_training_;
};

// Set the mode alone while alive, recording untouched (Gluon's train_mode() / predict_mode()).
class TrainModeScope {
 public:
  TrainModeScope();
  ~TrainModeScope();
  TrainModeScope(const TrainModeScope&) = delete;
  TrainModeScope& operator=(const TrainModeScope&) = delete;

 private:
  bool previous_;
};
class PredictModeScope {
 public:
  PredictModeScope();
  ~PredictModeScope();
  PredictModeScope(const PredictModeScope&) = delete;
  PredictModeScope& operator=(const PredictModeScope&) = delete;

 private:
  bool previous_;
};

bool is_recording();
bool is_training();

// True when recording and at least one input needs a gradient: only then does an op record.
bool should_record(const std::vector<Tensor>& inputs);

// Called by every op after computing `output`: attaches a node when should_record(inputs), and
// runs the numerics check (numerics.h) when it is on.
void record(const char* op, std::vector<Tensor> inputs, Tensor& output, BackwardFn backward);

// Runs `hook` whenever a backward() has finished writing `leaf`'s gradient (its GradReq applied),
// as soon as no node left in that backward can add to it: while the rest of the graph is still
// being worked through. Data-parallel training starts each gradient's reduction there, overlapping
// communication with the rest of backward (PyTorch's post-accumulate-grad hooks, DDP's buckets).
// A leaf no gradient reached in that backward gets no call. `owner` keys the hook for removal.
void add_grad_ready_hook(const Tensor& leaf, const void* owner, std::function<void()> hook);
void remove_grad_ready_hooks(const Tensor& leaf, const void* owner);

// Runs backward from `root`. Without a head gradient, root must have exactly one element.
// On the CPU a leaf's grad tensor may take over the buffer its gradient was computed in instead
// of copying it, so grad().data() can change address across backward(); on the GPU it never does
// (captured CUDA graphs rely on it).
void backward(const Tensor& root, const Tensor& head_grad);

}  // namespace cairn::autograd
