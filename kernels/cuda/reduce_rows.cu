// Row reductions: reduce_rows and argmax_rows, one warp or one block per row.
//
// A row's partial results are combined by cub::WarpReduce / cub::BlockReduce, whose combining order
// is fixed for a fixed team size, and the team size depends on cols alone: the same input gives the
// same bits on every run. Sums accumulate in double, as the CPU twins do, and round to float once.
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <cub/block/block_reduce.cuh>
#include <cub/warp/warp_reduce.cuh>
#include <cuda/std/cmath>
#include <type_traits>

#include "cairn/base/error.h"
#include "cairn/kernels/cuda/launch.cuh"
#include "cairn/kernels/cuda/max_combine.cuh"
#include "cairn/kernels/reduce.h"

namespace cairn::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = kBlockThreads / kWarpThreads;
// Rows up to this long get one warp (at most 8 elements a lane); longer rows get a whole block.
constexpr int64_t kWarpMaxCols = 256;

// What a row reduction does, as the three steps of a fold: load (element -> partial),
// combine (partial, partial -> partial; associative and commutative) and finish (-> output).
// Sums fold in double (a row of {3e38, 3e38, -3e38} sums to 3e38, not inf, on both devices);
// the max folds in float with NanMax, the CPU loop's rule.
template <ReduceOp Op>
struct RowReduce {
  static constexpr bool kIsMax = Op == ReduceOp::kMax;
  using Partial = std::conditional_t<kIsMax, float, double>;
  using Out = float;

  __device__ static Partial init() {
    if constexpr (kIsMax) {
      return -INFINITY;
    } else {
      return 0.0;
    }
  }
  __device__ static Partial load(float x, int64_t /*col*/) {
    if constexpr (Op == ReduceOp::kSumSquares) {
      return static_cast<double>(x) * static_cast<double>(x);
    } else {
      return x;
    }
  }
  __device__ Partial operator()(Partial a, Partial b) const {
    if constexpr (kIsMax) {
      return NanMax{}(a, b);
    } else {
      return a + b;
    }
  }
  // cols == 0 gives the documented empty values: 0, NaN (0 / 0), -inf, 0.
  __device__ static float finish(Partial total, int64_t cols) {
    if constexpr (Op == ReduceOp::kMean) {
      return static_cast<float>(total / static_cast<double>(cols));
    } else {
      return static_cast<float>(total);
    }
  }
};

struct IndexedValue {
  float value;
  int32_t index;
};

// The first maximum, by the order NanMax uses: NaN above everything (the first NaN is the argmax,
// as in NumPy and PyTorch), +0 above -0, and equal values go to the smaller index. So
// x[argmax] is the row's max, bit for bit, on both devices.
struct RowArgMax {
  using Partial = IndexedValue;
  using Out = int32_t;

  __device__ static IndexedValue init() { return {-INFINITY, INT32_MAX}; }
  __device__ static IndexedValue load(float x, int64_t col) {
    return {x, static_cast<int32_t>(col)};
  }
  __device__ IndexedValue operator()(const IndexedValue& a, const IndexedValue& b) const {
    const bool a_nan = a.value != a.value;
    const bool b_nan = b.value != b.value;
    if (a_nan != b_nan) return a_nan ? a : b;
    if (!a_nan) {
      if (a.value != b.value) return a.value > b.value ? a : b;
      const bool a_negative = ::cuda::std::signbit(a.value);
      if (a_negative != ::cuda::std::signbit(b.value)) return a_negative ? b : a;  // +0 > -0
    }
    return a.index < b.index ? a : b;
  }
  __device__ static int32_t finish(const IndexedValue& best, int64_t /*cols*/) {
    return best.index;
  }
};

// Each lane of a team folds the columns lane, lane + team, ... in order.
template <typename Fold>
__device__ typename Fold::Partial fold_row(const float* row, int64_t cols, int lane, int team) {
  const Fold fold;
  typename Fold::Partial acc = Fold::init();
  for (int64_t c = lane; c < cols; c += team) acc = fold(acc, Fold::load(row[c], c));
  return acc;
}

// x: (rows, cols) -> out: (rows); one warp per row, kWarpsPerBlock rows per block.
template <typename Fold>
__global__ void reduce_rows_warp_kernel(const float* x, int64_t rows, int64_t cols,
                                        typename Fold::Out* out) {
  using WarpReduce = cub::WarpReduce<typename Fold::Partial>;
  __shared__ typename WarpReduce::TempStorage temp[kWarpsPerBlock];
  const int warp = threadIdx.x / kWarpThreads;
  const int lane = threadIdx.x % kWarpThreads;
  for (int64_t row = blockIdx.x * int64_t(kWarpsPerBlock) + warp; row < rows;
       row += gridDim.x * int64_t(kWarpsPerBlock)) {
    const auto partial = fold_row<Fold>(x + row * cols, cols, lane, kWarpThreads);
    const auto total = WarpReduce(temp[warp]).Reduce(partial, Fold{});
    if (lane == 0) out[row] = Fold::finish(total, cols);
    __syncwarp();  // temp[warp] is reused by the next row
  }
}

// x: (rows, cols) -> out: (rows); one block per row.
template <typename Fold>
__global__ void reduce_rows_block_kernel(const float* x, int64_t rows, int64_t cols,
                                         typename Fold::Out* out) {
  using BlockReduce = cub::BlockReduce<typename Fold::Partial, kBlockThreads>;
  __shared__ typename BlockReduce::TempStorage temp;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const auto partial = fold_row<Fold>(x + row * cols, cols, threadIdx.x, kBlockThreads);
    const auto total = BlockReduce(temp).Reduce(partial, Fold{});
    if (threadIdx.x == 0) out[row] = Fold::finish(total, cols);
    __syncthreads();  // temp is reused by the next row
  }
}

template <typename Fold>
void launch_row_fold(const float* x, int64_t rows, int64_t cols, typename Fold::Out* out,
                     StreamHandle stream) {
  if (cols <= kWarpMaxCols) {
    reduce_rows_warp_kernel<Fold>
        <<<grid_size(rows, kWarpsPerBlock), kBlockThreads, 0, stream>>>(x, rows, cols, out);
    CAIRN_CHECK_LAUNCH("reduce_rows_warp_kernel", stream);
  } else {
    reduce_rows_block_kernel<Fold>
        <<<grid_size(rows, 1), kBlockThreads, 0, stream>>>(x, rows, cols, out);
    CAIRN_CHECK_LAUNCH("reduce_rows_block_kernel", stream);
  }
}

}  // namespace

// x: (rows, cols) -> out: (rows)
void reduce_rows(ReduceOp op, const float* x, int64_t rows, int64_t cols, float* out,
                 StreamHandle stream) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "reduce_rows: negative shape (", rows, ", ", cols, ")");
  if (rows == 0) return;
  switch (op) {
    case ReduceOp::kSum:
      return launch_row_fold<RowReduce<ReduceOp::kSum>>(x, rows, cols, out, stream);
    case ReduceOp::kMean:
      return launch_row_fold<RowReduce<ReduceOp::kMean>>(x, rows, cols, out, stream);
    case ReduceOp::kMax:
      return launch_row_fold<RowReduce<ReduceOp::kMax>>(x, rows, cols, out, stream);
    case ReduceOp::kSumSquares:
      return launch_row_fold<RowReduce<ReduceOp::kSumSquares>>(x, rows, cols, out, stream);
  }
  CAIRN_FAIL("reduce_rows: unknown ReduceOp ", static_cast<int>(op));
}

// x: (rows, cols) -> out: (rows), the index of each row's first maximum
void argmax_rows(const float* x, int64_t rows, int64_t cols, int32_t* out, StreamHandle stream) {
  CAIRN_CHECK(rows >= 0, "argmax_rows: negative rows ", rows);
  CAIRN_CHECK(cols >= 1, "argmax_rows: needs cols >= 1, got ", cols);
  CAIRN_CHECK(cols <= INT32_MAX, "argmax_rows: cols ", cols, " does not fit the int32 index");
  if (rows == 0) return;
  launch_row_fold<RowArgMax>(x, rows, cols, out, stream);
}

}  // namespace cairn::kernels::cuda
