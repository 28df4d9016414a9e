#include "cairn/core/device.h"

#include <cuda_runtime_api.h>

#include <iostream>
#include <mutex>
#include <optional>

#include "cairn/base/error.h"

namespace cairn {
namespace {

struct CudaProbe {
  int count = 0;
  std::string reason;
};

// Probed once, lazily: never from a static initialiser, so that test discovery and programs that
// never touch a GPU do not pay for (or trip over) driver initialisation.
const CudaProbe& cuda_probe() {
  static const CudaProbe probe = [] {
    CudaProbe result;
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
      cudaGetLastError();  // clear it: a missing driver is an answer, not a fault
      result.reason = std::string("CUDA runtime reports ") + cudaGetErrorName(status) + " (" +
                      cudaGetErrorString(status) + ")";
      return result;
    }
    if (count == 0) {
      result.reason = "the CUDA driver sees no device";
      return result;
    }
    result.count = count;
    return result;
  }();
  return probe;
}

std::mutex& default_mutex() {
  static std::mutex mutex;
  return mutex;
}
std::optional<Device>& default_override() {
  static std::optional<Device> device;
  return device;
}

}  // namespace

Device Device::cuda(int index) {
  CAIRN_CHECK(index >= 0, "Device::cuda: index must be >= 0, got ", index);
  return Device(Kind::kCuda, index);
}

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index_);
}

std::ostream& operator<<(std::ostream& out, const Device& device) { return out << device.str(); }

int cuda_device_count() { return cuda_probe().count; }
bool cuda_available() { return cuda_device_count() > 0; }
std::string cuda_unavailable_reason() { return cuda_probe().reason; }

Device default_device() {
  std::lock_guard<std::mutex> lock(default_mutex());
  if (!default_override()) {
    if (cuda_available()) {
      default_override() = Device::cuda(0);
    } else {
      std::cerr << "cairn: no GPU (" << cuda_unavailable_reason() << "); running on the CPU\n";
      default_override() = Device::cpu();
    }
  }
  return *default_override();
}

void set_default_device(const Device& device) {
  if (device.is_cuda()) {
    CAIRN_CHECK(device.index() < cuda_device_count(), "set_default_device: ", device,
                " is not available (", cuda_device_count(), " CUDA devices; ",
                cuda_unavailable_reason(), ")");
  }
  std::lock_guard<std::mutex> lock(default_mutex());
  default_override() = device;
}

}  // namespace cairn
