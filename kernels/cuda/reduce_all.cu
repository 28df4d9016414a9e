// Whole-tensor reductions through cub::DeviceReduce.
//
// CUB's reductions are run-to-run deterministic on one device (fixed tiling, no atomics), which is
// what kernels/reduce.h promises. Sums accumulate in double, as the CPU twins do (the sum of
// {3e38, 3e38, -3e38} is 3e38 on both, not inf), and round to float once at the end. Empty inputs
// never reach CUB: a one-thread kernel writes the documented value instead, so the caller needs no
// workspace for them.
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cub/device/device_reduce.cuh>
#include <cuda/std/functional>

#include "cairn/base/error.h"
#include "cairn/kernels/cuda/max_combine.cuh"
#include "cairn/kernels/reduce.h"

namespace cairn::kernels::cuda {
namespace {

// CUB keeps its own temporary storage 256-byte aligned; the mean's double sum goes in front of it.
constexpr size_t kMeanSumBytes = 256;

struct SquareInDouble {
  __host__ __device__ double operator()(float x) const {
    return static_cast<double>(x) * static_cast<double>(x);
  }
};

// out: (1)
__global__ void write_value_kernel(float* out, float value) { *out = value; }

// sum: (1) -> out: (1). The division runs in double, before rounding, as on the CPU: the mean of
// {3e38, 3e38} is 3e38, and n above 2^24 does not round before dividing.
__global__ void mean_from_sum_kernel(const double* sum, int64_t n, float* out) {
  *out = static_cast<float>(*sum / static_cast<double>(n));
}

// One call for both the size query (workspace == nullptr) and the reduction, so that the two can
// never disagree about which CUB algorithm runs. kSum and kSumSquares accumulate in double (the
// accumulator type is that of plus<double> and the double initial value) and CUB rounds the total
// to float as it stores it; kMean stores the double total in `sum`.
cudaError_t run_device_reduce(ReduceOp op, void* workspace, size_t& workspace_bytes, const float* x,
                              int64_t n, float* out, double* sum, StreamHandle stream) {
  switch (op) {
    case ReduceOp::kSum:
      return cub::DeviceReduce::Reduce(workspace, workspace_bytes, x, out, n,
                                       ::cuda::std::plus<double>{}, 0.0, stream);
    case ReduceOp::kMean:
      return cub::DeviceReduce::Reduce(workspace, workspace_bytes, x, sum, n,
                                       ::cuda::std::plus<double>{}, 0.0, stream);
    case ReduceOp::kMax:
      // -inf as the initial value, not CUB's Max() default of lowest(), so that a tensor of
      // -inf reduces to -inf.
      return cub::DeviceReduce::Reduce(workspace, workspace_bytes, x, out, n, NanMax{}, -INFINITY,
                                       stream);
    case ReduceOp::kSumSquares:
      return cub::DeviceReduce::TransformReduce(workspace, workspace_bytes, x, out, n,
                                                ::cuda::std::plus<double>{}, SquareInDouble{}, 0.0,
                                                stream);
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

// The bytes in front of CUB's storage: the mean's double sum.
size_t own_bytes(ReduceOp op) { return op == ReduceOp::kMean ? kMeanSumBytes : 0; }

}  // namespace

// The size depends on the current device (CUB sizes its grid by the SM count): ask on the device
// that will run the reduction.
size_t reduce_all_workspace_bytes(ReduceOp op, int64_t n) {
  CAIRN_CHECK(n >= 0, "reduce_all: negative size ", n);
  if (n == 0) return 0;
  size_t bytes = 0;
  CAIRN_CUDA_CHECK(run_device_reduce(op, nullptr, bytes, nullptr, n, nullptr, nullptr, nullptr));
  return own_bytes(op) + bytes;
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
  char* const base = static_cast<char*>(workspace);
  double* const sum = op == ReduceOp::kMean ? reinterpret_cast<double*>(base) : nullptr;
  CAIRN_CHECK(sum == nullptr || reinterpret_cast<uintptr_t>(sum) % alignof(double) == 0,
              "reduce_all: workspace ", workspace, " is not aligned for a double");
  size_t bytes = workspace_bytes - own_bytes(op);
  CAIRN_CUDA_CHECK(run_device_reduce(op, base + own_bytes(op), bytes, x, n, out, sum, stream));
  CAIRN_CHECK_LAUNCH("cub::DeviceReduce", stream);
  if (op == ReduceOp::kMean) {
    mean_from_sum_kernel<<<1, 1, 0, stream>>>(sum, n, out);
    CAIRN_CHECK_LAUNCH("mean_from_sum_kernel", stream);
  }
}

}  // namespace cairn::kernels::cuda
