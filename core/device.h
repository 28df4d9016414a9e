// Where a tensor lives: the host, or one CUDA device.
#pragma once

#include <ostream>
#include <string>

namespace cairn {

class Device {
 public:
  enum class Kind { kCpu, kCuda };

  static Device cpu() { return Device(Kind::kCpu, 0); }
  static Device cuda(int index = 0);

  Kind kind() const { return kind_; }
  int index() const { return index_; }
  bool is_cpu() const { return kind_ == Kind::kCpu; }
  bool is_cuda() const { return kind_ == Kind::kCuda; }
  std::string str() const;  // "cpu" or "cuda:0"

  friend bool operator==(const Device& a, const Device& b) {
    return a.kind_ == b.kind_ && a.index_ == b.index_;
  }
  friend bool operator!=(const Device& a, const Device& b) { return !(a == b); }

 private:
  Device(Kind kind, int index) : kind_(kind), index_(index) {}
  Kind kind_;
  int index_;
};

std::ostream& operator<<(std::ostream& out, const Device& device);

// How many CUDA devices are usable. Never throws and never crashes: without a driver, or with a
// driver and no device, the runtime's error is cleared and the answer is 0.
int cuda_device_count();
bool cuda_available();
// Why there is no GPU, in words ("no CUDA driver: ..."), or "" when there is one.
std::string cuda_unavailable_reason();

// The first GPU when one is usable, else the CPU. The first call that falls back to the CPU prints
// one line to stderr saying so and why; set_default_device() overrides the choice.
Device default_device();
void set_default_device(const Device& device);

}  // namespace cairn
