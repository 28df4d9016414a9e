#include "cairn/blocks/safetensors_dtypes.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "cairn/base/error.h"
#include "cairn/core/half_float.h"
#include "cairn/core/tensor.h"

namespace cairn::safetensors_dtypes {
namespace {

// F8 types and complex numbers are not here: nothing cairn loads uses them.
constexpr StoredDType kStored[] = {
    {"F32", 4, DType::kFloat32}, {"F16", 2, DType::kFloat32}, {"BF16", 2, DType::kFloat32},
    {"F64", 8, DType::kFloat32}, {"I32", 4, DType::kInt32},   {"I8", 1, DType::kInt32},
    {"U8", 1, DType::kInt32},    {"I16", 2, DType::kInt32},   {"U16", 2, DType::kInt32},
    {"I64", 8, DType::kInt32},   {"U32", 4, DType::kInt32},   {"U64", 8, DType::kInt32},
    {"BOOL", 1, DType::kInt32},
};

bool is(const StoredDType& stored, const char* name) { return std::strcmp(stored.name, name) == 0; }

// Little-endian element `i` (the host is little-endian: safetensors.cpp checks).
template <typename T>
T element(const unsigned char* bytes, int64_t i) {
  T value;
  std::memcpy(&value, bytes + size_t(i) * sizeof(T), sizeof(T));
  return value;
}

template <typename T>
void decode_integers(const unsigned char* bytes, int32_t* out, int64_t n, const char* name,
                     const std::string& what) {
  for (int64_t i = 0; i < n; ++i) {
    const T value = element<T>(bytes, i);
    // Compared in the wider of the two types, so that neither side is truncated first.
    if constexpr (std::numeric_limits<T>::is_signed) {
      CAIRN_CHECK(int64_t(value) >= INT32_MIN && int64_t(value) <= INT32_MAX, what, ": ", name,
                  " value ", int64_t(value), " at element ", i,
                  " does not fit int32, cairn's integer dtype");
    } else {
      CAIRN_CHECK(uint64_t(value) <= uint64_t(INT32_MAX), what, ": ", name, " value ",
                  uint64_t(value), " at element ", i, " does not fit int32, cairn's integer dtype");
    }
    out[i] = int32_t(value);
  }
}

}  // namespace

const StoredDType* find(const std::string& name) {
  for (const StoredDType& stored : kStored) {
    if (name == stored.name) return &stored;
  }
  return nullptr;
}

std::string readable_names() {
  std::string names;
  for (const StoredDType& stored : kStored)
    names += (names.empty() ? "" : ", ") + std::string(stored.name);
  return names;
}

bool is_native(const StoredDType& stored) { return is(stored, "F32") || is(stored, "I32"); }

void decode(const StoredDType& stored, const unsigned char* bytes, Tensor& out,
            const std::string& what) {
  const int64_t n = out.numel();
  if (is_native(stored)) {
    std::memcpy(out.raw_data(), bytes, size_t(n) * stored.bytes);
  } else if (is(stored, "F16") || is(stored, "BF16")) {
    float* values = out.data();
    const bool f16 = is(stored, "F16");
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t bits = element<uint16_t>(bytes, i);
      values[i] = f16 ? f16_bits_to_float(bits) : bf16_bits_to_float(bits);
    }
  } else if (is(stored, "F64")) {
    float* values = out.data();
    for (int64_t i = 0; i < n; ++i) {
      const double value = element<double>(bytes, i);
      values[i] = float(value);  // round to nearest (the default rounding mode)
      CAIRN_CHECK(std::isfinite(values[i]) || !std::isfinite(value), what, ": F64 value ", value,
                  " at element ", i, " is outside float32's range");
    }
  } else if (is(stored, "BOOL")) {
    int32_t* values = out.data_int32();
    for (int64_t i = 0; i < n; ++i) {
      CAIRN_CHECK(bytes[i] <= 1, what, ": BOOL byte ", int(bytes[i]), " at element ", i,
                  " is neither 0 nor 1");
      values[i] = bytes[i];
    }
  } else if (is(stored, "I8")) {
    decode_integers<int8_t>(bytes, out.data_int32(), n, stored.name, what);
  } else if (is(stored, "U8")) {
    decode_integers<uint8_t>(bytes, out.data_int32(), n, stored.name, what);
  } else if (is(stored, "I16")) {
    decode_integers<int16_t>(bytes, out.data_int32(), n, stored.name, what);
  } else if (is(stored, "U16")) {
    decode_integers<uint16_t>(bytes, out.data_int32(), n, stored.name, what);
  } else if (is(stored, "I64")) {
    decode_integers<int64_t>(bytes, out.data_int32(), n, stored.name, what);
  } else if (is(stored, "U32")) {
    decode_integers<uint32_t>(bytes, out.data_int32(), n, stored.name, what);
  } else if (is(stored, "U64")) {
    decode_integers<uint64_t>(bytes, out.data_int32(), n, stored.name, what);
  } else {
    CAIRN_FAIL(what, ": no conversion from ", stored.name);
  }
}

void encode_float(const Tensor& in, const StoredDType& stored, unsigned char* bytes,
                  const std::string& what) {
  CAIRN_CHECK(in.dtype() == DType::kFloat32 && (is(stored, "F16") || is(stored, "BF16")), what,
              ": cannot store ", dtype_name(in.dtype()), " as ", stored.name);
  const bool f16 = is(stored, "F16");
  const float* values = in.data();
  for (int64_t i = 0; i < in.numel(); ++i) {
    const uint16_t bits = f16 ? float_to_f16_bits(values[i]) : float_to_bf16_bits(values[i]);
    const float stored_value = f16 ? f16_bits_to_float(bits) : bf16_bits_to_float(bits);
    CAIRN_CHECK(std::isfinite(stored_value) || !std::isfinite(values[i]), what, ": value ",
                values[i], " at element ", i, " is outside ", stored.name,
                "'s range (it would become an infinity); save this tensor as F32",
                f16 ? " or BF16" : "");
    std::memcpy(bytes + 2 * size_t(i), &bits, 2);
  }
}

}  // namespace cairn::safetensors_dtypes
