#include "cairn/core/cuda_context.h"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <array>
#include <atomic>
#include <map>
#include <mutex>

#include "cairn/core/allocator.h"
#include "cairn/core/cuda_graph.h"
#include "cairn/base/error.h"

namespace cairn::cuda {
namespace {

constexpr int kMaxDevices = 64;

struct DeviceState {
  std::mutex create_mutex;  // guards creation and shutdown
  std::atomic<bool> created{false};
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cublasLtHandle_t lt = nullptr;
  std::mutex blas_mutex;  // held by a BlasLease: binding and calling the handle
  // cuBLAS workspaces per stream (the handle is one per device), from cairn's allocator on that
  // stream, so each is only ever used in that stream's order. Guarded by blas_mutex.
  std::map<cudaStream_t, void*> blas_workspaces;
  // While a graph is captured, its cuBLAS calls get a workspace of the graph's own, from its
  // private pool: replays, on whichever stream, then never share memory with eager cuBLAS calls
  // on the capture stream. Freed with the graph (release_graph_workspace).
  std::map<const void*, void*> graph_workspaces;
  // Live StreamGuards per foreign stream: the last one to end gives the stream's workspace back,
  // so that streams an application creates and destroys do not each keep 32 MiB until shutdown.
  std::map<cudaStream_t, int> guards;
  size_t blas_workspace_bytes = 0;
};

std::atomic<kernels::MatmulPrecision> g_precision{kernels::MatmulPrecision::kFloat32};
std::atomic<bool> g_deterministic{true};

// Deliberately leaked: destroying streams and handles from a static destructor would race the
// CUDA runtime's own teardown at exit. shutdown() frees them on request.
std::array<DeviceState, kMaxDevices>& device_states() {
  static auto* states = new std::array<DeviceState, kMaxDevices>();
  return *states;
}

struct StreamOverride {
  bool active = false;
  cudaStream_t stream = nullptr;
};
thread_local std::array<StreamOverride, kMaxDevices> t_overrides;

// cuBLAS's recommended workspace: 32 MiB on Hopper and later, 4 MiB before.
size_t blas_workspace_bytes(const Device& device) {
  int major = 0;
  CAIRN_CUDA_CHECK(
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device.index()));
  return size_t(major >= 9 ? 32 : 4) << 20;
}

DeviceState& state_for(const Device& device) {
  CAIRN_CHECK(device.is_cuda(), "cuda context: ", device, " is not a CUDA device");
  CAIRN_CHECK(device.index() < cuda_device_count(), "cuda context: ", device, " is not available (",
              cuda_device_count(), " CUDA devices; ", cuda_unavailable_reason(), ")");
  DeviceState& state = device_states()[device.index()];
  if (state.created.load(std::memory_order_acquire)) return state;
  std::lock_guard<std::mutex> lock(state.create_mutex);
  if (!state.created.load(std::memory_order_relaxed)) {
    DeviceGuard guard(device);
    if (state.stream == nullptr) {
      CAIRN_CUDA_CHECK(cudaStreamCreateWithFlags(&state.stream, cudaStreamNonBlocking));
    }
    if (state.blas == nullptr) CAIRN_CUBLAS_CHECK(cublasCreate(&state.blas));
    if (state.lt == nullptr) CAIRN_CUBLAS_CHECK(cublasLtCreate(&state.lt));
    state.blas_workspace_bytes = blas_workspace_bytes(device);
    state.created.store(true, std::memory_order_release);
  }
  return state;
}

}  // namespace

Stream current_stream(const Device& device) {
  DeviceState& state = state_for(device);
  const StreamOverride& override_ = t_overrides[device.index()];
  return override_.active ? override_.stream : state.stream;
}

BlasLease::BlasLease(const Device& device) {
  DeviceState& state = state_for(device);
  const cudaStream_t stream = current_stream(device);
  lock_ = std::unique_lock<std::mutex>(state.blas_mutex);
  const void* pool = capture_pool();
  void*& workspace = pool != nullptr ? state.graph_workspaces[pool] : state.blas_workspaces[stream];
  const size_t workspace_bytes = state.blas_workspace_bytes;
  if (workspace == nullptr) {
    // Eager calls: keyed by the stream, used in its order. Captured calls: the graph's own.
    workspace = cuda_allocator(device.index())
                    .allocate(workspace_bytes, pool != nullptr ? pool : static_cast<const void*>(stream));
  }
  // cublasSetStream resets the workspace to cuBLAS's own pool, so the workspace comes after it.
  CAIRN_CUBLAS_CHECK(cublasSetStream(state.blas, stream));
  CAIRN_CUBLAS_CHECK(cublasSetWorkspace(state.blas, workspace, workspace_bytes));
  CAIRN_CUBLAS_CHECK(cublasSetMathMode(
      state.blas, g_precision.load() == kernels::MatmulPrecision::kTf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                        : CUBLAS_DEFAULT_MATH));
  CAIRN_CUBLAS_CHECK(cublasSetAtomicsMode(
      state.blas, g_deterministic.load() ? CUBLAS_ATOMICS_NOT_ALLOWED : CUBLAS_ATOMICS_ALLOWED));
  handle_ = state.blas;
}

void empty_cache(const Device& device) {
  CAIRN_CHECK(device.is_cuda(), "empty_cache: ", device, " is not a CUDA device");
  cuda_allocator(device.index()).empty_cache();
}

void release_graph_workspace(const Device& device, const void* pool) noexcept {
  if (!device.is_cuda() || device.index() >= kMaxDevices) return;
  DeviceState& state = device_states()[device.index()];
  if (!state.created.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> lock(state.blas_mutex);
  auto found = state.graph_workspaces.find(pool);
  if (found == state.graph_workspaces.end()) return;
  cuda_allocator(device.index()).deallocate(found->second);  // back into the graph's pool
  state.graph_workspaces.erase(found);
}

kernels::LtHandle lt_handle(const Device& device) {
  return reinterpret_cast<kernels::LtHandle>(state_for(device).lt);
}

DeviceGuard::DeviceGuard(const Device& device) {
  if (!device.is_cuda()) return;
  CAIRN_CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != device.index()) {
    CAIRN_CUDA_CHECK(cudaSetDevice(device.index()));
  } else {
    previous_ = -1;
  }
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);  // destructors never throw
}

StreamGuard::StreamGuard(const Device& device, Stream stream)
    : device_index_(device.index()), stream_(stream) {
  DeviceState& state = state_for(device);  // validates the device
  foreign_ = stream != state.stream;
  if (foreign_) {
    cuda_allocator(device_index_).guard_stream(stream);
    std::lock_guard<std::mutex> lock(state.blas_mutex);
    ++state.guards[stream];
  }
  StreamOverride& slot = t_overrides[device_index_];
  had_previous_ = slot.active;
  previous_ = slot.stream;
  slot.active = true;
  slot.stream = stream;
}

StreamGuard::~StreamGuard() {
  StreamOverride& slot = t_overrides[device_index_];
  slot.active = had_previous_;
  slot.stream = previous_;
  if (!foreign_) return;
  DeviceState& state = device_states()[device_index_];
  {
    std::lock_guard<std::mutex> lock(state.blas_mutex);
    auto guards = state.guards.find(stream_);
    if (guards != state.guards.end() && --guards->second == 0) {
      state.guards.erase(guards);
      auto workspace = state.blas_workspaces.find(stream_);
      if (workspace != state.blas_workspaces.end()) {
        // To the stream's free list: reused in that stream's order, or, once the stream is gone,
        // after the event unguard_stream records below.
        cuda_allocator(device_index_).deallocate(workspace->second);
        state.blas_workspaces.erase(workspace);
      }
    }
  }
  cuda_allocator(device_index_).unguard_stream(stream_);
}

void synchronize(const Device& device) {
  if (!device.is_cuda()) return;
  DeviceGuard guard(device);
  CAIRN_CUDA_CHECK(cudaStreamSynchronize(current_stream(device)));
}

void shutdown() {
  const int devices = cuda_device_count();
  for (int index = 0; index < devices && index < kMaxDevices; ++index) {
    DeviceState& state = device_states()[index];
    std::lock_guard<std::mutex> create(state.create_mutex);
    if (!state.created.load()) continue;
    const Device device = Device::cuda(index);
    DeviceGuard guard(device);
    CAIRN_CUDA_CHECK(cudaDeviceSynchronize());
    CachingAllocator& allocator = cuda_allocator(index);
    {
      std::lock_guard<std::mutex> blas(state.blas_mutex);
      for (auto& [stream, workspace] : state.blas_workspaces) allocator.deallocate(workspace);
      state.blas_workspaces.clear();
      for (auto& [pool, workspace] : state.graph_workspaces) allocator.deallocate(workspace);
      state.graph_workspaces.clear();
      CAIRN_CUBLAS_CHECK(cublasDestroy(state.blas));
      state.blas = nullptr;
    }
    CAIRN_CUBLAS_CHECK(cublasLtDestroy(state.lt));
    state.lt = nullptr;
    CAIRN_CUDA_CHECK(cudaStreamDestroy(state.stream));
    state.stream = nullptr;
    state.created.store(false);
    allocator.empty_cache();
  }
}

}  // namespace cairn::cuda

namespace cairn::cuda {

bool is_capturing(const Device& device) {
  if (!device.is_cuda()) return false;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  CAIRN_CUDA_CHECK(cudaStreamIsCapturing(current_stream(device), &status));
  return status != cudaStreamCaptureStatusNone;
}

void check_host_sync_allowed(const Device& device, const char* what) {
  CAIRN_CHECK(!is_capturing(device), what,
              ": needs a host synchronisation, which cannot happen while a CUDA graph is being "
              "captured on ",
              device);
}

}  // namespace cairn::cuda

namespace cairn {
void set_matmul_precision(kernels::MatmulPrecision precision) {
  cuda::g_precision.store(precision);
}
kernels::MatmulPrecision matmul_precision() { return cuda::g_precision.load(); }
}  // namespace cairn

namespace cairn {
void set_deterministic(bool enabled) { cuda::g_deterministic.store(enabled); }
bool deterministic() { return cuda::g_deterministic.load(); }
}  // namespace cairn
