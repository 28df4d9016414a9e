// Elementwise families on the GPU: fill, unary maps, binary maps with broadcast.
//
// One scalar __device__ function per op, resolved at compile time (the op is a template argument),
// and one grid-stride kernel per family. Contiguous cases (fill, unary, binary without broadcast)
// take a float4 path when every pointer is 16-byte aligned; the last n % 4 elements go through the
// scalar function in the same launch.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cairn/core/error.h"
#include "cairn/kernels/cuda/launch.cuh"
#include "cairn/kernels/elementwise.h"

namespace cairn::kernels::cuda {
namespace {

// Below this many elements the scalar kernel is as fast, and the float4 path is not worth a branch.
constexpr int64_t kVectorMinElements = 1024;

// ---------------------------------------------------------------------------------------------
// fill

template <typename T>
__global__ void fill_kernel(T* y, int64_t n, T value) {
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    y[i] = value;
  }
}

// y: (n), 16-byte aligned; float4 stores for the body, thread 0 of the grid writes the tail.
__global__ void fill_vec4_kernel(float* y, int64_t n, float value) {
  const int64_t n4 = n / 4;
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const float4 v = make_float4(value, value, value, value);
  float4* y4 = reinterpret_cast<float4*>(y);
  for (int64_t i = first; i < n4; i += stride) y4[i] = v;
  if (first == 0) {
    for (int64_t i = n4 * 4; i < n; ++i) y[i] = value;
  }
}

// ---------------------------------------------------------------------------------------------
// unary

template <UnaryOp Op>
__device__ __forceinline__ float unary_op(float x, float s) {
  if constexpr (Op == UnaryOp::kRelu) {
    return x < 0.0f ? 0.0f : x;  // NaN propagates, as in the other frameworks
  } else if constexpr (Op == UnaryOp::kNeg) {
    return -x;
  } else if constexpr (Op == UnaryOp::kExp) {
    return expf(x);
  } else if constexpr (Op == UnaryOp::kLog) {
    return logf(x);
  } else if constexpr (Op == UnaryOp::kSqrt) {
    return sqrtf(x);
  } else if constexpr (Op == UnaryOp::kAbs) {
    return fabsf(x);
  } else if constexpr (Op == UnaryOp::kSign) {
    // 0 stays 0 and NaN stays NaN: both compare false both ways.
    return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x);
  } else if constexpr (Op == UnaryOp::kSquare) {
    return x * x;
  } else if constexpr (Op == UnaryOp::kSigmoid) {
    // exp of a non-positive argument only, so neither branch overflows.
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);
    return e / (1.0f + e);
  } else if constexpr (Op == UnaryOp::kTanh) {
    return tanhf(x);
  } else if constexpr (Op == UnaryOp::kAddScalar) {
    return x + s;
  } else if constexpr (Op == UnaryOp::kMulScalar) {
    return x * s;
  } else if constexpr (Op == UnaryOp::kDivScalar) {
    return x / s;
  } else {
    static_assert(Op == UnaryOp::kRsubScalar, "unhandled UnaryOp");
    return s - x;
  }
}

// x, y: (n); y may alias x.
template <UnaryOp Op>
__global__ void unary_kernel(const float* x, float* y, int64_t n, float s) {
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    y[i] = unary_op<Op>(x[i], s);
  }
}

// x, y: (n), both 16-byte aligned; y may alias x.
template <UnaryOp Op>
__global__ void unary_vec4_kernel(const float* x, float* y, int64_t n, float s) {
  const int64_t n4 = n / 4;
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const float4* x4 = reinterpret_cast<const float4*>(x);
  float4* y4 = reinterpret_cast<float4*>(y);
  for (int64_t i = first; i < n4; i += stride) {
    float4 v = x4[i];
    v.x = unary_op<Op>(v.x, s);
    v.y = unary_op<Op>(v.y, s);
    v.z = unary_op<Op>(v.z, s);
    v.w = unary_op<Op>(v.w, s);
    y4[i] = v;
  }
  if (first == 0) {
    for (int64_t i = n4 * 4; i < n; ++i) y[i] = unary_op<Op>(x[i], s);
  }
}

template <UnaryOp Op>
void launch_unary(const float* x, float* y, int64_t n, float s, StreamHandle stream) {
  if (n >= kVectorMinElements && aligned16(x) && aligned16(y)) {
    unary_vec4_kernel<Op><<<grid_size(n / 4), kBlockThreads, 0, stream>>>(x, y, n, s);
    CAIRN_CHECK_LAUNCH("unary_vec4_kernel", stream);
  } else {
    unary_kernel<Op><<<grid_size(n), kBlockThreads, 0, stream>>>(x, y, n, s);
    CAIRN_CHECK_LAUNCH("unary_kernel", stream);
  }
}

// ---------------------------------------------------------------------------------------------
// binary

template <BinaryOp Op>
__device__ __forceinline__ float binary_op(float a, float b) {
  if constexpr (Op == BinaryOp::kAdd) {
    return a + b;
  } else if constexpr (Op == BinaryOp::kSub) {
    return a - b;
  } else if constexpr (Op == BinaryOp::kMul) {
    return a * b;
  } else {
    static_assert(Op == BinaryOp::kDiv, "unhandled BinaryOp");
    return a / b;
  }
}

// Which element of b lies over element i of a, a viewed as (rows, cols).
template <Broadcast B>
__device__ __forceinline__ int64_t broadcast_index(int64_t i, int64_t cols) {
  if constexpr (B == Broadcast::kNone) {
    return i;
  } else if constexpr (B == Broadcast::kScalar) {
    return 0;
  } else if constexpr (B == Broadcast::kRow) {
    return i % cols;
  } else {
    static_assert(B == Broadcast::kColumn, "unhandled Broadcast");
    return i / cols;
  }
}

// a, y: (rows, cols); b: (rows, cols), (1), (cols) or (rows) by B; y may alias a.
template <BinaryOp Op, Broadcast B>
__global__ void binary_kernel(const float* a, const float* b, float* y, int64_t n, int64_t cols) {
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    y[i] = binary_op<Op>(a[i], b[broadcast_index<B>(i, cols)]);
  }
}

// a, b, y: (n), all 16-byte aligned; y may alias a (or b).
template <BinaryOp Op>
__global__ void binary_vec4_kernel(const float* a, const float* b, float* y, int64_t n) {
  const int64_t n4 = n / 4;
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const float4* a4 = reinterpret_cast<const float4*>(a);
  const float4* b4 = reinterpret_cast<const float4*>(b);
  float4* y4 = reinterpret_cast<float4*>(y);
  for (int64_t i = first; i < n4; i += stride) {
    const float4 va = a4[i];
    const float4 vb = b4[i];
    y4[i] = make_float4(binary_op<Op>(va.x, vb.x), binary_op<Op>(va.y, vb.y),
                        binary_op<Op>(va.z, vb.z), binary_op<Op>(va.w, vb.w));
  }
  if (first == 0) {
    for (int64_t i = n4 * 4; i < n; ++i) y[i] = binary_op<Op>(a[i], b[i]);
  }
}

template <BinaryOp Op, Broadcast B>
void launch_binary(const float* a, const float* b, float* y, int64_t n, int64_t cols,
                   StreamHandle stream) {
  if constexpr (B == Broadcast::kNone) {
    if (n >= kVectorMinElements && aligned16(a) && aligned16(b) && aligned16(y)) {
      binary_vec4_kernel<Op><<<grid_size(n / 4), kBlockThreads, 0, stream>>>(a, b, y, n);
      CAIRN_CHECK_LAUNCH("binary_vec4_kernel", stream);
      return;
    }
  }
  binary_kernel<Op, B><<<grid_size(n), kBlockThreads, 0, stream>>>(a, b, y, n, cols);
  CAIRN_CHECK_LAUNCH("binary_kernel", stream);
}

template <BinaryOp Op>
void dispatch_broadcast(const float* a, const float* b, float* y, int64_t n, int64_t cols,
                        Broadcast broadcast, StreamHandle stream) {
  switch (broadcast) {
    case Broadcast::kNone:
      return launch_binary<Op, Broadcast::kNone>(a, b, y, n, cols, stream);
    case Broadcast::kScalar:
      return launch_binary<Op, Broadcast::kScalar>(a, b, y, n, cols, stream);
    case Broadcast::kRow:
      return launch_binary<Op, Broadcast::kRow>(a, b, y, n, cols, stream);
    case Broadcast::kColumn:
      return launch_binary<Op, Broadcast::kColumn>(a, b, y, n, cols, stream);
  }
  CAIRN_FAIL("binary: unknown Broadcast ", static_cast<int>(broadcast));
}

}  // namespace

void fill(float* y, int64_t n, float value, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "fill: negative size ", n);
  if (n == 0) return;
  if (n >= kVectorMinElements && aligned16(y)) {
    fill_vec4_kernel<<<grid_size(n / 4), kBlockThreads, 0, stream>>>(y, n, value);
    CAIRN_CHECK_LAUNCH("fill_vec4_kernel", stream);
  } else {
    fill_kernel<float><<<grid_size(n), kBlockThreads, 0, stream>>>(y, n, value);
    CAIRN_CHECK_LAUNCH("fill_kernel", stream);
  }
}

void fill_int32(int32_t* y, int64_t n, int32_t value, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "fill_int32: negative size ", n);
  if (n == 0) return;
  fill_kernel<int32_t><<<grid_size(n), kBlockThreads, 0, stream>>>(y, n, value);
  CAIRN_CHECK_LAUNCH("fill_kernel<int32_t>", stream);
}

void unary(UnaryOp op, const float* x, float* y, int64_t n, float scalar, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "unary: negative size ", n);
  if (n == 0) return;
  switch (op) {
    case UnaryOp::kRelu:
      return launch_unary<UnaryOp::kRelu>(x, y, n, scalar, stream);
    case UnaryOp::kNeg:
      return launch_unary<UnaryOp::kNeg>(x, y, n, scalar, stream);
    case UnaryOp::kExp:
      return launch_unary<UnaryOp::kExp>(x, y, n, scalar, stream);
    case UnaryOp::kLog:
      return launch_unary<UnaryOp::kLog>(x, y, n, scalar, stream);
    case UnaryOp::kSqrt:
      return launch_unary<UnaryOp::kSqrt>(x, y, n, scalar, stream);
    case UnaryOp::kAbs:
      return launch_unary<UnaryOp::kAbs>(x, y, n, scalar, stream);
    case UnaryOp::kSign:
      return launch_unary<UnaryOp::kSign>(x, y, n, scalar, stream);
    case UnaryOp::kSquare:
      return launch_unary<UnaryOp::kSquare>(x, y, n, scalar, stream);
    case UnaryOp::kSigmoid:
      return launch_unary<UnaryOp::kSigmoid>(x, y, n, scalar, stream);
    case UnaryOp::kTanh:
      return launch_unary<UnaryOp::kTanh>(x, y, n, scalar, stream);
    case UnaryOp::kAddScalar:
      return launch_unary<UnaryOp::kAddScalar>(x, y, n, scalar, stream);
    case UnaryOp::kMulScalar:
      return launch_unary<UnaryOp::kMulScalar>(x, y, n, scalar, stream);
    case UnaryOp::kDivScalar:
      return launch_unary<UnaryOp::kDivScalar>(x, y, n, scalar, stream);
    case UnaryOp::kRsubScalar:
      return launch_unary<UnaryOp::kRsubScalar>(x, y, n, scalar, stream);
  }
  CAIRN_FAIL("unary: unknown UnaryOp ", static_cast<int>(op));
}

void binary(BinaryOp op, const float* a, const float* b, float* y, int64_t rows, int64_t cols,
            Broadcast broadcast, StreamHandle stream) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "binary: negative shape (", rows, ", ", cols, ")");
  CAIRN_CHECK(cols == 0 || rows <= INT64_MAX / cols, "binary: shape (", rows, ", ", cols,
              ") overflows int64");
  const int64_t n = rows * cols;
  if (n == 0) return;
  switch (op) {
    case BinaryOp::kAdd:
      return dispatch_broadcast<BinaryOp::kAdd>(a, b, y, n, cols, broadcast, stream);
    case BinaryOp::kSub:
      return dispatch_broadcast<BinaryOp::kSub>(a, b, y, n, cols, broadcast, stream);
    case BinaryOp::kMul:
      return dispatch_broadcast<BinaryOp::kMul>(a, b, y, n, cols, broadcast, stream);
    case BinaryOp::kDiv:
      return dispatch_broadcast<BinaryOp::kDiv>(a, b, y, n, cols, broadcast, stream);
  }
  CAIRN_FAIL("binary: unknown BinaryOp ", static_cast<int>(op));
}

}  // namespace cairn::kernels::cuda
