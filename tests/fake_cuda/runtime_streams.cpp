// The fake CUDA runtime's streams, events, stream capture and graphs (see runtime.cpp).
#include "cairn/tests/fake_cuda/runtime_internal.h"

using namespace cairn::fake_cuda;  // NOLINT: this file implements a C API

extern "C" {

// -- Streams --

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  if (stream == nullptr || (flags & ~unsigned(cudaStreamNonBlocking)) != 0) {
    return fail(cudaErrorInvalidValue);
  }
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  reap_retired_locked(s);
  CUstream_st* created =
      new_stream_locked(s, t_device, (flags & cudaStreamNonBlocking) == 0, false);
  s.streams.insert(created);
  *stream = created;
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}

cudaError_t cudaStreamDestroy(cudaStream_t handle) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (handle == nullptr || handle == cudaStreamLegacy || handle == cudaStreamPerThread ||
      s.streams.count(handle) == 0) {
    return fail(cudaErrorInvalidResourceHandle);
  }
  if (handle->capture) {
    invalidate(handle->capture, "cudaStreamDestroy of a capturing stream");
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  // Returns at once; the queued work still runs (as on a device), then the worker ends.
  s.streams.erase(handle);
  {
    std::lock_guard<std::mutex> queue_lock(handle->mutex);
    handle->stop = true;
  }
  handle->wake.notify_one();
  handle->worker.detach();
  s.retired.push_back(handle);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t handle) {
  State& s = state();
  std::unique_lock<std::mutex> lock(s.mutex);
  cudaError_t error = cudaSuccess;
  CUstream_st* stream = lookup_stream_locked(s, handle, &error);
  if (stream == nullptr) return fail(error);
  if (stream->capture) {
    invalidate(stream->capture, "cudaStreamSynchronize of the capturing stream");
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  if (error = check_unsafe_call_locked(s, "cudaStreamSynchronize"); error != cudaSuccess) {
    return fail(error);
  }
  if (stream->legacy) {
    for (const CompletionPtr& tail : device_tails_locked(s, stream->device))
      wait_unlocked(lock, tail);
  }
  wait_unlocked(lock, stream->tail);
  error = sticky_locked(s, stream->device);
  return error == cudaSuccess ? error : fail(error);
}

cudaError_t cudaStreamQuery(cudaStream_t handle) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  cudaError_t error = cudaSuccess;
  CUstream_st* stream = lookup_stream_locked(s, handle, &error);
  if (stream == nullptr) return fail(error);
  if (stream->capture) {
    invalidate(stream->capture, "cudaStreamQuery of the capturing stream");
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  return stream->tail && !stream->tail->is_done() ? cudaErrorNotReady : cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t handle, cudaEvent_t event, unsigned int flags) {
  if (flags != 0) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  cudaError_t error = cudaSuccess;
  CUstream_st* stream = lookup_stream_locked(s, handle, &error);
  if (stream == nullptr) return fail(error);
  if (s.events.count(event) == 0) return fail(cudaErrorInvalidResourceHandle);
  if (event->capture) {
    // An event recorded inside a capture: waiting forks the capture into this stream.
    if (stream->capture && stream->capture != event->capture) {
      invalidate(stream->capture, "waiting on another capture's event");
      return fail(cudaErrorStreamCaptureIsolation);
    }
    if (!stream->capture) {
      if (stream->legacy) return fail(cudaErrorStreamCaptureImplicit);
      stream->capture = event->capture;
      stream->capture->last_node.emplace(stream, -1);
    }
    if (stream == event->capture->origin) {
      int64_t& joined = event->capture->joined[event->captured_stream];
      joined = std::max(joined, event->captured_position);
    }
    return cudaSuccess;
  }
  if (stream->capture) {
    // A dependency from outside the capture cannot enter the graph.
    invalidate(stream->capture, "waiting on an event recorded outside the capture");
    return fail(cudaErrorStreamCaptureIsolation);
  }
  if (!event->last) return cudaSuccess;  // never recorded: nothing to wait for
  // An op that does nothing but wait, in this stream's order.
  CompletionPtr recorded = event->last;
  error = enqueue_locked(s, stream, "cudaStreamWaitEvent", [recorded] { recorded->wait(); });
  return error == cudaSuccess ? error : fail(error);
}

cudaError_t cudaStreamGetFlags(cudaStream_t handle, unsigned int* flags) {
  if (flags == nullptr) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  cudaError_t error = cudaSuccess;
  CUstream_st* stream = lookup_stream_locked(s, handle, &error);
  if (stream == nullptr) return fail(error);
  *flags = stream->blocking || stream->legacy ? cudaStreamDefault : cudaStreamNonBlocking;
  return cudaSuccess;
}

// -- Events --

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  constexpr unsigned kKnown =
      cudaEventBlockingSync | cudaEventDisableTiming | cudaEventInterprocess;
  if (event == nullptr || (flags & ~kKnown) != 0) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  auto* created = new CUevent_st();
  created->flags = flags;
  s.events.insert(created);
  *event = created;
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, 0); }

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.events.erase(event) == 0) return fail(cudaErrorInvalidResourceHandle);
  delete event;  // queued waits hold the completion itself, not the event
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t handle) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.events.count(event) == 0) return fail(cudaErrorInvalidResourceHandle);
  cudaError_t error = cudaSuccess;
  CUstream_st* stream = lookup_stream_locked(s, handle, &error);
  if (stream == nullptr) return fail(error);
  if (stream->capture) {
    if (stream->capture->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
    event->capture = stream->capture;
    event->captured_stream = stream;
    event->captured_position = stream->capture->last_node[stream];
    event->last = nullptr;
    return cudaSuccess;
  }
  event->capture = nullptr;
  auto marker = std::make_shared<Completion>();
  error = enqueue_locked(s, stream, "cudaEventRecord", [marker] { marker->finish(); });
  if (error != cudaSuccess) return fail(error);
  event->last = marker;
  return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.events.count(event) == 0) return fail(cudaErrorInvalidResourceHandle);
  if (event->capture) return fail(cudaErrorCapturedEvent);
  return event->last && !event->last->is_done() ? cudaErrorNotReady : cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  State& s = state();
  std::unique_lock<std::mutex> lock(s.mutex);
  if (s.events.count(event) == 0) return fail(cudaErrorInvalidResourceHandle);
  if (event->capture) return fail(cudaErrorCapturedEvent);
  if (cudaError_t error = check_unsafe_call_locked(s, "cudaEventSynchronize");
      error != cudaSuccess) {
    return fail(error);
  }
  CompletionPtr last = event->last;
  wait_unlocked(lock, last);
  return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (ms == nullptr) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.events.count(start) == 0 || s.events.count(end) == 0) {
    return fail(cudaErrorInvalidResourceHandle);
  }
  if (((start->flags | end->flags) & cudaEventDisableTiming) != 0) {
    return fail(cudaErrorInvalidResourceHandle);
  }
  if (start->capture || end->capture) return fail(cudaErrorCapturedEvent);
  if (!start->last || !end->last) return fail(cudaErrorInvalidResourceHandle);
  if (!start->last->is_done() || !end->last->is_done()) return fail(cudaErrorNotReady);
  *ms = std::chrono::duration<float, std::milli>(end->last->when - start->last->when).count();
  return cudaSuccess;
}

// -- Capture and graphs --

cudaError_t cudaStreamBeginCapture(cudaStream_t handle, cudaStreamCaptureMode mode) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (handle == nullptr || handle == cudaStreamLegacy)
    return fail(cudaErrorStreamCaptureUnsupported);
  cudaError_t error = cudaSuccess;
  CUstream_st* stream = lookup_stream_locked(s, handle, &error);
  if (stream == nullptr) return fail(error);
  if (stream->capture) return fail(cudaErrorIllegalState);
  if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
      mode != cudaStreamCaptureModeRelaxed) {
    return fail(cudaErrorInvalidValue);
  }
  auto capture = std::make_shared<Capture>();
  capture->mode = mode;
  capture->thread = std::this_thread::get_id();
  capture->origin = stream;
  capture->last_node[stream] = -1;
  stream->capture = capture;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t handle, cudaGraph_t* graph) {
  if (graph == nullptr) return fail(cudaErrorInvalidValue);
  *graph = nullptr;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  cudaError_t error = cudaSuccess;
  CUstream_st* stream = lookup_stream_locked(s, handle, &error);
  if (stream == nullptr) return fail(error);
  std::shared_ptr<Capture> capture = stream->capture;
  if (!capture) return fail(cudaErrorIllegalState);
  if (capture->origin != stream) return fail(cudaErrorStreamCaptureUnmatched);
  if (capture->mode != cudaStreamCaptureModeRelaxed &&
      capture->thread != std::this_thread::get_id()) {
    return fail(cudaErrorStreamCaptureWrongThread);
  }
  bool unjoined = false;
  for (auto& [member, last] : capture->last_node) {
    if (member == stream || last < 0) continue;
    auto joined = capture->joined.find(member);
    if (joined == capture->joined.end() || joined->second < last) unjoined = true;
  }
  // Every stream leaves the capture, whatever the outcome.
  for (auto& [member, last] : capture->last_node) member->capture = nullptr;
  if (capture->invalidated) return fail(cudaErrorStreamCaptureInvalidated);
  if (unjoined) return fail(cudaErrorStreamCaptureUnjoined);
  auto* created = new CUgraph_st();
  created->nodes = std::move(capture->nodes);
  s.graphs.insert(created);
  *graph = created;
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t handle, cudaStreamCaptureStatus* status) {
  if (status == nullptr) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  cudaError_t error = cudaSuccess;
  CUstream_st* stream = lookup_stream_locked(s, handle, &error);
  if (stream == nullptr) return fail(error);
  if (stream->legacy) {
    bool blocking_capture = false;
    for (CUstream_st* other : s.streams) {
      blocking_capture |= other->blocking && other->capture && other->device == stream->device;
    }
    if (blocking_capture) return fail(cudaErrorStreamCaptureImplicit);
  }
  if (!stream->capture) {
    *status = cudaStreamCaptureStatusNone;
  } else {
    *status = stream->capture->invalidated ? cudaStreamCaptureStatusInvalidated
                                           : cudaStreamCaptureStatusActive;
  }
  return cudaSuccess;
}

cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t* nodes, size_t* count) {
  if (count == nullptr) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.graphs.count(graph) == 0) return fail(cudaErrorInvalidValue);
  if (nodes != nullptr) {
    const size_t n = std::min(*count, graph->nodes.size());
    for (size_t i = 0; i < n; ++i) {
      nodes[i] = reinterpret_cast<cudaGraphNode_t>(&graph->nodes[i]);  // opaque handles
    }
  }
  *count = graph->nodes.size();
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                 unsigned long long flags) {
  if (exec == nullptr) return fail(cudaErrorInvalidValue);
  if (flags != 0) {
    report("cudaGraphInstantiate: flags are not modelled by the fake device");
    return fail(cudaErrorNotSupported);
  }
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.graphs.count(graph) == 0) return fail(cudaErrorInvalidValue);
  auto* created = new CUgraphExec_st();
  created->nodes = std::make_shared<const std::vector<Node>>(graph->nodes);
  s.execs.insert(created);
  *exec = created;
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t handle) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.execs.count(exec) == 0) return fail(cudaErrorInvalidResourceHandle);
  cudaError_t error = cudaSuccess;
  CUstream_st* stream = lookup_stream_locked(s, handle, &error);
  if (stream == nullptr) return fail(error);
  if (stream->device != t_device) return fail(cudaErrorInvalidResourceHandle);
  if (stream->capture) {
    // A graph launched into a capture becomes part of it.
    for (const Node& node : *exec->nodes) {
      error = enqueue_locked(s, stream, node.what.c_str(), node.work);
      if (error != cudaSuccess) return fail(error);
    }
    return cudaSuccess;
  }
  // The nodes run in capture order (a valid order of the captured dependencies), as one op.
  std::shared_ptr<const std::vector<Node>> nodes = exec->nodes;
  error = enqueue_locked(s, stream, "cudaGraphLaunch", [nodes] {
    for (const Node& node : *nodes) node.work();
  });
  return error == cudaSuccess ? error : fail(error);
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.execs.erase(exec) == 0) return fail(cudaErrorInvalidResourceHandle);
  delete exec;  // launches still queued hold the nodes
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.graphs.erase(graph) == 0) return fail(cudaErrorInvalidValue);
  delete graph;
  return cudaSuccess;
}

}  // extern "C"
