// safetensors: the Hugging Face tensor file format, which PyTorch, numpy and most of the ecosystem
// read and write (https://github.com/huggingface/safetensors).
//
// Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON describing each tensor
// ({"name": {"dtype": "F32", "shape": [3, 4], "data_offsets": [begin, end]}, ...} plus an optional
// "__metadata__" object of strings), then the raw little-endian bytes of every tensor, with offsets
// relative to the start of that data section. cairn reads and writes F32 and I32.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "cairn/core/error.h"  // the cairn::Error these functions throw
#include "cairn/core/tensor.h"

namespace cairn {

// Named tensors in a stable order: the order they were given, or the order they appear in a file.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Writes `tensors` (any devices; GPU tensors are copied to the host one at a time) and `metadata`.
// Crash-safe: the bytes go to "<path>.tmp-<pid>" first, which is synced and then renamed onto
// `path`, so a failure or crash mid-write never destroys a previously saved file. Throws
// cairn::Error for duplicate or reserved names, undefined tensors and any I/O failure.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  NamedTensors tensors;  // in header order, all on the CPU
  std::map<std::string, std::string> metadata;
};

// Reads a whole file onto the CPU. Validates everything before trusting it (header size, JSON,
// dtypes, shapes, offsets that must tile the data section exactly), so that a corrupt or hostile
// file gives a cairn::Error starting with "load_safetensors: <path>: " and never a crash, a hang
// or memory out of proportion to the file: the header's JSON may nest at most 64 levels and hold
// arrays of at most 32 elements (a shape of up to 32 axes), and tensors are allocated only once
// their bytes are known to be in the file. Running out of memory is a cairn::Error too.
SafetensorsFile load_safetensors(const std::string& path);

}  // namespace cairn
