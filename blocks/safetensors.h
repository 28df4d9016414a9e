// safetensors: the Hugging Face tensor file format, which PyTorch, numpy and most of the ecosystem
// read and write (https://github.com/huggingface/safetensors).
//
// Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON describing each tensor
// ({"name": {"dtype": "F32", "shape": [3, 4], "data_offsets": [begin, end]}, ...} plus an optional
// "__metadata__" object of strings), then the raw little-endian bytes of every tensor, with offsets
// relative to the start of that data section.
//
// cairn holds float32 and int32 tensors, and converts on the way in and out:
//   - loading, F32 and I32 are read as they are; F16 and BF16 widen to float32 exactly; F64
//     rounds to the nearest float32 (a finite value beyond float32's range is refused, never made
//     infinite); I8, U8, I16, U16 widen to int32 exactly, and I64, U32, U64 load as int32 when
//     every value fits (else refused, naming the tensor and the value); BOOL loads as int32 0/1.
//   - saving writes int32 as I32 and float32 as F32, or on request as F16 or BF16, rounded to
//     nearest even (a finite value that would overflow to infinity is refused). Infinities and
//     signed zeros are kept; NaN stays NaN with its sign (F16 keeps the payload's top bits as
//     numpy does, BF16 becomes the quiet NaN 0x7fc0 as ml_dtypes does; see core/half_float.h).
// F8 and complex types are refused with the list of the types cairn reads.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "cairn/base/error.h"  // the cairn::Error these functions throw
#include "cairn/core/tensor.h"

namespace cairn {

// Named tensors in a stable order: the order they were given, or the order they appear in a file.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// How save_safetensors stores float32 tensors. F16 and BF16 halve the file and lose precision:
// BF16 keeps float32's range with 8 significant bits, F16 keeps 11 bits up to 65504.
enum class FloatFormat { kF32, kF16, kBF16 };

// Writes `tensors` (any devices; GPU tensors are copied to the host one at a time) and `metadata`,
// float32 tensors as `float_format`.
// Crash-safe: the bytes go to "<path>.tmp-<pid>" first, which is synced and then renamed onto
// `path`, so a failure or crash mid-write never destroys a previously saved file. Throws
// cairn::Error for duplicate or reserved names, undefined tensors, values the format cannot hold
// and any I/O failure.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {},
                      FloatFormat float_format = FloatFormat::kF32);

struct SafetensorsFile {
  NamedTensors tensors;  // in header order, all on the CPU, converted to float32 or int32
  std::map<std::string, std::string> metadata;
  std::map<std::string, std::string> stored_dtypes;  // each tensor's dtype in the file: "BF16"
};

// Reads a whole file onto the CPU. Validates everything before trusting it (header size, JSON,
// dtypes, shapes, offsets that must tile the data section exactly), so that a corrupt or hostile
// file gives a cairn::Error starting with "load_safetensors: <path>: " and never a crash, a hang
// or memory out of proportion to the file: the header's JSON may nest at most 64 levels and hold
// arrays of at most 32 elements (a shape of up to 32 axes), and tensors are allocated only once
// their bytes are known to be in the file, converted tensors taking at most four times the file
// (one-byte types widened to int32). Running out of memory is a cairn::Error too.
SafetensorsFile load_safetensors(const std::string& path);

}  // namespace cairn
