// The element types a safetensors file may declare, and how cairn converts them to and from its
// own dtypes (float32 and int32). Used by blocks/safetensors.cpp; the rules are documented with
// load_safetensors and save_safetensors (safetensors.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "cairn/core/shape.h"

namespace cairn {
class Tensor;

namespace safetensors_dtypes {

struct StoredDType {
  const char* name;  // as in the header: "BF16"
  size_t bytes;      // per element
  DType loads_as;    // cairn's dtype on load
};

// The entry for a header's dtype name, or nullptr when cairn cannot read it.
const StoredDType* find(const std::string& name);
// "F32, F16, BF16, ..." for messages.
std::string readable_names();
// True when the file's bytes are cairn's own in-memory layout (F32, I32): read them in place.
bool is_native(const StoredDType& stored);

// Converts `out.numel()` elements stored as `stored` into `out`, a CPU tensor of stored.loads_as.
// Throws cairn::Error, prefixed "<what>: ", at the first value the conversion would change beyond
// rounding: an integer outside int32, a finite F64 outside float32's range, a BOOL byte not 0 or 1.
void decode(const StoredDType& stored, const unsigned char* bytes, Tensor& out,
            const std::string& what);

// Writes `in` (a CPU float32 tensor) as F16 or BF16 into `bytes` (2 * numel), rounding to nearest
// even. Throws cairn::Error, prefixed "<what>: ", at a finite value the type cannot hold.
void encode_float(const Tensor& in, const StoredDType& stored, unsigned char* bytes,
                  const std::string& what);

}  // namespace safetensors_dtypes
}  // namespace cairn
