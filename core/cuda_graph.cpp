#include "cairn/core/cuda_graph.h"

#include <cuda_runtime_api.h>

#include "cairn/core/allocator.h"
#include "cairn/core/cuda_context.h"
#include "cairn/base/error.h"

namespace cairn::cuda {
namespace {
thread_local const void* t_capture_pool = nullptr;

// Sets the thread's capture pool for a scope, restoring the previous one on every exit path.
class PoolScope {
 public:
  explicit PoolScope(const void* pool) : previous_(t_capture_pool) { t_capture_pool = pool; }
  ~PoolScope() { t_capture_pool = previous_; }

 private:
  const void* previous_;
};
}  // namespace

const void* capture_pool() { return t_capture_pool; }

std::unique_ptr<Graph> Graph::capture(const Device& device, const std::function<void()>& body) {
  CAIRN_CHECK(device.is_cuda(), "Graph::capture: CUDA graphs need a CUDA device, got ", device);
  std::unique_ptr<Graph> graph(new Graph(device));
  DeviceGuard guard(device);
  cudaStream_t stream = current_stream(device);
  CachingAllocator& allocator = cuda_allocator(device.index());
  // From here until the capture ends the allocator frees nothing (see allocator.h).
  allocator.begin_capture(graph.get());
  // Relaxed: allocating new memory (cudaMalloc) is allowed while the pool warms up.
  // (On any throw from here, ~Graph releases the pool, which also ends its capture.)
  CAIRN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
  cudaGraph_t captured = nullptr;
  try {
    PoolScope pool(graph.get());
    body();
  } catch (...) {
    // Leave capture mode whatever happened, so that the stream works eagerly again.
    cudaStreamEndCapture(stream, &captured);
    if (captured != nullptr) cudaGraphDestroy(captured);
    cudaGetLastError();
    throw;  // ~Graph gives back the pool (and any workspace made for it)
  }
  const cudaError_t ended = cudaStreamEndCapture(stream, &captured);
  allocator.end_capture(graph.get());
  CAIRN_CUDA_CHECK(ended);
  graph->graph_ = captured;
  size_t nodes = 0;
  CAIRN_CUDA_CHECK(cudaGraphGetNodes(captured, nullptr, &nodes));
  graph->nodes_ = nodes;
  cudaGraphExec_t exec = nullptr;
  CAIRN_CUDA_CHECK(cudaGraphInstantiate(&exec, captured, 0));
  graph->exec_ = exec;
  cudaEvent_t done = nullptr;
  CAIRN_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  graph->done_ = done;
  return graph;
}

void Graph::replay() {
  DeviceGuard guard(device_);
  const cudaStream_t stream = current_stream(device_);
  CAIRN_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), stream));
  CAIRN_CHECK_LAUNCH("cudaGraphLaunch", stream);
  // Inside an outer capture the launch is part of that graph: no event can mark it here.
  if (!is_capturing(device_)) {
    CAIRN_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(done_), stream));
  }
}

void Graph::synchronize() {
  DeviceGuard guard(device_);
  CAIRN_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(done_)));
}

Graph::~Graph() {
  // Destructors never throw: statuses are ignored. Pending replays finish before the pool's memory
  // is given back; only they are waited for, not the whole device (another thread may be
  // capturing, and a device-wide synchronisation would break its capture).
  DeviceGuard guard(device_);
  if (done_ != nullptr) {
    CAIRN_CUDA_REPORT(cudaEventSynchronize(static_cast<cudaEvent_t>(done_)));
    CAIRN_CUDA_REPORT(cudaEventDestroy(static_cast<cudaEvent_t>(done_)));
  }
  if (exec_ != nullptr) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  if (graph_ != nullptr) cudaGraphDestroy(static_cast<cudaGraph_t>(graph_));
  release_graph_workspace(device_, this);
  cuda_allocator(device_.index()).release_pool(this);
}

}  // namespace cairn::cuda
