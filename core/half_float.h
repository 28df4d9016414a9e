// IEEE 754 binary16 (F16) and bfloat16 (BF16) as bit patterns. cairn computes in float32; these
// are for files that store the narrower types (safetensors F16 and BF16, which PyTorch and the
// Hugging Face hub write routinely).
//
// Widening is exact (every F16 and BF16 value is a float32 value, NaN payloads included).
// Narrowing rounds to nearest, ties to even, and keeps the sign of zeros and infinities. A finite
// float32 beyond the narrow type's range becomes an infinity (callers that must not lose a finite
// value check for that). NaN stays NaN with its sign, following the reference converters so that
// Python reads what cairn writes bit for bit: F16 keeps the top ten payload bits (numpy's astype;
// a payload that would be all zero becomes 1, so the NaN does not turn into an infinity), BF16
// becomes the quiet NaN 0x7fc0 (ml_dtypes and Eigen).
#pragma once

#include <cstdint>

namespace cairn {

uint16_t float_to_f16_bits(float value);
float f16_bits_to_float(uint16_t bits);
uint16_t float_to_bf16_bits(float value);
float bf16_bits_to_float(uint16_t bits);

}  // namespace cairn
