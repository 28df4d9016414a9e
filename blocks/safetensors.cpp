#include "cairn/blocks/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "cairn/blocks/safetensors_dtypes.h"
#include "cairn/core/atomic_file.h"
#include "cairn/base/error.h"

// The data section holds little-endian bytes, which we copy straight from and into tensor memory.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "cairn's safetensors reader and writer assume a little-endian host"
#endif

namespace cairn {
namespace {

using Json = nlohmann::ordered_json;  // ordered, so that tensors keep the order of the header

// The reference implementation refuses larger headers too: a header this big is corrupt, and the
// limit keeps a hostile length field from making us allocate gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr size_t kLengthFieldBytes = 8;
// The data section starts at a multiple of this (the reference writer pads the header with
// spaces to 8 bytes), so that a reader that maps the file can use the tensors in place.
constexpr size_t kDataAlignment = 8;
constexpr const char* kMetadataKey = "__metadata__";
// A safetensors header nests three levels deep ({"name": {"shape": [...]}}). Deeper input is
// refused while it is parsed, so that nothing recursive (destruction, printing) ever sees it.
constexpr int kMaxJsonDepth = 64;
// The longest array a safetensors header holds is a shape; cairn reads shapes of up to this many
// axes. A longer array is refused while it is parsed: held as JSON, each element costs about 16
// bytes for its one or two bytes of text, so a long array would cost far more than the file.
constexpr size_t kMaxArrayElements = 32;
// Text from the file is cut to this many bytes in messages: a name can be megabytes long.
constexpr size_t kMaxQuotedBytes = 80;

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

using safetensors_dtypes::StoredDType;

const StoredDType& stored_dtype(DType dtype, FloatFormat float_format) {
  const char* name = nullptr;
  switch (dtype) {
    case DType::kFloat32:
      name = float_format == FloatFormat::kF16    ? "F16"
             : float_format == FloatFormat::kBF16 ? "BF16"
                                                  : "F32";
      break;
    case DType::kInt32:
      name = "I32";
      break;
  }
  CAIRN_CHECK(name != nullptr, "save_safetensors: unknown dtype ", int(dtype));
  return *safetensors_dtypes::find(name);
}

// ---- Loading. ----

// Every load error starts with "load_safetensors: <path>: ". `path` must be in scope.
#define LOAD_CHECK(cond, ...) CAIRN_CHECK(cond, "load_safetensors: ", path, ": ", __VA_ARGS__)
#define LOAD_FAIL(...) CAIRN_FAIL("load_safetensors: ", path, ": ", __VA_ARGS__)

// A string from the file, cut for a message.
std::string cut(const std::string& text) {
  if (text.size() <= kMaxQuotedBytes) return text;
  return text.substr(0, kMaxQuotedBytes) + "... (" + std::to_string(text.size()) + " bytes)";
}

// A name from the file, quoted and cut for a message.
std::string quoted(const std::string& text) {
  if (text.size() <= kMaxQuotedBytes) return "'" + text + "'";
  return "'" + text.substr(0, kMaxQuotedBytes) + "...' (" + std::to_string(text.size()) + " bytes)";
}

// A JSON value from the file for a message. Never dumped whole: dump() recurses as deep as the
// value nests, and the value may be huge. Containers give their type and size, strings are cut,
// scalars (flat by nature) are shown.
std::string describe(const Json& value) {
  switch (value.type()) {
    case Json::value_t::object:
      return "an object of " + std::to_string(value.size()) + " members";
    case Json::value_t::array:
      return "an array of " + std::to_string(value.size()) + " elements";
    case Json::value_t::string:
      return "the string " + quoted(value.get_ref<const std::string&>());
    default:  // null, a boolean or a number
      return value.dump();
  }
}

struct Entry {
  std::string name;
  const StoredDType* stored = nullptr;  // the file's dtype; the tensor gets stored->loads_as
  Shape shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

void read_exact(std::FILE* file, void* data, size_t bytes, const std::string& path,
                const char* what) {
  if (bytes == 0) return;
  if (std::fread(data, 1, bytes, file) != bytes) {
    LOAD_CHECK(!std::ferror(file), "reading ", what, " failed: ", std::strerror(errno));
    LOAD_FAIL("unexpected end of file while reading ", what,
              " (was the file changed while it was being read?)");
  }
}

const StoredDType* parse_dtype(const Json& value, const std::string& name,
                               const std::string& path) {
  LOAD_CHECK(value.is_string(), "tensor ", quoted(name), ": \"dtype\" must be a string, got ",
             describe(value));
  const std::string& dtype = value.get_ref<const std::string&>();
  const StoredDType* stored = safetensors_dtypes::find(dtype);
  LOAD_CHECK(stored != nullptr, "unsupported dtype ", cut(dtype), " for tensor ", quoted(name),
             "; cairn reads ", safetensors_dtypes::readable_names());
  return stored;
}

// Returns the shape; `bytes` receives numel * element_bytes, computed without overflow.
Shape parse_shape(const Json& value, const std::string& name, size_t element_bytes, uint64_t& bytes,
                  const std::string& path) {
  LOAD_CHECK(value.is_array(), "tensor ", quoted(name), ": \"shape\" must be an array, got ",
             describe(value));
  Shape shape;
  int64_t numel = 1;
  for (const Json& dim : value) {
    LOAD_CHECK(dim.is_number_integer(), "tensor ", quoted(name),
               ": shape entries must be integers, got ", describe(dim));
    LOAD_CHECK(dim.is_number_unsigned(), "tensor ", quoted(name), ": negative dimension ",
               dim.get<int64_t>());
    const uint64_t size = dim.get<uint64_t>();
    LOAD_CHECK(size <= uint64_t(INT64_MAX), "tensor ", quoted(name), ": dimension ", size,
               " is too large");
    shape.push_back(int64_t(size));
  }
  // In order, as Tensor::empty counts (a zero after an overflow does not save the shape).
  for (int64_t size : shape) {
    LOAD_CHECK(!__builtin_mul_overflow(numel, size, &numel), "tensor ", quoted(name),
               ": the shape ", shape_str(shape), " has more elements than int64 can count");
  }
  LOAD_CHECK(!__builtin_mul_overflow(uint64_t(numel), uint64_t(element_bytes), &bytes),
             "tensor ", quoted(name), ": the shape ", shape_str(shape),
             " has more bytes than uint64 can count");
  return shape;
}

Entry parse_entry(const std::string& name, const Json& info, uint64_t data_bytes,
                  const std::string& path) {
  LOAD_CHECK(info.is_object(), "tensor ", quoted(name), ": expected an object, got ",
             describe(info));
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    LOAD_CHECK(info.contains(key), "tensor ", quoted(name), " has no \"", key, "\"");
  }
  Entry entry;
  entry.name = name;
  entry.stored = parse_dtype(info["dtype"], name, path);
  uint64_t bytes = 0;
  entry.shape = parse_shape(info["shape"], name, entry.stored->bytes, bytes, path);

  const Json& offsets = info["data_offsets"];
  LOAD_CHECK(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                 offsets[1].is_number_unsigned(),
             "tensor ", quoted(name), ": \"data_offsets\" must be two non-negative integers, got ",
             describe(offsets));
  entry.begin = offsets[0].get<uint64_t>();
  entry.end = offsets[1].get<uint64_t>();
  const std::string span =
      "[" + std::to_string(entry.begin) + "," + std::to_string(entry.end) + "]";
  LOAD_CHECK(entry.begin <= entry.end, "tensor ", quoted(name), ": data_offsets ", span,
             " end before they begin");
  LOAD_CHECK(entry.end - entry.begin == bytes, "tensor ", quoted(name), ": data_offsets ", span,
             " span ", entry.end - entry.begin, " bytes, but ", entry.stored->name, " ",
             shape_str(entry.shape), " needs ", bytes);
  LOAD_CHECK(entry.end <= data_bytes, "tensor ", quoted(name), ": data_offsets ", span,
             " reach past the end of the ", data_bytes, "-byte data section");
  return entry;
}

std::map<std::string, std::string> parse_metadata(const Json& value, const std::string& path) {
  LOAD_CHECK(value.is_object(), "\"", kMetadataKey, "\" must be an object of strings, got ",
             describe(value));
  std::map<std::string, std::string> metadata;
  for (const auto& [key, item] : value.items()) {
    LOAD_CHECK(item.is_string(), "\"", kMetadataKey, "\" value for ", quoted(key),
               " must be a string, got ", describe(item));
    metadata[key] = item.get<std::string>();
  }
  return metadata;
}

// The format requires the tensors to tile the data section exactly: no overlaps (which would let
// two tensors alias) and no holes (bytes nobody accounts for).
void check_tiling(std::vector<const Entry*> entries, uint64_t data_bytes, const std::string& path) {
  // By (begin, end), as the reference does: a zero-size tensor may sit at the offset where the
  // next one begins (the reference writer puts it there), and must sort before it.
  std::stable_sort(entries.begin(), entries.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t covered = 0;
  const Entry* previous = nullptr;
  for (const Entry* entry : entries) {
    if (entry->begin < covered) {
      LOAD_FAIL("tensor ", quoted(entry->name), " begins at byte ", entry->begin,
                ", inside tensor ", quoted(previous->name), " (which ends at byte ", covered,
                "): tensors must not overlap");
    }
    if (entry->begin > covered) {
      LOAD_FAIL("tensor ", quoted(entry->name), " begins at byte ", entry->begin,
                ", leaving a hole of ", entry->begin - covered, " bytes after ",
                previous ? "tensor " + quoted(previous->name) : std::string("the header"),
                ": the tensors must cover the data section without gaps");
    }
    covered = entry->end;
    previous = entry;
  }
  LOAD_CHECK(covered == data_bytes, "the data section is ", data_bytes,
             " bytes, but the tensors cover only the first ", covered);
}

}  // namespace

// ---- Saving. ----

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata,
                      FloatFormat float_format) {
  // Everything that can be checked is checked before the temp file exists.
  Json header = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header[kMetadataKey] = std::move(meta);
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    CAIRN_CHECK(name != kMetadataKey, "save_safetensors: ", path, ": the name \"", kMetadataKey,
                "\" is reserved for the metadata");
    CAIRN_CHECK(seen.insert(name).second, "save_safetensors: ", path, ": duplicate tensor name '",
                name, "'");
    CAIRN_CHECK(tensor.defined(), "save_safetensors: ", path, ": tensor '", name, "' is undefined");
    const StoredDType& stored = stored_dtype(tensor.dtype(), float_format);
    const uint64_t bytes = uint64_t(tensor.numel()) * stored.bytes;
    Json info = Json::object();
    info["dtype"] = stored.name;
    info["shape"] = tensor.shape();
    info["data_offsets"] = Json::array({offset, offset + bytes});
    header[name] = std::move(info);
    offset += bytes;
  }

  std::string text;
  try {
    text = header.dump(-1, ' ', false, Json::error_handler_t::strict);
  } catch (const nlohmann::json::exception& error) {
    CAIRN_FAIL("save_safetensors: ", path,
               ": a tensor name or metadata string is not valid UTF-8 (", error.what(), ")");
  }
  // Trailing spaces are JSON whitespace: every reader ignores them.
  text.append(
      (kDataAlignment - (kLengthFieldBytes + text.size()) % kDataAlignment) % kDataAlignment, ' ');
  unsigned char length[kLengthFieldBytes];
  for (size_t i = 0; i < kLengthFieldBytes; ++i) {
    length[i] = static_cast<unsigned char>(uint64_t(text.size()) >> (8 * i));
  }

  AtomicFile file(path, "save_safetensors");
  file.write(length, sizeof length);
  file.write(text.data(), text.size());
  for (const auto& [name, tensor] : tensors) {
    // One host copy at a time, so that saving a model on the GPU never holds two copies of it.
    const Tensor host = tensor.to_host();
    const StoredDType& stored = stored_dtype(host.dtype(), float_format);
    if (safetensors_dtypes::is_native(stored)) {
      file.write(host.raw_data(), host.nbytes());
    } else {
      // A value F16 or BF16 cannot hold throws here; the temporary file is then removed and a
      // previously saved file is left as it was.
      std::vector<unsigned char> bytes(size_t(host.numel()) * stored.bytes);
      safetensors_dtypes::encode_float(host, stored, bytes.data(),
                                       "save_safetensors: " + path + ": tensor '" + name + "'");
      file.write(bytes.data(), bytes.size());
    }
  }
  file.commit();
}

namespace {

SafetensorsFile read_safetensors(const std::string& path) {
  // stat before fopen: fopen of a directory succeeds and of a FIFO blocks, and neither is a file.
  struct stat info {};
  LOAD_CHECK(::stat(path.c_str(), &info) == 0, "cannot open: ", std::strerror(errno));
  LOAD_CHECK(S_ISREG(info.st_mode), "not a regular file");
  FilePtr file(std::fopen(path.c_str(), "rb"));
  LOAD_CHECK(file != nullptr, "cannot open: ", std::strerror(errno));
  LOAD_CHECK(::fstat(::fileno(file.get()), &info) == 0, "cannot stat: ", std::strerror(errno));
  const uint64_t file_bytes = uint64_t(info.st_size);

  LOAD_CHECK(file_bytes >= kLengthFieldBytes, "the file is ", file_bytes,
             " bytes, too short for the 8-byte header length");
  unsigned char length[kLengthFieldBytes];
  read_exact(file.get(), length, sizeof length, path, "the header length");
  uint64_t header_bytes = 0;
  for (size_t i = 0; i < kLengthFieldBytes; ++i) header_bytes |= uint64_t(length[i]) << (8 * i);
  LOAD_CHECK(header_bytes <= kMaxHeaderBytes, "header length ", header_bytes,
             " exceeds the limit of ", kMaxHeaderBytes, " bytes");
  LOAD_CHECK(header_bytes <= file_bytes - kLengthFieldBytes, "header length ", header_bytes,
             " exceeds the ", file_bytes - kLengthFieldBytes,
             " bytes that follow the length field");
  const uint64_t data_bytes = file_bytes - kLengthFieldBytes - header_bytes;

  std::string text(header_bytes, '\0');
  read_exact(file.get(), text.data(), text.size(), path, "the header");
  Json header;
  // JSON parsers keep one of two equal keys silently; a duplicated tensor name is corruption.
  std::set<std::string> names;
  std::vector<std::pair<bool, size_t>> open;  // per open container: (is an array, elements so far)
  const Json::parser_callback_t reject_duplicates = [&](int depth, Json::parse_event_t event,
                                                        Json& parsed) {
    using Event = Json::parse_event_t;
    const bool starts = event == Event::object_start || event == Event::array_start;
    if ((starts || event == Event::value) && !open.empty() && open.back().first) {
      LOAD_CHECK(++open.back().second <= kMaxArrayElements,
                 "the header holds an array of more than ", kMaxArrayElements,
                 " elements; the longest a safetensors header needs is a shape, "
                 "and cairn reads shapes of up to ",
                 kMaxArrayElements, " axes");
    }
    if (starts) open.emplace_back(event == Event::array_start, 0);
    if (event == Event::object_end || event == Event::array_end) open.pop_back();
    if (depth == 1 && event == Json::parse_event_t::key) {
      LOAD_CHECK(names.insert(parsed.get<std::string>()).second, "the header names ",
                 quoted(parsed.get<std::string>()), " twice");
    }
    if (event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) {
      LOAD_CHECK(depth < kMaxJsonDepth, "the header nests deeper than ", kMaxJsonDepth,
                 " levels; a safetensors header needs 3");
    }
    return true;
  };
  try {
    header = Json::parse(text, reject_duplicates);
  } catch (const nlohmann::json::exception& error) {
    LOAD_FAIL("the header is not valid JSON: ", error.what());
  }
  LOAD_CHECK(header.is_object(), "the header must be a JSON object, got ", header.type_name());

  SafetensorsFile result;
  std::vector<Entry> entries;
  entries.reserve(header.size());
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      result.metadata = parse_metadata(value, path);
    } else {
      entries.push_back(parse_entry(name, value, data_bytes, path));
    }
  }
  std::vector<const Entry*> by_offset;
  for (const Entry& entry : entries) by_offset.push_back(&entry);
  check_tiling(by_offset, data_bytes, path);

  // The tiling check bounds the total allocation by the file's size (four times it at most, for
  // one-byte types widened to int32). Reading in header order seeks when the header is not in
  // offset order, which is rare and cheap.
  result.tensors.reserve(entries.size());
  std::vector<unsigned char> converted;  // the file's bytes of a tensor stored in another dtype
  for (const Entry& entry : entries) {
    Tensor tensor = Tensor::empty(entry.shape, Device::cpu(), entry.stored->loads_as);
    if (tensor.nbytes() > 0) {
      const uint64_t position = kLengthFieldBytes + header_bytes + entry.begin;
      LOAD_CHECK(
          position <= uint64_t(INT64_MAX) && ::fseeko(file.get(), off_t(position), SEEK_SET) == 0,
          "cannot seek to tensor ", quoted(entry.name), ": ", std::strerror(errno));
      const std::string what = "tensor " + quoted(entry.name);
      if (safetensors_dtypes::is_native(*entry.stored)) {
        read_exact(file.get(), tensor.raw_data(), tensor.nbytes(), path, what.c_str());
      } else {
        converted.resize(size_t(entry.end - entry.begin));
        read_exact(file.get(), converted.data(), converted.size(), path, what.c_str());
        safetensors_dtypes::decode(*entry.stored, converted.data(), tensor,
                                   "load_safetensors: " + path + ": " + what);
      }
    }
    result.stored_dtypes[entry.name] = entry.stored->name;
    result.tensors.emplace_back(entry.name, std::move(tensor));
  }
  return result;
}

}  // namespace

SafetensorsFile load_safetensors(const std::string& path) {
  // Allocations here are bounded by the file's size, but even that can be more than the machine
  // has: out of memory is reported like any other problem with the file.
  try {
    return read_safetensors(path);
  } catch (const std::bad_alloc&) {
    LOAD_FAIL(
        "out of memory while reading the file: its tensors need more than this process can "
        "allocate");
  }
}

#undef LOAD_CHECK
#undef LOAD_FAIL

}  // namespace cairn
