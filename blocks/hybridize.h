// hybridize(): Gluon compiles a HybridBlock to a static graph; cairn captures a CUDA graph.
//
// A block's forward, or a whole training step (forward, backward, optimizer), with static shapes
// runs eagerly once (warm-up: deferred shapes, optimizer state and the allocator's cache settle),
// is captured on its second run and replayed from then on. Inputs are copied into static buffers
// the graph reads; a block's output is copied out of the graph's buffer.
//
// What cannot be captured stays eager, with the reason kept and printed once: any op that waits
// for the device from the host, such as FancyMLP's `while (norm(x).item() > 1)`, names itself in
// that reason. On the CPU there are no graphs: everything runs eagerly, as before.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "cairn/blocks/parameter.h"
#include "cairn/core/cuda_graph.h"
#include "cairn/core/tensor.h"

namespace cairn {

class Trainer;

struct HybridizeOptions {
  // Check mode: at the capture, run the same inputs eagerly as well and compare; a difference
  // larger than `tolerance` (absolute, elementwise) throws a cairn::Error.
  bool check = false;
  float tolerance = 1e-5f;
};

// A whole training step as one graph. The body reads only its two arguments (the batch) and
// tensors that outlive the step (parameters, gradients, optimizer state). Host-side values are
// frozen into the graph at capture: the learning rate (a change after capture throws, when the
// trainer was given), and the trainer's step counters, which stop advancing while replaying.
//   CapturedStep step([&](const Tensor& x, const Tensor& y) {
//     Tensor loss;
//     { autograd::RecordScope record; loss = loss_fn((*net)(x), y); }
//     loss.backward();
//     trainer.step(1);
//   }, device);
//   for (...) step.run(batch.x, batch.y);
class CapturedStep {
 public:
  using Body = std::function<void(const Tensor& x, const Tensor& y)>;
  // For check mode, `params` and `trainer` are snapshotted so that the captured step and an eager
  // step start from the same state.
  CapturedStep(Body body, const Device& device, HybridizeOptions options = {},
               ParameterDict params = {}, Trainer* trainer = nullptr);

  void run(const Tensor& x, const Tensor& y);

  bool captured() const { return graph_ != nullptr; }
  const std::string& eager_reason() const { return eager_reason_; }
  int64_t runs() const { return runs_; }

 private:
  void capture_and_run(const Tensor& x, const Tensor& y);
  Body body_;
  Device device_;
  HybridizeOptions options_;
  ParameterDict params_;
  Trainer* trainer_;
  float captured_learning_rate_ = 0.0f;
  std::unique_ptr<cuda::Graph> graph_;
  Tensor static_x_, static_y_;
  std::string eager_reason_;
  int64_t runs_ = 0;
};

// Per-block state behind Block::hybridize(): one graph per input shape.
class HybridForward {
 public:
  explicit HybridForward(HybridizeOptions options) : options_(options) {}
  // Runs `forward` on x through the cache: eager, captured or replayed.
  Tensor run(const std::string& block_name, const Tensor& x,
             const std::function<Tensor(const Tensor&)>& forward);
  // Why the last call ran eagerly: a failed capture's error, or the CPU; "" once replaying.
  std::string eager_reason() const;
  size_t graphs() const;

 private:
  struct Entry {
    // The graph is declared first so that it is destroyed last: its output block is freed while
    // the pool is alive (the allocator also handles the other order, see release_pool).
    std::unique_ptr<cuda::Graph> graph;
    int64_t calls = 0;
    Tensor input, output;
  };
  HybridizeOptions options_;
  std::map<std::string, Entry> by_shape_;
  std::string eager_reason_;
  bool last_call_on_cpu_ = false;
};

}  // namespace cairn
