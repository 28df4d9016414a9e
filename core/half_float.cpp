#include "cairn/core/half_float.h"

#include <cstring>

namespace cairn {
namespace {

uint32_t bits_of(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

float float_of(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// Drops the low `shift` bits of `value`, rounding to nearest with ties to even.
uint32_t shift_right_rounded(uint32_t value, uint32_t shift) {
  const uint32_t kept = value >> shift;
  const uint32_t rest = value & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  return kept + (rest > half || (rest == half && (kept & 1u)) ? 1u : 0u);
}

constexpr uint32_t kFloatExponentMask = 0x7f800000u;
constexpr uint32_t kFloatMantissaMask = 0x007fffffu;

}  // namespace

uint16_t float_to_f16_bits(float value) {
  const uint32_t f = bits_of(value);
  const uint32_t sign = (f >> 16) & 0x8000u;
  const uint32_t magnitude = f & 0x7fffffffu;
  if (magnitude >= kFloatExponentMask) {  // infinity or NaN
    if (magnitude == kFloatExponentMask) return uint16_t(sign | 0x7c00u);
    uint32_t nan = 0x7c00u | ((magnitude & kFloatMantissaMask) >> 13);
    if (nan == 0x7c00u) ++nan;
    return uint16_t(sign | nan);
  }
  // 65520 is halfway between F16's largest value, 65504 (odd mantissa), and 65536: it and
  // everything above round to infinity.
  if (magnitude >= 0x477ff000u) return uint16_t(sign | 0x7c00u);
  if (magnitude >= 0x38800000u) {                            // a normal F16: at least 2^-14
    const uint32_t exponent = (magnitude >> 23) - 127 + 15;  // 1 to 30
    // Rebias in place and drop the 13 low mantissa bits; a carry out of the mantissa correctly
    // bumps the exponent.
    return uint16_t(sign |
                    shift_right_rounded((exponent << 23) | (magnitude & kFloatMantissaMask), 13));
  }
  // Below 2^-25 everything rounds to zero (2^-25 itself is a tie, which goes to even zero).
  if (magnitude < 0x33000000u) return uint16_t(sign);
  // A subnormal F16 counts units of 2^-24: the float's 24-bit significand times 2^(e - 150),
  // in those units, is the significand shifted right by 126 - e (14 to 24).
  const uint32_t exponent = magnitude >> 23;
  const uint32_t significand = (magnitude & kFloatMantissaMask) | 0x00800000u;
  // Rounding up from the largest subnormal gives 0x400, the smallest normal: also right.
  return uint16_t(sign | shift_right_rounded(significand, 126 - exponent));
}

float f16_bits_to_float(uint16_t bits) {
  const uint32_t sign = uint32_t(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1fu) return float_of(sign | kFloatExponentMask | (mantissa << 13));
  if (exponent != 0) return float_of(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
  // Zero or subnormal: mantissa * 2^-24, exact in float32 (the mantissa has at most 10 bits).
  const float magnitude = float(mantissa) * float_of(0x33800000u);  // 2^-24
  return float_of(sign | bits_of(magnitude));
}

uint16_t float_to_bf16_bits(float value) {
  const uint32_t f = bits_of(value);
  if ((f & 0x7fffffffu) > kFloatExponentMask) return uint16_t(((f >> 16) & 0x8000u) | 0x7fc0u);
  // Infinities pass through unchanged; the largest finite floats carry into infinity, which is
  // the correct rounding.
  return uint16_t(shift_right_rounded(f, 16));
}

float bf16_bits_to_float(uint16_t bits) { return float_of(uint32_t(bits) << 16); }

}  // namespace cairn
