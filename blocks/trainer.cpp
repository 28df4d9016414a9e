#include "cairn/blocks/trainer.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>

#include "cairn/blocks/captured_state.h"
#include "cairn/core/cuda_graph.h"
#include "cairn/base/error.h"

namespace cairn {
namespace {

constexpr const char* kStepsKey = "trainer.steps";
constexpr const char* kUpdatesPrefix = "trainer.updates.";
constexpr const char* kOptimizerKey = "optimizer";
constexpr const char* kHyperparameterPrefix = "optimizer.";

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

// "%.9g" is enough digits for any float to read back as the same float.
std::string format_exact(float value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.9g", static_cast<double>(value));
  return text;
}

std::optional<float> parse_float(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const float value = std::strtof(text.c_str(), &end);
  if (end != text.c_str() + text.size() || errno == ERANGE) return std::nullopt;
  return value;
}

std::optional<int64_t> parse_count(const std::string& text) {
  if (text.empty() || text[0] == '-' || text[0] == '+') return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (end != text.c_str() + text.size() || errno == ERANGE) return std::nullopt;
  return static_cast<int64_t>(value);
}

// A host snapshot that later steps cannot change (to_host() of a CPU tensor is that tensor).
Tensor host_copy(const Tensor& tensor) {
  return tensor.device().is_cpu() ? tensor.clone() : tensor.to_host();
}

}  // namespace

// What load_state() will install, gathered and checked before anything changes.
struct Trainer::ParsedState {
  int64_t steps = 0;
  std::map<std::string, float> hyperparameters;
  std::vector<std::vector<Tensor>> slots;  // per entry; empty: none in the file
  std::vector<int64_t> updates;            // per entry
};

Trainer::Trainer(const ParameterDict& params, std::shared_ptr<Optimizer> optimizer)
    : optimizer_(std::move(optimizer)) {
  CAIRN_CHECK(optimizer_ != nullptr, "Trainer: the optimizer is null");
  for (const auto& [name, parameter] : params) {
    entries_.push_back(Entry{name, parameter, {}, 0});
  }
}

void Trainer::step(int64_t batch_size) {
  CAIRN_CHECK(batch_size > 0, "Trainer::step: batch_size must be positive, got ", batch_size);
  const float grad_scale = 1.0f / static_cast<float>(batch_size);
  // An optimizer whose update cannot be replayed from a graph is refused while one is captured,
  // and the caller (CapturedStep) stays eager and says why.
  if (cuda::capture_pool() != nullptr) {
    const std::optional<std::string> refusal = optimizer_->capture_refusal();
    CAIRN_CHECK(!refusal.has_value(), "Trainer::step: ", refusal.value_or(""));
  }
  // Check every parameter first, so that a failure leaves none of them half a step ahead.
  // The counts come from checkpoints too, where any value up to INT64_MAX reads back.
  constexpr int64_t kMaxCount = std::numeric_limits<int64_t>::max();
  CAIRN_CHECK(steps_ < kMaxCount, "Trainer::step: the step count ", steps_,
              " cannot grow any further (a corrupt checkpoint?)");
  for (const Entry& entry : entries_) {
    const Parameter& parameter = *entry.parameter;
    if (!parameter.trainable()) continue;
    CAIRN_CHECK(entry.updates < kMaxCount, "Trainer::step: parameter '", entry.name,
                "' has an update count of ", entry.updates,
                " that cannot grow any further (a corrupt checkpoint?)");
    CAIRN_CHECK(parameter.is_initialized(), "Trainer::step: parameter '", entry.name,
                "' is not initialized",
                parameter.is_deferred()
                    ? " (its shape is deferred: run a forward pass before the first step)"
                    : " (call initialize() on its block first)");
    CAIRN_CHECK(parameter.grad().defined(), "Trainer::step: parameter '", entry.name,
                "' has no gradient attached");
    for (const Tensor& slot : entry.slots) {
      CAIRN_CHECK(slot.shape() == parameter.shape(), "Trainer::step: the loaded state of '",
                  entry.name, "' has shape ", shape_str(slot.shape()), ", the parameter ",
                  shape_str(parameter.shape()));
    }
  }
  if (reducer_) {
    rebind_gradient_reducer_if_stale();
    reducer_->finish();  // data-parallel: gradients become means over the ranks
  }
  const std::vector<std::string> slot_names = optimizer_->slot_names();
  for (Entry& entry : entries_) {
    const Parameter& parameter = *entry.parameter;
    if (!parameter.trainable()) continue;
    Tensor weight = parameter.data();
    const Device device = weight.device();
    // Created at the first update; recreated if set_hyperparameters() changed the slot layout.
    if (entry.slots.size() != slot_names.size()) {
      entry.slots.clear();
      for (size_t i = 0; i < slot_names.size(); ++i) {
        entry.slots.push_back(Tensor::zeros(weight.shape(), device));
      }
      captured_state_changed();
    }
    // Slots loaded before a deferred parameter existed wait on the host until now.
    for (Tensor& slot : entry.slots) {
      if (slot.device() != device) {
        slot = slot.to(device);
        captured_state_changed();
      }
    }
    entry.updates += 1;
    optimizer_->update(weight, parameter.grad(), entry.slots, entry.updates, grad_scale);
  }
  steps_ += 1;
}

Trainer::Bookkeeping Trainer::bookkeeping() const {
  Bookkeeping saved;
  saved.steps = steps_;
  for (const Entry& entry : entries_) {
    saved.slots.push_back(entry.slots);
    saved.updates.push_back(entry.updates);
  }
  return saved;
}

void Trainer::restore_bookkeeping(const Bookkeeping& saved) {
  CAIRN_CHECK(saved.slots.size() == entries_.size() && saved.updates.size() == entries_.size(),
              "Trainer::restore_bookkeeping: saved for ", saved.slots.size(),
              " parameters, this trainer has ", entries_.size());
  steps_ = saved.steps;
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (!(entries_[i].slots.size() == saved.slots[i].size() &&
          std::equal(entries_[i].slots.begin(), entries_[i].slots.end(), saved.slots[i].begin(),
                     [](const Tensor& a, const Tensor& b) { return a.same(b); }))) {
      captured_state_changed();
    }
    entries_[i].slots = saved.slots[i];
    entries_[i].updates = saved.updates[i];
  }
}

NamedTensors Trainer::state() const {
  const std::vector<std::string> slot_names = optimizer_->slot_names();
  NamedTensors out;
  for (const Entry& entry : entries_) {
    for (size_t i = 0; i < entry.slots.size() && i < slot_names.size(); ++i) {
      out.emplace_back(entry.name + "." + slot_names[i], host_copy(entry.slots[i]));
    }
  }
  return out;
}

std::map<std::string, std::string> Trainer::state_metadata() const {
  std::map<std::string, std::string> out;
  out[kStepsKey] = std::to_string(steps_);
  out[kOptimizerKey] = optimizer_->name();
  for (const auto& [key, value] : optimizer_->hyperparameters()) {
    out[kHyperparameterPrefix + key] = format_exact(value);
  }
  for (const Entry& entry : entries_) {
    if (entry.updates > 0) out[kUpdatesPrefix + entry.name] = std::to_string(entry.updates);
  }
  return out;
}

Trainer::ParsedState Trainer::parse_state(
    const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) const {
  ParsedState parsed;
  parsed.slots.resize(entries_.size());
  parsed.updates.assign(entries_.size(), 0);
  std::string problems;
  auto entry_index = [&](const std::string& name) -> std::optional<size_t> {
    for (size_t i = 0; i < entries_.size(); ++i) {
      if (entries_[i].name == name) return i;
    }
    return std::nullopt;
  };

  // The optimizer: same kind, hyperparameters tried on a copy first.
  std::vector<std::string> slot_names;
  // Another optimizer's slots would each be reported as unknown: one line about the kind says it.
  bool check_slot_names = true;
  const auto kind = metadata.find(kOptimizerKey);
  if (kind == metadata.end()) {
    problems += "\n  no '" + std::string(kOptimizerKey) + "' entry in the metadata";
    check_slot_names = false;
  } else if (kind->second != optimizer_->name()) {
    problems += "\n  the state is for optimizer '" + kind->second + "', this trainer uses '" +
                optimizer_->name() + "'";
    check_slot_names = false;
  } else {
    for (const auto& [key, text] : metadata) {
      if (!starts_with(key, kHyperparameterPrefix)) continue;
      const std::optional<float> value = parse_float(text);
      if (!value) {
        problems += "\n  '" + key + "': cannot read '" + text + "' as a number";
      } else {
        parsed.hyperparameters[key.substr(std::string(kHyperparameterPrefix).size())] = *value;
      }
    }
    try {
      const std::shared_ptr<Optimizer> trial = optimizer_->clone();
      trial->set_hyperparameters(parsed.hyperparameters);
      slot_names = trial->slot_names();
    } catch (const Error& error) {
      problems += "\n  " + std::string(error.what());
      slot_names = optimizer_->slot_names();  // still check the tensors against something
    }
  }

  // The counts.
  const auto steps = metadata.find(kStepsKey);
  if (steps == metadata.end()) {
    problems += "\n  no '" + std::string(kStepsKey) + "' entry in the metadata";
  } else if (const std::optional<int64_t> value = parse_count(steps->second)) {
    parsed.steps = *value;
  } else {
    problems +=
        "\n  '" + std::string(kStepsKey) + "': cannot read '" + steps->second + "' as a step count";
  }
  for (const auto& [key, text] : metadata) {
    if (!starts_with(key, "trainer.") || key == kStepsKey) continue;
    const std::optional<size_t> index =
        starts_with(key, kUpdatesPrefix)
            ? entry_index(key.substr(std::string(kUpdatesPrefix).size()))
            : std::nullopt;
    const std::optional<int64_t> value = parse_count(text);
    if (!index) {
      problems += "\n  '" + key + "': not a parameter of this trainer";
    } else if (!value) {
      problems += "\n  '" + key + "': cannot read '" + text + "' as an update count";
    } else {
      parsed.updates[*index] = *value;
    }
  }

  // The slots: "<parameter>.<slot>", parameter names having dots of their own.
  std::vector<std::vector<std::optional<Tensor>>> found(
      entries_.size(), std::vector<std::optional<Tensor>>(slot_names.size()));
  for (const auto& [name, tensor] : tensors) {
    const size_t dot = name.rfind('.');
    const std::optional<size_t> index =
        dot == std::string::npos ? std::nullopt : entry_index(name.substr(0, dot));
    if (!index) {
      problems += "\n  '" + name + "': no parameter of this trainer is called '" +
                  (dot == std::string::npos ? name : name.substr(0, dot)) + "'";
      continue;
    }
    if (!check_slot_names) continue;
    const std::string slot = name.substr(dot + 1);
    size_t which = slot_names.size();
    for (size_t i = 0; i < slot_names.size(); ++i) {
      if (slot_names[i] == slot) which = i;
    }
    if (which == slot_names.size()) {
      problems += "\n  '" + name + "': " + optimizer_->name() + " keeps no slot '" + slot + "'";
      continue;
    }
    const Parameter& parameter = *entries_[*index].parameter;
    if (!tensor.defined() || tensor.dtype() != DType::kFloat32) {
      problems += "\n  '" + name + "': expected a float32 tensor";
    } else if (parameter.shape_known() ? tensor.shape() != parameter.shape()
                                       : tensor.ndim() != int64_t(parameter.shape().size())) {
      problems += "\n  '" + name + "': shape " + shape_str(tensor.shape()) +
                  ", the parameter has shape " + shape_str(parameter.shape());
    } else {
      found[*index][which] = tensor;
    }
  }
  for (size_t i = 0; i < entries_.size(); ++i) {
    size_t present = 0;
    for (const auto& slot : found[i]) present += slot.has_value() ? 1 : 0;
    if (present == 0) continue;
    if (present < slot_names.size()) {
      for (size_t s = 0; s < slot_names.size(); ++s) {
        if (!found[i][s]) {
          problems += "\n  '" + entries_[i].name + "." + slot_names[s] +
                      "': missing, while the parameter's other slots are there";
        }
      }
      continue;
    }
    for (const auto& slot : found[i]) parsed.slots[i].push_back(*slot);
  }
  CAIRN_CHECK(problems.empty(),
              "Trainer::load_state: the state does not match this trainer:", problems);
  return parsed;
}

void Trainer::check_state(const NamedTensors& tensors,
                          const std::map<std::string, std::string>& metadata) const {
  parse_state(tensors, metadata);
}

void Trainer::load_state(const NamedTensors& tensors,
                         const std::map<std::string, std::string>& metadata) {
  ParsedState parsed = parse_state(tensors, metadata);
  captured_state_changed();  // new slots, counts and hyperparameters
  optimizer_->set_hyperparameters(parsed.hyperparameters);
  steps_ = parsed.steps;
  for (size_t i = 0; i < entries_.size(); ++i) {
    Entry& entry = entries_[i];
    entry.updates = parsed.updates[i];
    entry.slots.clear();
    const Device device =
        entry.parameter->is_initialized() ? entry.parameter->device() : Device::cpu();
    // Own copies: the caller's tensors must not alias the state that later steps update.
    for (const Tensor& slot : parsed.slots[i]) {
      entry.slots.push_back(slot.device() == device ? slot.clone() : slot.to(device));
    }
  }
}

}  // namespace cairn
