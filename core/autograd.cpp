#include "cairn/core/autograd.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "cairn/base/error.h"
#include "cairn/core/numerics.h"
#include "cairn/core/ops.h"
#include "cairn/core/storage.h"

namespace cairn::autograd {
namespace {

thread_local bool t_recording = false;
thread_local bool t_training = false;

// Nodes reachable from `root`, each after every node that consumes its output. Iterative, because
// a graph from a long data-dependent loop can be deeper than the call stack.
std::vector<Node*> consumers_first_order(Node* root) {
  std::vector<Node*> post_order;
  std::unordered_set<Node*> visited;
  std::vector<std::pair<Node*, size_t>> stack{{root, 0}};
  visited.insert(root);
  while (!stack.empty()) {
    auto& [node, next_input] = stack.back();
    if (next_input < node->inputs.size()) {
      Node* child = node->inputs[next_input++].impl()->grad_fn.get();
      if (child != nullptr && visited.insert(child).second) stack.push_back({child, 0});
    } else {
      post_order.push_back(node);
      stack.pop_back();
    }
  }
  return {post_order.rbegin(), post_order.rend()};
}

void accumulate(std::unordered_map<const TensorImpl*, Tensor>& grads, const TensorImpl* key,
                const Tensor& grad) {
  auto found = grads.find(key);
  if (found == grads.end()) {
    grads.emplace(key, grad);
  } else {
    found->second = ops::add(found->second, grad);
  }
}

// Writes a leaf's summed gradient where it belongs without a copy, when that is safe: on the CPU,
// a gradient that nothing else holds (computed by the backward ops into a buffer of its own)
// trades buffers with the leaf's grad tensor, whose old buffer goes back to the cache. False
// (the caller copies) otherwise, and always on the GPU: a captured CUDA graph replays with the
// grad buffer's address, which must not change.
bool move_into_grad(TensorImpl& grad, const Tensor& fresh) {
  const std::shared_ptr<TensorImpl>& source = fresh.impl();
  if (source.use_count() != 1 || source->storage == nullptr || grad.storage == nullptr) {
    return false;
  }
  const Storage& from = *source->storage;
  const Storage& to = *grad.storage;
  // A second holder of either buffer (a view, a detached alias) would see the other's values.
  const bool sole_owners = source->storage.use_count() == 1 && grad.storage.use_count() == 1;
  if (!sole_owners || !from.owned() || !to.owned() || !from.device().is_cpu() ||
      !to.device().is_cpu() || from.bytes() != to.bytes() || source->dtype != grad.dtype) {
    return false;
  }
  std::swap(grad.storage, source->storage);
  return true;
}

// Applies a leaf's GradReq to the summed gradient, then runs the leaf's grad-ready hooks.
void finalize_leaf(TensorImpl* leaf, const Tensor& sum) {
  if (leaf->grad == nullptr) return;  // kNull leaves never get here; defensive
  Tensor grad(leaf->grad);
  if (leaf->grad_req == GradReq::kAdd) {
    const Tensor total = ops::add(grad, sum);
    if (!move_into_grad(*leaf->grad, total)) grad.copy_from(total);
  } else if (!move_into_grad(*leaf->grad, sum)) {
    grad.copy_from(sum);
  }
  // A copy: a hook may add or remove hooks.
  const auto hooks = leaf->grad_ready_hooks;
  for (const auto& hook : hooks) hook.second();
}

// Moves the nodes that only `inputs` keep alive into `doomed`, so that they die in a loop rather
// than inside each other's destructors.
void release_inputs(std::vector<Tensor>& inputs, std::vector<std::shared_ptr<Node>>& doomed) {
  for (Tensor& input : inputs) {
    const std::shared_ptr<TensorImpl>& impl = input.impl();
    if (impl != nullptr && impl.use_count() == 1 && impl->grad_fn != nullptr &&
        impl->grad_fn.use_count() == 1) {
      doomed.push_back(std::move(impl->grad_fn));
    }
  }
  inputs.clear();
}

}  // namespace

void add_grad_ready_hook(const Tensor& leaf, const void* owner, std::function<void()> hook) {
  CAIRN_CHECK(leaf.defined() && leaf.is_leaf() && leaf.grad_req() != GradReq::kNull,
              "add_grad_ready_hook: the tensor must be a leaf that receives a gradient");
  leaf.impl()->grad_ready_hooks.emplace_back(owner, std::move(hook));
}

void remove_grad_ready_hooks(const Tensor& leaf, const void* owner) {
  if (!leaf.defined()) return;
  auto& hooks = leaf.impl()->grad_ready_hooks;
  hooks.erase(std::remove_if(hooks.begin(), hooks.end(),
                             [owner](const auto& hook) { return hook.first == owner; }),
              hooks.end());
}

Node::~Node() {
  // The closure first: what it captured are (detached copies of) the inputs, which the inputs
  // still hold, so this never ends the last reference to a node.
  backward = nullptr;
  std::vector<std::shared_ptr<Node>> doomed;
  release_inputs(inputs, doomed);
  while (!doomed.empty()) {
    std::shared_ptr<Node> node = std::move(doomed.back());
    doomed.pop_back();
    node->backward = nullptr;
    release_inputs(node->inputs, doomed);
    // `node` dies here with no inputs left: its own destructor has nothing to recurse into.
  }
}

RecordScope::RecordScope(Mode mode) : previous_recording_(t_recording), previous_training_(t_training) {
  t_recording = true;
  t_training = mode == Mode::kTraining;
}
RecordScope::~RecordScope() {
  t_recording = previous_recording_;
  t_training = previous_training_;
}
PauseScope::PauseScope(Mode mode) : previous_recording_(t_recording), previous_training_(t_training) {
  t_recording = false;
  t_training = mode == Mode::kTraining;
}
PauseScope::~PauseScope() {
  t_recording = previous_recording_;
  t_training = previous_training_;
}
TrainModeScope::TrainModeScope() : previous_(t_training) { t_training = true; }
TrainModeScope::~TrainModeScope() { t_training = previous_; }
PredictModeScope::PredictModeScope() : previous_(t_training) { t_training = false; }
PredictModeScope::~PredictModeScope() { t_training = previous_; }

bool is_recording() { return t_recording; }
bool is_training() { return t_training; }

bool should_record(const std::vector<Tensor>& inputs) {
  if (!t_recording) return false;
  for (const Tensor& input : inputs) {
    if (input.requires_grad()) return true;
  }
  return false;
}

void record(const char* op, std::vector<Tensor> inputs, Tensor& output, BackwardFn backward) {
  // Every recorded-or-not op passes through here with its result: the numerics check's hook.
  detail::check_finite(op, inputs, output);
  if (!should_record(inputs)) return;
  auto node = std::make_shared<Node>();
  node->op = op;
  node->inputs = std::move(inputs);
  node->backward = std::move(backward);
  node->output = output.impl().get();
  output.impl()->grad_fn = std::move(node);
}

void backward(const Tensor& root, const Tensor& head_grad) {
  CAIRN_CHECK(root.defined(), "backward: the tensor is undefined");
  Tensor head = head_grad;
  if (!head.defined()) {
    CAIRN_CHECK(root.numel() == 1, "backward: a head gradient is needed for a tensor of shape ",
                shape_str(root.shape()), " (only one-element tensors default to 1)");
    head = Tensor::ones(root.shape(), root.device());
  }
  CAIRN_CHECK(head.shape() == root.shape(), "backward: head gradient shape ",
              shape_str(head.shape()), " does not match ", shape_str(root.shape()));
  CAIRN_CHECK(head.device() == root.device(), "backward: head gradient on ", head.device(),
              ", tensor on ", root.device());
  CAIRN_CHECK(head.dtype() == DType::kFloat32 && root.dtype() == DType::kFloat32,
              "backward: gradients are float32; the tensor is ", dtype_name(root.dtype()),
              " and the head gradient ", dtype_name(head.dtype()));

  PauseScope no_recording;  // the backward ops themselves are not recorded
  std::unordered_map<const TensorImpl*, Tensor> grads;
  std::unordered_map<const TensorImpl*, Tensor> leaf_grads;

  Node* root_node = root.impl()->grad_fn.get();
  if (root_node == nullptr) {
    CAIRN_CHECK(root.impl()->grad_req != GradReq::kNull,
                "backward: the tensor was not computed inside autograd::RecordScope from anything "
                "that needs a gradient");
    finalize_leaf(root.impl().get(), head);
  } else {
    grads.emplace(root.impl().get(), head);
    const std::vector<Node*> order = consumers_first_order(root_node);
    // A leaf's gradient is final once every node that takes it has run: count those uses, so that
    // each leaf is finalised (and its hooks run) as early as possible.
    std::unordered_map<const TensorImpl*, int64_t> uses_left;
    for (Node* node : order) {
      for (const Tensor& input : node->inputs) {
        if (input.requires_grad() && input.impl()->grad_fn == nullptr)
          ++uses_left[input.impl().get()];
      }
    }
    auto release_uses = [&](Node* node) {
      for (const Tensor& input : node->inputs) {
        if (!input.requires_grad() || input.impl()->grad_fn != nullptr) continue;
        TensorImpl* leaf = input.impl().get();
        if (--uses_left[leaf] != 0) continue;
        auto sum = leaf_grads.find(leaf);
        if (sum == leaf_grads.end()) continue;
        finalize_leaf(leaf, sum->second);
        leaf_grads.erase(sum);
      }
    };
    for (Node* node : order) {
      auto found = grads.find(node->output);
      if (found == grads.end()) {  // nothing flowed into this node
        release_uses(node);
        continue;
      }
      const Tensor grad_output = found->second;
      grads.erase(found);  // free intermediate gradients as soon as they are used
      std::vector<Tensor> input_grads = node->backward(grad_output);
      CAIRN_CHECK(input_grads.size() == node->inputs.size(), "backward of ", node->op,
                  ": returned ", input_grads.size(), " gradients for ", node->inputs.size(),
                  " inputs");
      for (size_t i = 0; i < node->inputs.size(); ++i) {
        const Tensor& input = node->inputs[i];
        if (!input.requires_grad() || !input_grads[i].defined()) continue;
        CAIRN_CHECK(input_grads[i].shape() == input.shape(), "backward of ", node->op,
                    ": gradient ", shape_str(input_grads[i].shape()), " for input ", i,
                    " of shape ", shape_str(input.shape()));
        TensorImpl* impl = input.impl().get();
        if (impl->grad_fn != nullptr) {
          accumulate(grads, impl, input_grads[i]);
        } else {
          accumulate(leaf_grads, impl, input_grads[i]);
        }
      }
      input_grads.clear();  // so that a leaf's gradient held only by leaf_grads can be moved in
      release_uses(node);
    }
  }
}

}  // namespace cairn::autograd
