// What every fake launcher shares (launchers*.cpp): sizes that refuse overflow, the ranges a
// kernel touches, and launch(), which checks them and queues the CPU twin on the stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cairn/base/error.h"
#include "cairn/kernels/common.h"
#include "cairn/tests/fake_cuda/fake_device.h"

namespace cairn::fake_cuda {


using kernels::StreamHandle;
using Ranges = std::vector<Range>;

// rows * cols, refused when it overflows: the real kernel's index arithmetic would wrap. (Only
// some .cu launchers check this themselves; the fake checks it for every shape it sizes.)
inline int64_t elements(const char* what, int64_t rows, int64_t cols) {
  CAIRN_CHECK(cols == 0 || rows <= std::numeric_limits<int64_t>::max() / cols, what, ": shape (",
              rows, ", ", cols, ") overflows int64");
  return rows * cols;
}

// The range of `count` elements of `element_bytes` each at `ptr`.
inline Range span(const char* what, const char* name, const void* ptr, int64_t count,
           size_t element_bytes) {
  CAIRN_CHECK(count >= 0 && uint64_t(count) <= std::numeric_limits<size_t>::max() / element_bytes,
              what, ": argument ", name, " of ", count, " elements does not fit size_t bytes");
  return Range{name, ptr, size_t(count) * element_bytes};
}

inline Range floats(const char* what, const char* name, const void* ptr, int64_t count) {
  return span(what, name, ptr, count, sizeof(float));
}

inline Range int32s(const char* what, const char* name, const void* ptr, int64_t count) {
  return span(what, name, ptr, count, sizeof(int32_t));
}

// Throws naming the launcher and the first argument outside live device memory. The last error
// check_device_ranges set is cleared, as throw_cuda_error clears it, so that a caught refusal does
// not fail the next, unrelated launch check.
inline void require_device_ranges(const char* what, const Ranges& ranges) {
  for (const Range& range : ranges) {
    if (check_device_ranges(what, {range})) continue;
    cudaGetLastError();
    CAIRN_FAIL(what, ": argument ", range.name, " [", range.ptr, ", +", range.bytes,
               " bytes) is not inside one live device allocation");
  }
}

// Checks the ranges, queues `work` on the stream, and checks the launch as CAIRN_CHECK_LAUNCH
// does after a real one (so CAIRN_SYNC_LAUNCHES works the same). At run time the ranges are
// checked again; a range freed in between throws on the worker, which the runtime turns into a
// sticky launch failure, as a fault inside a real kernel would be.
template <typename Work>
void launch(const char* what, StreamHandle stream, Ranges ranges, Work work) {
  require_device_ranges(what, ranges);
  const cudaError_t status = enqueue(stream, what, [what, ranges, work] {
    for (const Range& range : ranges) {
      CAIRN_CHECK(is_device_range(range.ptr, range.bytes), what, ": argument ", range.name,
                  " was freed before the kernel ran");
    }
    work();
  });
  if (status != cudaSuccess) set_last_error(status);
  CAIRN_CHECK_LAUNCH(what, stream);
}

// Workspace sizes: positive and growing with the input, so that a caller that skips the query or
// sizes it for another shape is refused. Rounded to 256 bytes, as allocators round.
inline size_t workspace_size(int64_t items) { return (256 + 4 * size_t(items) + 255) / 256 * 256; }

// What the real temporary storage gets: written, so that sharing it across streams races.
inline void scribble(void* workspace, size_t bytes) { std::memset(workspace, 0xff, bytes); }

}  // namespace cairn::fake_cuda
