// Reductions: over a whole tensor, along each row, and down each column (the bias gradient).
//
// Every reduction is deterministic: the same input gives the same bits on every run (no float
// atomics). Sums accumulate in double on both devices and round to float once, so a partial sum
// beyond FLT_MAX stays finite (the mean of {3e38, 3e38} is 3e38); the twins differ only in the
// order they add. Max: a NaN anywhere wins, and +0 is above -0, whatever the order (the CUDA
// combine is kernels/cuda/max_combine.cuh's NanMax); argmax_rows follows the same order and
// takes the first of equal values, so x[argmax] is the max bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cairn/kernels/common.h"

namespace cairn::kernels {

enum class ReduceOp {
  kSum,
  kMean,        // sum / count; the mean of nothing is NaN
  kMax,         // max of nothing is -inf
  kSumSquares,  // sum of x*x (the squared L2 norm)
};

namespace cpu {

// out[0] = reduce(x[0..n))
void reduce_all(ReduceOp op, const float* x, int64_t n, float* out);
// x: (rows, cols) -> out: (rows)
void reduce_rows(ReduceOp op, const float* x, int64_t rows, int64_t cols, float* out);
// x: (rows, cols) -> out: (cols), out[c] = sum_r x[r, c]  (overwrite or add into out)
void sum_columns(const float* x, int64_t rows, int64_t cols, float* out, Accumulate accumulate);
// x: (rows, cols) -> out: (rows), index of the first maximum in each row (cols >= 1; NaN above
// everything, +0 above -0)
void argmax_rows(const float* x, int64_t rows, int64_t cols, int32_t* out);

}  // namespace cpu

namespace cuda {

// reduce_all runs through cub::DeviceReduce, which needs scratch memory: ask for the size first and
// pass a buffer at least that large (the op layer takes it from the caching allocator).
size_t reduce_all_workspace_bytes(ReduceOp op, int64_t n);
void reduce_all(ReduceOp op, const float* x, int64_t n, float* out, void* workspace,
                size_t workspace_bytes, StreamHandle stream);
void reduce_rows(ReduceOp op, const float* x, int64_t rows, int64_t cols, float* out,
                 StreamHandle stream);
// Two-level column sum: partial sums over row chunks, then a second pass over the partials.
size_t sum_columns_workspace_bytes(int64_t rows, int64_t cols);
void sum_columns(const float* x, int64_t rows, int64_t cols, float* out, Accumulate accumulate,
                 void* workspace, size_t workspace_bytes, StreamHandle stream);
void argmax_rows(const float* x, int64_t rows, int64_t cols, int32_t* out, StreamHandle stream);

}  // namespace cuda
}  // namespace cairn::kernels
