// Trainer's data-parallel setup (declared in trainer.h): check that the ranks agree, start them
// equal, and hand the gradients to a dist::GradientReducer that step() waits for.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "cairn/blocks/trainer.h"
#include "cairn/base/error.h"

namespace cairn {
namespace {

// FNV-1a over the parameters' names and shapes: a long list compared as one short value.
struct Fingerprint {
  uint64_t hash = 1469598103934665603ull;
  void add(const std::string& text) {
    for (unsigned char c : text) hash = (hash ^ c) * 1099511628211ull;
    hash = (hash ^ 0xff) * 1099511628211ull;
  }
};

// "sgd(learning_rate=0.100000001, momentum=0, weight_decay=0)": every float to the bit.
std::string exact_description(const Optimizer& optimizer) {
  std::string text = optimizer.name() + "(";
  bool first = true;
  for (const auto& [key, value] : optimizer.hyperparameters()) {
    char number[32];
    std::snprintf(number, sizeof(number), "%.9g", static_cast<double>(value));
    text += (first ? "" : ", ") + key + "=" + number;
    first = false;
  }
  return text + ")";
}

}  // namespace

void Trainer::enable_data_parallel(dist::CommunicatorPtr communicator,
                                   const dist::BucketOptions& options,
                                   const dist::Quantities& must_agree) {
  CAIRN_CHECK(communicator != nullptr, "Trainer::enable_data_parallel: the communicator is null");
  const Device device = communicator->device();
  // Everything local is checked before any collective, so that a rank which fails here fails
  // alone and visibly (its caller aborts the job) rather than after the others entered one.
  Fingerprint layout, state;
  int64_t trained = 0;
  for (const Entry& entry : entries_) {
    const Parameter& parameter = *entry.parameter;
    CAIRN_CHECK(parameter.is_initialized(), "Trainer::enable_data_parallel: parameter '",
                entry.name, "' is not initialized",
                parameter.is_deferred()
                    ? " (its shape is deferred: run one forward pass first, so that every rank "
                      "has its shape to receive rank 0's values into)"
                    : " (call initialize() on its block first)");
    CAIRN_CHECK(parameter.device() == device, "Trainer::enable_data_parallel: parameter '",
                entry.name, "' is on ", parameter.device(), ", the ", communicator->backend(),
                " communicator works on ", device);
    const bool fixed = !parameter.trainable();
    trained += fixed ? 0 : 1;
    layout.add(entry.name);
    layout.add(shape_str(parameter.shape()));
    layout.add(fixed ? "fixed" : "trained");
    state.add(entry.name + ":" + std::to_string(entry.updates) + ":" +
              std::to_string(entry.slots.size()));
  }
  char layout_hex[17], state_hex[17];
  std::snprintf(layout_hex, sizeof(layout_hex), "%016llx", (unsigned long long)layout.hash);
  std::snprintf(state_hex, sizeof(state_hex), "%016llx", (unsigned long long)state.hash);
  // The library's own quantities first, then the caller's (a name used twice keeps the first).
  dist::Quantities quantities = {
      {"parameters (names, shapes, which are trained)",
       std::to_string(entries_.size()) + " parameters, " + std::to_string(trained) +
           " trained, fingerprint " + layout_hex},
      {"optimizer and hyperparameters", exact_description(*optimizer_)},
      {"trainer steps", std::to_string(steps_)},
      {"optimizer state (update counts and slots per parameter)",
       std::string("fingerprint ") + state_hex},
  };
  quantities.insert(quantities.end(), must_agree.begin(), must_agree.end());
  dist::check_ranks_agree(*communicator, quantities,
                          "Trainer::enable_data_parallel (every rank must build the same network, "
                          "resume from the same checkpoint and train on the same settings)");

  // Rank 0's values everywhere: parameters (constants too: a seeded constant may differ by
  // seed) and whatever optimizer slots exist.
  for (Entry& entry : entries_) {
    Tensor data = entry.parameter->data();
    // The collectives move float32. An int32 state (BatchNorm's num_batches_tracked) counts this
    // rank's own batches, as each rank's running statistics do afterwards (PyTorch DDP with
    // broadcast_buffers=False): it keeps its own value.
    if (data.dtype() != DType::kFloat32) continue;
    communicator->broadcast(data, 0);
    for (Tensor& slot : entry.slots) {
      if (slot.device() != device) slot = slot.to(device);
      communicator->broadcast(slot, 0);
    }
  }

  std::vector<Tensor> leaves;
  std::vector<std::string> names;
  trained_leaves(leaves, names);
  reducer_.reset();  // its hooks go before the new reducer adds its own
  reducer_ = std::make_shared<dist::GradientReducer>(std::move(leaves), std::move(names),
                                                     communicator, options);
  reducer_options_ = options;
  communicator_ = std::move(communicator);
}

// The reducer's hooks sit on the tensors the parameters had when it was made. A parameter
// re-initialised (initialize with force_reinit) or given new tensors since has gradients the old
// hooks never see, and finish() would average the old, stale ones in their place while the real
// ones stay this rank's own: the ranks would drift apart. So before each step, a reducer on the
// parameters' current tensors if any moved. Its first finish() reduces every gradient whole
// (no hook of the new reducer fired in this backward); later steps overlap again.
// The tensors whose gradients data-parallel training averages, with their names.
void Trainer::trained_leaves(std::vector<Tensor>& leaves, std::vector<std::string>& names) const {
  for (const Entry& entry : entries_) {
    const Parameter& parameter = *entry.parameter;
    if (!parameter.trainable()) continue;
    leaves.push_back(parameter.data());
    names.push_back(entry.name);
  }
}

void Trainer::rebind_gradient_reducer_if_stale() {
  std::vector<Tensor> leaves;
  std::vector<std::string> names;
  trained_leaves(leaves, names);
  const std::vector<Tensor>& bound = reducer_->leaves();
  bool stale = leaves.size() != bound.size();
  for (size_t i = 0; !stale && i < leaves.size(); ++i) stale = !leaves[i].same(bound[i]);
  if (!stale) return;
  reducer_.reset();  // waits for collectives its hooks started: every rank started the same ones
  reducer_ = std::make_shared<dist::GradientReducer>(std::move(leaves), std::move(names),
                                                     communicator_, reducer_options_);
}

}  // namespace cairn
