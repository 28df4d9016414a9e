// The fake CUDA runtime's internals, shared by its three files: runtime.cpp (state, workers,
// queues, the internal API, devices), runtime_memory.cpp (allocations and copies) and
// runtime_streams.cpp (streams, events, capture, graphs). What the runtime models: runtime.cpp.
#pragma once

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

using Clock = std::chrono::steady_clock;

// An H200 SXM's properties, as a real one reports them.
inline constexpr size_t kTotalMemory = size_t(150754820096ull);
inline constexpr int kMultiprocessors = 132;
inline constexpr size_t kAllocationAlignment = 256;  // cudaMalloc's documented minimum


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

}  // namespace cairn::fake_cuda

namespace cairn::fake_cuda {

// The fake's one state (never destroyed: workers may outlive static destruction) and the calling
// thread's view of it. Everything named *_locked is called with state().mutex held.
State& state();
extern thread_local int t_device;
extern thread_local cudaError_t t_last_error;

cudaError_t fail(cudaError_t error);  // sets the thread's last error unless one is set
void report(const std::string& message);
const char* error_name(cudaError_t error);

CUstream_st* new_stream_locked(State& s, int device, bool blocking, bool legacy);
void reap_retired_locked(State& s);
CUstream_st* lookup_stream_locked(State& s, cudaStream_t handle, cudaError_t* error);
cudaError_t enqueue_locked(State& s, CUstream_st* stream, const char* what,
                           std::function<void()> work);
void wait_unlocked(std::unique_lock<std::mutex>& lock, const CompletionPtr& completion);
std::vector<CompletionPtr> device_tails_locked(State& s, int device);
cudaError_t sticky_locked(State& s, int device);
cudaError_t synchronize_device_locked(std::unique_lock<std::mutex>& lock, State& s, int device);

void invalidate(const std::shared_ptr<Capture>& capture, const char* why);
bool any_capture_on_device_locked(State& s, int device);
cudaError_t check_unsafe_call_locked(State& s, const char* call);
template <typename Visit>
void for_each_capture_locked(State& s, Visit&& visit) {
  std::set<Capture*> seen;
  auto each = [&](CUstream_st* stream) {
    if (stream->capture && seen.insert(stream->capture.get()).second) visit(stream->capture);
  };
  for (CUstream_st* stream : s.streams) each(stream);
  for (CUstream_st* stream : s.per_thread) each(stream);
}

const Allocation* find_allocation_locked(State& s, const void* ptr, uintptr_t* start);
// `device` -1: any device's memory (copies may cross devices); otherwise only that device's (a
// kernel may not touch another GPU's memory: cairn never enables peer access).
bool in_device_allocation_locked(State& s, const void* ptr, size_t bytes, int device = -1);
bool is_pinned_locked(State& s, const void* ptr);

}  // namespace cairn::fake_cuda
