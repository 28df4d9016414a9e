#include "cairn/core/cuda_context.h"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <array>
#include <atomic>
#include <mutex>

#include "cairn/core/error.h"

namespace cairn::cuda {
namespace {

constexpr int kMaxDevices = 64;

struct DeviceState {
  std::once_flag created;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cublasLtHandle_t lt = nullptr;
};

std::atomic<kernels::MatmulPrecision> g_precision{kernels::MatmulPrecision::kFloat32};
std::atomic<bool> g_deterministic{true};

// Deliberately leaked: destroying streams and handles from a static destructor would race the
// CUDA runtime's own teardown at exit.
std::array<DeviceState, kMaxDevices>& device_states() {
  static auto* states = new std::array<DeviceState, kMaxDevices>();
  return *states;
}

struct StreamOverride {
  bool active = false;
  cudaStream_t stream = nullptr;
};
thread_local std::array<StreamOverride, kMaxDevices> t_overrides;

DeviceState& state_for(const Device& device) {
  CAIRN_CHECK(device.is_cuda(), "cuda context: ", device, " is not a CUDA device");
  CAIRN_CHECK(device.index() < cuda_device_count(), "cuda context: ", device, " is not available (",
              cuda_device_count(), " CUDA devices; ", cuda_unavailable_reason(), ")");
  DeviceState& state = device_states()[device.index()];
  std::call_once(state.created, [&] {
    DeviceGuard guard(device);
    CAIRN_CUDA_CHECK(cudaStreamCreateWithFlags(&state.stream, cudaStreamNonBlocking));
    CAIRN_CUBLAS_CHECK(cublasCreate(&state.blas));
    CAIRN_CUBLAS_CHECK(cublasLtCreate(&state.lt));
  });
  return state;
}

}  // namespace

Stream current_stream(const Device& device) {
  DeviceState& state = state_for(device);
  const StreamOverride& override_ = t_overrides[device.index()];
  return override_.active ? override_.stream : state.stream;
}

kernels::BlasHandle blas_handle(const Device& device) {
  DeviceState& state = state_for(device);
  // Binding is cheap and keeps the handle on whichever stream is current for this call.
  CAIRN_CUBLAS_CHECK(cublasSetStream(state.blas, current_stream(device)));
  CAIRN_CUBLAS_CHECK(cublasSetMathMode(
      state.blas, g_precision.load() == kernels::MatmulPrecision::kTf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                        : CUBLAS_DEFAULT_MATH));
  CAIRN_CUBLAS_CHECK(cublasSetAtomicsMode(
      state.blas, g_deterministic.load() ? CUBLAS_ATOMICS_NOT_ALLOWED : CUBLAS_ATOMICS_ALLOWED));
  return state.blas;
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

StreamGuard::StreamGuard(const Device& device, Stream stream) : device_index_(device.index()) {
  state_for(device);  // validates the device
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
}

void synchronize(const Device& device) {
  if (!device.is_cuda()) return;
  DeviceGuard guard(device);
  CAIRN_CUDA_CHECK(cudaStreamSynchronize(current_stream(device)));
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
