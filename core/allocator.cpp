#include "cairn/core/allocator.h"

#include <cuda_runtime_api.h>

#include <array>

#include "cairn/core/cuda_context.h"
#include "cairn/base/error.h"

namespace cairn {
namespace {
// The key of blocks whose stream was retired without an ordering: like a dead pool's, they go
// straight back to the raw allocator when freed.
const char kOrphaned = 0;
}  // namespace

CachingAllocator::CachingAllocator(std::unique_ptr<RawAllocator> raw) : raw_(std::move(raw)) {
  dead_pools_.insert(&kOrphaned);
}

CachingAllocator::~CachingAllocator() {
  // Every list, live pools included: nothing can replay a graph of a dead allocator.
  std::lock_guard<std::mutex> lock(mutex_);
  capturing_pools_.clear();  // nothing can be captured into a dead allocator's pools
  for (auto& [key, blocks] : free_lists_) release_list_locked(blocks, key.second);
  free_lists_.clear();
  for (void* ptr : deferred_releases_) raw_->release(ptr);
  for (auto& [stream, event] : stream_events_) raw_->destroy_event(event);
}

size_t CachingAllocator::bucket_size(size_t bytes) {
  constexpr size_t kSmallStep = 512;
  if (bytes <= 4096) return (bytes + kSmallStep - 1) / kSmallStep * kSmallStep;
  // Steps of an eighth of the largest power of two not above the request: the waste stays under
  // an eighth of the request.
  size_t power = 1;
  while (power * 2 <= bytes) power <<= 1;
  const size_t step = power / 8;
  return (bytes + step - 1) / step * step;
}

void* CachingAllocator::allocate(size_t bytes, const void* stream) {
  if (bytes == 0) return nullptr;
  const size_t rounded = bucket_size(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.requests;
  dead_pools_.erase(stream);  // a new graph may live at a dead one's address

  void* ptr = nullptr;
  auto list = free_lists_.find({stream, rounded});
  if (list != free_lists_.end() && !list->second.empty()) {
    ptr = list->second.back();
    list->second.pop_back();
    ++stats_.cache_hits;
  } else {
    ptr = raw_->allocate(rounded);
    // Cached blocks of other sizes may be what stands in the way: give them back and retry. Not
    // while a graph is being captured: the half-built graph may already use any cached block.
    const bool may_release = capturing_pools_.empty();
    if (ptr == nullptr && may_release) {
      release_cached_locked();
      ptr = raw_->allocate(rounded);
    }
    CAIRN_CHECK(ptr != nullptr, "out of memory on ", raw_->name(), ": requested ", bytes,
                " bytes (", rounded, " rounded); ", stats_.bytes_in_use,
                " bytes are in use by tensors",
                may_release ? ""
                            : " (the cache was not emptied to retry: a CUDA graph is being "
                              "captured)");
    ++stats_.raw_allocations;
    stats_.bytes_reserved += int64_t(rounded);
  }
  in_use_[ptr] = Block{rounded, stream};
  stats_.bytes_in_use += int64_t(rounded);
  if (stats_.bytes_in_use > stats_.peak_bytes_in_use) {
    stats_.peak_bytes_in_use = stats_.bytes_in_use;
  }
  return ptr;
}

void CachingAllocator::deallocate(void* ptr, const void* capturing_pool) noexcept {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = in_use_.find(ptr);
  if (found == in_use_.end()) return;  // not ours; never throw from a release path
  Block block = found->second;
  in_use_.erase(found);
  if (capturing_pool != nullptr && block.stream != capturing_pool &&
      capturing_pools_.count(capturing_pool) != 0) {
    block.stream = capturing_pool;  // the graph may read it on every replay: it is the graph's now
  }
  stats_.bytes_in_use -= int64_t(block.bytes);
  if (dead_pools_.count(block.stream) != 0) {
    release_block_locked(ptr, block.bytes);
    return;
  }
  free_lists_[{block.stream, block.bytes}].push_back(ptr);
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  CAIRN_CHECK(capturing_pools_.empty(), "empty_cache on ", raw_->name(), ": refused while ",
              capturing_pools_.size(),
              " CUDA graph(s) are being captured: their kernels may already use cached blocks; "
              "empty the cache before or after the capture");
  release_cached_locked();
}

void CachingAllocator::begin_capture(const void* key) {
  std::lock_guard<std::mutex> lock(mutex_);
  dead_pools_.erase(key);  // a new graph may live at a dead one's address
  live_pools_.insert(key);
  capturing_pools_.insert(key);
}

void CachingAllocator::end_capture(const void* key) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  capturing_pools_.erase(key);
  after_capture_locked();
}

void CachingAllocator::after_capture_locked() noexcept {
  if (!capturing_pools_.empty()) return;
  for (void* ptr : deferred_releases_) raw_->release(ptr);
  deferred_releases_.clear();
  for (auto it = unguarded_while_capturing_.begin(); it != unguarded_while_capturing_.end();) {
    const void* stream = *it;
    if (raw_->capturing(stream)) {
      ++it;
      continue;
    }
    it = unguarded_while_capturing_.erase(it);
    record_stream_event_locked(stream);
  }
}

void CachingAllocator::release_block_locked(void* ptr, size_t bytes) noexcept {
  ++stats_.raw_frees;
  stats_.bytes_reserved -= int64_t(bytes);
  if (capturing_pools_.empty()) {
    raw_->release(ptr);
  } else {
    deferred_releases_.push_back(ptr);
  }
}

bool CachingAllocator::capturing() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return !capturing_pools_.empty();
}

void CachingAllocator::release_pool(const void* key) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  live_pools_.erase(key);
  capturing_pools_.erase(key);
  after_capture_locked();  // a capture that failed ends here
  dead_pools_.insert(key);
  for (auto it = free_lists_.begin(); it != free_lists_.end();) {
    if (it->first.first != key) {
      ++it;
      continue;
    }
    release_list_locked(it->second, it->first.second);
    it = free_lists_.erase(it);
  }
}

void CachingAllocator::guard_stream(const void* stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (guarded_streams_[stream]++ > 0) return;  // already ordered by the first guard
  // Guarded again before its capture ended: the same stream, still in order.
  if (unguarded_while_capturing_.erase(stream) != 0) return;
  auto event = stream_events_.find(stream);
  if (event == stream_events_.end()) return;
  // The last guard on this address ended with this event. Waiting for it orders whatever stream
  // now lives here after every block's last queued use (a no-op when it is the same stream).
  if (!raw_->wait_event(stream, event->second)) forget_stream_locked(stream);
}

void CachingAllocator::unguard_stream(const void* stream) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  auto guarded = guarded_streams_.find(stream);
  if (guarded == guarded_streams_.end()) return;
  if (--guarded->second > 0) return;  // another guard (maybe on another thread) still uses it
  guarded_streams_.erase(guarded);
  if (raw_->capturing(stream)) {
    // No event can be recorded on a capturing stream (it would be the graph's): record it when
    // the capture is over, so that a next guard never waits on a missing or stale event.
    unguarded_while_capturing_.insert(stream);
    return;
  }
  record_stream_event_locked(stream);
}

void CachingAllocator::record_stream_event_locked(const void* stream) noexcept {
  void*& event = stream_events_[stream];
  if (!raw_->record_event(stream, event) || event == nullptr) {
    if (event != nullptr) raw_->destroy_event(event);
    stream_events_.erase(stream);
    forget_stream_locked(stream);
  }
}

void CachingAllocator::forget_stream_locked(const void* stream) noexcept {
  for (auto& [ptr, block] : in_use_) {
    if (block.stream == stream) block.stream = &kOrphaned;
  }
  if (!capturing_pools_.empty()) return;  // nothing is freed during a capture
  for (auto it = free_lists_.lower_bound({stream, 0});
       it != free_lists_.end() && it->first.first == stream;) {
    release_list_locked(it->second, it->first.second);
    it = free_lists_.erase(it);
  }
}

void CachingAllocator::release_list_locked(std::vector<void*>& blocks, size_t bytes) noexcept {
  for (void* ptr : blocks) release_block_locked(ptr, bytes);
  blocks.clear();
}

void CachingAllocator::release_cached_locked() {
  for (auto it = free_lists_.begin(); it != free_lists_.end();) {
    if (live_pools_.count(it->first.first) != 0) {
      ++it;  // a live graph replays with these addresses
      continue;
    }
    release_list_locked(it->second, it->first.second);
    it = free_lists_.erase(it);
  }
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak_bytes_in_use = stats_.bytes_in_use;
}

namespace {

class CudaRawAllocator final : public RawAllocator {
 public:
  explicit CudaRawAllocator(int index) : index_(index) {}

  void* allocate(size_t bytes) override {
    cuda::DeviceGuard guard(Device::cuda(index_));
    void* ptr = nullptr;
    const cudaError_t status = cudaMalloc(&ptr, bytes);
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // out of memory is an answer here; the caller retries or reports it
      return nullptr;
    }
    CAIRN_CUDA_CHECK(status);
    return ptr;
  }

  void release(void* ptr) noexcept override {
    // cudaFree synchronises the device, so queued kernels that still use the block finish first.
    CAIRN_CUDA_REPORT(cudaFree(ptr));
  }

  // Called under the caching allocator's lock. A stream being captured needs no ordering (it is
  // alive and ordered by the capture), and no event may cross a capture's boundary.
  bool record_event(const void* stream, void*& event) noexcept override {
    const auto cuda_stream = static_cast<cudaStream_t>(const_cast<void*>(stream));
    if (stream_capturing(cuda_stream)) return false;  // callers check capturing() first
    auto cuda_event = static_cast<cudaEvent_t>(event);
    bool ok = on_device([&] {
      if (cuda_event == nullptr &&
          cudaEventCreateWithFlags(&cuda_event, cudaEventDisableTiming) != cudaSuccess) {
        return false;
      }
      event = cuda_event;
      return cudaEventRecord(cuda_event, cuda_stream) == cudaSuccess;
    });
    if (!ok) cudaGetLastError();
    return ok;
  }

  bool wait_event(const void* stream, void* event) noexcept override {
    const auto cuda_stream = static_cast<cudaStream_t>(const_cast<void*>(stream));
    if (stream_capturing(cuda_stream)) return true;  // ordered by the capture itself
    const bool ok = on_device([&] {
      return cudaStreamWaitEvent(cuda_stream, static_cast<cudaEvent_t>(event), 0) == cudaSuccess;
    });
    if (!ok) cudaGetLastError();
    return ok;
  }

  void destroy_event(void* event) noexcept override {
    if (event != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(event));
  }

  std::string name() const override { return Device::cuda(index_).str(); }

  bool capturing(const void* stream) noexcept override {
    return stream_capturing(static_cast<cudaStream_t>(const_cast<void*>(stream)));
  }

 private:
  static bool stream_capturing(cudaStream_t stream) noexcept {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return status != cudaStreamCaptureStatusNone;
  }

  // Runs `body` with this device current (noexcept: the DeviceGuard's checks would throw).
  template <typename Body>
  bool on_device(Body&& body) noexcept {
    int previous = -1;
    if (cudaGetDevice(&previous) != cudaSuccess) return false;
    if (previous != index_ && cudaSetDevice(index_) != cudaSuccess) return false;
    const bool ok = body();
    if (previous != index_) cudaSetDevice(previous);
    return ok;
  }

  int index_;
};

}  // namespace

CachingAllocator& cuda_allocator(int index) {
  constexpr int kMaxDevices = 64;
  static std::array<CachingAllocator*, kMaxDevices> allocators{};
  static std::mutex mutex;
  CAIRN_CHECK(index >= 0 && index < kMaxDevices, "cuda_allocator: bad device index ", index);
  std::lock_guard<std::mutex> lock(mutex);
  if (allocators[index] == nullptr) {
    allocators[index] = new CachingAllocator(std::make_unique<CudaRawAllocator>(index));
  }
  return *allocators[index];
}

}  // namespace cairn
