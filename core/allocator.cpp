#include "cairn/core/allocator.h"

#include <cuda_runtime_api.h>

#include <array>

#include "cairn/core/cuda_context.h"
#include "cairn/core/error.h"

namespace cairn {

CachingAllocator::CachingAllocator(std::unique_ptr<RawAllocator> raw) : raw_(std::move(raw)) {}

CachingAllocator::~CachingAllocator() {
  std::lock_guard<std::mutex> lock(mutex_);
  release_cached_locked();
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
    if (ptr == nullptr) {
      // Cached blocks of other sizes may be what stands in the way: give them back and retry.
      release_cached_locked();
      ptr = raw_->allocate(rounded);
    }
    CAIRN_CHECK(ptr != nullptr, "out of memory on ", raw_->name(), ": requested ", bytes,
                " bytes (", rounded, " rounded); ", stats_.bytes_in_use,
                " bytes are in use by tensors");
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

void CachingAllocator::deallocate(void* ptr) noexcept {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = in_use_.find(ptr);
  if (found == in_use_.end()) return;  // not ours; never throw from a release path
  const Block block = found->second;
  in_use_.erase(found);
  stats_.bytes_in_use -= int64_t(block.bytes);
  if (dead_pools_.count(block.stream) != 0) {
    raw_->release(ptr);
    ++stats_.raw_frees;
    stats_.bytes_reserved -= int64_t(block.bytes);
    return;
  }
  free_lists_[{block.stream, block.bytes}].push_back(ptr);
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  release_cached_locked();
}

void CachingAllocator::release_pool(const void* key) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  dead_pools_.insert(key);
  for (auto it = free_lists_.begin(); it != free_lists_.end();) {
    if (it->first.first != key) {
      ++it;
      continue;
    }
    for (void* ptr : it->second) {
      raw_->release(ptr);
      ++stats_.raw_frees;
      stats_.bytes_reserved -= int64_t(it->first.second);
    }
    it = free_lists_.erase(it);
  }
}

void CachingAllocator::release_cached_locked() {
  for (auto& [key, blocks] : free_lists_) {
    for (void* ptr : blocks) {
      raw_->release(ptr);
      ++stats_.raw_frees;
      stats_.bytes_reserved -= int64_t(key.second);
    }
  }
  free_lists_.clear();
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
    cudaFree(ptr);
  }

  std::string name() const override { return Device::cuda(index_).str(); }

 private:
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
