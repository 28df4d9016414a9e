// The fake CUDA runtime: the subset of libcudart that cairn calls, on the CPU, stricter than a GPU.
//
// What it models, after NVIDIA's CUDA Runtime API documentation:
// - Streams are asynchronous: each is a FIFO drained by its own worker thread, with seeded random
//   delays before some operations, so missing ordering shows as wrong values (and as data races
//   under ThreadSanitizer, since every ordering the fake provides is a real happens-before).
//   The legacy default stream synchronises with every blocking stream of its device (both ways);
//   cudaStreamPerThread is a blocking stream per host thread. Destroying a stream returns at once;
//   its queued work still runs, and its address may be reused once it has.
// - Events: record, wait, query, synchronize, elapsed time (milliseconds of the host clock).
// - Memory: device memory is host memory, filled with 0xFF bytes (NaN as float) when allocated
//   and returned to malloc when freed, so AddressSanitizer reports any later use. Copies check the
//   direction against where each pointer lives and that device ranges lie inside one allocation.
//   Pageable host memory is staged (H2D) or waited for (D2H) as the documentation describes;
//   pinned host memory is read and written when the copy runs, not when it is queued.
// - Capture: work queued on a capturing stream is recorded (with its raw pointers) and replayed
//   as recorded; calls a real device refuses during capture are refused with its error, and the
//   capture is invalidated where CUDA invalidates it.
// What it cannot show: kernel bodies (the CPU twins stand in), timing, real memory limits,
// a host dereferencing a device pointer (device memory is host memory here).
#include "cairn/tests/fake_cuda/runtime_internal.h"

#include <cstdio>

namespace cairn::fake_cuda {
namespace {

int env_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] != '\0' ? std::atoi(value) : fallback;
}

}  // namespace

State& state() {
  static State* s = [] {
    auto* created = new State();  // never destroyed: workers may outlive static destruction
    created->device_count = std::max(1, env_int("CAIRN_FAKE_CUDA_DEVICES", 1));
    const char* limit = std::getenv("CAIRN_FAKE_CUDA_MEMORY_BYTES");
    if (limit != nullptr && limit[0] != '\0')
      created->memory_limit = std::strtoull(limit, nullptr, 10);
    created->max_delay_us.store(env_int("CAIRN_FAKE_CUDA_DELAY_US", 200));
    created->delay_percent.store(env_int("CAIRN_FAKE_CUDA_DELAY_PERCENT", 10));
    created->seed = uint64_t(env_int("CAIRN_FAKE_CUDA_SEED", 1));
    return created;
  }();
  return *s;
}

thread_local int t_device = 0;
thread_local cudaError_t t_last_error = cudaSuccess;
namespace {
thread_local CUstream_st* t_per_thread_stream = nullptr;
}  // namespace

cudaError_t fail(cudaError_t error) {
  if (t_last_error == cudaSuccess) t_last_error = error;
  return error;
}

void report(const std::string& message) {
  std::fprintf(stderr, "fake CUDA: %s\n", message.c_str());
}

// ---- Workers ----

void run_worker(CUstream_st* stream) {
  t_device = stream->device;  // checks made while running see the stream's device as current
  for (;;) {
    Op op;
    {
      std::unique_lock<std::mutex> lock(stream->mutex);
      stream->wake.wait(lock, [&] { return stream->stop || !stream->queue.empty(); });
      if (stream->queue.empty()) break;  // stopped and drained
      op = std::move(stream->queue.front());
      stream->queue.pop_front();
    }
    for (const CompletionPtr& wait : op.waits) wait->wait();
    State& s = state();
    const int max_delay = s.max_delay_us.load(), percent = s.delay_percent.load();
    if (max_delay > 0 && percent > 0 && int(stream->rng() % 100) < percent) {
      // Between half and all of the maximum: a test that needs "not yet" can rely on max / 2.
      const uint64_t half = uint64_t(max_delay) / 2;
      std::this_thread::sleep_for(std::chrono::microseconds(half + stream->rng() % (half + 1)));
    }
    try {
      if (op.work) op.work();
    } catch (const std::exception& error) {
      report(op.what + " failed while running: " + error.what());
      s.faults.fetch_add(1);
      std::lock_guard<std::mutex> lock(s.mutex);
      s.sticky.emplace(stream->device, cudaErrorLaunchFailure);
    }
    op.done->finish();
  }
  stream->finished.store(true);
}

CUstream_st* new_stream_locked(State& s, int device, bool blocking, bool legacy) {
  auto* stream = new CUstream_st();
  stream->device = device;
  stream->blocking = blocking;
  stream->legacy = legacy;
  stream->serial = s.next_serial++;
  stream->rng.seed(s.seed * 0x9E3779B97F4A7C15ull + stream->serial);
  stream->worker = std::thread(run_worker, stream);
  return stream;
}

// Joins and frees destroyed streams whose work has all run, so their addresses can be reused.
void reap_retired_locked(State& s) {
  for (auto it = s.retired.begin(); it != s.retired.end();) {
    if (!(*it)->finished.load()) {
      ++it;
      continue;
    }
    // Detached when destroyed (so that ThreadSanitizer sees no unjoined thread at exit): the
    // worker touches nothing after setting `finished`.
    (*it)->magic = 0;
    delete *it;
    it = s.retired.erase(it);
  }
}

CUstream_st* legacy_stream_locked(State& s, int device) {
  CUstream_st*& stream = s.legacy[device];
  if (stream == nullptr) stream = new_stream_locked(s, device, /*blocking=*/false, /*legacy=*/true);
  return stream;
}

// The stream a handle stands for, or nullptr (with *error set) for a handle that is not one.
CUstream_st* lookup_stream_locked(State& s, cudaStream_t handle, cudaError_t* error) {
  if (handle == nullptr || handle == cudaStreamLegacy) return legacy_stream_locked(s, t_device);
  if (handle == cudaStreamPerThread) {
    if (t_per_thread_stream == nullptr) {
      t_per_thread_stream = new_stream_locked(s, t_device, /*blocking=*/true, /*legacy=*/false);
      s.per_thread.insert(t_per_thread_stream);
    }
    return t_per_thread_stream;
  }
  if (s.streams.count(handle) == 0) {
    *error = cudaErrorInvalidResourceHandle;
    return nullptr;
  }
  return handle;
}

void invalidate(const std::shared_ptr<Capture>& capture, const char* why) {
  if (capture && !capture->invalidated) {
    capture->invalidated = true;
    report(std::string("stream capture invalidated: ") + why);
  }
}

bool any_capture_on_device_locked(State& s, int device) {
  for (CUstream_st* stream : s.streams) {
    if (stream->capture && stream->device == device) return true;
  }
  for (CUstream_st* stream : s.per_thread) {
    if (stream->capture && stream->device == device) return true;
  }
  return false;
}


// "Potentially unsafe" calls (cudaMalloc, synchronous copies, synchronisation): prohibited while
// this thread captures in global or thread-local mode, or any thread captures in global mode.
// A prohibited call invalidates the captures that prohibit it.
cudaError_t check_unsafe_call_locked(State& s, const char* call) {
  cudaError_t result = cudaSuccess;
  for_each_capture_locked(s, [&](const std::shared_ptr<Capture>& capture) {
    const bool own = capture->thread == std::this_thread::get_id();
    const bool prohibits = capture->mode == cudaStreamCaptureModeGlobal ||
                           (own && capture->mode == cudaStreamCaptureModeThreadLocal);
    if (prohibits) {
      invalidate(capture, call);
      result = cudaErrorStreamCaptureUnsupported;
    }
  });
  return result;
}

// Queues an op, or records it into the stream's capture. Called with the global mutex held.
cudaError_t enqueue_locked(State& s, CUstream_st* stream, const char* what,
                           std::function<void()> work) {
  if (stream->capture) {
    if (stream->capture->invalidated) return cudaErrorStreamCaptureInvalidated;
    stream->capture->last_node[stream] = int64_t(stream->capture->nodes.size());
    stream->capture->nodes.push_back(Node{what, std::move(work)});
    return cudaSuccess;
  }
  Op op;
  op.what = what;
  op.work = std::move(work);
  op.done = std::make_shared<Completion>();
  if (stream->legacy) {
    // The legacy stream waits for all blocking streams of its device; a blocking stream being
    // captured cannot be waited for (cudaErrorStreamCaptureImplicit, and the capture breaks).
    auto order_after = [&](CUstream_st* other) {
      if (other->device != stream->device || !other->blocking) return cudaSuccess;
      if (other->capture) {
        invalidate(other->capture, "the legacy stream was used while a blocking stream captured");
        return cudaErrorStreamCaptureImplicit;
      }
      if (other->tail) op.waits.push_back(other->tail);
      return cudaSuccess;
    };
    for (CUstream_st* other : s.streams) {
      if (cudaError_t error = order_after(other); error != cudaSuccess) return error;
    }
    for (CUstream_st* other : s.per_thread) {
      if (cudaError_t error = order_after(other); error != cudaSuccess) return error;
    }
  } else if (stream->blocking) {
    auto legacy = s.legacy.find(stream->device);
    if (legacy != s.legacy.end() && legacy->second->tail) op.waits.push_back(legacy->second->tail);
  }
  if (stream->tail) op.waits.push_back(stream->tail);  // FIFO even across a retired worker's wake
  stream->tail = op.done;
  {
    std::lock_guard<std::mutex> lock(stream->mutex);
    stream->queue.push_back(std::move(op));
  }
  stream->wake.notify_one();
  return cudaSuccess;
}

// Waits for `completion` without holding the global mutex.
void wait_unlocked(std::unique_lock<std::mutex>& lock, const CompletionPtr& completion) {
  if (!completion) return;
  lock.unlock();
  completion->wait();
  lock.lock();
}

std::vector<CompletionPtr> device_tails_locked(State& s, int device) {
  std::vector<CompletionPtr> tails;
  auto add = [&](CUstream_st* stream) {
    if (stream->device == device && stream->tail) tails.push_back(stream->tail);
  };
  for (CUstream_st* stream : s.streams) add(stream);
  for (CUstream_st* stream : s.per_thread) add(stream);
  for (CUstream_st* stream : s.retired) add(stream);
  for (auto& [index, stream] : s.legacy) add(stream);
  return tails;
}

cudaError_t sticky_locked(State& s, int device) {
  auto found = s.sticky.find(device);
  return found == s.sticky.end() ? cudaSuccess : found->second;
}

cudaError_t synchronize_device_locked(std::unique_lock<std::mutex>& lock, State& s, int device) {
  for (const CompletionPtr& tail : device_tails_locked(s, device)) wait_unlocked(lock, tail);
  reap_retired_locked(s);
  return sticky_locked(s, device);
}

const Allocation* find_allocation_locked(State& s, const void* ptr, uintptr_t* start) {
  const auto address = reinterpret_cast<uintptr_t>(ptr);
  auto it = s.allocations.upper_bound(address);
  if (it == s.allocations.begin()) return nullptr;
  --it;
  if (address >= it->first + std::max<size_t>(it->second.bytes, 1)) return nullptr;
  if (start != nullptr) *start = it->first;
  return &it->second;
}

bool in_device_allocation_locked(State& s, const void* ptr, size_t bytes, int device) {
  uintptr_t start = 0;
  const Allocation* allocation = find_allocation_locked(s, ptr, &start);
  if (allocation == nullptr || allocation->pinned_host) return false;
  if (device >= 0 && allocation->device != device) return false;
  return reinterpret_cast<uintptr_t>(ptr) - start + bytes <= allocation->bytes;
}

bool is_pinned_locked(State& s, const void* ptr) {
  const Allocation* allocation = find_allocation_locked(s, ptr, nullptr);
  return allocation != nullptr && allocation->pinned_host;
}

const char* error_name(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidDevicePointer:
      return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection:
      return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice:
      return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalState:
      return "cudaErrorIllegalState";
    case cudaErrorNotReady:
      return "cudaErrorNotReady";
    case cudaErrorIllegalAddress:
      return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure:
      return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported:
      return "cudaErrorNotSupported";
    case cudaErrorStreamCaptureUnsupported:
      return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
      return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureUnmatched:
      return "cudaErrorStreamCaptureUnmatched";
    case cudaErrorStreamCaptureUnjoined:
      return "cudaErrorStreamCaptureUnjoined";
    case cudaErrorStreamCaptureIsolation:
      return "cudaErrorStreamCaptureIsolation";
    case cudaErrorStreamCaptureImplicit:
      return "cudaErrorStreamCaptureImplicit";
    case cudaErrorCapturedEvent:
      return "cudaErrorCapturedEvent";
    default:
      return "cudaErrorUnknown";
  }
}


// ---- The internal API (fake_device.h) ----

cudaError_t enqueue(cudaStream_t handle, const char* what, std::function<void()> work) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  cudaError_t error = cudaSuccess;
  CUstream_st* stream = lookup_stream_locked(s, handle, &error);
  if (stream == nullptr) return fail(error);
  if (stream->device != t_device) {
    // A launch into another device's stream: the stream belongs to another context.
    report(std::string(what) + ": stream of device " + std::to_string(stream->device) +
           " used while device " + std::to_string(t_device) + " is current");
    return fail(cudaErrorInvalidResourceHandle);
  }
  error = enqueue_locked(s, stream, what, std::move(work));
  return error == cudaSuccess ? error : fail(error);
}

bool is_device_range(const void* ptr, size_t bytes) {
  if (bytes == 0) return true;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  return in_device_allocation_locked(s, ptr, bytes, t_device);
}

bool check_device_ranges(const char* what, std::initializer_list<Range> ranges) {
  for (const Range& range : ranges) {
    if (is_device_range(range.ptr, range.bytes)) continue;
    char line[512];
    std::snprintf(line, sizeof line,
                  "%s: argument %s [%p, +%zu bytes) is not inside one live device allocation "
                  "of cuda:%d (the current device)",
                  what, range.name, range.ptr, range.bytes, t_device);
    report(line);
    state().faults.fetch_add(1);
    fail(cudaErrorIllegalAddress);
    return false;
  }
  return true;
}

void set_last_error(cudaError_t error) { fail(error); }

cudaStream_t resolve_stream(cudaStream_t handle) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  cudaError_t error = cudaSuccess;
  CUstream_st* stream = lookup_stream_locked(s, handle, &error);
  return stream != nullptr ? stream : handle;
}

bool stream_is_capturing(cudaStream_t handle) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  cudaError_t error = cudaSuccess;
  CUstream_st* stream = lookup_stream_locked(s, handle, &error);
  return stream != nullptr && stream->capture != nullptr;
}

// ---- control.h ----

int fault_count() { return state().faults.load(); }
void reset_fault_count() { state().faults.store(0); }
size_t live_allocations() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  size_t count = 0;
  for (auto& [start, allocation] : s.allocations) count += allocation.pinned_host ? 0 : 1;
  return count;
}
size_t live_bytes() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  return s.live_device_bytes;
}
void set_memory_limit(size_t bytes) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.memory_limit = bytes;
}
size_t memory_limit() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  return s.memory_limit;
}
void drain() {
  State& s = state();
  std::unique_lock<std::mutex> lock(s.mutex);
  for (int device = 0; device < s.device_count; ++device)
    synchronize_device_locked(lock, s, device);
}
void set_delays(int max_microseconds, int percent) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.max_delay_us.store(max_microseconds);
  s.delay_percent.store(percent);
}

}  // namespace cairn::fake_cuda

// ---- The CUDA runtime API ----

using namespace cairn::fake_cuda;  // NOLINT: this file implements a C API

extern "C" {

cudaError_t cudaGetLastError(void) {
  const cudaError_t error = t_last_error;
  t_last_error = cudaSuccess;
  return error;
}
cudaError_t cudaPeekAtLastError(void) { return t_last_error; }
const char* cudaGetErrorName(cudaError_t error) { return error_name(error); }
const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorMemoryAllocation:
      return "out of memory (fake CUDA device)";
    case cudaErrorStreamCaptureUnsupported:
      return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
      return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit:
      return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorCapturedEvent:
      return "operation not permitted on an event last recorded in a capturing stream";
    default:
      return error_name(error);
  }
}

// -- Devices --

cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) return fail(cudaErrorInvalidValue);
  *count = state().device_count;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return fail(cudaErrorInvalidValue);
  *device = t_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= state().device_count) return fail(cudaErrorInvalidDevice);
  t_device = device;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (prop == nullptr) return fail(cudaErrorInvalidValue);
  if (device < 0 || device >= state().device_count) return fail(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "cairn fake CUDA device (NVIDIA H200 properties)");
  prop->totalGlobalMem = kTotalMemory;
  prop->sharedMemPerBlock = 49152;
  prop->regsPerBlock = 65536;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 2147483647;
  prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = kMultiprocessors;
  prop->unifiedAddressing = 1;
  prop->l2CacheSize = 50331648;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device) {
  if (value == nullptr) return fail(cudaErrorInvalidValue);
  if (device < 0 || device >= state().device_count) return fail(cudaErrorInvalidDevice);
  switch (attribute) {
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      return cudaSuccess;
    case cudaDevAttrMultiProcessorCount:
      *value = kMultiprocessors;
      return cudaSuccess;
    case cudaDevAttrWarpSize:
      *value = 32;
      return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock:
      *value = 1024;
      return cudaSuccess;
    case cudaDevAttrUnifiedAddressing:
      *value = 1;
      return cudaSuccess;
    default:
      // Not modelled: fail loudly rather than invent a value.
      report("cudaDeviceGetAttribute: attribute " + std::to_string(int(attribute)) +
             " is not modelled by the fake device");
      return fail(cudaErrorNotSupported);
  }
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  if (free_bytes == nullptr || total_bytes == nullptr) return fail(cudaErrorInvalidValue);
  const size_t used = live_bytes();
  *total_bytes = kTotalMemory;
  *free_bytes = kTotalMemory - std::min(used, kTotalMemory);
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
  State& s = state();
  std::unique_lock<std::mutex> lock(s.mutex);
  if (any_capture_on_device_locked(s, t_device)) {
    // It would wait for a capturing stream, which no real device allows.
    for_each_capture_locked(s, [&](const std::shared_ptr<Capture>& capture) {
      invalidate(capture, "cudaDeviceSynchronize");
    });
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  if (cudaError_t error = check_unsafe_call_locked(s, "cudaDeviceSynchronize");
      error != cudaSuccess) {
    return fail(error);
  }
  const cudaError_t error = synchronize_device_locked(lock, s, t_device);
  return error == cudaSuccess ? error : fail(error);
}
cudaError_t cudaDeviceReset(void) {
  State& s = state();
  std::unique_lock<std::mutex> lock(s.mutex);
  synchronize_device_locked(lock, s, t_device);
  for (auto it = s.allocations.begin(); it != s.allocations.end();) {
    if (it->second.device != t_device || it->second.pinned_host) {
      ++it;
      continue;
    }
    s.live_device_bytes -= it->second.bytes;
    std::free(reinterpret_cast<void*>(it->first));
    it = s.allocations.erase(it);
  }
  s.sticky.erase(t_device);
  return cudaSuccess;
}

}  // extern "C"
