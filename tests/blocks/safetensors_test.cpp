// safetensors: bit-exact round trips, header alignment, crash-safe writes, a file written by
// Python, and corrupt files that must give a clear cairn::Error (never a crash or a huge
// allocation).
#include "cairn/blocks/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include "support/temp_dir.h"
#include "support/test_support.h"

namespace cairn {
namespace {

namespace fs = std::filesystem;

const Device kCpu = Device::cpu();

std::vector<uint8_t> tensor_bytes(const Tensor& tensor) {
  const Tensor host = tensor.to_host();
  const auto* begin = static_cast<const uint8_t*>(host.raw_data());
  return std::vector<uint8_t>(begin, begin + host.nbytes());
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string length_field(uint64_t length) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = char(uint8_t(length >> (8 * i)));
  return bytes;
}

// A file with `header` as its JSON and `data_bytes` bytes of data after it.
std::string file_with_header(const std::string& header, size_t data_bytes) {
  return length_field(header.size()) + header + std::string(data_bytes, '\x01');
}

// Each test gets a fresh directory, removed afterwards.
class Safetensors : public testing::TempDirTest {
 protected:
  // Writes `bytes` as a file and expects loading it to fail with the standard prefix and
  // `fragment` in the message.
  void expect_corrupt(const std::string& bytes, const std::string& fragment) {
    const std::string file = path("corrupt.safetensors");
    write_file(file, bytes);
    expect_load_error(file, fragment);
  }

  static void expect_load_error(const std::string& file, const std::string& fragment) {
    try {
      load_safetensors(file);
      ADD_FAILURE() << "loading " << file << " did not throw; expected \"" << fragment << "\"";
    } catch (const Error& error) {
      const std::string message = error.what();
      EXPECT_EQ(message.rfind("load_safetensors: " + file + ": ", 0), 0u)
          << "message lacks the standard prefix: " << message;
      EXPECT_NE(message.find(fragment), std::string::npos)
          << "message lacks \"" << fragment << "\": " << message;
    }
  }
};

// ---- Round trips. ----

TEST_F(Safetensors, RoundTripIsBitExactForEveryKindOfTensor) {
  const float inf = std::numeric_limits<float>::infinity();
  float nan_with_payload;
  const uint32_t nan_bits = 0x7fc01234u;
  std::memcpy(&nan_with_payload, &nan_bits, sizeof nan_bits);
  const NamedTensors saved = {
      {"layer.weight",
       Tensor::from_vector({1.5f, -0.0f, inf, -inf, nan_with_payload, 1e-45f}, {2, 3}, kCpu)},
      {"layer.bias", Tensor::from_vector({0.1f, -0.2f, 0.3f}, {3}, kCpu)},
      {"labels", Tensor::from_int32({INT32_MIN, -1, 0, 7, INT32_MAX}, {5}, kCpu)},
      {"scale", Tensor::scalar(0.7f, kCpu)},
      {"count", Tensor::from_int32({42}, {}, kCpu)},
      {"empty", Tensor::empty({0, 5}, kCpu)},
      {"sch\xC3\xB6n \xE2\x9C\x93", Tensor::uniform({4, 3, 2}, -1.0f, 1.0f, 7, kCpu)},
  };
  const std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                       {"note", "caf\xC3\xA9 \"quoted\"\n"}};
  save_safetensors(path("model.safetensors"), saved, metadata);

  const SafetensorsFile loaded = load_safetensors(path("model.safetensors"));
  EXPECT_EQ(loaded.metadata, metadata);
  ASSERT_EQ(loaded.tensors.size(), saved.size());
  for (size_t i = 0; i < saved.size(); ++i) {
    const auto& [name, tensor] = saved[i];
    SCOPED_TRACE(name);
    EXPECT_EQ(loaded.tensors[i].first, name);  // the order they were given
    const Tensor& back = loaded.tensors[i].second;
    EXPECT_EQ(back.device(), kCpu);
    EXPECT_EQ(back.dtype(), tensor.dtype());
    EXPECT_EQ(shape_str(back.shape()), shape_str(tensor.shape()));
    EXPECT_EQ(tensor_bytes(back), tensor_bytes(tensor));
  }
}

TEST_F(Safetensors, EmptyListAndNoMetadataRoundTrip) {
  save_safetensors(path("nothing.safetensors"), {});
  const SafetensorsFile loaded = load_safetensors(path("nothing.safetensors"));
  EXPECT_TRUE(loaded.tensors.empty());
  EXPECT_TRUE(loaded.metadata.empty());
  // Without metadata the reference writer leaves "__metadata__" out, and so do we.
  EXPECT_EQ(read_file(path("nothing.safetensors")).find("__metadata__"), std::string::npos);
}

TEST_F(Safetensors, HeaderIsPaddedWithSpacesSoTheDataStartsEightByteAligned) {
  // Names of every length modulo 8 move the end of the JSON through every residue.
  for (int extra = 0; extra < 8; ++extra) {
    SCOPED_TRACE(extra);
    const std::string file = path("aligned.safetensors");
    save_safetensors(file, {{"w" + std::string(extra, 'x'), Tensor::ones({3}, kCpu)}});
    const std::string bytes = read_file(file);
    ASSERT_GE(bytes.size(), 8u);
    uint64_t header_bytes = 0;
    for (int i = 0; i < 8; ++i) header_bytes |= uint64_t(uint8_t(bytes[i])) << (8 * i);
    EXPECT_EQ((8 + header_bytes) % 8, 0u);
    EXPECT_EQ(bytes.size(), 8 + header_bytes + 3 * sizeof(float));
    const std::string header = bytes.substr(8, header_bytes);
    EXPECT_EQ(header.front(), '{');
    const size_t close = header.find_last_of('}');
    EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos)
        << "only spaces may follow the JSON: [" << header << "]";
    EXPECT_LT(header.size() - close - 1, 8u);
    EXPECT_EQ(load_safetensors(file).tensors.at(0).second.to_vector(),
              (std::vector<float>{1, 1, 1}));
  }
}

TEST_F(Safetensors, LoadKeepsHeaderOrderEvenWhenItDiffersFromOffsetOrder) {
  // "b" is listed first but stored second: the header order wins, the bytes follow the offsets.
  const std::string header = R"({"b":{"dtype":"I32","shape":[1],"data_offsets":[4,8]},)"
                             R"("a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})";
  const float a = 2.5f;
  const int32_t b = -3;
  std::string data(8, '\0');
  std::memcpy(&data[0], &a, 4);
  std::memcpy(&data[4], &b, 4);
  write_file(path("order.safetensors"), length_field(header.size()) + header + data);
  const SafetensorsFile loaded = load_safetensors(path("order.safetensors"));
  ASSERT_EQ(loaded.tensors.size(), 2u);
  EXPECT_EQ(loaded.tensors[0].first, "b");
  EXPECT_EQ(loaded.tensors[0].second.to_int32_vector(), (std::vector<int32_t>{-3}));
  EXPECT_EQ(loaded.tensors[1].first, "a");
  EXPECT_EQ(loaded.tensors[1].second.item(), 2.5f);
}

TEST_F(Safetensors, ZeroSizeTensorsMaySitWhereTheNextTensorBegins) {
  // As the reference writer lays them out, but listed after the tensor that shares their offset.
  const std::string header = R"({"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},)"
                             R"("z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},)"
                             R"("e":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}})";
  const int32_t a[2] = {5, -6};
  write_file(path("zero.safetensors"), length_field(header.size()) + header +
                                           std::string(reinterpret_cast<const char*>(a), 8));
  const SafetensorsFile loaded = load_safetensors(path("zero.safetensors"));
  ASSERT_EQ(loaded.tensors.size(), 3u);
  EXPECT_EQ(loaded.tensors[0].second.to_int32_vector(), (std::vector<int32_t>{5, -6}));
  EXPECT_EQ(shape_str(loaded.tensors[1].second.shape()), "(0, 3)");
  EXPECT_EQ(loaded.tensors[2].second.numel(), 0);
}

// ---- Writing is crash-safe. ----

TEST_F(Safetensors, SavingOverAnExistingFileReplacesItAndLeavesNoTempFile) {
  const std::string file = path("model.safetensors");
  save_safetensors(file, {{"w", Tensor::from_vector({1, 2, 3}, {3}, kCpu)}}, {{"v", "1"}});
  save_safetensors(file, {{"v", Tensor::from_vector({4, 5}, {2}, kCpu)}}, {{"v", "2"}});
  const SafetensorsFile loaded = load_safetensors(file);
  ASSERT_EQ(loaded.tensors.size(), 1u);
  EXPECT_EQ(loaded.tensors[0].first, "v");
  EXPECT_EQ(loaded.tensors[0].second.to_vector(), (std::vector<float>{4, 5}));
  EXPECT_EQ(loaded.metadata.at("v"), "2");
  EXPECT_EQ(files_in_dir(), (std::vector<std::string>{"model.safetensors"}));
}

TEST_F(Safetensors, FailedSaveLeavesTheOldFileIntactAndNoTempFile) {
  const std::string file = path("model.safetensors");
  save_safetensors(file, {{"w", Tensor::from_vector({1, 2, 3}, {3}, kCpu)}});
  const std::string before = read_file(file);

  testing::expect_error(
      [&] {
        save_safetensors(file, {{"w", Tensor::ones({2}, kCpu)}, {"w", Tensor::ones({2}, kCpu)}});
      },
      {"save_safetensors: " + file, "duplicate tensor name 'w'"});
  testing::expect_error(
      [&] {
        save_safetensors(file, {{"undefined", Tensor()}});
      },
      {"save_safetensors: " + file, "tensor 'undefined' is undefined"});
  testing::expect_error(
      [&] {
        save_safetensors(file, {{"__metadata__", Tensor::ones({1}, kCpu)}});
      },
      {"reserved"});
  testing::expect_error(
      [&] {
        save_safetensors(file, {{"bad \xFF utf8", Tensor::ones({1}, kCpu)}});
      },
      {"save_safetensors: " + file, "not valid UTF-8"});

  EXPECT_EQ(read_file(file), before);
  EXPECT_EQ(files_in_dir(), (std::vector<std::string>{"model.safetensors"}));
}

TEST_F(Safetensors, SaveIntoAMissingDirectoryNamesThePathAndTheSystemError) {
  const std::string file = path("no/such/dir/model.safetensors");
  testing::expect_error(
      [&] {
        save_safetensors(file, {{"w", Tensor::ones({2}, kCpu)}});
      },
      {"save_safetensors: " + file, ".tmp-", "No such file or directory"});
  EXPECT_TRUE(files_in_dir().empty());
}

TEST_F(Safetensors, FailureAfterWritingRemovesTheTempFile) {
  // The target is a non-empty directory: the data is written and synced, then the rename fails.
  const std::string target = path("taken");
  fs::create_directories(fs::path(target) / "inside");
  testing::expect_error(
      [&] {
        save_safetensors(target, {{"w", Tensor::ones({2}, kCpu)}});
      },
      {"save_safetensors: " + target, "cannot rename", ".tmp-"});
  EXPECT_EQ(files_in_dir(), (std::vector<std::string>{"taken"}));
}

class SafetensorsCuda : public testing::CudaTest {};

TEST_F(SafetensorsCuda, GpuTensorsAreCopiedToTheHostAndLoadOnTheCpu) {
  const std::string file =
      (fs::temp_directory_path() / ("cairn_gpu_" + std::to_string(::getpid()) + ".safetensors"))
          .string();
  const Tensor host = Tensor::uniform({5, 7}, -1.0f, 1.0f, 11, kCpu);
  save_safetensors(file, {{"w", host.to(Device::cuda(0))},
                          {"i", Tensor::from_int32({1, 2}, {2}, Device::cuda(0))}});
  const SafetensorsFile loaded = load_safetensors(file);
  std::remove(file.c_str());
  ASSERT_EQ(loaded.tensors.size(), 2u);
  EXPECT_EQ(loaded.tensors[0].second.device(), kCpu);
  EXPECT_EQ(tensor_bytes(loaded.tensors[0].second), tensor_bytes(host));
  EXPECT_EQ(loaded.tensors[1].second.to_int32_vector(), (std::vector<int32_t>{1, 2}));
}

// ---- A file written by Python (tests/data/make_safetensors_fixture.py). ----

TEST(SafetensorsFixture, LoadsTheFileWrittenByPythonWithExactValues) {
  const std::string file = std::string(CAIRN_TEST_DATA_DIR) + "/python_written.safetensors";
  const SafetensorsFile loaded = load_safetensors(file);
  EXPECT_EQ(loaded.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(loaded.tensors.size(), 5u);
  std::vector<std::string> names;
  for (const auto& [name, tensor] : loaded.tensors) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias", "step"}));

  const Tensor& w0 = loaded.tensors[0].second;
  EXPECT_EQ(shape_str(w0.shape()), "(3, 4)");
  std::vector<float> expected_w0;
  for (int i = 0; i < 12; ++i) expected_w0.push_back(i * 0.25f - 1.0f);
  EXPECT_EQ(w0.to_vector(), expected_w0);

  EXPECT_EQ(shape_str(loaded.tensors[1].second.shape()), "(3,)");
  EXPECT_EQ(loaded.tensors[1].second.to_vector(), (std::vector<float>{-0.5f, 0.0f, 0.5f}));
  EXPECT_EQ(shape_str(loaded.tensors[2].second.shape()), "(2, 3)");
  EXPECT_EQ(loaded.tensors[2].second.to_vector(),
            (std::vector<float>{0.5f, 0.375f, 0.25f, 0.125f, 0.0f, -0.125f}));
  EXPECT_EQ(loaded.tensors[3].second.to_vector(), (std::vector<float>{0.1f, -0.2f}));

  const Tensor& step = loaded.tensors[4].second;
  EXPECT_EQ(step.dtype(), DType::kInt32);
  EXPECT_EQ(step.ndim(), 0);
  EXPECT_EQ(step.to_int32_vector(), (std::vector<int32_t>{123456789}));
}

// ---- Corrupt files: each one a clear error naming the file and what is wrong. ----

TEST_F(Safetensors, MissingFileNamesThePathAndTheSystemError) {
  expect_load_error(path("absent.safetensors"), "No such file or directory");
}

TEST_F(Safetensors, ADirectoryIsNotAFile) {
  expect_load_error(dir_.string(), "not a regular file");
}

TEST_F(Safetensors, FileTooShortForTheLengthField) {
  expect_corrupt("", "the file is 0 bytes, too short");
  expect_corrupt(std::string("\x10\x00\x00", 3), "the file is 3 bytes, too short");
}

TEST_F(Safetensors, HeaderLengthLongerThanTheFile) {
  expect_corrupt(length_field(100) + "{}", "header length 100 exceeds the 2 bytes");
}

TEST_F(Safetensors, HeaderLengthAboveTheLimitIsRefusedBeforeAllocating) {
  expect_corrupt(length_field(uint64_t(1) << 62) + "{}", "exceeds the limit of 100000000");
  expect_corrupt(length_field(~uint64_t(0)) + "{}", "exceeds the limit");
}

TEST_F(Safetensors, InvalidJsonReportsTheParserMessage) {
  expect_corrupt(file_with_header(R"({"a": {"dtype": "F32",)", 0), "not valid JSON");
  expect_corrupt(file_with_header(R"({"a": {"dtype": "F32",)", 0), "parse error");
  expect_corrupt(file_with_header("", 0), "not valid JSON");
  expect_corrupt(file_with_header("{\"\xFF\": 1}", 0), "not valid JSON");  // not UTF-8
}

TEST_F(Safetensors, HeaderMustBeAnObject) {
  expect_corrupt(file_with_header("[1, 2]", 0), "must be a JSON object, got array");
  expect_corrupt(file_with_header("null    ", 0), "must be a JSON object, got null");
}

TEST_F(Safetensors, EntryMustBeAnObjectWithAllThreeKeys) {
  expect_corrupt(file_with_header(R"({"x": 3})", 0), "tensor 'x': expected an object");
  expect_corrupt(file_with_header(R"({"x": {"shape": [], "data_offsets": [0, 4]}})", 4),
                 "tensor 'x' has no \"dtype\"");
  expect_corrupt(file_with_header(R"({"x": {"dtype": "F32", "data_offsets": [0, 4]}})", 4),
                 "tensor 'x' has no \"shape\"");
  expect_corrupt(file_with_header(R"({"x": {"dtype": "F32", "shape": []}})", 4),
                 "tensor 'x' has no \"data_offsets\"");
}

TEST_F(Safetensors, EntryFieldsWithTheWrongJsonTypes) {
  expect_corrupt(
      file_with_header(R"({"x": {"dtype": 32, "shape": [], "data_offsets": [0, 4]}})", 4),
      "tensor 'x': \"dtype\" must be a string, got 32");
  expect_corrupt(
      file_with_header(R"({"x": {"dtype": "F32", "shape": 3, "data_offsets": [0, 12]}})", 12),
      "tensor 'x': \"shape\" must be an array");
  expect_corrupt(
      file_with_header(R"({"x": {"dtype": "F32", "shape": ["3"], "data_offsets": [0, 12]}})", 12),
      "shape entries must be integers");
  for (const char* offsets : {"[0]", "[0, 4, 8]", "\"0-4\"", "[0, \"4\"]", "[-4, 0]", "[0, 4.0]"}) {
    SCOPED_TRACE(offsets);
    expect_corrupt(file_with_header(std::string(R"({"x": {"dtype": "F32", "shape": [], )") +
                                        "\"data_offsets\": " + offsets + "}}",
                                    4),
                   "\"data_offsets\" must be two non-negative integers");
  }
}

TEST_F(Safetensors, NegativeAndNonIntegerDimensions) {
  expect_corrupt(
      file_with_header(R"({"x": {"dtype": "F32", "shape": [2, -3], "data_offsets": [0, 0]}})", 0),
      "tensor 'x': negative dimension -3");
  expect_corrupt(
      file_with_header(R"({"x": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 10]}})", 10),
      "tensor 'x': shape entries must be integers, got 2.5");
}

TEST_F(Safetensors, ShapeWhoseProductOverflows) {
  expect_corrupt(
      file_with_header(
          R"({"x": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}})",
          4),
      "more elements than int64 can count");
  // Fits int64 as a count, not as bytes.
  expect_corrupt(
      file_with_header(
          R"({"x": {"dtype": "F32", "shape": [2305843009213693952, 2], "data_offsets": [0, 4]}})",
          4),
      "more bytes than uint64 can count");
  expect_corrupt(
      file_with_header(
          R"({"x": {"dtype": "F32", "shape": [18446744073709551615], "data_offsets": [0, 4]}})", 4),
      "dimension 18446744073709551615 is too large");
}

TEST_F(Safetensors, UnsupportedDtypesNameTheTensorAndTheDtype) {
  for (const char* dtype : {"F8_E4M3", "C64", "nonsense"}) {
    SCOPED_TRACE(dtype);
    expect_corrupt(
        file_with_header(std::string(R"({"x": {"dtype": ")") + dtype +
                             R"(", "shape": [], "data_offsets": [0, 8]}})",
                         8),
        std::string("unsupported dtype ") + dtype + " for tensor 'x'; cairn reads F32, F16, BF16");
  }
}

TEST_F(Safetensors, OffsetsMustMatchTheDtypeSizeTimesTheElementCount) {
  expect_corrupt(
      file_with_header(R"({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8),
      "tensor 'x': data_offsets [0,8] span 8 bytes, but F32 (3,) needs 12");
  expect_corrupt(
      file_with_header(R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", 8),
      "end before they begin");
}

TEST_F(Safetensors, OffsetsOutsideTheDataSection) {
  expect_corrupt(
      file_with_header(R"({"x": {"dtype": "I32", "shape": [4], "data_offsets": [0, 16]}})", 12),
      "tensor 'x': data_offsets [0,16] reach past the end of the 12-byte data section");
  expect_corrupt(
      file_with_header(
          R"({"x": {"dtype": "I32", "shape": [0], "data_offsets": [18446744073709551615, 18446744073709551615]}})",
          0),
      "reach past the end");
}

TEST_F(Safetensors, OverlappingTensorsAreNamed) {
  expect_corrupt(
      file_with_header(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, )"
                       R"("b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                       12),
      "tensor 'b' begins at byte 4, inside tensor 'a' (which ends at byte 8)");
  // Two names for the same bytes.
  expect_corrupt(
      file_with_header(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, )"
                       R"("b": {"dtype": "I32", "shape": [1], "data_offsets": [0, 4]}})",
                       4),
      "must not overlap");
}

TEST_F(Safetensors, HolesAndUnaccountedBytesInTheDataSection) {
  expect_corrupt(
      file_with_header(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, )"
                       R"("b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
                       12),
      "tensor 'b' begins at byte 8, leaving a hole of 4 bytes after tensor 'a'");
  expect_corrupt(
      file_with_header(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8),
      "leaving a hole of 4 bytes after the header");
  expect_corrupt(
      file_with_header(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 9),
      "the data section is 9 bytes, but the tensors cover only the first 4");
}

TEST_F(Safetensors, DuplicateNamesInTheHeader) {
  expect_corrupt(
      file_with_header(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, )"
                       R"("a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                       8),
      "the header names 'a' twice");
  // Equal keys deeper down are not tensor names: those are left to the entry checks.
  const std::string nested =
      R"({"a": {"dtype": "F32", "dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})";
  write_file(path("nested.safetensors"), file_with_header(nested, 4));
  EXPECT_EQ(load_safetensors(path("nested.safetensors")).tensors.size(), 1u);
}

TEST_F(Safetensors, MetadataMustMapStringsToStrings) {
  expect_corrupt(file_with_header(R"({"__metadata__": {"epoch": 3}})", 0),
                 "\"__metadata__\" value for 'epoch' must be a string, got 3");
  expect_corrupt(file_with_header(R"({"__metadata__": ["pt"]})", 0),
                 "\"__metadata__\" must be an object of strings");
}

TEST_F(Safetensors, TruncatedAtEveryLengthIsAnErrorNeverACrash) {
  const std::string good = path("good.safetensors");
  save_safetensors(good,
                   {{"a", Tensor::uniform({3, 2}, -1, 1, 3, kCpu)},
                    {"b", Tensor::from_int32({1, 2, 3}, {3}, kCpu)}},
                   {{"k", "v"}});
  const std::string bytes = read_file(good);
  for (size_t length = 0; length < bytes.size(); ++length) {
    SCOPED_TRACE(length);
    write_file(path("cut.safetensors"), bytes.substr(0, length));
    EXPECT_THROW(load_safetensors(path("cut.safetensors")), Error);
  }
}

TEST_F(Safetensors, RandomByteFlipsLoadOrThrowCairnErrorsOnly) {
  const std::string good = path("good.safetensors");
  save_safetensors(good,
                   {{"a", Tensor::uniform({3, 2}, -1, 1, 3, kCpu)},
                    {"b", Tensor::from_int32({1, 2, 3}, {3}, kCpu)}},
                   {{"k", "v"}});
  const std::string bytes = read_file(good);
  std::mt19937 random(1234);
  int errors = 0;
  for (int trial = 0; trial < 500; ++trial) {
    std::string damaged = bytes;
    // Mostly the header and the length field, where the interesting failures are.
    const size_t at = random() % std::min<size_t>(damaged.size(), 8 + 120);
    damaged[at] = char(random() % 256);
    write_file(path("flipped.safetensors"), damaged);
    try {
      load_safetensors(path("flipped.safetensors"));
    } catch (const Error& error) {
      ++errors;
      EXPECT_EQ(std::string(error.what()).rfind("load_safetensors: ", 0), 0u) << error.what();
    }
    // Any other exception type escapes and fails the test.
  }
  EXPECT_GT(errors, 0);
}

}  // namespace
}  // namespace cairn
