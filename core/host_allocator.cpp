#include "cairn/core/host_allocator.h"

#include <cstdlib>
#include <memory>
#include <string>

#include "cairn/base/error.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CAIRN_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define CAIRN_ASAN 1
#endif
#if defined(CAIRN_ASAN)
#include <sanitizer/asan_interface.h>
#endif

namespace cairn {
namespace {

constexpr size_t kHostAlignment = 64;
// Far beyond any host's memory, and small enough that bucket rounding cannot overflow size_t.
constexpr size_t kLargestRequest = size_t(1) << 60;

class HostRawAllocator final : public RawAllocator {
 public:
  void* allocate(size_t bytes) override {
    // Buckets are multiples of 512 bytes, so of the alignment too, as aligned_alloc requires.
    return std::aligned_alloc(kHostAlignment, bytes);
  }
  // free() of a block poisoned by host_deallocate is fine: ASan checks its own chunk header.
  void release(void* ptr) noexcept override { std::free(ptr); }
  std::string name() const override { return "host"; }
};

}  // namespace

CachingAllocator& host_allocator() {
  static CachingAllocator* allocator = new CachingAllocator(std::make_unique<HostRawAllocator>());
  return *allocator;
}

void* host_allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  CAIRN_CHECK(bytes <= kLargestRequest, "out of host memory: ", bytes, " bytes is not addressable");
  void* data = nullptr;
  try {
    data = host_allocator().allocate(bytes, /*stream=*/nullptr);
  } catch (const Error&) {
    CAIRN_FAIL("out of host memory: could not allocate ", bytes, " bytes (",
               host_allocator().stats().bytes_in_use, " bytes are in use by tensors)");
  }
#if defined(CAIRN_ASAN)
  // The rounding slack stays poisoned: an overrun past `bytes` reports as it did with malloc.
  ASAN_POISON_MEMORY_REGION(data, CachingAllocator::bucket_size(bytes));
  ASAN_UNPOISON_MEMORY_REGION(data, bytes);
#endif
  return data;
}

void host_deallocate(void* ptr, size_t bytes) noexcept {
  if (ptr == nullptr) return;
#if defined(CAIRN_ASAN)
  ASAN_POISON_MEMORY_REGION(ptr, CachingAllocator::bucket_size(bytes));
#else
  (void)bytes;
#endif
  host_allocator().deallocate(ptr);
}

}  // namespace cairn
