// Elementwise families on the GPU: fill, unary maps and their backward, binary maps with broadcast
// or a by-value scalar.
//
// The scalar functions are the rows of kernels/elementwise_ops.h (the CPU loops instantiate the
// same ones), resolved at compile time (the row is a template argument), and one grid-stride
// kernel per family. Contiguous cases (fill, unary, binary without broadcast)
// take a float4 path when every pointer is 16-byte aligned; the last n % 4 elements go through the
// scalar function in the same launch.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cairn/base/error.h"
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
// unary maps: a row's forward, or a binary row with a by-value scalar

template <typename Row>
struct UnaryMap {
  __device__ __forceinline__ float operator()(float v) const { return Row::forward(v); }
};

template <typename Row, ScalarSide Side>
struct ScalarMap {
  float s;
  __device__ __forceinline__ float operator()(float v) const {
    if constexpr (Side == ScalarSide::kRight) {
      return Row::forward(v, s);
    } else {
      return Row::forward(s, v);
    }
  }
};

// x, y: (n); y may alias x.
template <typename F>
__global__ void map_kernel(const float* x, float* y, int64_t n, F f) {
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    y[i] = f(x[i]);
  }
}

// x, y: (n), both 16-byte aligned; y may alias x.
template <typename F>
__global__ void map_vec4_kernel(const float* x, float* y, int64_t n, F f) {
  const int64_t n4 = n / 4;
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const float4* x4 = reinterpret_cast<const float4*>(x);
  float4* y4 = reinterpret_cast<float4*>(y);
  for (int64_t i = first; i < n4; i += stride) {
    float4 v = x4[i];
    v.x = f(v.x);
    v.y = f(v.y);
    v.z = f(v.z);
    v.w = f(v.w);
    y4[i] = v;
  }
  if (first == 0) {
    for (int64_t i = n4 * 4; i < n; ++i) y[i] = f(x[i]);
  }
}

template <typename F>
void launch_map(const float* x, float* y, int64_t n, F f, StreamHandle stream) {
  if (n >= kVectorMinElements && aligned16(x) && aligned16(y)) {
    map_vec4_kernel<<<grid_size(n / 4), kBlockThreads, 0, stream>>>(x, y, n, f);
    CAIRN_CHECK_LAUNCH("map_vec4_kernel", stream);
  } else {
    map_kernel<<<grid_size(n), kBlockThreads, 0, stream>>>(x, y, n, f);
    CAIRN_CHECK_LAUNCH("map_kernel", stream);
  }
}

// x, y, dy, dx: (n); x or y null where the row does not save it; dx may alias dy.
template <typename Row>
__global__ void unary_backward_kernel(const float* x, const float* y, const float* dy, float* dx,
                                      int64_t n) {
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    float xi = 0.0f, yi = 0.0f;
    if constexpr (Row::kSaves == Saves::kInput) xi = x[i];
    if constexpr (Row::kSaves == Saves::kOutput) yi = y[i];
    dx[i] = Row::backward(xi, yi, dy[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// binary

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
template <typename Row, Broadcast B>
__global__ void binary_kernel(const float* a, const float* b, float* y, int64_t n, int64_t cols) {
  const int64_t stride = gridDim.x * int64_t(blockDim.x);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    y[i] = Row::forward(a[i], b[broadcast_index<B>(i, cols)]);
  }
}

// a, b, y: (n), all 16-byte aligned; y may alias a (or b).
template <typename Row>
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
    y4[i] = make_float4(Row::forward(va.x, vb.x), Row::forward(va.y, vb.y),
                        Row::forward(va.z, vb.z), Row::forward(va.w, vb.w));
  }
  if (first == 0) {
    for (int64_t i = n4 * 4; i < n; ++i) y[i] = Row::forward(a[i], b[i]);
  }
}

template <typename Row, Broadcast B>
void launch_binary(const float* a, const float* b, float* y, int64_t n, int64_t cols,
                   StreamHandle stream) {
  if constexpr (B == Broadcast::kNone) {
    if (n >= kVectorMinElements && aligned16(a) && aligned16(b) && aligned16(y)) {
      binary_vec4_kernel<Row><<<grid_size(n / 4), kBlockThreads, 0, stream>>>(a, b, y, n);
      CAIRN_CHECK_LAUNCH("binary_vec4_kernel", stream);
      return;
    }
  }
  binary_kernel<Row, B><<<grid_size(n), kBlockThreads, 0, stream>>>(a, b, y, n, cols);
  CAIRN_CHECK_LAUNCH("binary_kernel", stream);
}

template <typename Row>
void dispatch_broadcast(const float* a, const float* b, float* y, int64_t n, int64_t cols,
                        Broadcast broadcast, StreamHandle stream) {
  switch (broadcast) {
    case Broadcast::kNone:
      return launch_binary<Row, Broadcast::kNone>(a, b, y, n, cols, stream);
    case Broadcast::kScalar:
      return launch_binary<Row, Broadcast::kScalar>(a, b, y, n, cols, stream);
    case Broadcast::kRow:
      return launch_binary<Row, Broadcast::kRow>(a, b, y, n, cols, stream);
    case Broadcast::kColumn:
      return launch_binary<Row, Broadcast::kColumn>(a, b, y, n, cols, stream);
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

void unary(UnaryOp op, const float* x, float* y, int64_t n, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "unary: negative size ", n);
  if (n == 0) return;
  const bool known =
      visit(op, [&](auto row) { launch_map(x, y, n, UnaryMap<decltype(row)>{}, stream); });
  if (!known) CAIRN_FAIL("unary: unknown UnaryOp ", static_cast<int>(op));
}

void unary_backward(UnaryOp op, const float* x, const float* y, const float* dy, float* dx,
                    int64_t n, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "unary_backward: negative size ", n);
  if (n == 0) return;
  const bool known = visit(op, [&](auto row) {
    unary_backward_kernel<decltype(row)>
        <<<grid_size(n), kBlockThreads, 0, stream>>>(x, y, dy, dx, n);
    CAIRN_CHECK_LAUNCH("unary_backward_kernel", stream);
  });
  if (!known) CAIRN_FAIL("unary_backward: unknown UnaryOp ", static_cast<int>(op));
}

void binary(BinaryOp op, const float* a, const float* b, float* y, int64_t rows, int64_t cols,
            Broadcast broadcast, StreamHandle stream) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "binary: negative shape (", rows, ", ", cols, ")");
  CAIRN_CHECK(cols == 0 || rows <= INT64_MAX / cols, "binary: shape (", rows, ", ", cols,
              ") overflows int64");
  const int64_t n = rows * cols;
  if (n == 0) return;
  const bool known = visit(op, [&](auto row) {
    dispatch_broadcast<decltype(row)>(a, b, y, n, cols, broadcast, stream);
  });
  if (!known) CAIRN_FAIL("binary: unknown BinaryOp ", static_cast<int>(op));
}

void binary_scalar(BinaryOp op, const float* a, float s, ScalarSide side, float* y, int64_t n,
                   StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "binary_scalar: negative size ", n);
  CAIRN_CHECK(side == ScalarSide::kRight || side == ScalarSide::kLeft,
              "binary_scalar: unknown ScalarSide ", static_cast<int>(side));
  if (n == 0) return;
  const bool known = visit(op, [&](auto row) {
    using Row = decltype(row);
    if (side == ScalarSide::kRight) {
      launch_map(a, y, n, ScalarMap<Row, ScalarSide::kRight>{s}, stream);
    } else {
      launch_map(a, y, n, ScalarMap<Row, ScalarSide::kLeft>{s}, stream);
    }
  });
  if (!known) CAIRN_FAIL("binary_scalar: unknown BinaryOp ", static_cast<int>(op));
}

}  // namespace cairn::kernels::cuda
