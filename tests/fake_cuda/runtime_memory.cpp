// The fake CUDA runtime's memory: cudaMalloc and cudaFree, pinned host memory, pointer attributes,
// and every copy and memset, checked against where each pointer lives (see runtime.cpp).
#include "cairn/tests/fake_cuda/runtime_internal.h"

using namespace cairn::fake_cuda;  // NOLINT: this file implements a C API

extern "C" {

// -- Memory --

}  // extern "C"

namespace cairn::fake_cuda {
namespace {

// cudaMalloc and cudaMallocHost: device memory is filled with 0xFF bytes (NaN as float, so
// unwritten outputs fail comparisons) and counts against the memory limit; pinned memory is
// page-aligned host memory the copies treat as such.
cudaError_t allocate(const char* call, void** ptr, size_t bytes, bool pinned) {
  if (ptr == nullptr) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (cudaError_t error = check_unsafe_call_locked(s, call); error != cudaSuccess) {
    return fail(error);
  }
  *ptr = nullptr;
  if (bytes == 0) return cudaSuccess;
  if (!pinned && (bytes > s.memory_limit || s.live_device_bytes > s.memory_limit - bytes)) {
    return fail(cudaErrorMemoryAllocation);
  }
  void* block = nullptr;
  if (posix_memalign(&block, pinned ? 4096 : kAllocationAlignment, bytes) != 0 ||
      block == nullptr) {
    return fail(cudaErrorMemoryAllocation);
  }
  if (!pinned) {
    std::memset(block, 0xFF, bytes);
    s.live_device_bytes += bytes;
  }
  s.allocations[reinterpret_cast<uintptr_t>(block)] = Allocation{bytes, t_device, pinned};
  *ptr = block;
  return cudaSuccess;
}

// The end both frees share: queued work (which may still use the block) finishes first, then
// the block goes back to malloc, where AddressSanitizer sees any later use.
cudaError_t release_after_work_locked(std::unique_lock<std::mutex>& lock, State& s, void* ptr,
                                      int device) {
  synchronize_device_locked(lock, s, device);
  auto found = s.allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (found == s.allocations.end()) return fail(cudaErrorInvalidValue);  // freed meanwhile
  if (!found->second.pinned_host) s.live_device_bytes -= found->second.bytes;
  s.allocations.erase(found);
  std::free(ptr);
  return cudaSuccess;
}

}  // namespace
}  // namespace cairn::fake_cuda

extern "C" {

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  return allocate("cudaMalloc", ptr, bytes, /*pinned=*/false);
}

cudaError_t cudaFree(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  State& s = state();
  std::unique_lock<std::mutex> lock(s.mutex);
  auto found = s.allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (found == s.allocations.end() || found->second.pinned_host) {
    report("cudaFree: pointer is not the start of a live device allocation");
    return fail(cudaErrorInvalidValue);
  }
  const int device = found->second.device;
  // cudaFree synchronises the device, which a capturing stream forbids.
  if (any_capture_on_device_locked(s, device)) {
    for_each_capture_locked(
        s, [&](const std::shared_ptr<Capture>& capture) { invalidate(capture, "cudaFree"); });
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  return release_after_work_locked(lock, s, ptr, device);
}

cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  return allocate("cudaMallocHost", ptr, bytes, /*pinned=*/true);
}
cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned int) {
  return cudaMallocHost(ptr, bytes);
}

cudaError_t cudaFreeHost(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  State& s = state();
  std::unique_lock<std::mutex> lock(s.mutex);
  auto found = s.allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (found == s.allocations.end() || !found->second.pinned_host) {
    report("cudaFreeHost: pointer is not the start of a live pinned host allocation");
    return fail(cudaErrorInvalidValue);
  }
  if (cudaError_t error = check_unsafe_call_locked(s, "cudaFreeHost"); error != cudaSuccess) {
    return fail(error);
  }
  return release_after_work_locked(lock, s, ptr, found->second.device);
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void* ptr) {
  if (attributes == nullptr) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  *attributes = cudaPointerAttributes{};
  attributes->device = -2;  // what CUDA reports for unregistered memory
  uintptr_t start = 0;
  const Allocation* allocation = find_allocation_locked(s, ptr, &start);
  if (allocation == nullptr) {
    attributes->type = cudaMemoryTypeUnregistered;
    return cudaSuccess;
  }
  attributes->device = allocation->device;
  attributes->devicePointer = const_cast<void*>(ptr);
  if (allocation->pinned_host) {
    attributes->type = cudaMemoryTypeHost;
    attributes->hostPointer = const_cast<void*>(ptr);
  } else {
    attributes->type = cudaMemoryTypeDevice;
  }
  return cudaSuccess;
}

}  // extern "C"

namespace cairn::fake_cuda {
namespace {

enum class Side { kHost, kDevice };

// Checks one side of a copy against the memory it names.
cudaError_t check_side_locked(State& s, const char* call, const char* name, const void* ptr,
                              size_t bytes, Side side) {
  if (side == Side::kDevice) {
    if (in_device_allocation_locked(s, ptr, bytes)) return cudaSuccess;
    report(std::string(call) + ": " + name + " is not " + std::to_string(bytes) +
           " bytes inside one live device allocation");
    s.faults.fetch_add(1);
    return cudaErrorInvalidValue;
  }
  if (ptr == nullptr) return cudaErrorInvalidValue;
  const Allocation* allocation = find_allocation_locked(s, ptr, nullptr);
  if (allocation != nullptr && !allocation->pinned_host) {
    // Undefined behaviour in CUDA ("pointers that do not match the direction of the copy"):
    // refused here.
    report(std::string(call) + ": " + name + " is device memory but the copy kind says host");
    s.faults.fetch_add(1);
    return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

cudaError_t sides_of(cudaMemcpyKind kind, State& s, void* dst, const void* src, Side* dst_side,
                     Side* src_side) {
  auto where = [&](const void* ptr) {
    const Allocation* allocation = find_allocation_locked(s, ptr, nullptr);
    return allocation != nullptr && !allocation->pinned_host ? Side::kDevice : Side::kHost;
  };
  switch (kind) {
    case cudaMemcpyHostToHost:
      *dst_side = Side::kHost;
      *src_side = Side::kHost;
      break;
    case cudaMemcpyHostToDevice:
      *dst_side = Side::kDevice;
      *src_side = Side::kHost;
      break;
    case cudaMemcpyDeviceToHost:
      *dst_side = Side::kHost;
      *src_side = Side::kDevice;
      break;
    case cudaMemcpyDeviceToDevice:
      *dst_side = Side::kDevice;
      *src_side = Side::kDevice;
      break;
    case cudaMemcpyDefault:
      *dst_side = where(dst);
      *src_side = where(src);
      break;
    default:
      return cudaErrorInvalidMemcpyDirection;
  }
  return cudaSuccess;
}

// The one copy routine behind cudaMemcpy, cudaMemcpyAsync and the peer copies.
cudaError_t copy(const char* call, void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                 cudaStream_t handle, bool synchronous) {
  State& s = state();
  std::unique_lock<std::mutex> lock(s.mutex);
  if (synchronous) {
    if (cudaError_t error = check_unsafe_call_locked(s, call); error != cudaSuccess)
      return fail(error);
  }
  if (bytes == 0) return cudaSuccess;
  Side dst_side{}, src_side{};
  if (cudaError_t error = sides_of(kind, s, dst, src, &dst_side, &src_side); error != cudaSuccess) {
    return fail(error);
  }
  if (cudaError_t error = check_side_locked(s, call, "dst", dst, bytes, dst_side);
      error != cudaSuccess) {
    return fail(error);
  }
  if (cudaError_t error = check_side_locked(s, call, "src", src, bytes, src_side);
      error != cudaSuccess) {
    return fail(error);
  }
  cudaError_t error = cudaSuccess;
  CUstream_st* stream = lookup_stream_locked(s, synchronous ? nullptr : handle, &error);
  if (stream == nullptr) return fail(error);
  const bool pageable_src = src_side == Side::kHost && !is_pinned_locked(s, src);
  const bool pageable_dst = dst_side == Side::kHost && !is_pinned_locked(s, dst);
  if (stream->capture && (pageable_src || pageable_dst)) {
    // Graphs cannot hold copies from or to pageable host memory.
    invalidate(stream->capture, "a copy with pageable host memory");
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  std::function<void()> work;
  if (pageable_src && dst_side == Side::kDevice) {
    // Staged at the call: the caller may reuse its buffer as soon as this returns.
    auto staged = std::make_shared<std::vector<unsigned char>>(
        static_cast<const unsigned char*>(src), static_cast<const unsigned char*>(src) + bytes);
    work = [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); };
  } else {
    work = [dst, src, bytes] { std::memmove(dst, src, bytes); };
  }
  error = enqueue_locked(s, stream, call, std::move(work));
  if (error != cudaSuccess) return fail(error);
  // Synchronous copies, and device-to-pageable copies, return once the data is there.
  if (synchronous || (pageable_dst && src_side == Side::kDevice)) {
    wait_unlocked(lock, stream->tail);
    return sticky_locked(s, stream->device);
  }
  return cudaSuccess;
}

cudaError_t set_memory(const char* call, void* dst, int value, size_t bytes, cudaStream_t handle,
                       bool synchronous) {
  State& s = state();
  std::unique_lock<std::mutex> lock(s.mutex);
  if (synchronous) {
    if (cudaError_t error = check_unsafe_call_locked(s, call); error != cudaSuccess)
      return fail(error);
  }
  if (bytes == 0) return cudaSuccess;
  if (cudaError_t error = check_side_locked(s, call, "dst", dst, bytes, Side::kDevice);
      error != cudaSuccess) {
    return fail(error);
  }
  cudaError_t error = cudaSuccess;
  CUstream_st* stream = lookup_stream_locked(s, synchronous ? nullptr : handle, &error);
  if (stream == nullptr) return fail(error);
  error = enqueue_locked(s, stream, call, [dst, value, bytes] { std::memset(dst, value, bytes); });
  if (error != cudaSuccess) return fail(error);
  if (synchronous) wait_unlocked(lock, stream->tail);
  return cudaSuccess;
}

}  // namespace
}  // namespace cairn::fake_cuda

extern "C" {

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return copy("cudaMemcpy", dst, src, bytes, kind, nullptr, /*synchronous=*/true);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  return copy("cudaMemcpyAsync", dst, src, bytes, kind, stream, /*synchronous=*/false);
}
cudaError_t cudaMemcpyPeerAsync(void* dst, int dst_device, const void* src, int src_device,
                                size_t bytes, cudaStream_t stream) {
  const int count = state().device_count;
  if (dst_device < 0 || dst_device >= count || src_device < 0 || src_device >= count) {
    return fail(cudaErrorInvalidDevice);
  }
  {
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    const Allocation* to = find_allocation_locked(s, dst, nullptr);
    const Allocation* from = find_allocation_locked(s, src, nullptr);
    if ((to != nullptr && to->device != dst_device) ||
        (from != nullptr && from->device != src_device)) {
      report("cudaMemcpyPeerAsync: a pointer does not belong to the device named for it");
      s.faults.fetch_add(1);
      return fail(cudaErrorInvalidValue);
    }
  }
  return copy("cudaMemcpyPeerAsync", dst, src, bytes, cudaMemcpyDeviceToDevice, stream, false);
}
cudaError_t cudaMemcpyPeer(void* dst, int dst_device, const void* src, int src_device,
                           size_t bytes) {
  const cudaError_t queued = cudaMemcpyPeerAsync(dst, dst_device, src, src_device, bytes, nullptr);
  if (queued != cudaSuccess) return queued;
  return copy("cudaMemcpyPeer", dst, dst, 0, cudaMemcpyDeviceToDevice, nullptr, true);
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  return set_memory("cudaMemsetAsync", dst, value, bytes, stream, /*synchronous=*/false);
}
cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  return set_memory("cudaMemset", dst, value, bytes, nullptr, /*synchronous=*/true);
}
}  // extern "C"
