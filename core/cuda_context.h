// Per-device execution context: the stream cairn launches on and the cuBLAS handle.
//
// By default each device has one stream of cairn's own, created on first use. A CUDA application
// that embeds cairn runs it on its own stream instead with a StreamGuard; everything cairn launches
// inside the guard's scope (kernels, cuBLAS calls, copies, allocations) goes to that stream.
#pragma once

#include "cairn/core/device.h"
#include "cairn/kernels/common.h"
#include "cairn/kernels/dense.h"

namespace cairn {
// float32 products by default; TF32 tensor cores only when asked (set_matmul_precision), for
// cuBLAS and cuBLASLt alike.
void set_matmul_precision(kernels::MatmulPrecision precision);
kernels::MatmulPrecision matmul_precision();

// Determinism, on by default: the same inputs give the same bits on the same GPU model and
// toolkit, run after run. cairn's own kernels never use float atomics; this switch also keeps
// cuBLAS off its atomics (CUBLAS_ATOMICS_NOT_ALLOWED). set_deterministic(false) lets cuBLAS use
// them where that is faster. float32 matmuls only; TF32 is a separate opt-in.
void set_deterministic(bool enabled);
bool deterministic();
}  // namespace cairn

namespace cairn::cuda {

using Stream = kernels::StreamHandle;  // == cudaStream_t

// The stream ops on `device` launch on now: the innermost StreamGuard's, else cairn's own.
Stream current_stream(const Device& device);

// A cuBLAS handle for `device`, bound to current_stream(device), in the math mode that
// matmul_precision() asks for.
kernels::BlasHandle blas_handle(const Device& device);
// The device's cuBLASLt handle (stream-free: cuBLASLt takes the stream per call).
kernels::LtHandle lt_handle(const Device& device);

// Makes `device` the current CUDA device for the calling thread while in scope.
class DeviceGuard {
 public:
  explicit DeviceGuard(const Device& device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// Routes cairn's work on `device` to the caller's `stream` while in scope (this thread only).
// Freed device memory is reused only by later work on the stream it was allocated for, so a
// tensor allocated on one stream and used on another must stay alive until that use is done
// (synchronise the other stream before dropping the last handle), as with PyTorch's streams.
class StreamGuard {
 public:
  StreamGuard(const Device& device, Stream stream);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  int device_index_;
  Stream previous_;
  bool had_previous_;
};

// Waits for everything cairn queued on the device's current stream.
void synchronize(const Device& device);

}  // namespace cairn::cuda

namespace cairn::cuda {
// Called before anything that waits for the device from the host (item(), to_host(), ...). While
// the current stream is being captured into a CUDA graph such a wait cannot work, so this throws a
// cairn::Error naming `what`: hybridize() uses that to find the op that keeps a block eager.
void check_host_sync_allowed(const Device& device, const char* what);
bool is_capturing(const Device& device);
}  // namespace cairn::cuda
