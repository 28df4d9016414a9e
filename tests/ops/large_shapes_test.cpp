// Shapes where the kernels' launch plans change regime, held against the CPU (issue 9): a block
// looping over more than one row (rows beyond 4096 blocks' worth), column sums whose chunk size
// grows (over 65535 chunks of 256 rows), and tensors of more than 2^31 elements, where any 32-bit
// index overflows. GPU only (skipped without a device).
//
// The Huge* tests allocate about 9 to 18 GB of device memory (an H200 has 141 GB) and read back
// only probes of it: keep them out of compute-sanitizer runs (gpu_check.sh), where they would be
// slow and need the tools' extra memory too.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cairn/core/allocator.h"
#include "support/test_support.h"

namespace cairn {
namespace {

using testing::expect_close;

Device gpu() { return Device::cuda(0); }

class LargeShapes : public testing::CudaTest {
 protected:
  // Hands the big blocks back, so that later tests (and other processes) get the memory.
  void TearDown() override {
    if (cuda_available()) cuda_allocator(0).empty_cache();
  }
};

// `count` floats of a device tensor from element `first`.
std::vector<float> probe(const Tensor& t, int64_t first, int64_t count) {
  std::vector<float> out(static_cast<size_t>(count));
  cuda::synchronize(t.device());
  EXPECT_EQ(cudaMemcpy(out.data(), t.data() + first, size_t(count) * sizeof(float),
                       cudaMemcpyDeviceToHost),
            cudaSuccess);
  return out;
}

void poke(Tensor& t, int64_t first, const std::vector<float>& values) {
  cuda::synchronize(t.device());
  ASSERT_EQ(cudaMemcpy(t.data() + first, values.data(), values.size() * sizeof(float),
                       cudaMemcpyHostToDevice),
            cudaSuccess);
}

TEST_F(LargeShapes, SoftmaxAndRowReductionsWhereABlockHandlesManyRows) {
  // 70000 rows: more than 4096 blocks of one row (cols > 32) or of eight rows (cols <= 32).
  for (const int64_t cols : {int64_t(1025), int64_t(20)}) {
    SCOPED_TRACE("cols " + std::to_string(cols));
    const Tensor x = testing::random_tensor({70000, cols}, 7, Device::cpu(), -4.0f, 4.0f);
    const Tensor x_gpu = x.to(gpu());
    expect_close(ops::softmax(x_gpu).to_vector(), ops::softmax(x).to_vector(), 1e-6, 1e-5,
                 "softmax");
    expect_close(ops::sum_rows(x_gpu).to_vector(), ops::sum_rows(x).to_vector(), 1e-3, 1e-4,
                 "sum_rows");
    expect_close(ops::max_rows(x_gpu).to_vector(), ops::max_rows(x).to_vector(), 0.0, 0.0,
                 "max_rows");
    EXPECT_EQ(ops::argmax_rows(x_gpu).to_int32_vector(), ops::argmax_rows(x).to_int32_vector());
  }
}

TEST_F(LargeShapes, SumColumnsWhereTheChunkSizeGrows) {
  // 17e6 rows > 256 rows x 65535 chunks: rows per chunk grows to 260. Values chosen so every
  // partial sum is an integer below 2^24, exact in any order: the sums must match exactly.
  const int64_t rows = 17000000, cols = 2;
  std::vector<float> values(size_t(rows * cols), 0.0f);
  for (int64_t r = 0; r < rows; r += 3) {
    for (int64_t c = 0; c < cols; ++c) values[size_t(r * cols + c)] = float(c + 1);
  }
  values[size_t((rows - 1) * cols)] = 5.0f;  // the very last row counts too
  const Tensor x = Tensor::from_vector(values, {rows, cols}, gpu());
  const int64_t ones = (rows + 2) / 3;
  const bool last_counted = (rows - 1) % 3 == 0;
  const float expected0 = float(ones - (last_counted ? 1 : 0) + 5);
  EXPECT_EQ(ops::sum_columns(x).to_vector(), (std::vector<float>{expected0, float(2 * ones)}));
}

constexpr int64_t kHuge = (int64_t(1) << 31) + 13;  // past every 32-bit index

TEST_F(LargeShapes, HugeFillAndUnaryReachTheLastElement) {
  CAIRN_SKIP_ON_FAKE_CUDA_FOR_MEMORY();
  Tensor x = Tensor::full({kHuge}, 1.5f, gpu());
  EXPECT_EQ(probe(x, 0, 4), std::vector<float>(4, 1.5f));
  EXPECT_EQ(probe(x, (int64_t(1) << 31) - 2, 4), std::vector<float>(4, 1.5f));
  EXPECT_EQ(probe(x, kHuge - 4096, 4096), std::vector<float>(4096, 1.5f));
  const Tensor y = ops::neg(x);
  EXPECT_EQ(probe(y, (int64_t(1) << 31) - 2, 4), std::vector<float>(4, -1.5f));
  EXPECT_EQ(probe(y, kHuge - 4096, 4096), std::vector<float>(4096, -1.5f));
}

TEST_F(LargeShapes, HugeFullReductionsCountEveryElement) {
  CAIRN_SKIP_ON_FAKE_CUDA_FOR_MEMORY();
  Tensor x = Tensor::full({kHuge}, 1.0f, gpu());
  poke(x, kHuge - 1, {7.0f});  // only the last element says so
  EXPECT_EQ(ops::max(x).item(), 7.0f);
  // Integers up to 2^31 + 19: float sums of them round, so a relative tolerance (a lost block of
  // 2^20 elements would be off by 5e-4).
  const double sum = ops::sum(x).item();
  EXPECT_NEAR(sum, double(kHuge) + 6.0, 1e-5 * double(kHuge));
}

TEST_F(LargeShapes, HugeSoftmaxRowsPastTwoToTheThirtyOne) {
  CAIRN_SKIP_ON_FAKE_CUDA_FOR_MEMORY();
  const int64_t cols = 1024, rows = (int64_t(1) << 21) + 1;  // rows * cols > 2^31
  Tensor x = Tensor::zeros({rows, cols}, gpu());
  std::vector<float> last_row(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) last_row[size_t(c)] = float(c % 17) * 0.25f;
  poke(x, (rows - 1) * cols, last_row);
  const Tensor y = ops::softmax(x);
  // A row of zeros is 1/1024 exactly everywhere.
  EXPECT_EQ(probe(y, 0, cols), std::vector<float>(size_t(cols), 1.0f / 1024));
  EXPECT_EQ(probe(y, (rows - 2) * cols, cols), std::vector<float>(size_t(cols), 1.0f / 1024));
  const Tensor expected = ops::softmax(Tensor::from_vector(last_row, {1, cols}, Device::cpu()));
  expect_close(probe(y, (rows - 1) * cols, cols), expected.to_vector(), 1e-7, 1e-5, "last row");
}

}  // namespace
}  // namespace cairn
