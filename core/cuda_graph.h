// CUDA graph capture: record the work a function queues on a device's stream once, replay it
// with one launch afterwards (cairn's hybridize()).
//
// Memory allocated while capturing comes from a pool private to the graph: the graph's kernels
// keep using those addresses on every replay, so no other work may ever be handed them (an eager
// block freed during the capture joins the pool too; emptying the cache spares live pools and is
// refused during a capture: see allocator.h). A
// function that waits for the device from the host (item(), to_host(), a `while` on a norm)
// cannot be captured: capture() then throws a cairn::Error naming the op, and the stream is left
// usable for eager work.
#pragma once

#include <functional>
#include <memory>

#include "cairn/core/device.h"

namespace cairn::cuda {

class Graph {
 public:
  // Captures what `body` queues on current_stream(device). Nothing runs during capture.
  static std::unique_ptr<Graph> capture(const Device& device, const std::function<void()>& body);
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  void replay();  // on current_stream(device), asynchronously
  // Waits for the replays queued so far (not for anything else on the device).
  void synchronize();
  const Device& device() const { return device_; }
  size_t nodes() const { return nodes_; }

 private:
  explicit Graph(const Device& device) : device_(device) {}
  Device device_;
  void* graph_ = nullptr;  // cudaGraph_t
  void* exec_ = nullptr;   // cudaGraphExec_t
  void* done_ = nullptr;   // cudaEvent_t recorded after each replay: what ~Graph waits for
  size_t nodes_ = 0;
};

// The allocation key in force on this thread: a capturing graph's private pool, else null (the
// stream is the key). Used by Storage::allocate.
const void* capture_pool();

}  // namespace cairn::cuda
