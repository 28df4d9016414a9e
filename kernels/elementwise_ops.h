// The elementwise op table: one row per op, written once, instantiated by both backends.
//
// A row is a struct in namespace ew with
//   kName            the op's name (ops::unary, error messages, activation names, test traces)
//   forward          static CAIRN_HOST_DEVICE: y = f(x) (unary) or y = f(a, b) (binary)
//   backward         unary only, static CAIRN_HOST_DEVICE: dx from (x, y, dy); kSaves says which of
//                    x and y it reads (the others come in as 0), so that autograd keeps only those
//   reference        host only, in double: the value the tests hold both backends to
//   kLow, kHigh      the domain the tests draw random inputs from
//   kUlps            0: bit-exact between the CPU and any GPU (correctly rounded IEEE operations
//                    and selects only); else the bound against `reference` in ulps (with kAtol as
//                    an absolute floor where the formula cancels), on either device
//   kBackwardUlps    the same for backward between the devices, given the same x, y and dy
//                    (0 for rows whose backward is arithmetic on the saved x or y)
//   kKink            where the derivative jumps (finite-difference tests stay away), or NaN
//   kActivation      whether Activation("<kName>") and Dense(..., "<kName>") accept it
// and its entry in CAIRN_UNARY_OPS / CAIRN_BINARY_OPS, which generates the enum, both backends'
// dispatch and every table-driven test (parity, finite differences, golden values, bad input).
// Adding an op is adding a row here (and, for a named entry point, its line in core/ops.h).
//
// Special values, the same bits on both devices (docs/DESIGN.md, "Elementwise ops"):
//   - a NaN operand comes out unchanged, payload and sign included (the first NaN operand of a
//     binary op); neg and abs are sign-bit operations and flip or clear a NaN's sign as any other;
//   - a NaN made from non-NaN operands (inf - inf, 0 * inf, log(-1)) is the canonical quiet NaN
//     0x7fc00000 (x86 would give 0xffc00000, NVIDIA GPUs 0x7fffffff);
//   - relu(-0.0) = -0.0 (PyTorch's eager CPU relu, clamp_min: the input is kept unless x < 0);
//     sign(-0.0) = +0.0 (PyTorch and NumPy);
//   - subnormals are kept (no flush to zero on either side).
// Device code gets CUDA's math functions, host code std::'s; two-operation expressions in bit-exact
// rows use the *_rn helpers below, which stop nvcc contracting them into an FMA (the CPU build has
// no FMA at all, kernels/cpu/vector_dispatch.h).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "cairn/kernels/common.h"

namespace cairn::kernels {

// ---- the lists: adding an op is one line here and its row below ----

#define CAIRN_UNARY_OPS(X) \
  X(Relu)                  \
  X(Neg)                   \
  X(Exp)                   \
  X(Log)                   \
  X(Sqrt)                  \
  X(Abs)                   \
  X(Sign)                  \
  X(Square)                \
  X(Sigmoid)               \
  X(Tanh)                  \
  X(Gelu)                  \
  X(GeluTanh)              \
  X(Silu)

#define CAIRN_BINARY_OPS(X) \
  X(Add)                    \
  X(Sub)                    \
  X(Mul)                    \
  X(Div)

#define CAIRN_ELEMENTWISE_ENUM_ENTRY(Row) k##Row,
enum class UnaryOp { CAIRN_UNARY_OPS(CAIRN_ELEMENTWISE_ENUM_ENTRY) };
enum class BinaryOp { CAIRN_BINARY_OPS(CAIRN_ELEMENTWISE_ENUM_ENTRY) };
#undef CAIRN_ELEMENTWISE_ENUM_ENTRY

#define CAIRN_ELEMENTWISE_COUNT(Row) +1
inline constexpr int kUnaryOpCount = 0 CAIRN_UNARY_OPS(CAIRN_ELEMENTWISE_COUNT);
inline constexpr int kBinaryOpCount = 0 CAIRN_BINARY_OPS(CAIRN_ELEMENTWISE_COUNT);
#undef CAIRN_ELEMENTWISE_COUNT

// What a unary op's backward reads besides dy.
enum class Saves { kNothing, kInput, kOutput };

namespace ew {

// ---- scalar helpers, the same bits on host and device ----

CAIRN_HOST_DEVICE inline uint32_t bits_of(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

CAIRN_HOST_DEVICE inline float float_of(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

CAIRN_HOST_DEVICE inline float canonical_nan() { return float_of(0x7fc00000u); }
CAIRN_HOST_DEVICE inline bool is_nan(float x) { return x != x; }

// The NaN rules of the header comment, for an op with one operand and result r...
CAIRN_HOST_DEVICE inline float nan_rule(float x, float r) {
  return is_nan(x) ? x : (is_nan(r) ? canonical_nan() : r);
}
// ... and with two.
CAIRN_HOST_DEVICE inline float nan_rule(float a, float b, float r) {
  return is_nan(a) ? a : (is_nan(b) ? b : (is_nan(r) ? canonical_nan() : r));
}

// One correctly rounded operation each, never contracted into an FMA.
CAIRN_HOST_DEVICE inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
CAIRN_HOST_DEVICE inline float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
CAIRN_HOST_DEVICE inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
CAIRN_HOST_DEVICE inline float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
CAIRN_HOST_DEVICE inline float sqrt_rn(float x) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(x);
#else
  return std::sqrt(x);
#endif
}

// Transcendentals: within ulps of each other, not bit-exact (CUDA's libdevice and glibc differ).
CAIRN_HOST_DEVICE inline float exp_f(float x) {
#if defined(__CUDA_ARCH__)
  return ::expf(x);
#else
  return std::exp(x);
#endif
}
CAIRN_HOST_DEVICE inline float log_f(float x) {
#if defined(__CUDA_ARCH__)
  return ::logf(x);
#else
  return std::log(x);
#endif
}
CAIRN_HOST_DEVICE inline float tanh_f(float x) {
#if defined(__CUDA_ARCH__)
  return ::tanhf(x);
#else
  return std::tanh(x);
#endif
}
CAIRN_HOST_DEVICE inline float erf_f(float x) {
#if defined(__CUDA_ARCH__)
  return ::erff(x);
#else
  return std::erf(x);
#endif
}

constexpr float kNoKink = std::numeric_limits<float>::quiet_NaN();
constexpr double kSqrt1_2 = 0.70710678118654752440;  // 1 / sqrt(2)
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1 / sqrt(2 pi)
constexpr double kGeluKappa = 0.044715;

// ---- unary rows ----

struct Relu {
  static constexpr const char* kName = "relu";
  static constexpr float kLow = -3.0f, kHigh = 3.0f, kKink = 0.0f;
  static constexpr int kUlps = 0;
  static constexpr int kBackwardUlps = 0;
  static constexpr double kAtol = 0.0;
  static constexpr Saves kSaves = Saves::kInput;
  static constexpr bool kActivation = true;
  // One compare and a select: NaN and -0.0 pass through, and the CPU loop vectorises.
  static CAIRN_HOST_DEVICE float forward(float x) { return x < 0.0f ? 0.0f : x; }
  // The kink takes the zero side, so a NaN input passes no gradient either (nor does a NaN dy
  // where x <= 0).
  static CAIRN_HOST_DEVICE float backward(float x, float, float dy) { return x > 0.0f ? dy : 0.0f; }
  static double reference(double x) { return x < 0.0 ? 0.0 : x; }
};

struct Neg {
  static constexpr const char* kName = "neg";
  static constexpr float kLow = -3.0f, kHigh = 3.0f, kKink = kNoKink;
  static constexpr int kUlps = 0;
  static constexpr int kBackwardUlps = 0;
  static constexpr double kAtol = 0.0;
  static constexpr Saves kSaves = Saves::kNothing;
  static constexpr bool kActivation = false;
  // The sign bit, flipped: IEEE 754's negate, NaN included, with no arithmetic to canonicalise it.
  static CAIRN_HOST_DEVICE float forward(float x) { return float_of(bits_of(x) ^ 0x80000000u); }
  static CAIRN_HOST_DEVICE float backward(float, float, float dy) { return forward(dy); }
  static double reference(double x) { return -x; }
};

struct Exp {
  static constexpr const char* kName = "exp";
  static constexpr float kLow = -8.0f, kHigh = 8.0f, kKink = kNoKink;
  static constexpr int kUlps = 2;
  static constexpr int kBackwardUlps = 0;
  static constexpr double kAtol = 0.0;
  static constexpr Saves kSaves = Saves::kOutput;
  static constexpr bool kActivation = false;
  static CAIRN_HOST_DEVICE float forward(float x) { return nan_rule(x, exp_f(x)); }
  static CAIRN_HOST_DEVICE float backward(float, float y, float dy) {
    return nan_rule(dy, y, mul_rn(dy, y));
  }
  static double reference(double x) { return std::exp(x); }
};

struct Log {
  static constexpr const char* kName = "log";
  static constexpr float kLow = 0.05f, kHigh = 8.0f, kKink = kNoKink;
  static constexpr int kUlps = 2;
  static constexpr int kBackwardUlps = 0;
  static constexpr double kAtol = 0.0;
  static constexpr Saves kSaves = Saves::kInput;
  static constexpr bool kActivation = false;
  static CAIRN_HOST_DEVICE float forward(float x) { return nan_rule(x, log_f(x)); }
  static CAIRN_HOST_DEVICE float backward(float x, float, float dy) {
    return nan_rule(dy, x, div_rn(dy, x));
  }
  static double reference(double x) { return std::log(x); }
};

struct Sqrt {
  static constexpr const char* kName = "sqrt";
  static constexpr float kLow = 0.05f, kHigh = 8.0f, kKink = kNoKink;
  static constexpr int kUlps = 0;  // correctly rounded on both (nvcc's default -prec-sqrt=true)
  static constexpr int kBackwardUlps = 0;
  static constexpr double kAtol = 0.0;
  static constexpr Saves kSaves = Saves::kOutput;
  static constexpr bool kActivation = false;
  static CAIRN_HOST_DEVICE float forward(float x) { return nan_rule(x, sqrt_rn(x)); }
  static CAIRN_HOST_DEVICE float backward(float, float y, float dy) {
    return nan_rule(dy, y, div_rn(mul_rn(dy, 0.5f), y));
  }
  static double reference(double x) { return std::sqrt(x); }
};

struct Sign {
  static constexpr const char* kName = "sign";
  static constexpr float kLow = -3.0f, kHigh = 3.0f, kKink = 0.0f;
  static constexpr int kUlps = 0;
  static constexpr int kBackwardUlps = 0;
  static constexpr double kAtol = 0.0;
  static constexpr Saves kSaves = Saves::kNothing;
  static constexpr bool kActivation = false;
  // +-0 give +0 (PyTorch, NumPy); NaN stays itself.
  static CAIRN_HOST_DEVICE float forward(float x) {
    return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : (is_nan(x) ? x : 0.0f));
  }
  static CAIRN_HOST_DEVICE float backward(float, float, float) { return 0.0f; }
  static double reference(double x) {
    return x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : (x != x ? x : 0.0));
  }
};

struct Abs {
  static constexpr const char* kName = "abs";
  static constexpr float kLow = -3.0f, kHigh = 3.0f, kKink = 0.0f;
  static constexpr int kUlps = 0;
  static constexpr int kBackwardUlps = 0;
  static constexpr double kAtol = 0.0;
  static constexpr Saves kSaves = Saves::kInput;
  static constexpr bool kActivation = false;
  // The sign bit, cleared: NaN included.
  static CAIRN_HOST_DEVICE float forward(float x) { return float_of(bits_of(x) & 0x7fffffffu); }
  static CAIRN_HOST_DEVICE float backward(float x, float, float dy) {
    return nan_rule(dy, x, mul_rn(dy, Sign::forward(x)));
  }
  static double reference(double x) { return std::fabs(x); }
};

struct Square {
  static constexpr const char* kName = "square";
  static constexpr float kLow = -3.0f, kHigh = 3.0f, kKink = kNoKink;
  static constexpr int kUlps = 0;
  static constexpr int kBackwardUlps = 0;
  static constexpr double kAtol = 0.0;
  static constexpr Saves kSaves = Saves::kInput;
  static constexpr bool kActivation = false;
  static CAIRN_HOST_DEVICE float forward(float x) { return nan_rule(x, mul_rn(x, x)); }
  static CAIRN_HOST_DEVICE float backward(float x, float, float dy) {
    return nan_rule(dy, x, mul_rn(dy, mul_rn(x, 2.0f)));
  }
  static double reference(double x) { return x * x; }
};

struct Sigmoid {
  static constexpr const char* kName = "sigmoid";
  static constexpr float kLow = -8.0f, kHigh = 8.0f, kKink = kNoKink;
  static constexpr int kUlps = 4;
  static constexpr int kBackwardUlps = 0;
  static constexpr double kAtol = 0.0;
  static constexpr Saves kSaves = Saves::kOutput;
  static constexpr bool kActivation = true;
  // exp of a non-positive argument only, so neither branch overflows to inf / inf.
  static CAIRN_HOST_DEVICE float forward(float x) {
    if (is_nan(x)) return x;
    if (x >= 0.0f) return div_rn(1.0f, add_rn(1.0f, exp_f(-x)));
    const float e = exp_f(x);
    return div_rn(e, add_rn(1.0f, e));
  }
  // dy * y * (1 - y): exact arithmetic given y.
  static CAIRN_HOST_DEVICE float backward(float, float y, float dy) {
    return nan_rule(dy, y, mul_rn(dy, mul_rn(y, sub_rn(1.0f, y))));
  }
  static double reference(double x) { return 1.0 / (1.0 + std::exp(-x)); }
};

struct Tanh {
  static constexpr const char* kName = "tanh";
  static constexpr float kLow = -4.0f, kHigh = 4.0f, kKink = kNoKink;
  static constexpr int kUlps = 2;
  static constexpr int kBackwardUlps = 0;
  static constexpr double kAtol = 0.0;
  static constexpr Saves kSaves = Saves::kOutput;
  static constexpr bool kActivation = true;
  static CAIRN_HOST_DEVICE float forward(float x) { return nan_rule(x, tanh_f(x)); }
  // dy * (1 - y^2): exact arithmetic given y.
  static CAIRN_HOST_DEVICE float backward(float, float y, float dy) {
    return nan_rule(dy, y, mul_rn(dy, sub_rn(1.0f, mul_rn(y, y))));
  }
  static double reference(double x) { return std::tanh(x); }
};

// GELU, PyTorch's approximate='none': x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).
struct Gelu {
  static constexpr const char* kName = "gelu";
  static constexpr float kLow = -5.0f, kHigh = 5.0f, kKink = kNoKink;
  static constexpr int kUlps = 4;
  static constexpr int kBackwardUlps = 8;
  static constexpr double kAtol = 2e-7;  // 1 + erf cancels for x << 0
  static constexpr Saves kSaves = Saves::kInput;
  static constexpr bool kActivation = true;
  static CAIRN_HOST_DEVICE float forward(float x) {
    if (x == -std::numeric_limits<float>::infinity()) return -0.0f;  // the limit, not -inf * 0
    return nan_rule(x, x * 0.5f * (1.0f + erf_f(x * float(kSqrt1_2))));
  }
  // dy * (Phi(x) + x phi(x)).
  static CAIRN_HOST_DEVICE float backward(float x, float, float dy) {
    if (x == std::numeric_limits<float>::infinity()) return dy;
    if (x == -std::numeric_limits<float>::infinity()) return dy * 0.0f;
    const float cdf = 0.5f * (1.0f + erf_f(x * float(kSqrt1_2)));
    const float pdf = float(kInvSqrt2Pi) * exp_f(-0.5f * x * x);
    return nan_rule(dy, x, dy * (cdf + x * pdf));
  }
  static double reference(double x) {
    if (std::isinf(x)) return x > 0 ? x : -0.0;
    return 0.5 * x * std::erfc(-x * kSqrt1_2);  // erfc: no cancellation for x << 0
  }
};

// GELU, PyTorch's approximate='tanh': 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
struct GeluTanh {
  static constexpr const char* kName = "gelu_tanh";
  static constexpr float kLow = -5.0f, kHigh = 5.0f, kKink = kNoKink;
  static constexpr int kUlps = 4;
  static constexpr int kBackwardUlps = 8;
  static constexpr double kAtol = 2e-7;
  static constexpr Saves kSaves = Saves::kInput;
  static constexpr bool kActivation = true;
  static CAIRN_HOST_DEVICE float forward(float x) {
    if (x == -std::numeric_limits<float>::infinity()) return -0.0f;
    const float inner = float(kSqrt2OverPi) * (x + float(kGeluKappa) * x * x * x);
    return nan_rule(x, 0.5f * x * (1.0f + tanh_f(inner)));
  }
  static CAIRN_HOST_DEVICE float backward(float x, float, float dy) {
    // Beyond |x| = 10 tanh is +-1 in float and the formula gives exactly 1 or 0; its x^2 would
    // overflow (inf * 0) long before |x| = inf.
    if (x >= 10.0f) return dy;
    if (x <= -10.0f) return dy * 0.0f;
    const float x_sq = x * x;
    const float tanh_inner = tanh_f(float(kSqrt2OverPi) * (x + float(kGeluKappa) * x_sq * x));
    const float left = 0.5f * x;
    const float right = 1.0f + tanh_inner;
    const float left_derivative = 0.5f * right;
    const float tanh_derivative = 1.0f - tanh_inner * tanh_inner;
    const float inner_derivative = float(kSqrt2OverPi) * (1.0f + 3.0f * float(kGeluKappa) * x_sq);
    const float right_derivative = left * tanh_derivative * inner_derivative;
    return nan_rule(dy, x, dy * (left_derivative + right_derivative));
  }
  static double reference(double x) {
    if (std::isinf(x)) return x > 0 ? x : -0.0;
    return 0.5 * x * (1.0 + std::tanh(kSqrt2OverPi * (x + kGeluKappa * x * x * x)));
  }
};

// SiLU (swish): x * sigmoid(x).
struct Silu {
  static constexpr const char* kName = "silu";
  static constexpr float kLow = -8.0f, kHigh = 8.0f, kKink = kNoKink;
  static constexpr int kUlps = 4;
  static constexpr int kBackwardUlps = 8;
  static constexpr double kAtol = 1e-37;  // sigmoid(x) is subnormal below x = -87: few bits left
  static constexpr Saves kSaves = Saves::kInput;
  static constexpr bool kActivation = true;
  static CAIRN_HOST_DEVICE float forward(float x) {
    if (x == -std::numeric_limits<float>::infinity()) return -0.0f;
    return nan_rule(x, x * Sigmoid::forward(x));
  }
  // dy * s (1 + x (1 - s)) with s = sigmoid(x), as PyTorch writes it.
  static CAIRN_HOST_DEVICE float backward(float x, float, float dy) {
    if (x == std::numeric_limits<float>::infinity()) return dy;
    if (x == -std::numeric_limits<float>::infinity()) return dy * 0.0f;
    const float s = Sigmoid::forward(x);
    return nan_rule(dy, x, dy * s * (1.0f + x * (1.0f - s)));
  }
  static double reference(double x) {
    if (std::isinf(x)) return x > 0 ? x : -0.0;
    return x / (1.0 + std::exp(-x));
  }
};

// ---- binary rows: y = a op b, also the scalar ops (x + s, s - x: ScalarSide) ----

struct Add {
  static constexpr const char* kName = "add";
  static constexpr bool kCommutes = true;
  static CAIRN_HOST_DEVICE float forward(float a, float b) { return nan_rule(a, b, add_rn(a, b)); }
  static double reference(double a, double b) { return a + b; }
};

struct Sub {
  static constexpr const char* kName = "sub";
  static constexpr bool kCommutes = false;
  static CAIRN_HOST_DEVICE float forward(float a, float b) { return nan_rule(a, b, sub_rn(a, b)); }
  static double reference(double a, double b) { return a - b; }
};

struct Mul {
  static constexpr const char* kName = "mul";
  static constexpr bool kCommutes = true;
  static CAIRN_HOST_DEVICE float forward(float a, float b) { return nan_rule(a, b, mul_rn(a, b)); }
  static double reference(double a, double b) { return a * b; }
};

struct Div {
  static constexpr const char* kName = "div";
  static constexpr bool kCommutes = false;
  static CAIRN_HOST_DEVICE float forward(float a, float b) { return nan_rule(a, b, div_rn(a, b)); }
  static double reference(double a, double b) { return a / b; }
};

}  // namespace ew

// ---- the rows as data, for tests, error messages and the activation registry ----

struct UnaryOpInfo {
  UnaryOp op;
  const char* name;
  float low, high, kink;
  int ulps, backward_ulps;
  double atol;
  Saves saves;
  bool activation;
  double (*reference)(double);
};

#define CAIRN_UNARY_OP_INFO(Row)                                                             \
  UnaryOpInfo{UnaryOp::k##Row, ew::Row::kName,       ew::Row::kLow,          ew::Row::kHigh, \
              ew::Row::kKink,  ew::Row::kUlps,       ew::Row::kBackwardUlps, ew::Row::kAtol, \
              ew::Row::kSaves, ew::Row::kActivation, &ew::Row::reference},
inline constexpr UnaryOpInfo kUnaryOps[] = {CAIRN_UNARY_OPS(CAIRN_UNARY_OP_INFO)};
#undef CAIRN_UNARY_OP_INFO

struct BinaryOpInfo {
  BinaryOp op;
  const char* name;
  bool commutes;
  double (*reference)(double, double);
};

#define CAIRN_BINARY_OP_INFO(Row) \
  BinaryOpInfo{BinaryOp::k##Row, ew::Row::kName, ew::Row::kCommutes, &ew::Row::reference},
inline constexpr BinaryOpInfo kBinaryOps[] = {CAIRN_BINARY_OPS(CAIRN_BINARY_OP_INFO)};
#undef CAIRN_BINARY_OP_INFO

inline const UnaryOpInfo& info(UnaryOp op) { return kUnaryOps[static_cast<int>(op)]; }
inline const BinaryOpInfo& info(BinaryOp op) { return kBinaryOps[static_cast<int>(op)]; }
inline bool valid(UnaryOp op) { return int(op) >= 0 && int(op) < kUnaryOpCount; }
inline bool valid(BinaryOp op) { return int(op) >= 0 && int(op) < kBinaryOpCount; }

// Calls f(ew::Row{}) for op's row, so that a backend instantiates its template for that row only;
// false for a value outside the enum.
template <typename F>
bool visit(UnaryOp op, F&& f) {
  switch (op) {
#define CAIRN_VISIT_ROW(Row) \
  case UnaryOp::k##Row:      \
    f(ew::Row{});            \
    return true;
    CAIRN_UNARY_OPS(CAIRN_VISIT_ROW)
#undef CAIRN_VISIT_ROW
  }
  return false;
}

template <typename F>
bool visit(BinaryOp op, F&& f) {
  switch (op) {
#define CAIRN_VISIT_ROW(Row) \
  case BinaryOp::k##Row:     \
    f(ew::Row{});            \
    return true;
    CAIRN_BINARY_OPS(CAIRN_VISIT_ROW)
#undef CAIRN_VISIT_ROW
  }
  return false;
}

}  // namespace cairn::kernels
