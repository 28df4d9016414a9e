// A caching allocator in front of a raw allocator (cudaMalloc, in practice).
//
// Sizes are rounded up to a bucket and freed blocks go to a free list per (stream, bucket), so a
// training step that asks for the same sizes every iteration stops calling cudaMalloc/cudaFree
// after its first step. A block is only reused on the stream it was allocated for, which keeps
// reuse ordered by that stream without events. The counters let tests assert "no raw allocation
// after warm-up".
//
// CUDA graphs: a graph's kernels use the addresses they were captured with on every replay, so a
// graph's pool (its blocks, in use or free) belongs to the graph until the graph dies. Emptying the
// cache (by hand or on out-of-memory) leaves live pools alone, and frees nothing at all while a
// graph is being captured: a half-built graph may already use any cached block.
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
  // Stream ordering, for StreamGuard streams (see CachingAllocator::guard_stream). record_event
  // records, on `stream`, an event marking all work queued so far (creating it when `event` is
  // null); wait_event makes later work on `stream` wait for it. Both return false when that cannot
  // be done, and the caller then falls back to forgetting the stream's blocks. The default
  // backend has no streams to order.
  virtual bool record_event(const void* stream, void*& event) noexcept {
    (void)stream;
    (void)event;
    return false;
  }
  virtual bool wait_event(const void* stream, void* event) noexcept {
    (void)stream;
    (void)event;
    return false;
  }
  virtual void destroy_event(void* event) noexcept { (void)event; }
  // Whether `stream` is being captured into a CUDA graph: no event can be recorded there then
  // (it would belong to the graph), so the ordering waits for the capture's end.
  virtual bool capturing(const void* stream) noexcept {
    (void)stream;
    return false;
  }
};

class CachingAllocator {
 public:
  explicit CachingAllocator(std::unique_ptr<RawAllocator> raw);
  ~CachingAllocator();  // returns every cached block; blocks still in use are the owners' to leak
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // Zero bytes gives nullptr. When the raw allocator is out of memory the cache is emptied (see
  // empty_cache) and the request retried once; if it still fails, throws cairn::Error with the
  // sizes involved.
  void* allocate(size_t bytes, const void* stream);
  // `capturing_pool`: the pool of the graph the calling thread is capturing (cuda::capture_pool()),
  // or null. A block from outside that pool freed during its capture may be read by the graph on
  // every replay, so it joins the pool (reused only by that graph, freed when the graph dies)
  // instead of the eager free list.
  void deallocate(void* ptr, const void* capturing_pool = nullptr) noexcept;

  // Gives every cached (free) block back to the raw allocator, except those of live graph pools.
  // Throws cairn::Error while a graph is being captured (its kernels may use cached blocks).
  void empty_cache();

  // A graph's pool `key` starts (capture begins) and stops being captured; the pool stays live
  // until release_pool.
  void begin_capture(const void* key);
  void end_capture(const void* key) noexcept;
  bool capturing() const;
  // Gives back the cached blocks of one key (a CUDA graph's private pool, when the graph dies),
  // and marks the key dead: blocks of that pool still held by tensors go straight back to the raw
  // allocator when freed, instead of waiting in a list no one will draw from.
  void release_pool(const void* key) noexcept;

  // A StreamGuard on `stream` begins / ends. Free lists are keyed by the stream's address, and a
  // destroyed stream's address may come back as a new stream, which must not be handed blocks
  // whose last use is still queued on the old one. So when the last guard on a stream ends, an
  // event is recorded there (RawAllocator::record_event), and the next guard on that address
  // makes its stream wait for it before drawing from the list: cheap, and the blocks stay cached.
  // Where no event can be recorded the stream's blocks are forgotten instead: free ones are
  // released (not during a capture), in-use ones go back to the raw allocator when freed.
  void guard_stream(const void* stream);
  void unguard_stream(const void* stream) noexcept;

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
  std::unordered_set<const void*> live_pools_;            // graphs alive (capturing or replayable)
  std::unordered_set<const void*> capturing_pools_;       // graphs being captured now
  std::unordered_map<const void*, int> guarded_streams_;  // StreamGuards alive per stream
  std::unordered_map<const void*, void*> stream_events_;  // recorded when the last guard ended
  // Streams whose last guard ended while they were captured: their event is recorded once no
  // capture is running.
  std::unordered_set<const void*> unguarded_while_capturing_;
  // Blocks to give back to the raw allocator once no graph is being captured (a raw free
  // synchronises the device, which a capture on another thread does not allow).
  std::vector<void*> deferred_releases_;
  AllocatorStats stats_;
  void release_block_locked(void* ptr, size_t bytes) noexcept;
  void after_capture_locked() noexcept;  // once no capture runs: deferred releases and events
  void record_stream_event_locked(const void* stream) noexcept;
  // Returns the cached blocks of every key that is not a live pool to the raw allocator.
  void release_cached_locked();
  void release_list_locked(std::vector<void*>& blocks, size_t bytes) noexcept;
  void forget_stream_locked(const void* stream) noexcept;
};

// The process-wide caching allocator of CUDA device `index` (created on first use, never destroyed:
// blocks may still be returned during static destruction).
CachingAllocator& cuda_allocator(int index);

}  // namespace cairn
