#include "cairn/blocks/hybridize.h"

#include <algorithm>

#include <atomic>
#include <cmath>
#include <iostream>
#include <optional>

#include "cairn/blocks/captured_state.h"
#include "cairn/blocks/trainer.h"
#include "cairn/core/autograd.h"
#include "cairn/core/cuda_context.h"
#include "cairn/base/error.h"

namespace cairn {
namespace {

float max_abs_difference(const Tensor& a, const Tensor& b) {
  if (a.dtype() == DType::kInt32) {  // an int32 state (BatchNorm's num_batches_tracked)
    const std::vector<int32_t> x = a.to_int32_vector(), y = b.to_int32_vector();
    float worst = 0.0f;
    for (size_t i = 0; i < x.size(); ++i) {
      worst = std::max(worst, std::abs(float(int64_t(x[i]) - int64_t(y[i]))));
    }
    return worst;
  }
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  float worst = 0.0f;
  for (size_t i = 0; i < x.size(); ++i) {
    const float difference = std::abs(x[i] - y[i]);
    if (!(difference <= worst)) worst = difference;  // NaN wins
  }
  return worst;
}

// Copies `src` into the static buffer `dst` the graph reads (same shape required: graphs are
// shape-static).
void refill(Tensor& dst, const Tensor& src, const char* what) {
  CAIRN_CHECK(src.shape() == dst.shape() && src.dtype() == dst.dtype(), "hybridize: ", what,
              " has shape ", shape_str(src.shape()), " ", dtype_name(src.dtype()),
              " but the captured graph was built for ", shape_str(dst.shape()), " ",
              dtype_name(dst.dtype()), "; a captured step needs static shapes");
  dst.copy_from(src);
}

std::atomic<uint64_t> g_captured_state_epoch{0};

}  // namespace

uint64_t captured_state_epoch() { return g_captured_state_epoch.load(std::memory_order_acquire); }
void captured_state_changed() { g_captured_state_epoch.fetch_add(1, std::memory_order_acq_rel); }

const char* hybrid_state_name(HybridState state) {
  switch (state) {
    case HybridState::kWarmingUp: return "warming up";
    case HybridState::kCaptured: return "captured";
    case HybridState::kEager: return "eager";
  }
  return "?";
}

// ---- CapturedStep ----

CapturedStep::CapturedStep(Body body, const Device& device, HybridizeOptions options,
                           ParameterDict params, Trainer* trainer)
    : body_(std::move(body)),
      device_(device),
      options_(options),
      params_(std::move(params)),
      trainer_(trainer) {
  CAIRN_CHECK(body_ != nullptr, "CapturedStep: no body");
  CAIRN_CHECK(!options_.check || params_.size() > 0,
              "CapturedStep: check mode needs the parameters");
  if (device_.is_cpu()) eager_reason_ = "on the CPU: CUDA graphs need a GPU";
}

HybridState CapturedStep::state() const {
  if (!eager_reason_.empty()) return HybridState::kEager;
  return graph_ != nullptr ? HybridState::kCaptured : HybridState::kWarmingUp;
}

void CapturedStep::run(const Tensor& x, const Tensor& y) {
  ++runs_;
  if (graph_ != nullptr && captured_state_epoch() != captured_epoch_) {
    // A parameter, slot or hyperparameter the graph baked in was replaced: capture again, now
    // (the tensors and host values it will read are all in place).
    graph_.reset();
    capture_and_run(x, y);
    return;
  }
  if (graph_ != nullptr) {
    if (!static_x_.same(x)) refill(static_x_, x, "the input");
    if (!static_y_.same(y)) refill(static_y_, y, "the labels");
    graph_->replay();
    return;
  }
  // The first run is the warm-up; an eager reason means capture is off for good.
  if (!eager_reason_.empty() || runs_ == 1) {
    body_(x, y);
    return;
  }
  capture_and_run(x, y);
}

void CapturedStep::capture_and_run(const Tensor& x, const Tensor& y) {
  // Static buffers are ordinary allocations made before capture: they outlive the graph's pool.
  static_x_ = x.clone();
  static_y_ = y.clone();

  NamedTensors values_before, trainer_before, eager_after;
  std::map<std::string, std::string> trainer_metadata;
  if (options_.check) {
    for (const auto& [name, parameter] : params_) {
      values_before.emplace_back(name, parameter->data().clone());
    }
    if (trainer_ != nullptr) {
      trainer_before = trainer_->state();
      trainer_metadata = trainer_->state_metadata();
    }
    body_(static_x_, static_y_);
    for (const auto& [name, parameter] : params_) {
      eager_after.emplace_back(name, parameter->data().clone());
    }
    for (const auto& [name, value] : values_before) params_.at(name)->data().copy_from(value);
    if (trainer_ != nullptr) trainer_->load_state(trainer_before, trainer_metadata);
  }

  // A capture runs no kernel, but the body's host bookkeeping (the trainer's counts, slots it
  // creates) moves as if it had: a failed capture must put that back before the eager run.
  std::optional<Trainer::Bookkeeping> bookkeeping;
  if (trainer_ != nullptr) bookkeeping = trainer_->bookkeeping();
  try {
    graph_ = cuda::Graph::capture(device_, [&] { body_(static_x_, static_y_); });
  } catch (const Error& error) {
    eager_reason_ = error.what();
    std::cerr << "cairn: hybridize: the training step stays eager: " << eager_reason_ << "\n";
    if (bookkeeping) trainer_->restore_bookkeeping(*bookkeeping);
    if (trainer_ != nullptr && options_.check)
      trainer_->load_state(trainer_before, trainer_metadata);
    body_(x, y);
    return;
  }
  // After the capture: what the body itself replaced (slots made at its first update) is in
  // the graph already.
  captured_epoch_ = captured_state_epoch();
  ++captures_;
  graph_->replay();

  if (options_.check) {
    float worst = 0.0f;
    std::string where;
    for (const auto& [name, value] : eager_after) {
      const float difference = max_abs_difference(params_.at(name)->data(), value);
      if (!(difference <= worst)) {
        worst = difference;
        where = name;
      }
    }
    CAIRN_CHECK(worst <= options_.tolerance,
                "hybridize check: the captured step differs from "
                "the eager step by ",
                worst, " at parameter '", where, "' (tolerance ", options_.tolerance, ")");
  }
}

// ---- HybridForward ----

HybridState HybridForward::state() const {
  if (!eager_reason().empty()) return HybridState::kEager;
  return last_state_;
}

void HybridForward::evict_least_recently_used() {
  auto oldest = by_shape_.end();
  for (auto it = by_shape_.begin(); it != by_shape_.end(); ++it) {
    if (it->second.graph != nullptr &&
        (oldest == by_shape_.end() || it->second.last_use < oldest->second.last_use)) {
      oldest = it;
    }
  }
  if (oldest != by_shape_.end()) by_shape_.erase(oldest);
}

std::string HybridForward::eager_reason() const {
  if (!eager_reason_.empty()) return eager_reason_;
  return last_call_on_cpu_ ? "on the CPU: CUDA graphs need a GPU" : "";
}

size_t HybridForward::graphs() const {
  size_t count = 0;
  for (const auto& [shape, entry] : by_shape_) count += entry.graph != nullptr;
  return count;
}

Tensor HybridForward::run(const std::string& block_name, const Tensor& x,
                          const std::function<Tensor(const Tensor&)>& forward) {
  // Graphs only for GPU inference: while recording, the tape needs the eager ops; inside an outer
  // capture, this block is simply part of that graph.
  last_call_on_cpu_ = x.device().is_cpu();
  if (!x.device().is_cuda() || autograd::is_recording() || !eager_reason_.empty() ||
      cuda::is_capturing(x.device())) {
    return forward(x);
  }
  if (captured_state_epoch() != captured_epoch_) {
    // Parameters were replaced since these graphs were captured: they would read freed memory.
    for (auto& [shape, entry] : by_shape_) entry.graph.reset();
    captured_epoch_ = captured_state_epoch();
  }
  // The mode is part of the key: a graph captured while training (dropout on, batch statistics)
  // is never replayed to predict, nor the other way round.
  const std::string key = shape_str(x.shape()) + dtype_name(x.dtype()) +
                          (autograd::is_training() ? " training" : " predicting");
  if (by_shape_.count(key) == 0 && graphs() >= kMaxGraphs) evict_least_recently_used();
  Entry& entry = by_shape_[key];
  ++entry.calls;
  entry.last_use = ++uses_;
  if (entry.graph != nullptr) {
    entry.input.copy_from(x);
    entry.graph->replay();
    last_state_ = HybridState::kCaptured;
    return entry.output.clone();
  }
  if (entry.calls == 1) {
    last_state_ = HybridState::kWarmingUp;
    return forward(x);  // warm-up: deferred shapes are fixed here
  }

  entry.input = x.clone();
  Tensor eager;
  if (options_.check) eager = forward(entry.input);
  try {
    entry.graph = cuda::Graph::capture(x.device(), [&] { entry.output = forward(entry.input); });
  } catch (const Error& error) {
    eager_reason_ = error.what();
    entry = Entry{};
    std::cerr << "cairn: hybridize: " << block_name << " stays eager: " << eager_reason_ << "\n";
    return forward(x);
  }
  // Deferred parameters completing inside this capture moved the epoch: they are in the graph.
  captured_epoch_ = captured_state_epoch();
  last_state_ = HybridState::kCaptured;
  entry.graph->replay();
  if (options_.check) {
    const float difference = max_abs_difference(entry.output, eager);
    CAIRN_CHECK(difference <= options_.tolerance, "hybridize check: ", block_name,
                ": the captured forward differs from the eager one by ", difference, " (tolerance ",
                options_.tolerance, ")");
  }
  return entry.output.clone();
}

}  // namespace cairn
