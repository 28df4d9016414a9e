// IDX: the file format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/).
//
// Layout: two zero bytes, a type byte, a dimension count, that many big-endian uint32
// dimensions, then the data in row-major order. cairn reads the unsigned-byte type (0x08), which
// is what (Fashion-)MNIST images and labels use, plain or gzip-compressed as distributed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cairn/base/error.h"  // the cairn::Error these functions throw

namespace cairn {

struct IdxArray {
  std::vector<int64_t> shape;  // 1 to 4 dimensions
  std::vector<uint8_t> data;   // row-major, product(shape) bytes
};

// The default bound on the data read_idx accepts: 1 GiB, twenty times (Fashion-)MNIST's largest
// file (47 MB of training images).
inline constexpr uint64_t kIdxDefaultMaxBytes = uint64_t(1) << 30;

// Reads a plain or gzip-compressed IDX file; gzip is recognised by its magic bytes, not by the
// name. Every problem (missing file, truncated or corrupt header, a type other than unsigned
// byte, data shorter or longer than the dimensions promise, more data than `max_bytes`, a corrupt
// gzip stream, running out of memory) is a cairn::Error starting with "read_idx: <path>: ".
// Memory grows with the data actually read and never past `max_bytes` (a small gzip file can
// inflate to gigabytes), so a header that promises more than is there does not allocate it.
IdxArray read_idx(const std::string& path, uint64_t max_bytes = kIdxDefaultMaxBytes);

// Writes an unsigned-byte IDX file, gzip-compressed when `gzip` is set. Crash-safe like
// save_safetensors: written to "<path>.tmp-<pid>", synced, then renamed onto `path`.
void write_idx(const std::string& path, const IdxArray& array, bool gzip);

}  // namespace cairn
