// Size2: a 2-d window, stride or padding size, (h, w), or one number for both (PyTorch's
// `kernel_size=3` or `(3, 2)`). Shared by the convolution and pooling blocks.
#pragma once

#include <cstdint>

namespace cairn {

struct Size2 {
  int64_t h, w;
  Size2(int64_t both) : h(both), w(both) {}  // NOLINT(google-explicit-constructor): by design
  Size2(int64_t h, int64_t w) : h(h), w(w) {}
  bool operator==(const Size2& other) const { return h == other.h && w == other.w; }
  bool operator!=(const Size2& other) const { return !(*this == other); }
};

}  // namespace cairn
