// libFuzzer target for read_idx (plain and gzip IDX files): any input must read or throw
// cairn::Error. Another exception, a crash, a sanitizer report, a hang, or memory beyond
// -rss_limit_mb in all or -malloc_limit_mb in one allocation is a finding. Reads are bounded at
// 64 MiB (read_idx's max_bytes), as a caller that knows its data would bound them, so that a
// gzip stream inflating past that must be refused rather than stored.
#include <cstdint>
#include <cstdlib>

#include "cairn/blocks/idx.h"
#include "fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = cairn::fuzz::input_path("idx");
  cairn::fuzz::write_input(path, data, size);
  try {
    constexpr uint64_t kMaxBytes = uint64_t(64) << 20;
    const cairn::IdxArray array = cairn::read_idx(path, kMaxBytes);
    if (array.data.size() > kMaxBytes) std::abort();
    // The reader promises 1 to 4 dimensions whose product is the data's length.
    if (array.shape.empty() || array.shape.size() > 4) std::abort();
    uint64_t numel = 1;
    for (int64_t dim : array.shape) {
      if (dim < 0) std::abort();
      numel *= uint64_t(dim);
    }
    if (numel != array.data.size()) std::abort();
  } catch (const cairn::Error&) {
    // The expected outcome for a malformed file.
  }
  return 0;
}
