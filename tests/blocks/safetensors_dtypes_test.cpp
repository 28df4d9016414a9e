// safetensors dtypes other than cairn's own: files written by Python's safetensors package with
// numpy and ml_dtypes (tests/data/make_dtype_fixtures.py) load as numpy converts them; F16 and BF16
// files cairn writes hold numpy's and ml_dtypes' bits; values a conversion would change beyond
// rounding are refused with the tensor's name; and Python reads what cairn wrote
// (tests/data/check_cairn_written.py, where python3 and the packages are there).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "cairn/blocks/safetensors.h"
#include "cairn/core/half_float.h"
#include "support/temp_dir.h"
#include "support/test_support.h"

namespace cairn {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;

const Device kCpu = Device::cpu();
const std::string kDataDir = CAIRN_TEST_DATA_DIR;

std::vector<uint8_t> bytes_of(const Tensor& tensor) {
  const auto* begin = static_cast<const uint8_t*>(tensor.raw_data());
  return std::vector<uint8_t>(begin, begin + tensor.nbytes());
}

uint32_t bits_of(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

const Tensor& tensor_named(const SafetensorsFile& file, const std::string& name) {
  for (const auto& [tensor_name, tensor] : file.tensors) {
    if (tensor_name == name) return tensor;
  }
  throw std::runtime_error("no tensor " + name);
}

class SafetensorsDtypes : public testing::TempDirTest {
 protected:
  // A one-tensor file: `dtype`, `shape` and the raw little-endian `data`.
  std::string write_raw(const std::string& dtype, const std::string& shape,
                        const std::string& data) {
    const std::string header = R"({"x": {"dtype": ")" + dtype + R"(", "shape": )" + shape +
                               R"(, "data_offsets": [0, )" + std::to_string(data.size()) + "]}}";
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i)
      bytes[size_t(i)] = char(uint8_t(uint64_t(header.size()) >> (8 * i)));
    const std::string file = path("raw.safetensors");
    std::ofstream out(file, std::ios::binary);
    out << bytes << header << data;
    return file;
  }

  template <typename T>
  std::string raw_values(std::initializer_list<T> values) {
    std::string data;
    for (const T value : values) data.append(reinterpret_cast<const char*>(&value), sizeof(T));
    return data;
  }
};

// ---- Reading what Python wrote. ----

TEST_F(SafetensorsDtypes, LoadsEveryDtypePythonWroteAsNumpyConvertsIt) {
  const SafetensorsFile file = load_safetensors(kDataDir + "/python_dtypes.safetensors");
  EXPECT_EQ(file.metadata.at("written_by"), "make_dtype_fixtures.py");
  const std::vector<std::string> dtypes = {"F16", "BF16", "F64", "I8",  "U8",  "I16",
                                           "U16", "I32",  "I64", "U32", "U64", "BOOL"};
  for (const std::string& dtype : dtypes) {
    SCOPED_TRACE(dtype);
    const Tensor& loaded = tensor_named(file, dtype);
    const Tensor& expected = tensor_named(file, dtype + ".expected");  // numpy's astype
    EXPECT_EQ(file.stored_dtypes.at(dtype), dtype);
    EXPECT_EQ(loaded.dtype(), expected.dtype());
    EXPECT_EQ(loaded.shape(), expected.shape());
    EXPECT_GT(loaded.numel(), 2);
    EXPECT_EQ(bytes_of(loaded), bytes_of(expected));  // bit for bit, NaN payloads included
  }
  EXPECT_EQ(tensor_named(file, "F16").dtype(), DType::kFloat32);
  EXPECT_EQ(tensor_named(file, "BOOL").to_int32_vector(), (std::vector<int32_t>{1, 0, 1}));
  EXPECT_EQ(tensor_named(file, "U16").to_int32_vector(),
            (std::vector<int32_t>{0, 1, 40000, 65535}));
  // F64 rounds to nearest, ties to even: 1 + 2^-24 is halfway between 1 and the next float.
  const std::vector<float> f64 = tensor_named(file, "F64").to_vector();
  EXPECT_EQ(f64[8], 1.0f);
  EXPECT_EQ(f64[9], 1.0f + 0x1p-22f);
  EXPECT_EQ(f64[10], 1.0f + 0x1p-23f);
}

TEST(HalfFloat, WideningIsExactForEveryBitPattern) {
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const uint16_t h = uint16_t(bits);
    // F16 by its definition: sign, 5 exponent bits (bias 15), 10 mantissa bits.
    const int exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    const double sign = (h & 0x8000) ? -1.0 : 1.0;
    const float f16 = f16_bits_to_float(h);
    if (exponent == 31) {
      EXPECT_TRUE(mantissa == 0 ? std::isinf(f16) : std::isnan(f16)) << bits;
      if (mantissa != 0) EXPECT_EQ((bits_of(f16) >> 13) & 0x3ff, uint32_t(mantissa)) << bits;
    } else {
      const double value = exponent == 0
                               ? sign * std::ldexp(double(mantissa), -24)
                               : sign * std::ldexp(1.0 + mantissa / 1024.0, exponent - 15);
      EXPECT_EQ(double(f16), value) << bits;
      EXPECT_EQ(std::signbit(f16), bool(h & 0x8000)) << bits;
    }
    EXPECT_EQ(float_to_f16_bits(f16), h) << bits;  // narrowing a widened value gives it back
    const float bf16 = bf16_bits_to_float(h);
    EXPECT_EQ(bits_of(bf16), bits << 16);
    if (!std::isnan(bf16)) EXPECT_EQ(float_to_bf16_bits(bf16), h) << bits;
  }
}

// ---- Writing F16 and BF16: numpy's and ml_dtypes' bits. ----

TEST_F(SafetensorsDtypes, SavedF16AndBF16HoldNumpysAndMlDtypesRoundingBitForBit) {
  const SafetensorsFile fixture = load_safetensors(kDataDir + "/float_narrowing.safetensors");
  for (const auto& [prefix, format] :
       {std::pair<std::string, FloatFormat>{"f16", FloatFormat::kF16},
        {"bf16", FloatFormat::kBF16}}) {
    SCOPED_TRACE(prefix);
    const Tensor& input = tensor_named(fixture, prefix + ".input");
    const std::string file = path(prefix + ".safetensors");
    save_safetensors(file, {{"x", input}, {"ids", Tensor::from_int32({7, -7}, {2}, kCpu)}}, {},
                     format);
    const SafetensorsFile saved = load_safetensors(file);
    EXPECT_EQ(saved.stored_dtypes.at("x"), prefix == "f16" ? "F16" : "BF16");
    EXPECT_EQ(saved.stored_dtypes.at("ids"), "I32");  // integers are never narrowed
    // Widening is one to one (WideningIsExactForEveryBitPattern), so equal widened bits mean
    // equal stored bits.
    const std::vector<uint8_t> got = bytes_of(tensor_named(saved, "x"));
    const std::vector<uint8_t> want = bytes_of(tensor_named(fixture, prefix + ".expected"));
    ASSERT_EQ(got.size(), want.size());
    size_t mismatches = 0;
    for (size_t i = 0; i < got.size(); i += 4) {
      if (std::memcmp(&got[i], &want[i], 4) != 0 && ++mismatches <= 5) {
        ADD_FAILURE() << "element " << i / 4 << " of " << prefix << ".input";
      }
    }
    EXPECT_EQ(mismatches, 0u);
    EXPECT_EQ(tensor_named(saved, "ids").to_int32_vector(), (std::vector<int32_t>{7, -7}));
  }
}

TEST_F(SafetensorsDtypes, ParametersSaveAsBF16AndLoadBack) {
  auto net = make<Sequential>();
  net->add(make<Dense>(3, "relu"), make<Dense>(2));
  net->initialize(init::uniform(1.0f), kCpu, 3);
  (*net)(Tensor::from_vector(std::vector<float>(8, 0.5f), {2, 4}, kCpu));
  net->save_parameters(path("half.safetensors"), FloatFormat::kBF16);
  EXPECT_EQ(load_safetensors(path("half.safetensors")).stored_dtypes.at("0.weight"), "BF16");

  auto loaded = make<Sequential>();
  loaded->add(make<Dense>(3, "relu"), make<Dense>(2));
  loaded->load_parameters(path("half.safetensors"), kCpu);
  for (const auto& [name, parameter] : net->collect_params()) {
    const std::vector<float> original = parameter->data().to_vector();
    const std::vector<float> back = loaded->collect_params().at(name)->data().to_vector();
    ASSERT_EQ(back.size(), original.size()) << name;
    for (size_t i = 0; i < back.size(); ++i) {
      EXPECT_EQ(back[i], bf16_bits_to_float(float_to_bf16_bits(original[i]))) << name << i;
      EXPECT_LE(std::fabs(back[i] - original[i]), std::fabs(original[i]) * 0x1p-8f) << name << i;
    }
  }
}

TEST_F(SafetensorsDtypes, SavingAFiniteValueNarrowingWouldMakeInfiniteIsRefused) {
  const std::string file = path("old.safetensors");
  save_safetensors(file, {{"x", Tensor::from_vector({1.0f}, {1}, kCpu)}});
  const Tensor too_big_for_f16 = Tensor::from_vector({1.0f, 65520.0f}, {2}, kCpu);
  expect_error(
      [&] {
        save_safetensors(file, {{"big", too_big_for_f16}}, {}, FloatFormat::kF16);
      },
      {"save_safetensors: " + file, "tensor 'big'", "value 65520 at element 1",
       "outside F16's range", "save this tensor as F32 or BF16"});
  expect_error(
      [&] {
        save_safetensors(file, {{"max", Tensor::from_vector({-FLT_MAX}, {1}, kCpu)}}, {},
                         FloatFormat::kBF16);
      },
      {"tensor 'max'", "outside BF16's range"});
  // The refused saves left the old file as it was, and no temporary file.
  EXPECT_EQ(tensor_named(load_safetensors(file), "x").to_vector(), std::vector<float>{1.0f});
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
  // Infinities and the largest finite values are kept.
  save_safetensors(
      file, {{"x", Tensor::from_vector({INFINITY, -INFINITY, 65504.0f, 65519.0f}, {4}, kCpu)}}, {},
      FloatFormat::kF16);
  EXPECT_EQ(tensor_named(load_safetensors(file), "x").to_vector(),
            (std::vector<float>{INFINITY, -INFINITY, 65504.0f, 65504.0f}));
}

// ---- Values a conversion would change beyond rounding: refused, naming the tensor. ----

TEST_F(SafetensorsDtypes, IntegersOutsideInt32AreRefusedWithTheTensorAndTheValue) {
  const auto expect_refused = [&](const std::string& file, const std::string& value) {
    expect_error([&] { load_safetensors(file); }, {"load_safetensors: " + file + ": tensor 'x': ",
                                                   value, "at element 1", "does not fit int32"});
  };
  expect_refused(write_raw("I64", "[2]", raw_values<int64_t>({1, int64_t(INT32_MAX) + 1})),
                 "I64 value 2147483648");
  expect_refused(write_raw("I64", "[2]", raw_values<int64_t>({1, int64_t(INT32_MIN) - 1})),
                 "I64 value -2147483649");
  expect_refused(write_raw("U32", "[2]", raw_values<uint32_t>({1, 1u << 31})),
                 "U32 value 2147483648");
  expect_refused(write_raw("U64", "[2]", raw_values<uint64_t>({1, ~0ull})),
                 "U64 value 18446744073709551615");
  // The limits themselves load.
  const SafetensorsFile fits =
      load_safetensors(write_raw("I64", "[2]", raw_values<int64_t>({INT32_MIN, INT32_MAX})));
  EXPECT_EQ(fits.tensors[0].second.to_int32_vector(), (std::vector<int32_t>{INT32_MIN, INT32_MAX}));
}

TEST_F(SafetensorsDtypes, F64BeyondFloat32AndBoolBytesOtherThanZeroOrOneAreRefused) {
  const std::string f64 = write_raw("F64", "[3]", raw_values<double>({1.0, -1e39, 2.0}));
  expect_error([&] { load_safetensors(f64); },
               {"tensor 'x': F64 value -1e+39 at element 1 is outside float32's range"});
  const std::string infinite = write_raw("F64", "[2]", raw_values<double>({INFINITY, NAN}));
  const std::vector<float> loaded = load_safetensors(infinite).tensors[0].second.to_vector();
  EXPECT_TRUE(std::isinf(loaded[0]) && std::isnan(loaded[1]));  // not finite to begin with
  const std::string boolean = write_raw("BOOL", "[3]", std::string("\x01\x00\x02", 3));
  expect_error([&] { load_safetensors(boolean); },
               {"tensor 'x': BOOL byte 2 at element 2 is neither 0 nor 1"});
}

TEST_F(SafetensorsDtypes, TypesCairnCannotHoldNameTheTensorAndWhatItReads) {
  for (const char* dtype : {"F8_E4M3", "F8_E5M2", "C64", "f32", "nonsense"}) {
    SCOPED_TRACE(dtype);
    const std::string file = write_raw(dtype, "[]", std::string(8, '\0'));
    expect_error([&] { load_safetensors(file); },
                 {std::string("unsupported dtype ") + dtype + " for tensor 'x'",
                  "cairn reads F32, F16, BF16, F64, I32, I8, U8, I16, U16, I64, U32, U64, BOOL"});
  }
}

// A 16-bit dtype's data_offsets must span two bytes an element, not four.
TEST_F(SafetensorsDtypes, OffsetsAreCheckedAgainstTheFilesElementSize) {
  const std::string file = write_raw("BF16", "[2]", std::string(8, '\0'));
  expect_error([&] { load_safetensors(file); }, {"span 8 bytes, but BF16 (2,) needs 4"});
}

// ---- Python reads what cairn wrote. ----

// Runs tests/data/check_cairn_written.py on files cairn wrote in F32, F16 and BF16. Skips where
// python3, numpy, ml_dtypes or safetensors is missing (CI does not install them: the fixtures
// above test the same rounding without Python).
TEST_F(SafetensorsDtypes, PythonReadsWhatCairnWritesBitForBit) {
  const SafetensorsFile fixture = load_safetensors(kDataDir + "/float_narrowing.safetensors");
  // Every case both types can hold, then a shaped tensor and integers.
  const std::vector<float> cases = tensor_named(fixture, "f16.input").to_vector();
  const NamedTensors tensors = {
      {"x", Tensor::from_vector(cases, {int64_t(cases.size())}, kCpu)},
      {"m", Tensor::from_vector({0.1f, -0.2f, 1e-5f, 3.14159f, -0.0f, 1e-8f}, {2, 3}, kCpu)},
      {"ids", Tensor::from_int32({INT32_MIN, -1, 0, 1, INT32_MAX}, {5}, kCpu)}};
  const std::map<std::string, std::string> metadata = {{"producer", "cairn"}};
  save_safetensors(path("values.f32.safetensors"), tensors, metadata, FloatFormat::kF32);
  save_safetensors(path("values.f16.safetensors"), tensors, metadata, FloatFormat::kF16);
  save_safetensors(path("values.bf16.safetensors"), tensors, metadata, FloatFormat::kBF16);

  const std::string command =
      "python3 '" + kDataDir + "/check_cairn_written.py' '" + dir_.string() + "' 2>&1";
  std::FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr) << std::strerror(errno);
  std::string output;
  char buffer[512];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
  const int status = ::pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  if (WEXITSTATUS(status) == 127) GTEST_SKIP() << "no python3: " << output;
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << output;
  EXPECT_EQ(WEXITSTATUS(status), 0) << output;
  EXPECT_NE(output.find("OK: "), std::string::npos) << output;
}

}  // namespace
}  // namespace cairn
