// Whole-tensor reductions through cub::DeviceReduce.
//
// CUB's reductions are run-to-run deterministic on one device (fixed tiling, no atomics), which is
// what kernels/reduce.h promises. Empty inputs never reach CUB: a one-thread kernel writes the
// documented value instead, so the caller needs no workspace for them.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cub/device/device_reduce.cuh>
#include <cuda/std/functional>

#include "cairn/core/error.h"
#include "cairn/kernels/reduce.h"

namespace cairn::kernels::cuda {
namespace {

// max that lets a NaN through whatever side it is on (cuda::maximum keeps or drops it by position,
// which would make the result depend on CUB's tiling). Still associative and commutative.
struct NanMax {
  __host__ __device__ float operator()(float a, float b) const { return (a != a || a > b) ? a : b; }
};

struct Square {
  __host__ __device__ float operator()(float x) const { return x * x; }
};

// out: (1)
__global__ void write_value_kernel(float* out, float value) { *out = value; }

// out: (1), holding the sum of n elements on entry and their mean on exit. The division runs in
// double so that n above 2^24 does not round before dividing.
__global__ void mean_from_sum_kernel(float* out, int64_t n) {
  *out = static_cast<float>(static_cast<double>(*out) / static_cast<double>(n));
}

// One call for both the size query (workspace == nullptr) and the reduction, so that the two can
// never disagree about which CUB algorithm runs.
cudaError_t run_device_reduce(ReduceOp op, void* workspace, size_t& workspace_bytes, const float* x,
                              int64_t n, float* out, StreamHandle stream) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kMean:
      return cub::DeviceReduce::Reduce(workspace, workspace_bytes, x, out, n,
                                       ::cuda::std::plus<float>{}, 0.0f, stream);
    case ReduceOp::kMax:
      // -inf as the initial value, not CUB's Max() default of lowest(), so that a tensor of
      // -inf reduces to -inf.
      return cub::DeviceReduce::Reduce(workspace, workspace_bytes, x, out, n, NanMax{}, -INFINITY,
                                       stream);
    case ReduceOp::kSumSquares:
      return cub::DeviceReduce::TransformReduce(workspace, workspace_bytes, x, out, n,
                                                ::cuda::std::plus<float>{}, Square{}, 0.0f, stream);
  }
  CAIRN_FAIL("reduce_all: unknown ReduceOp ", static_cast<int>(op));
}

float empty_value(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return 0.0f;
    case ReduceOp::kMean:
      return NAN;
    case ReduceOp::kMax:
      return -INFINITY;
    case ReduceOp::kSumSquares:
      return 0.0f;
  }
  CAIRN_FAIL("reduce_all: unknown ReduceOp ", static_cast<int>(op));
}

}  // namespace

// The size depends on the current device (CUB sizes its grid by the SM count): ask on the device
// that will run the reduction.
size_t reduce_all_workspace_bytes(ReduceOp op, int64_t n) {
  CAIRN_CHECK(n >= 0, "reduce_all: negative size ", n);
  if (n == 0) return 0;
  size_t bytes = 0;
  CAIRN_CUDA_CHECK(run_device_reduce(op, nullptr, bytes, nullptr, n, nullptr, nullptr));
  return bytes;
}

// x: (n) -> out: (1)
void reduce_all(ReduceOp op, const float* x, int64_t n, float* out, void* workspace,
                size_t workspace_bytes, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "reduce_all: negative size ", n);
  if (n == 0) {
    write_value_kernel<<<1, 1, 0, stream>>>(out, empty_value(op));
    CAIRN_CHECK_LAUNCH("write_value_kernel", stream);
    return;
  }
  const size_t needed = reduce_all_workspace_bytes(op, n);
  // CUB reads a null workspace as a size query and would silently compute nothing.
  CAIRN_CHECK(workspace != nullptr || needed == 0, "reduce_all: null workspace, ", needed,
              " bytes needed for ", n, " elements");
  CAIRN_CHECK(workspace_bytes >= needed, "reduce_all: workspace of ", workspace_bytes, " bytes, ",
              needed, " needed for ", n, " elements");
  size_t bytes = workspace_bytes;
  CAIRN_CUDA_CHECK(run_device_reduce(op, workspace, bytes, x, n, out, stream));
  CAIRN_CHECK_LAUNCH("cub::DeviceReduce", stream);
  if (op == ReduceOp::kMean) {
    mean_from_sum_kernel<<<1, 1, 0, stream>>>(out, n);
    CAIRN_CHECK_LAUNCH("mean_from_sum_kernel", stream);
  }
}

}  // namespace cairn::kernels::cuda
