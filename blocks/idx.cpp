#include "cairn/blocks/idx.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <sstream>

#include "cairn/core/atomic_file.h"
#include "cairn/base/error.h"

namespace cairn {
namespace {

constexpr uint8_t kUnsignedByte = 0x08;
constexpr size_t kMaxDims = 4;
// Reads and growth happen in pieces of this size, so memory follows the bytes actually present.
constexpr size_t kReadChunk = size_t(1) << 20;

struct GzCloser {
  void operator()(gzFile file) const { gzclose(file); }
};
using GzFilePtr = std::unique_ptr<gzFile_s, GzCloser>;

const char* idx_type_name(int type) {
  switch (type) {
    case 0x08:
      return "unsigned byte";
    case 0x09:
      return "signed byte";
    case 0x0B:
      return "int16";
    case 0x0C:
      return "int32";
    case 0x0D:
      return "float32";
    case 0x0E:
      return "float64";
    default:
      return "not an IDX type";
  }
}

std::string hex_byte(int value) {
  char text[8];
  std::snprintf(text, sizeof text, "0x%02X", value & 0xFF);
  return text;
}

std::string dims_str(const std::vector<uint64_t>& dims) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < dims.size(); ++i) out << (i ? ", " : "") << dims[i];
  out << ")";
  return out.str();
}

// Every read error starts with "read_idx: <path>: ". `path` must be in scope.
#define IDX_CHECK(cond, ...) CAIRN_CHECK(cond, "read_idx: ", path, ": ", __VA_ARGS__)
#define IDX_FAIL(...) CAIRN_FAIL("read_idx: ", path, ": ", __VA_ARGS__)

// Reads up to `bytes`, stopping early only at the end of the (decompressed) stream. zlib reports
// a corrupt stream either as -1 from gzread or, for a stream cut short, as a Z_BUF_ERROR that
// gzread leaves behind while returning the bytes it could decode: both become an error here.
size_t read_up_to(gzFile file, void* data, size_t bytes, const std::string& path) {
  size_t total = 0;
  while (total < bytes) {
    const unsigned piece = unsigned(std::min<size_t>(bytes - total, INT_MAX / 2));
    const int got = gzread(file, static_cast<char*>(data) + total, piece);
    int status = Z_OK;
    const char* message = gzerror(file, &status);
    if (got < 0 || status != Z_OK) {
      IDX_FAIL("corrupt or truncated gzip stream: ",
               status == Z_ERRNO ? std::strerror(errno) : message);
    }
    if (got == 0) break;
    total += size_t(got);
  }
  return total;
}

IdxArray read_idx_unchecked(const std::string& path, uint64_t max_bytes) {
  // stat first: gzopen of a directory succeeds and of a FIFO blocks, and neither is a file.
  struct stat info {};
  IDX_CHECK(::stat(path.c_str(), &info) == 0, "cannot open: ", std::strerror(errno));
  IDX_CHECK(S_ISREG(info.st_mode), "not a regular file");
  errno = 0;
  GzFilePtr file(gzopen(path.c_str(), "rb"));
  IDX_CHECK(file != nullptr, "cannot open: ",
            errno != 0 ? std::strerror(errno) : "zlib could not allocate its state");
  gzbuffer(file.get(), 1 << 17);  // a larger buffer than zlib's 8 KiB default; failure is harmless

  unsigned char magic[4];
  const size_t magic_bytes = read_up_to(file.get(), magic, sizeof magic, path);
  IDX_CHECK(magic_bytes == sizeof magic, "truncated header: expected 4 magic bytes, found ",
            magic_bytes);
  IDX_CHECK(magic[0] == 0 && magic[1] == 0, "bad magic ", hex_byte(magic[0]), " ",
            hex_byte(magic[1]), ": an IDX file starts with two zero bytes");
  IDX_CHECK(magic[2] == kUnsignedByte, "unsupported data type ", hex_byte(magic[2]), " (",
            idx_type_name(magic[2]), "); cairn reads unsigned-byte IDX files (0x08)");
  const size_t ndims = magic[3];
  IDX_CHECK(ndims >= 1 && ndims <= kMaxDims, "unsupported number of dimensions ", ndims,
            "; expected 1 to ", kMaxDims);

  unsigned char dim_bytes[4 * kMaxDims];
  const size_t dims_read = read_up_to(file.get(), dim_bytes, 4 * ndims, path);
  IDX_CHECK(dims_read == 4 * ndims, "truncated header: expected ", 4 * ndims,
            " bytes of dimensions, found ", dims_read);
  std::vector<uint64_t> dims(ndims);
  bool empty = false;
  for (size_t i = 0; i < ndims; ++i) {
    dims[i] = uint64_t(dim_bytes[4 * i]) << 24 | uint64_t(dim_bytes[4 * i + 1]) << 16 |
              uint64_t(dim_bytes[4 * i + 2]) << 8 | uint64_t(dim_bytes[4 * i + 3]);
    empty = empty || dims[i] == 0;
  }
  uint64_t expected = empty ? 0 : 1;
  for (size_t i = 0; i < ndims && !empty; ++i) {
    IDX_CHECK(!__builtin_mul_overflow(expected, dims[i], &expected) && expected <= max_bytes,
              "the dimensions ", dims_str(dims), " promise more than the limit of ", max_bytes,
              " bytes (read_idx's max_bytes): the header is corrupt, or the limit too low");
  }

  IdxArray array;
  array.shape.assign(dims.begin(), dims.end());
  // Grow with the data actually present, never to what the header merely claims: a plain file
  // cannot hold more than its size, and a gzip stream's size is unknown until it is decoded, so
  // there the vector starts modest and grows as bytes arrive.
  const uint64_t plausible = gzdirect(file.get()) ? uint64_t(info.st_size) : 16 * kReadChunk;
  array.data.reserve(size_t(std::min(expected, plausible)));
  while (array.data.size() < expected) {
    const size_t old_size = array.data.size();
    const size_t piece = size_t(std::min<uint64_t>(expected - old_size, kReadChunk));
    if (old_size + piece > array.data.capacity()) {
      // Doubling, but never past what the header promised: memory stays within max_bytes.
      array.data.reserve(size_t(std::min<uint64_t>(
          expected, std::max<uint64_t>(2 * uint64_t(array.data.capacity()), old_size + piece))));
    }
    array.data.resize(old_size + piece);
    const size_t got = read_up_to(file.get(), array.data.data() + old_size, piece, path);
    array.data.resize(old_size + got);
    if (got < piece) break;
  }
  IDX_CHECK(array.data.size() == expected, "truncated: expected ", expected,
            " bytes of data for dimensions ", dims_str(dims), ", found ", array.data.size());

  // Trailing bytes mean the header and the data disagree: the file is not what it claims.
  std::vector<unsigned char> rest(kReadChunk);
  uint64_t trailing = 0;
  for (size_t got; (got = read_up_to(file.get(), rest.data(), rest.size(), path)) > 0;) {
    trailing += got;
  }
  IDX_CHECK(trailing == 0, "trailing data: ", trailing, " bytes after the ", expected,
            " bytes that dimensions ", dims_str(dims), " promise");
  return array;
}

}  // namespace

IdxArray read_idx(const std::string& path, uint64_t max_bytes) {
  try {
    return read_idx_unchecked(path, max_bytes);
  } catch (const std::bad_alloc&) {
    IDX_FAIL("out of memory while reading up to ", max_bytes,
             " bytes: pass a lower max_bytes, or free memory");
  }
}

#undef IDX_CHECK
#undef IDX_FAIL

namespace {

#define WRITE_CHECK(cond, ...) CAIRN_CHECK(cond, "write_idx: ", path, ": ", __VA_ARGS__)

// Compresses `bytes` into `file` through `stream`; with Z_FINISH also ends the gzip stream.
void deflate_into(z_stream& stream, AtomicFile& file, std::vector<unsigned char>& buffer,
                  const unsigned char* data, size_t bytes, int flush, const std::string& path) {
  do {
    // zlib counts in uInt: large arrays go in pieces.
    const size_t piece = std::min<size_t>(bytes, size_t(1) << 30);
    stream.next_in = const_cast<Bytef*>(data);
    stream.avail_in = uInt(piece);
    data += piece;
    bytes -= piece;
    const int mode = bytes == 0 ? flush : Z_NO_FLUSH;
    int status = Z_OK;
    do {
      stream.next_out = buffer.data();
      stream.avail_out = uInt(buffer.size());
      status = deflate(&stream, mode);
      WRITE_CHECK(status != Z_STREAM_ERROR,
                  "zlib deflate failed: ", stream.msg ? stream.msg : "stream error");
      file.write(buffer.data(), buffer.size() - stream.avail_out);
    } while (stream.avail_out == 0 || (mode == Z_FINISH && status != Z_STREAM_END));
  } while (bytes > 0);
}

}  // namespace

void write_idx(const std::string& path, const IdxArray& array, bool gzip) {
  WRITE_CHECK(array.shape.size() >= 1 && array.shape.size() <= kMaxDims,
              "IDX holds 1 to 4 dimensions, got ", array.shape.size());
  unsigned char header[4 + 4 * kMaxDims] = {0, 0, kUnsignedByte,
                                            static_cast<unsigned char>(array.shape.size())};
  uint64_t numel = 1;
  for (size_t i = 0; i < array.shape.size(); ++i) {
    const int64_t dim = array.shape[i];
    WRITE_CHECK(dim >= 0 && dim <= int64_t(UINT32_MAX), "dimension ", i, " is ", dim,
                ", outside the uint32 range IDX stores");
    numel *= uint64_t(dim);  // cannot overflow: at most 4 factors below 2^32, or a zero
    for (int byte = 0; byte < 4; ++byte) {
      header[4 + 4 * i + byte] = static_cast<unsigned char>(uint64_t(dim) >> (24 - 8 * byte));
    }
  }
  WRITE_CHECK(numel == array.data.size(), "the shape promises ", numel, " bytes, but data has ",
              array.data.size());
  const size_t header_bytes = 4 + 4 * array.shape.size();

  AtomicFile file(path, "write_idx");
  if (!gzip) {
    file.write(header, header_bytes);
    file.write(array.data.data(), array.data.size());
  } else {
    z_stream stream{};
    // windowBits 15 + 16: a gzip wrapper rather than zlib's, so that gunzip and gzopen read it.
    WRITE_CHECK(deflateInit2(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
                             Z_DEFAULT_STRATEGY) == Z_OK,
                "zlib deflateInit2 failed");
    struct DeflateEnd {
      z_stream* stream;
      ~DeflateEnd() { deflateEnd(stream); }
    } end{&stream};
    std::vector<unsigned char> buffer(size_t(1) << 18);
    deflate_into(stream, file, buffer, header, header_bytes, Z_NO_FLUSH, path);
    deflate_into(stream, file, buffer, array.data.data(), array.data.size(), Z_FINISH, path);
  }
  file.commit();
}

#undef WRITE_CHECK

}  // namespace cairn
