// Column sums (the bias gradient): out[c] = sum_r x[r, c], deterministically.
//
// No float atomics: the rows are cut into chunks, and each chunk's column sums go to a fixed slot
// of the workspace (pass 1); a second pass sums the chunks' slots in order. Both passes are the
// same kernel, and the chunking depends on (rows, cols) alone, so every run adds the same numbers
// in the same order. When there is only one chunk, pass 1 writes straight into out.
//
// The sums accumulate in double, as the CPU twin does (kernels/cpu/reduce.cpp), and the chunks'
// partial sums are kept in double too: a column of {3e38, 3e38, -3e38} sums to 3e38 on both
// devices, rounded to float once at the end.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "cairn/base/error.h"
#include "cairn/kernels/reduce.h"

namespace cairn::kernels::cuda {
namespace {

// A block is a (kTileRows x kTileCols) team: threadIdx.x walks adjacent columns, so each warp
// reads 32 consecutive floats of a row (one 128-byte transaction), and threadIdx.y splits the
// chunk's rows eight ways.
constexpr int kTileCols = 32;
constexpr int kTileRows = 8;
// Rows a chunk covers at least; grown for tall inputs so the chunk count fits gridDim.y.
constexpr int64_t kRowsPerChunk = 256;
constexpr int64_t kMaxChunks = 65535;

struct ChunkPlan {
  int64_t rows_per_chunk;
  int64_t chunks;
};

ChunkPlan plan_chunks(int64_t rows) {
  const int64_t rows_per_chunk = std::max(kRowsPerChunk, (rows + kMaxChunks - 1) / kMaxChunks);
  return {rows_per_chunk, (rows + rows_per_chunk - 1) / rows_per_chunk};
}

// x: (rows, cols) -> dst: (gridDim.y, cols), dst[chunk, c] = sum of x[r, c] over the chunk's rows.
// accumulate == kAdd adds into dst instead of overwriting it (in double: float(dst + sum), as on
// the CPU). In is float (the input) or double (pass 2's partials); Out is double (pass 1 of two)
// or float.
template <typename In, typename Out>
__global__ void column_chunk_sums_kernel(const In* x, int64_t rows, int64_t cols,
                                         int64_t rows_per_chunk, Out* dst, Accumulate accumulate) {
  __shared__ double partial[kTileRows][kTileCols];
  const int64_t c = blockIdx.x * int64_t(kTileCols) + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t row_begin = chunk * rows_per_chunk;
  const int64_t row_end = rows - row_begin < rows_per_chunk ? rows : row_begin + rows_per_chunk;
  double acc = 0.0;
  if (c < cols) {
    for (int64_t r = row_begin + threadIdx.y; r < row_end; r += kTileRows) acc += x[r * cols + c];
  }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    double sum = partial[0][threadIdx.x];
    for (int y = 1; y < kTileRows; ++y) sum += partial[y][threadIdx.x];
    Out* slot = dst + chunk * cols + c;
    *slot =
        static_cast<Out>(accumulate == Accumulate::kAdd ? static_cast<double>(*slot) + sum : sum);
  }
}

template <typename In, typename Out>
void launch_column_chunk_sums(const In* x, int64_t rows, int64_t cols, int64_t rows_per_chunk,
                              int64_t chunks, Out* dst, Accumulate accumulate,
                              StreamHandle stream) {
  const dim3 grid(static_cast<unsigned>((cols + kTileCols - 1) / kTileCols),
                  static_cast<unsigned>(chunks));
  const dim3 block(kTileCols, kTileRows);
  column_chunk_sums_kernel<In, Out>
      <<<grid, block, 0, stream>>>(x, rows, cols, rows_per_chunk, dst, accumulate);
  CAIRN_CHECK_LAUNCH("column_chunk_sums_kernel", stream);
}

}  // namespace

size_t sum_columns_workspace_bytes(int64_t rows, int64_t cols) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "sum_columns: negative shape (", rows, ", ", cols, ")");
  const ChunkPlan plan = plan_chunks(rows);
  if (plan.chunks <= 1 || cols == 0) return 0;
  return static_cast<size_t>(plan.chunks) * static_cast<size_t>(cols) * sizeof(double);
}

// x: (rows, cols) -> out: (cols)
void sum_columns(const float* x, int64_t rows, int64_t cols, float* out, Accumulate accumulate,
                 void* workspace, size_t workspace_bytes, StreamHandle stream) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "sum_columns: negative shape (", rows, ", ", cols, ")");
  CAIRN_CHECK((cols + kTileCols - 1) / kTileCols <= INT_MAX, "sum_columns: cols ", cols,
              " too many for the grid");
  if (cols == 0) return;
  if (rows == 0) {
    // The sum of no rows is zero: overwrite clears out, add leaves it as it is.
    if (accumulate == Accumulate::kOverwrite) {
      CAIRN_CUDA_CHECK(cudaMemsetAsync(out, 0, static_cast<size_t>(cols) * sizeof(float), stream));
    }
    return;
  }
  const ChunkPlan plan = plan_chunks(rows);
  if (plan.chunks == 1) {
    launch_column_chunk_sums(x, rows, cols, rows, 1, out, accumulate, stream);
    return;
  }
  const size_t needed = sum_columns_workspace_bytes(rows, cols);
  CAIRN_CHECK(workspace != nullptr && workspace_bytes >= needed, "sum_columns: workspace of ",
              workspace_bytes, " bytes, ", needed, " needed for (", rows, ", ", cols, ")");
  // partials: (chunks, cols), in double
  CAIRN_CHECK(reinterpret_cast<uintptr_t>(workspace) % alignof(double) == 0,
              "sum_columns: workspace ", workspace, " is not aligned for doubles");
  double* partials = static_cast<double*>(workspace);
  launch_column_chunk_sums(x, rows, cols, plan.rows_per_chunk, plan.chunks, partials,
                           Accumulate::kOverwrite, stream);
  launch_column_chunk_sums(partials, plan.chunks, cols, plan.chunks, 1, out, accumulate, stream);
}

}  // namespace cairn::kernels::cuda
