// A caching allocator in front of a raw allocator (cudaMalloc, in practice).
//
// Sizes are rounded up to a bucket and freed blocks go to a free list per (stream, bucket), so a
// training step that asks for the same sizes every iteration stops calling cudaMalloc/cudaFree
// after its first step. A block is only reused on the stream it was allocated for, which keeps
// reuse ordered by that stream without events. The counters let tests assert "no raw allocation
// after warm-up".
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace cairn {

struct AllocatorStats {
  int64_t raw_allocations = 0;  // calls that reached the raw allocator
  int64_t raw_frees = 0;
  int64_t requests = 0;        // allocate() calls with a non-zero size
  int64_t cache_hits = 0;      // requests served from the free lists
  int64_t bytes_in_use = 0;    // handed out and not yet returned (rounded sizes)
  int64_t bytes_reserved = 0;  // held from the raw allocator: in use plus cached
  int64_t peak_bytes_in_use = 0;
};

// Where the memory really comes from. allocate() returns nullptr when out of memory.
class RawAllocator {
 public:
  virtual ~RawAllocator() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* ptr) noexcept = 0;
  virtual std::string name() const = 0;  // "cuda:0", for messages
};

class CachingAllocator {
 public:
  explicit CachingAllocator(std::unique_ptr<RawAllocator> raw);
  ~CachingAllocator();  // returns every cached block; blocks still in use are the owners' to leak
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // Zero bytes gives nullptr. When the raw allocator is out of memory the cache is emptied and the
  // request retried once; if it still fails, throws cairn::Error with the sizes involved.
  void* allocate(size_t bytes, const void* stream);
  void deallocate(void* ptr) noexcept;

  void empty_cache();  // gives every cached (free) block back to the raw allocator
  // Gives back the cached blocks of one key (a CUDA graph's private pool, when the graph dies),
  // and marks the key dead: blocks of that pool still held by tensors go straight back to the raw
  // allocator when freed, instead of waiting in a list no one will draw from.
  void release_pool(const void* key) noexcept;
  AllocatorStats stats() const;
  void reset_peak();

  // The bucket a request is served from: multiples of 512 bytes up to 4 KiB, then steps of one
  // eighth of the largest power of two below the request, so rounding never wastes more than 12.5%.
  static size_t bucket_size(size_t bytes);

 private:
  struct Block {
    size_t bytes;
    const void* stream;
  };
  using FreeListKey = std::pair<const void*, size_t>;

  mutable std::mutex mutex_;
  std::unique_ptr<RawAllocator> raw_;
  std::map<FreeListKey, std::vector<void*>> free_lists_;
  std::unordered_map<void*, Block> in_use_;
  std::unordered_set<const void*> dead_pools_;
  AllocatorStats stats_;
  void release_cached_locked();
};

// The process-wide caching allocator of CUDA device `index` (created on first use, never destroyed:
// blocks may still be returned during static destruction).
CachingAllocator& cuda_allocator(int index);

}  // namespace cairn
