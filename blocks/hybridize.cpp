#include "cairn/blocks/hybridize.h"

#include <cmath>
#include <iostream>

#include "cairn/blocks/trainer.h"
#include "cairn/core/autograd.h"
#include "cairn/core/cuda_context.h"
#include "cairn/core/error.h"

namespace cairn {
namespace {

float max_abs_difference(const Tensor& a, const Tensor& b) {
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

}  // namespace

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

void CapturedStep::run(const Tensor& x, const Tensor& y) {
  ++runs_;
  if (graph_ != nullptr) {
    CAIRN_CHECK(trainer_ == nullptr || trainer_->learning_rate() == captured_learning_rate_,
                "CapturedStep: the learning rate changed from ", captured_learning_rate_, " to ",
                trainer_->learning_rate(),
                " after the step was captured; the graph would keep "
                "the old one (make a new CapturedStep)");
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

  if (trainer_ != nullptr) captured_learning_rate_ = trainer_->learning_rate();
  try {
    graph_ = cuda::Graph::capture(device_, [&] { body_(static_x_, static_y_); });
  } catch (const Error& error) {
    eager_reason_ = error.what();
    std::cerr << "cairn: hybridize: the training step stays eager: " << eager_reason_ << "\n";
    if (trainer_ != nullptr && options_.check)
      trainer_->load_state(trainer_before, trainer_metadata);
    body_(x, y);
    return;
  }
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
  Entry& entry = by_shape_[shape_str(x.shape()) + dtype_name(x.dtype())];
  ++entry.calls;
  if (entry.graph != nullptr) {
    entry.input.copy_from(x);
    entry.graph->replay();
    return entry.output.clone();
  }
  if (entry.calls == 1) return forward(x);  // warm-up: deferred shapes are fixed here

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
