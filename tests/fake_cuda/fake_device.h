// The fake CUDA device's internals, shared by its parts (runtime.cpp, cublas.cpp, cublaslt.cpp,
// nccl.cpp, launchers.cpp). Test-only: never installed, never part of a product build.
//
// Model. Device memory is host memory from malloc (AddressSanitizer sees every use after
// cudaFree), registered so that every kernel, copy and library call checks that the ranges it
// touches lie inside live allocations of the right kind. Every stream is a FIFO drained by a worker
// thread of its own, with seeded random delays before each operation, so that missing ordering
// shows up as wrong values (and, under ThreadSanitizer, as data races between workers). A stream
// being captured records operations into its graph instead of running them.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace cairn::fake_cuda {

// Queues `work` on `stream` (nullptr means the legacy default stream, cudaStreamPerThread the
// calling thread's default stream) in that stream's order: run later by the stream's worker, or,
// while the stream is being captured, recorded into the capture's graph (and run at each replay).
// `what` names the operation in reports. Returns what a real launch would: cudaSuccess, or
// cudaErrorInvalidResourceHandle for a destroyed stream, cudaErrorStreamCaptureInvalidated for a
// capture already broken, and so on. Never throws.
cudaError_t enqueue(cudaStream_t stream, const char* what, std::function<void()> work);

// Whether [ptr, ptr + bytes) lies inside one live cudaMalloc allocation (bytes == 0: always true).
bool is_device_range(const void* ptr, size_t bytes);

// A range an operation touches. Checked when the operation is queued (a bad range is reported
// there, naming the operation and the argument) and again when it runs (memory freed in between).
struct Range {
  const char* name;  // the argument, e.g. "x" or "workspace"
  const void* ptr;
  size_t bytes;
};

// Checks each range with is_device_range. On failure: the thread's last error becomes
// cudaErrorIllegalAddress (sticky on a real device; here only the call's), a report naming `what`
// and the argument goes to stderr, the fault counter grows, and false is returned so the caller
// queues nothing.
bool check_device_ranges(const char* what, std::initializer_list<Range> ranges);

// Sets the calling thread's last error (what cudaGetLastError returns next) unless one is set.
void set_last_error(cudaError_t error);

// The stream a null / cudaStreamPerThread / cudaStreamLegacy handle stands for on this thread,
// or `stream` itself. For the libraries that resolve a handle before recording it.
cudaStream_t resolve_stream(cudaStream_t stream);

// Whether `stream` is being captured right now.
bool stream_is_capturing(cudaStream_t stream);

// Test controls (see control.h for the public face).
int fault_count();

}  // namespace cairn::fake_cuda
