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

// Where a hybridized block or a CapturedStep stands.
enum class HybridState {
  kWarmingUp,  // the next run is eager (the first run, or the first after the graph went stale)
  kCaptured,   // runs replay a graph
  kEager,      // capture failed or cannot happen (the CPU); eager_reason() says why
};
const char* hybrid_state_name(HybridState state);

// A whole training step as one graph. The body reads only its two arguments (the batch) and
// tensors that outlive the step (parameters, gradients, optimizer state). Host-side values are
// frozen into the graph at capture: the optimizer's hyperparameters, and the trainer's step
// counters, which stop advancing while replaying. Replacing a parameter's or slot's tensors or
// changing a hyperparameter (captured_state.h) makes the next run capture again, so a replay
// never reads memory the step no longer owns. A capture that fails leaves no trace: the trainer's
// counters and slots are as before it, and the step then runs eagerly once.
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
  HybridState state() const;
  const std::string& eager_reason() const { return eager_reason_; }
  int64_t runs() const { return runs_; }
  // How many graphs were captured so far (a re-capture after stale state counts).
  int64_t captures() const { return captures_; }

 private:
  void capture_and_run(const Tensor& x, const Tensor& y);
  Body body_;
  Device device_;
  HybridizeOptions options_;
  ParameterDict params_;
  Trainer* trainer_;
  uint64_t captured_epoch_ = 0;
  int64_t captures_ = 0;
  std::unique_ptr<cuda::Graph> graph_;
  Tensor static_x_, static_y_;
  std::string eager_reason_;
  int64_t runs_ = 0;
};

// Per-block state behind Block::hybridize(): one graph per input shape, at most kMaxGraphs of
// them (the least recently used goes first: a graph holds a private memory pool), all dropped
// when the captured state changes (captured_state.h).
class HybridForward {
 public:
  static constexpr size_t kMaxGraphs = 8;
  explicit HybridForward(HybridizeOptions options) : options_(options) {}
  // Runs `forward` on x through the cache: eager, captured or replayed.
  Tensor run(const std::string& block_name, const Tensor& x,
             const std::function<Tensor(const Tensor&)>& forward);
  // Why the last call ran eagerly: a failed capture's error, or the CPU; "" once replaying.
  std::string eager_reason() const;
  // The state of the last call's input shape (kWarmingUp before any call).
  HybridState state() const;
  size_t graphs() const;

 private:
  struct Entry {
    // The graph is declared first so that it is destroyed last: its output block is freed while
    // the pool is alive (the allocator also handles the other order, see release_pool).
    std::unique_ptr<cuda::Graph> graph;
    int64_t calls = 0;
    uint64_t last_use = 0;
    Tensor input, output;
  };
  void evict_least_recently_used();
  HybridizeOptions options_;
  std::map<std::string, Entry> by_shape_;
  uint64_t uses_ = 0;
  uint64_t captured_epoch_ = 0;
  HybridState last_state_ = HybridState::kWarmingUp;
  std::string eager_reason_;
  bool last_call_on_cpu_ = false;
};

}  // namespace cairn
