#include "cairn/core/storage.h"

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "cairn/core/allocator.h"
#include "cairn/core/cuda_context.h"
#include "cairn/core/cuda_graph.h"
#include "cairn/base/error.h"
#include "cairn/core/host_allocator.h"

namespace cairn {
namespace {
std::atomic<bool>& poison_flag() {
  static std::atomic<bool> flag{[] {
    const char* env = std::getenv("CAIRN_POISON_ALLOCATIONS");
    return env != nullptr && env[0] != '\0' && std::strcmp(env, "0") != 0;
  }()};
  return flag;
}
}  // namespace

void set_poison_allocations(bool enabled) { poison_flag().store(enabled); }
bool poison_allocations() { return poison_flag().load(); }

struct Storage::Shared : Storage {
  Shared(void* data, size_t bytes, const Device& device, bool owned)
      : Storage(data, bytes, device, owned) {}
};

std::shared_ptr<Storage> Storage::allocate(size_t bytes, const Device& device) {
  void* data = nullptr;
  if (bytes > 0) {
    if (device.is_cuda()) {
      // While a CUDA graph is captured its allocations come from its private pool (see
      // cuda_graph.h); otherwise blocks are keyed by the stream that will use them.
      const void* pool = cuda::capture_pool();
      data = cuda_allocator(device.index())
                 .allocate(bytes, pool != nullptr ? pool : cuda::current_stream(device));
    } else {
      data = host_allocate(bytes);  // cached, 64-byte aligned (host_allocator.h)
    }
    if (poison_allocations()) {
      if (device.is_cuda()) {
        cuda::DeviceGuard guard(device);
        CAIRN_CUDA_CHECK(cudaMemsetAsync(data, 0xFF, bytes, cuda::current_stream(device)));
      } else {
        std::memset(data, 0xFF, bytes);
      }
    }
  }
  return std::make_shared<Shared>(data, bytes, device, /*owned=*/true);
}

std::shared_ptr<Storage> Storage::borrow(void* data, size_t bytes, const Device& device) {
  CAIRN_CHECK(data != nullptr || bytes == 0, "Tensor::wrap: null pointer for ", bytes, " bytes on ",
              device);
  return std::make_shared<Shared>(data, bytes, device, /*owned=*/false);
}

Storage::~Storage() {
  if (!owned_ || data_ == nullptr) return;
  if (device_.is_cuda()) {
    // A block freed while this thread captures a graph may be read by that graph on replays.
    cuda_allocator(device_.index()).deallocate(data_, cuda::capture_pool());
  } else {
    host_deallocate(data_, bytes_);
  }
}

}  // namespace cairn
