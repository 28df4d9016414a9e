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
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cairn/tests/fake_cuda/control.h"
#include "cairn/tests/fake_cuda/fake_device.h"

namespace cairn::fake_cuda {
namespace {

using Clock = std::chrono::steady_clock;

// An H200 SXM's properties, as a real one reports them.
constexpr size_t kTotalMemory = size_t(150754820096ull);
constexpr int kMultiprocessors = 132;
constexpr size_t kAllocationAlignment = 256;  // cudaMalloc's documented minimum

int env_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] != '\0' ? std::atoi(value) : fallback;
}

// ---- Completion: one queued operation's end, waited for by hosts and other streams. ----
struct Completion {
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;
  Clock::time_point when{};

  void finish() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      done = true;
      when = Clock::now();
    }
    done_cv.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> lock(mutex);
    done_cv.wait(lock, [&] { return done; });
  }
  bool is_done() {
    std::lock_guard<std::mutex> lock(mutex);
    return done;
  }
};
using CompletionPtr = std::shared_ptr<Completion>;

struct Node {
  std::string what;
  std::function<void()> work;
};

struct Op {
  std::string what;
  std::function<void()> work;
  std::vector<CompletionPtr> waits;  // other streams' work this op is ordered after
  CompletionPtr done;
};

struct Capture;

}  // namespace
}  // namespace cairn::fake_cuda

// The handle types the CUDA headers only declare.
struct CUstream_st {
  static constexpr uint32_t kMagic = 0x57AEA11u;
  uint32_t magic = kMagic;
  int device = 0;
  bool blocking = true;  // synchronises with the legacy stream
  bool legacy = false;
  uint64_t serial = 0;
  std::mutex mutex;  // guards queue and stop
  std::condition_variable wake;
  std::deque<cairn::fake_cuda::Op> queue;
  bool stop = false;
  std::atomic<bool> finished{false};
  std::thread worker;
  // Guarded by the fake's global mutex:
  cairn::fake_cuda::CompletionPtr tail;  // the last queued op's completion
  std::shared_ptr<cairn::fake_cuda::Capture> capture;
  std::mt19937_64 rng;
};

struct CUevent_st {
  unsigned flags = 0;
  cairn::fake_cuda::CompletionPtr last;                // the last record's completion
  std::shared_ptr<cairn::fake_cuda::Capture> capture;  // recorded inside this capture
  CUstream_st* captured_stream = nullptr;
  int64_t captured_position = -1;
};

struct CUgraph_st {
  std::vector<cairn::fake_cuda::Node> nodes;
};

struct CUgraphExec_st {
  std::shared_ptr<const std::vector<cairn::fake_cuda::Node>> nodes;
};

namespace cairn::fake_cuda {
namespace {

struct Capture {
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id thread;
  CUstream_st* origin = nullptr;
  bool invalidated = false;
  std::vector<Node> nodes;
  std::map<CUstream_st*, int64_t> last_node;  // per stream: its last node's index (-1: none)
  std::map<CUstream_st*, int64_t> joined;     // per stream: the origin has waited up to here
};

struct Allocation {
  size_t bytes = 0;
  int device = 0;
  bool pinned_host = false;
};

struct State {
  std::mutex mutex;
  int device_count = 1;
  size_t memory_limit = size_t(8) << 30;
  std::map<uintptr_t, Allocation> allocations;  // by start address
  size_t live_device_bytes = 0;
  std::set<CUstream_st*> streams;      // live, created by the user (not legacy / per-thread)
  std::vector<CUstream_st*> retired;   // destroyed, draining
  std::map<int, CUstream_st*> legacy;  // per device
  std::set<CUstream_st*> per_thread;
  std::set<CUevent_st*> events;
  std::set<CUgraph_st*> graphs;
  std::set<CUgraphExec_st*> execs;
  std::map<int, cudaError_t> sticky;  // per device: a fault in queued work
  std::atomic<int> faults{0};
  std::atomic<int> max_delay_us{200};  // read by the workers without the lock
  std::atomic<int> delay_percent{10};
  uint64_t seed = 1;
  uint64_t next_serial = 0;
};

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
thread_local CUstream_st* t_per_thread_stream = nullptr;

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

template <typename Visit>
void for_each_capture_locked(State& s, Visit&& visit) {
  std::set<Capture*> seen;
  auto each = [&](CUstream_st* stream) {
    if (stream->capture && seen.insert(stream->capture.get()).second) visit(stream->capture);
  };
  for (CUstream_st* stream : s.streams) each(stream);
  for (CUstream_st* stream : s.per_thread) each(stream);
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

// `device` -1: any device's memory (copies may cross devices); otherwise only that device's (a
// kernel may not touch another GPU's memory: cairn never enables peer access).
bool in_device_allocation_locked(State& s, const void* ptr, size_t bytes, int device = -1) {
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

}  // namespace

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

// -- Memory --

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (ptr == nullptr) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (cudaError_t error = check_unsafe_call_locked(s, "cudaMalloc"); error != cudaSuccess) {
    return fail(error);
  }
  *ptr = nullptr;
  if (bytes == 0) return cudaSuccess;
  if (bytes > s.memory_limit || s.live_device_bytes > s.memory_limit - bytes) {
    return fail(cudaErrorMemoryAllocation);
  }
  void* block = nullptr;
  if (posix_memalign(&block, kAllocationAlignment, bytes) != 0 || block == nullptr) {
    return fail(cudaErrorMemoryAllocation);
  }
  std::memset(block, 0xFF, bytes);  // NaN as float: unwritten outputs fail comparisons
  s.allocations[reinterpret_cast<uintptr_t>(block)] = Allocation{bytes, t_device, false};
  s.live_device_bytes += bytes;
  *ptr = block;
  return cudaSuccess;
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
  synchronize_device_locked(lock, s, device);
  found = s.allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (found == s.allocations.end()) return fail(cudaErrorInvalidValue);  // freed meanwhile
  s.live_device_bytes -= found->second.bytes;
  s.allocations.erase(found);
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  if (ptr == nullptr) return fail(cudaErrorInvalidValue);
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (cudaError_t error = check_unsafe_call_locked(s, "cudaMallocHost"); error != cudaSuccess) {
    return fail(error);
  }
  *ptr = nullptr;
  if (bytes == 0) return cudaSuccess;
  void* block = nullptr;
  if (posix_memalign(&block, 4096, bytes) != 0 || block == nullptr) {
    return fail(cudaErrorMemoryAllocation);
  }
  s.allocations[reinterpret_cast<uintptr_t>(block)] = Allocation{bytes, t_device, true};
  *ptr = block;
  return cudaSuccess;
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
  // Like cudaFree, it waits for queued work (which may still copy from or to the buffer).
  synchronize_device_locked(lock, s, found->second.device);
  found = s.allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (found == s.allocations.end()) return fail(cudaErrorInvalidValue);
  s.allocations.erase(found);
  std::free(ptr);
  return cudaSuccess;
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
