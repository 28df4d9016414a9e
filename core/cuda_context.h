// Per-device execution context: the stream cairn launches on and the cuBLAS handle.
//
// By default each device has one stream of cairn's own, created on first use. A CUDA application
// that embeds cairn runs it on its own stream instead with a StreamGuard; everything cairn launches
// inside the guard's scope (kernels, cuBLAS calls, copies, allocations) goes to that stream.
#pragma once

#include <mutex>

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

// Exclusive use of the device's cuBLAS handle while in scope, bound to current_stream(device), to
// a workspace from cairn's allocator kept for that stream, and to the math mode matmul_precision()
// and deterministic() ask for. A cuBLAS handle's stream, workspace and modes are handle state,
// so binding and calling must not interleave between threads: the lease holds the device's lock.
// The workspace matters under graph capture: without one, cuBLAS (12.2+) allocates its own for
// the graph, outside cairn's allocator. Hold the lease only around cuBLAS calls.
class BlasLease {
 public:
  explicit BlasLease(const Device& device);
  BlasLease(const BlasLease&) = delete;
  BlasLease& operator=(const BlasLease&) = delete;
  kernels::BlasHandle handle() const { return handle_; }

 private:
  std::unique_lock<std::mutex> lock_;  // the device's cuBLAS lock
  kernels::BlasHandle handle_ = nullptr;
};
// Returns the device's cached, unused memory to the CUDA runtime (cudaFree): for an application
// about to destroy a stream it lent cairn, or to hand memory to another library. Refused while a
// graph is being captured (see allocator.h).
void empty_cache(const Device& device);

// Gives back the cuBLAS workspace BlasLease made for the graph whose pool is `pool` (a no-op when
// it made none). ~Graph calls it before releasing the pool.
void release_graph_workspace(const Device& device, const void* pool) noexcept;

// The device's cuBLASLt handle (stream-free: cuBLASLt takes the stream and workspace per call, and
// a handle may be used by several threads at once).
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
// The stream may be destroyed once the last guard on it has ended: a new stream that a later
// guard finds at the same address is ordered after the old one's work (see
// CachingAllocator::guard_stream).
class StreamGuard {
 public:
  StreamGuard(const Device& device, Stream stream);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  int device_index_;
  Stream stream_;
  Stream previous_;
  bool had_previous_;
  bool foreign_;  // not cairn's own stream: the allocator tracks it
};

// Waits for everything cairn queued on the device's current stream.
void synchronize(const Device& device);

// Frees what cairn keeps for the process's lifetime on every device it has used: cached device
// memory, cuBLAS workspaces, streams and cuBLAS/cuBLASLt handles, after waiting for the devices.
// For leak checkers (compute-sanitizer --leak-check full) and for applications that want the
// memory back; call it once no cairn tensor, graph or loader is alive and no other thread uses
// cairn. cairn recreates what it needs if used again afterwards. A no-op where no device was used.
void shutdown();

}  // namespace cairn::cuda

namespace cairn::cuda {
// Called before anything that waits for the device from the host (item(), to_host(), ...). While
// the current stream is being captured into a CUDA graph such a wait cannot work, so this throws a
// cairn::Error naming `what`: hybridize() uses that to find the op that keeps a block eager.
void check_host_sync_allowed(const Device& device, const char* what);
bool is_capturing(const Device& device);
}  // namespace cairn::cuda
