// IDX (the (Fashion-)MNIST format): plain and gzip round trips, every malformed-file error, and the
// real Fashion-MNIST test set when the Debian package dataset-fashion-mnist is installed.
#include "cairn/blocks/idx.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "support/temp_dir.h"
#include "support/test_support.h"

namespace cairn {
namespace {

namespace fs = std::filesystem;

const char* const kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

// An IDX header: magic, type, ndims, big-endian dims.
std::string idx_header(const std::vector<uint32_t>& dims, uint8_t type = 0x08) {
  std::string bytes = {'\0', '\0', char(type), char(dims.size())};
  for (uint32_t dim : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(char(uint8_t(dim >> shift)));
  }
  return bytes;
}

uint32_t crc32_of(const std::string& bytes) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : bytes) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void append_le32(std::string& out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out.push_back(char(uint8_t(value >> (8 * i))));
}

// A valid gzip file of `bytes` made of stored (uncompressed) deflate blocks, built by hand so that
// the tests can wrap arbitrary, even malformed, IDX content without linking zlib themselves.
std::string gzip_stored(const std::string& bytes) {
  std::string out = {'\x1f', '\x8b', '\x08', '\0', '\0', '\0', '\0', '\0', '\0', '\xff'};
  size_t at = 0;
  do {
    const size_t length = std::min<size_t>(bytes.size() - at, 65535);
    const bool last = at + length == bytes.size();
    out.push_back(last ? '\x01' : '\x00');
    out.push_back(char(length & 0xFF));
    out.push_back(char(length >> 8));
    out.push_back(char(~length & 0xFF));
    out.push_back(char((~length >> 8) & 0xFF));
    out.append(bytes, at, length);
    at += length;
  } while (at < bytes.size());
  append_le32(out, crc32_of(bytes));
  append_le32(out, uint32_t(bytes.size()));
  return out;
}

IdxArray sample_array(const std::vector<int64_t>& shape) {
  IdxArray array;
  array.shape = shape;
  int64_t numel = 1;
  for (int64_t dim : shape) numel *= dim;
  for (int64_t i = 0; i < numel; ++i) array.data.push_back(uint8_t(i * 37 + 11));
  return array;
}

class Idx : public testing::TempDirTest {
 protected:
  static void expect_read_error(const std::string& file, const std::string& fragment) {
    try {
      read_idx(file);
      ADD_FAILURE() << "reading " << file << " did not throw; expected \"" << fragment << "\"";
    } catch (const Error& error) {
      const std::string message = error.what();
      EXPECT_EQ(message.rfind("read_idx: " + file + ": ", 0), 0u)
          << "message lacks the standard prefix: " << message;
      EXPECT_NE(message.find(fragment), std::string::npos)
          << "message lacks \"" << fragment << "\": " << message;
    }
  }

  // The same content as a plain file and as a gzip file: both must fail the same way.
  void expect_malformed(const std::string& bytes, const std::string& fragment) {
    {
      SCOPED_TRACE("plain");
      write_file(path("bad.idx"), bytes);
      expect_read_error(path("bad.idx"), fragment);
    }
    {
      SCOPED_TRACE("gzip");
      write_file(path("bad.idx.gz"), gzip_stored(bytes));
      expect_read_error(path("bad.idx.gz"), fragment);
    }
  }
};

// ---- Round trips. ----

TEST_F(Idx, PlainRoundTripWritesTheExactLayout) {
  const IdxArray array = sample_array({3, 4, 5});
  write_idx(path("a.idx"), array, /*gzip=*/false);
  const std::string bytes = read_file(path("a.idx"));
  EXPECT_EQ(bytes.substr(0, 16), idx_header({3, 4, 5}));
  EXPECT_EQ(bytes.size(), 16u + 60u);

  const IdxArray back = read_idx(path("a.idx"));
  EXPECT_EQ(back.shape, (std::vector<int64_t>{3, 4, 5}));
  EXPECT_EQ(back.data, array.data);
  EXPECT_EQ(files_in_dir(), (std::vector<std::string>{"a.idx"}));
}

TEST_F(Idx, GzipRoundTripIsDetectedByMagicNotByName) {
  const IdxArray array = sample_array({3, 4, 5});
  write_idx(path("a.idx.gz"), array, /*gzip=*/true);
  write_idx(path("no_suffix"), array, /*gzip=*/true);
  for (const char* name : {"a.idx.gz", "no_suffix"}) {
    SCOPED_TRACE(name);
    const std::string bytes = read_file(path(name));
    ASSERT_GE(bytes.size(), 2u);
    EXPECT_EQ(uint8_t(bytes[0]), 0x1F);
    EXPECT_EQ(uint8_t(bytes[1]), 0x8B);
    const IdxArray back = read_idx(path(name));
    EXPECT_EQ(back.shape, (std::vector<int64_t>{3, 4, 5}));
    EXPECT_EQ(back.data, array.data);
  }
}

TEST_F(Idx, OtherRanksZeroSizesAndLargeArraysRoundTrip) {
  for (const std::vector<int64_t>& shape :
       std::vector<std::vector<int64_t>>{{7}, {2, 3, 4, 5}, {0, 28, 28}, {0}, {300, 28, 28}}) {
    for (bool gzip : {false, true}) {
      SCOPED_TRACE(::testing::Message() << shape.size() << " dims, gzip " << gzip);
      const IdxArray array = sample_array(shape);
      write_idx(path("r.idx"), array, gzip);
      const IdxArray back = read_idx(path("r.idx"));
      EXPECT_EQ(back.shape, shape);
      EXPECT_EQ(back.data, array.data);
    }
  }
}

TEST_F(Idx, ReadsGzipWrittenByAnotherEncoder) {
  // Stored blocks, several of them: a gzip stream zlib did not write.
  const IdxArray array = sample_array({100, 1000});
  write_file(path("stored.gz"), gzip_stored(idx_header({100, 1000}) +
                                            std::string(array.data.begin(), array.data.end())));
  const IdxArray back = read_idx(path("stored.gz"));
  EXPECT_EQ(back.shape, (std::vector<int64_t>{100, 1000}));
  EXPECT_EQ(back.data, array.data);
}

// ---- Writing. ----

TEST_F(Idx, WriteRejectsShapesIdxCannotHold) {
  IdxArray five = sample_array({1, 1, 1, 1, 1});
  testing::expect_error([&] { write_idx(path("w.idx"), five, false); },
                        {"write_idx: " + path("w.idx"), "1 to 4 dimensions, got 5"});
  IdxArray none;
  testing::expect_error([&] { write_idx(path("w.idx"), none, false); }, {"got 0"});
  IdxArray mismatch = sample_array({3, 4});
  mismatch.data.pop_back();
  testing::expect_error([&] { write_idx(path("w.idx"), mismatch, true); },
                        {"the shape promises 12 bytes, but data has 11"});
  IdxArray negative{{-1}, {}};
  testing::expect_error([&] { write_idx(path("w.idx"), negative, false); }, {"dimension 0 is -1"});
  IdxArray huge{{int64_t(1) << 32, 0}, {}};
  testing::expect_error([&] { write_idx(path("w.idx"), huge, false); },
                        {"dimension 0 is 4294967296, outside the uint32 range"});
  EXPECT_TRUE(files_in_dir().empty());
}

TEST_F(Idx, FailedWriteLeavesTheOldFileAndNoTempFile) {
  write_idx(path("w.idx"), sample_array({2, 2}), false);
  const std::string before = read_file(path("w.idx"));
  IdxArray mismatch = sample_array({3, 4});
  mismatch.data.push_back(0);
  EXPECT_THROW(write_idx(path("w.idx"), mismatch, false), Error);
  EXPECT_EQ(read_file(path("w.idx")), before);

  write_idx(path("w.idx"), sample_array({5}), true);  // and a good write replaces it
  EXPECT_EQ(read_idx(path("w.idx")).shape, (std::vector<int64_t>{5}));
  EXPECT_EQ(files_in_dir(), (std::vector<std::string>{"w.idx"}));

  const std::string missing = path("no/such/dir/w.idx");
  testing::expect_error([&] { write_idx(missing, sample_array({2}), false); },
                        {"write_idx: " + missing, "No such file or directory"});
}

// ---- Malformed files. ----

TEST_F(Idx, MissingFileOrDirectory) {
  expect_read_error(path("absent.idx"), "cannot open: No such file or directory");
  expect_read_error(dir_.string(), "not a regular file");
}

TEST_F(Idx, TruncatedHeader) {
  expect_malformed("", "truncated header: expected 4 magic bytes, found 0");
  expect_malformed(std::string("\0\0", 2), "truncated header: expected 4 magic bytes, found 2");
  expect_malformed(idx_header({3, 4, 5}).substr(0, 10),
                   "truncated header: expected 12 bytes of dimensions, found 6");
}

TEST_F(Idx, BadMagic) {
  std::string bytes = idx_header({2}) + "ab";
  bytes[0] = '\x01';
  expect_malformed(bytes, "bad magic 0x01 0x00");
  expect_malformed("PK\x03\x04 not an idx file", "bad magic 0x50 0x4B");
}

TEST_F(Idx, UnsupportedTypesAreNamed) {
  expect_malformed(idx_header({2}, 0x0B) + "abcd", "unsupported data type 0x0B (int16)");
  expect_malformed(idx_header({2}, 0x09) + "ab", "0x09 (signed byte)");
  expect_malformed(idx_header({2}, 0x0C) + "abcdefgh", "0x0C (int32)");
  expect_malformed(idx_header({2}, 0x0D) + "abcdefgh", "0x0D (float32)");
  expect_malformed(idx_header({2}, 0x0E) + std::string(16, 'x'), "0x0E (float64)");
  expect_malformed(idx_header({2}, 0x42) + "ab", "0x42 (not an IDX type)");
}

TEST_F(Idx, DimensionCountMustBeOneToFour) {
  expect_malformed(idx_header({}), "unsupported number of dimensions 0; expected 1 to 4");
  expect_malformed(idx_header({1, 1, 1, 1, 1}) + "x", "unsupported number of dimensions 5");
}

TEST_F(Idx, ZeroDimensionIsFine) {
  write_file(path("zero.idx"), idx_header({0, 28, 28}));
  const IdxArray array = read_idx(path("zero.idx"));
  EXPECT_EQ(array.shape, (std::vector<int64_t>{0, 28, 28}));
  EXPECT_TRUE(array.data.empty());
  // Huge other dimensions do not matter when one is zero: there are no elements.
  write_file(path("zero_huge.idx"), idx_header({0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0}));
  EXPECT_TRUE(read_idx(path("zero_huge.idx")).data.empty());
}

TEST_F(Idx, AbsurdElementCountsAreRefusedBeforeAllocating) {
  expect_malformed(idx_header({0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}),
                   "promise more than the limit of 1073741824 bytes");
  expect_malformed(idx_header({100000, 100001}), "the dimensions (100000, 100001) promise more");
}

TEST_F(Idx, DataShorterThanTheDimensionsPromise) {
  const std::string data(59, '\x07');
  expect_malformed(idx_header({3, 4, 5}) + data,
                   "truncated: expected 60 bytes of data for dimensions (3, 4, 5), found 59");
  // A large promise with little behind it: an error, and memory follows the data, not the header.
  expect_malformed(idx_header({60000, 28, 28}) + data, "expected 47040000 bytes of data");
}

TEST_F(Idx, TrailingBytesAfterTheData) {
  expect_malformed(idx_header({3, 4, 5}) + std::string(63, '\x07'),
                   "trailing data: 3 bytes after the 60 bytes");
}

TEST_F(Idx, CorruptGzipStreamsReportZlibsMessage) {
  const std::string good = gzip_stored(idx_header({4}) + "abcd");

  std::string bad_block = good;
  bad_block[10] = '\x07';  // BFINAL with the reserved block type 11
  write_file(path("bad_block.gz"), bad_block);
  expect_read_error(path("bad_block.gz"), "corrupt or truncated gzip stream: ");
  expect_read_error(path("bad_block.gz"), "invalid block type");

  std::string bad_crc = good;
  bad_crc[bad_crc.size() - 8] ^= 0x55;
  write_file(path("bad_crc.gz"), bad_crc);
  expect_read_error(path("bad_crc.gz"), "incorrect data check");

  // Cut inside the stored block and just before the trailer.
  for (size_t keep : {good.size() - 10, good.size() - 4}) {
    SCOPED_TRACE(keep);
    write_file(path("cut.gz"), good.substr(0, keep));
    expect_read_error(path("cut.gz"), "unexpected end of file");
  }

  // A real zlib-written file, cut in half.
  write_idx(path("real.gz"), sample_array({50, 50}), true);
  const std::string real = read_file(path("real.gz"));
  write_file(path("real_cut.gz"), real.substr(0, real.size() / 2));
  expect_read_error(path("real_cut.gz"), "corrupt or truncated gzip stream");
}

// ---- The real thing. ----

TEST(FashionMnist, ReadsTheTestSetWhenInstalled) {
  // CAIRN_FASHION_MNIST_DIR: a copy elsewhere, as on the GPU machine (scripts/device_deps_env.sh).
  const char* elsewhere = std::getenv("CAIRN_FASHION_MNIST_DIR");
  const fs::path dir = elsewhere != nullptr && *elsewhere != '\0' ? elsewhere : kFashionMnistDir;
  if (!fs::is_directory(dir)) {
    GTEST_SKIP() << dir << " is absent (Debian package dataset-fashion-mnist)";
  }
  const IdxArray labels = read_idx((dir / "t10k-labels-idx1-ubyte.gz").string());
  ASSERT_EQ(labels.shape, (std::vector<int64_t>{10000}));
  std::array<int, 10> per_class{};
  for (uint8_t label : labels.data) {
    ASSERT_LT(label, 10);
    ++per_class[label];
  }
  for (int count : per_class) EXPECT_EQ(count, 1000);  // the test set is balanced

  const IdxArray images = read_idx((dir / "t10k-images-idx3-ubyte.gz").string());
  ASSERT_EQ(images.shape, (std::vector<int64_t>{10000, 28, 28}));
  ASSERT_EQ(images.data.size(), 10000u * 28 * 28);
  // Not all black or all white: pixels use the whole range.
  EXPECT_EQ(*std::min_element(images.data.begin(), images.data.end()), 0);
  EXPECT_EQ(*std::max_element(images.data.begin(), images.data.end()), 255);
}

}  // namespace
}  // namespace cairn
