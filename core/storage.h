// The bytes behind a tensor: owned (returned to the caching allocator or freed on the host when the
// last tensor lets go) or borrowed (memory a CUDA application allocated and still owns).
#pragma once

#include <cstddef>
#include <memory>

#include "cairn/core/device.h"

namespace cairn {

// Debug switch: fill every new allocation (host and device) with 0xFF bytes, which read as NaN in
// float32, so that an op that forgets to write part of its output fails every comparison.
// Also on with the environment variable CAIRN_POISON_ALLOCATIONS=1.
void set_poison_allocations(bool enabled);
bool poison_allocations();

class Storage {
 public:
  // Throws cairn::Error when the device or the host is out of memory.
  static std::shared_ptr<Storage> allocate(size_t bytes, const Device& device);
  // Wraps memory cairn does not own: never freed by cairn; the caller keeps it alive.
  static std::shared_ptr<Storage> borrow(void* data, size_t bytes, const Device& device);

  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  const Device& device() const { return device_; }
  bool owned() const { return owned_; }

 private:
  Storage(void* data, size_t bytes, const Device& device, bool owned)
      : data_(data), bytes_(bytes), device_(device), owned_(owned) {}
  // Lets make_shared reach the private constructor: one allocation for the Storage and its
  // reference counts instead of two (a tiny network's step makes dozens of tensors).
  struct Shared;
  void* data_;
  size_t bytes_;
  Device device_;
  bool owned_;
};

}  // namespace cairn
