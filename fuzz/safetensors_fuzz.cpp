// libFuzzer target for load_safetensors: any input must load or throw cairn::Error. Another
// exception, a crash, a sanitizer report, a hang or an allocation beyond -rss_limit_mb is a
// finding.
#include <cstdint>
#include <cstdlib>

#include "cairn/blocks/safetensors.h"
#include "fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = cairn::fuzz::input_path("safetensors");
  cairn::fuzz::write_input(path, data, size);
  try {
    const cairn::SafetensorsFile file = cairn::load_safetensors(path);
    // Read every byte of every tensor, so that ASan checks each buffer is as large as claimed,
    // and hold the reader to its promise that the tensors fit in four times the file (one-byte
    // types widen to int32, two-byte floats to float32).
    uint64_t total = 0;
    unsigned checksum = 0;
    for (const auto& [name, tensor] : file.tensors) {
      const auto* bytes = static_cast<const uint8_t*>(tensor.raw_data());
      for (size_t i = 0; i < tensor.nbytes(); ++i) checksum += bytes[i];
      total += tensor.nbytes();
      if (!tensor.device().is_cpu()) std::abort();
    }
    if (total > 4 * uint64_t(size)) std::abort();
    static volatile unsigned sink;
    sink = checksum;
  } catch (const cairn::Error&) {
    // The expected outcome for a malformed file.
  }
  return 0;
}
