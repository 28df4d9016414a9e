// The fake cuBLAS and cuBLASLt (tests/fake_cuda/cublas.cpp, cublaslt.cpp) refuse what NVIDIA's
// documentation says is refused, refuse more where a GPU would fault or corrupt silently, and
// compute what the documentation defines (compared with naive double loops). Fake-only: these
// tests use the fake's controls (control.h) and its exact refusals.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cairn/tests/fake_cuda/control.h"

namespace cairn::fake_cuda {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// A device buffer of floats, freed at scope exit.
class DeviceFloats {
 public:
  explicit DeviceFloats(size_t count) : count_(count) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&data_), count * sizeof(float)), cudaSuccess);
  }
  explicit DeviceFloats(const std::vector<float>& host) : DeviceFloats(host.size()) {
    EXPECT_EQ(cudaMemcpy(data_, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  ~DeviceFloats() { cudaFree(data_); }
  DeviceFloats(const DeviceFloats&) = delete;
  DeviceFloats& operator=(const DeviceFloats&) = delete;
  float* get() const { return data_; }
  std::vector<float> read() const {
    std::vector<float> host(count_);
    EXPECT_EQ(cudaMemcpy(host.data(), data_, count_ * sizeof(float), cudaMemcpyDeviceToHost),
              cudaSuccess);
    return host;
  }

 private:
  float* data_ = nullptr;
  size_t count_ = 0;
};

// A column-major rows x cols matrix stored with leading dimension ld; the padding rows hold NaN,
// so a GEMM that reads them shows it.
std::vector<float> padded_matrix(int rows, int cols, int ld, float seed) {
  std::vector<float> m(size_t(ld) * cols, kNaN);
  for (int j = 0; j < cols; ++j) {
    for (int i = 0; i < rows; ++i)
      m[i + size_t(j) * ld] = seed + 0.25f * i - 0.5f * j + 0.125f * i * j;
  }
  return m;
}

// op(X)[i, l] of a column-major stored matrix.
float op_at(const std::vector<float>& x, int ld, bool trans, int i, int l) {
  return trans ? x[l + size_t(i) * ld] : x[i + size_t(l) * ld];
}

// The reference: C = alpha op(A) op(B) + beta C in double, rounded once; beta == 0 reads no C.
std::vector<float> naive_gemm(bool ta, bool tb, int m, int n, int k, float alpha,
                              const std::vector<float>& a, int lda, const std::vector<float>& b,
                              int ldb, float beta, std::vector<float> c, int ldc) {
  for (int j = 0; j < n; ++j) {
    for (int i = 0; i < m; ++i) {
      double sum = 0.0;
      for (int l = 0; l < k; ++l)
        sum += double(op_at(a, lda, ta, i, l)) * double(op_at(b, ldb, tb, l, j));
      double value = double(alpha) * sum;
      if (beta != 0.0f) value += double(beta) * double(c[i + size_t(j) * ldc]);
      c[i + size_t(j) * ldc] = float(value);
    }
  }
  return c;
}

class FakeBlas : public ::testing::Test {
 protected:
  void SetUp() override {
    cudaGetLastError();
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
    ASSERT_EQ(cublasCreate(&blas_), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasSetStream(blas_, stream_), CUBLAS_STATUS_SUCCESS);
  }
  void TearDown() override {
    set_lt_heuristic_rule(nullptr);
    EXPECT_EQ(cublasDestroy(blas_), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    EXPECT_EQ(cudaStreamDestroy(stream_), cudaSuccess);
    cudaGetLastError();
  }
  void sync() { ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess); }

  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
};

// ---- cuBLAS ----

TEST_F(FakeBlas, SgemmRefusesNegativeSizesAndBadOperations) {
  DeviceFloats a(64), b(64), c(64);
  const float one = 1.0f, zero = 0.0f;
  auto gemm = [&](cublasOperation_t ta, int m, int n, int k) {
    return cublasSgemm(blas_, ta, CUBLAS_OP_N, m, n, k, &one, a.get(), 8, b.get(), 8, &zero,
                       c.get(), 8);
  };
  EXPECT_EQ(gemm(CUBLAS_OP_N, -1, 2, 2), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(gemm(CUBLAS_OP_N, 2, -1, 2), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(gemm(CUBLAS_OP_N, 2, 2, -1), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(gemm(cublasOperation_t(7), 2, 2, 2), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, nullptr, a.get(), 8, b.get(), 8,
                        &zero, c.get(), 8),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a.get(), 8, b.get(), 8,
                        nullptr, c.get(), 8),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a.get(), 8, b.get(), 8,
                        &zero, nullptr, 8),
            CUBLAS_STATUS_INVALID_VALUE);  // C is always written
  EXPECT_EQ(gemm(CUBLAS_OP_N, 2, 2, 2), CUBLAS_STATUS_SUCCESS);
}

TEST_F(FakeBlas, SgemmRefusesEachShortLeadingDimension) {
  DeviceFloats a(256), b(256), c(256);
  const float one = 1.0f, zero = 0.0f;
  const int m = 4, n = 3, k = 5;
  struct Case {
    cublasOperation_t ta, tb;
    int lda, ldb, ldc;
  };
  const Case bad[] = {
      {CUBLAS_OP_N, CUBLAS_OP_N, m - 1, k, m},  // lda < m
      {CUBLAS_OP_T, CUBLAS_OP_N, k - 1, k, m},  // lda < k
      {CUBLAS_OP_N, CUBLAS_OP_N, m, k - 1, m},  // ldb < k
      {CUBLAS_OP_N, CUBLAS_OP_T, m, n - 1, m},  // ldb < n
      {CUBLAS_OP_N, CUBLAS_OP_N, m, k, m - 1},  // ldc < m
      {CUBLAS_OP_C, CUBLAS_OP_C, k - 1, n, m},  // C is T for real data
  };
  for (const Case& t : bad) {
    EXPECT_EQ(cublasSgemm(blas_, t.ta, t.tb, m, n, k, &one, a.get(), t.lda, b.get(), t.ldb, &zero,
                          c.get(), t.ldc),
              CUBLAS_STATUS_INVALID_VALUE)
        << "lda " << t.lda << " ldb " << t.ldb << " ldc " << t.ldc;
  }
  // max(1, ...): a zero leading dimension is refused even for empty matrices.
  EXPECT_EQ(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, 0, 0, 0, &one, a.get(), 0, b.get(), 1,
                        &zero, c.get(), 1),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, 0, 0, 0, &one, a.get(), 1, b.get(), 1,
                        &zero, c.get(), 1),
            CUBLAS_STATUS_SUCCESS);
}

TEST_F(FakeBlas, SgemmRefusesHostAndShortBuffersQueueingNothing) {
  const int m = 3, n = 2, k = 4;
  std::vector<float> host_a(size_t(m) * k, 1.0f);
  DeviceFloats a(size_t(m) * k), b(size_t(k) * n), c(size_t(m) * n);
  const float one = 1.0f, zero = 0.0f;
  const int faults = fault_count();
  const int64_t sgemms = blas_counts().sgemm;
  EXPECT_EQ(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, host_a.data(), m, b.get(),
                        k, &zero, c.get(), m),
            CUBLAS_STATUS_EXECUTION_FAILED);
  // ldc one larger than the buffer was sized for: the last column runs past the allocation.
  EXPECT_EQ(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, a.get(), m, b.get(), k,
                        &zero, c.get(), m + 2),
            CUBLAS_STATUS_EXECUTION_FAILED);
  EXPECT_EQ(fault_count(), faults + 2);
  EXPECT_EQ(blas_counts().sgemm, sgemms);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // the refusal leaves no error for the next launch
  // Host pointer mode reads alpha on the host: a device address there is refused.
  EXPECT_EQ(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, a.get(), a.get(), m, b.get(), k,
                        &zero, c.get(), m),
            CUBLAS_STATUS_INVALID_VALUE);
}

TEST_F(FakeBlas, SgemmMatchesNaiveLoopsForEveryTransposeWithPaddedLeadingDimensions) {
  const int m = 5, n = 4, k = 3;
  const float alpha = 1.5f, beta = -0.75f;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const int lda = (ta ? k : m) + 2, ldb = (tb ? n : k) + 3, ldc = m + 1;
      const auto a = padded_matrix(ta ? k : m, ta ? m : k, lda, 0.5f);
      const auto b = padded_matrix(tb ? n : k, tb ? k : n, ldb, -1.0f);
      const auto c = padded_matrix(m, n, ldc, 2.0f);
      DeviceFloats da(a), db(b), dc(c);
      ASSERT_EQ(cublasSgemm(blas_, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                            m, n, k, &alpha, da.get(), lda, db.get(), ldb, &beta, dc.get(), ldc),
                CUBLAS_STATUS_SUCCESS);
      sync();
      const auto want = naive_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
      const auto got = dc.read();
      for (size_t e = 0; e < got.size(); ++e) {
        if (std::isnan(want[e])) {
          EXPECT_TRUE(std::isnan(got[e])) << "padding written at " << e;  // padding untouched
        } else {
          EXPECT_FLOAT_EQ(got[e], want[e]) << "ta " << ta << " tb " << tb << " at " << e;
        }
      }
    }
  }
}

TEST_F(FakeBlas, SgemmWithBetaZeroDoesNotReadC) {
  const int m = 3, n = 2, k = 2;
  const auto a = padded_matrix(m, k, m, 1.0f), b = padded_matrix(k, n, k, 2.0f);
  DeviceFloats da(a), db(b), dc(size_t(m) * n);  // fresh device memory reads as NaN
  const float alpha = 1.0f, beta = 0.0f;
  ASSERT_EQ(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, da.get(), m, db.get(), k,
                        &beta, dc.get(), m),
            CUBLAS_STATUS_SUCCESS);
  sync();
  const auto want = naive_gemm(false, false, m, n, k, alpha, a, m, b, k, 0.0f,
                               std::vector<float>(size_t(m) * n, kNaN), m);
  const auto got = dc.read();
  for (size_t e = 0; e < got.size(); ++e) EXPECT_FLOAT_EQ(got[e], want[e]);
}

TEST_F(FakeBlas, SgemmWithKZeroOrAlphaZeroScalesC) {
  const int m = 2, n = 3;
  const std::vector<float> c = {1, 2, 3, 4, 5, 6};
  DeviceFloats da(std::vector<float>(8, kNaN)), db(std::vector<float>(8, kNaN)), dc(c);
  const float alpha = 1.0f, beta = 2.0f, zero = 0.0f;
  ASSERT_EQ(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, m, n, 0, &alpha, da.get(), m, db.get(), 1,
                        &beta, dc.get(), m),
            CUBLAS_STATUS_SUCCESS);
  sync();
  EXPECT_EQ(dc.read(), (std::vector<float>{2, 4, 6, 8, 10, 12}));
  // alpha == 0: A and B (NaN here) are not read.
  ASSERT_EQ(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, m, n, 1, &zero, da.get(), m, db.get(), 1,
                        &beta, dc.get(), m),
            CUBLAS_STATUS_SUCCESS);
  sync();
  EXPECT_EQ(dc.read(), (std::vector<float>{4, 8, 12, 16, 20, 24}));
  DeviceFloats nan_c(std::vector<float>(6, kNaN));
  ASSERT_EQ(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, m, n, 0, &alpha, da.get(), m, db.get(), 1,
                        &zero, nan_c.get(), m),
            CUBLAS_STATUS_SUCCESS);
  sync();
  EXPECT_EQ(nan_c.read(), std::vector<float>(6, 0.0f));
}

TEST_F(FakeBlas, DevicePointerModeReadsScalarsWhenTheGemmRuns) {
  DeviceFloats a(std::vector<float>{2}), b(std::vector<float>{3}), c(std::vector<float>{10});
  DeviceFloats scalars(std::vector<float>{1.0f, 0.5f});  // alpha, beta
  ASSERT_EQ(cublasSetPointerMode(blas_, CUBLAS_POINTER_MODE_DEVICE), CUBLAS_STATUS_SUCCESS);
  cublasPointerMode_t mode = CUBLAS_POINTER_MODE_HOST;
  ASSERT_EQ(cublasGetPointerMode(blas_, &mode), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(mode, CUBLAS_POINTER_MODE_DEVICE);
  ASSERT_EQ(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, scalars.get(), a.get(), 1,
                        b.get(), 1, scalars.get() + 1, c.get(), 1),
            CUBLAS_STATUS_SUCCESS);
  sync();
  EXPECT_EQ(c.read(), std::vector<float>{11.0f});  // 1 * 2 * 3 + 0.5 * 10
  const float host_alpha = 1.0f;                   // a host scalar in device mode is a fault
  EXPECT_EQ(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &host_alpha, a.get(), 1, b.get(),
                        1, scalars.get() + 1, c.get(), 1),
            CUBLAS_STATUS_EXECUTION_FAILED);
  EXPECT_EQ(cublasSetPointerMode(blas_, cublasPointerMode_t(5)), CUBLAS_STATUS_INVALID_VALUE);
}

TEST_F(FakeBlas, WorkspaceIsCheckedWrittenAndResetBySetStream) {
  void* workspace = nullptr;
  ASSERT_EQ(cudaMalloc(&workspace, 4096), cudaSuccess);
  ASSERT_EQ(cudaMemset(workspace, 0, 4096), cudaSuccess);
  EXPECT_EQ(cublasSetWorkspace(blas_, static_cast<char*>(workspace) + 128, 1024),
            CUBLAS_STATUS_INVALID_VALUE);  // not 256-byte aligned
  ASSERT_EQ(cublasSetWorkspace(blas_, workspace, 4096), CUBLAS_STATUS_SUCCESS);
  DeviceFloats a(std::vector<float>{2}), b(std::vector<float>{3}), c(1);
  const float one = 1.0f, zero = 0.0f;
  ASSERT_EQ(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, a.get(), 1, b.get(), 1,
                        &zero, c.get(), 1),
            CUBLAS_STATUS_SUCCESS);
  sync();
  unsigned char first = 0;
  ASSERT_EQ(cudaMemcpy(&first, workspace, 1, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_NE(first, 0) << "the GEMM did not write its workspace";
  // A freed workspace is refused while it is set; cublasSetStream returns to the default pool.
  ASSERT_EQ(cudaFree(workspace), cudaSuccess);
  EXPECT_EQ(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, a.get(), 1, b.get(), 1,
                        &zero, c.get(), 1),
            CUBLAS_STATUS_EXECUTION_FAILED);
  ASSERT_EQ(cublasSetStream(blas_, stream_), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, a.get(), 1, b.get(), 1,
                        &zero, c.get(), 1),
            CUBLAS_STATUS_SUCCESS);
  cudaStream_t got = nullptr;
  ASSERT_EQ(cublasGetStream(blas_, &got), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(got, stream_);
}

TEST_F(FakeBlas, HandleModesAndStatusNames) {
  EXPECT_EQ(cublasSetMathMode(blas_, CUBLAS_TF32_TENSOR_OP_MATH), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasSetMathMode(blas_, cublasMath_t(99)), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSetAtomicsMode(blas_, CUBLAS_ATOMICS_ALLOWED), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasSetAtomicsMode(blas_, cublasAtomicsMode_t(3)), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_STREQ(cublasGetStatusName(CUBLAS_STATUS_INVALID_VALUE), "CUBLAS_STATUS_INVALID_VALUE");
  EXPECT_STRNE(cublasGetStatusString(CUBLAS_STATUS_NOT_SUPPORTED), "");
  cublasHandle_t destroyed = nullptr;
  ASSERT_EQ(cublasCreate(&destroyed), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasDestroy(destroyed), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasSetStream(destroyed, stream_), CUBLAS_STATUS_NOT_INITIALIZED);
  EXPECT_EQ(cublasDestroy(destroyed), CUBLAS_STATUS_NOT_INITIALIZED);
  const float one = 1.0f;
  EXPECT_EQ(cublasSgemm(destroyed, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, nullptr, 1, nullptr, 1,
                        &one, nullptr, 1),
            CUBLAS_STATUS_NOT_INITIALIZED);
}

// ---- cuBLASLt ----

// One Lt matmul's descriptors, as cairn's dense_lt builds them (C == D), destroyed at scope exit.
class LtCall {
 public:
  LtCall(cublasLtEpilogue_t epilogue, bool ta, bool tb, int m, int n, int k, int lda, int ldb,
         int ldd, const void* bias) {
    EXPECT_EQ(cublasLtCreate(&handle_), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F),
              CUBLAS_STATUS_SUCCESS);
    const int32_t op_a = ta ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const uint32_t epi = epilogue;
    EXPECT_EQ(set(CUBLASLT_MATMUL_DESC_TRANSA, op_a), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(set(CUBLASLT_MATMUL_DESC_TRANSB, op_b), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(set(CUBLASLT_MATMUL_DESC_EPILOGUE, epi), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&a_, CUDA_R_32F, ta ? k : m, ta ? m : k, lda),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&b_, CUDA_R_32F, tb ? n : k, tb ? k : n, ldb),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&d_, CUDA_R_32F, m, n, ldd), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatmulPreferenceCreate(&pref_), CUBLAS_STATUS_SUCCESS);
  }
  ~LtCall() {
    cublasLtMatmulPreferenceDestroy(pref_);
    cublasLtMatrixLayoutDestroy(d_);
    cublasLtMatrixLayoutDestroy(b_);
    cublasLtMatrixLayoutDestroy(a_);
    cublasLtMatmulDescDestroy(desc_);
    cublasLtDestroy(handle_);
  }
  template <typename T>
  cublasStatus_t set(cublasLtMatmulDescAttributes_t attribute, const T& value) {
    return cublasLtMatmulDescSetAttribute(desc_, attribute, &value, sizeof(value));
  }
  template <typename T>
  cublasStatus_t prefer(cublasLtMatmulPreferenceAttributes_t attribute, const T& value) {
    return cublasLtMatmulPreferenceSetAttribute(pref_, attribute, &value, sizeof(value));
  }
  // Asks the heuristic; *found is how many algorithms it returned.
  cublasStatus_t heuristic(uint64_t max_workspace, uint32_t alignment, int* found) {
    EXPECT_EQ(prefer(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, max_workspace),
              CUBLAS_STATUS_SUCCESS);
    for (auto attribute :
         {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
          CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
      EXPECT_EQ(prefer(attribute, alignment), CUBLAS_STATUS_SUCCESS);
    }
    return cublasLtMatmulAlgoGetHeuristic(handle_, desc_, a_, b_, d_, d_, pref_, 1, &result_,
                                          found);
  }
  cublasStatus_t run(const float* a, const float* b, float* d, void* workspace, size_t bytes,
                     cudaStream_t stream, float beta = 0.0f) {
    const float alpha = 1.0f;
    return cublasLtMatmul(handle_, desc_, &alpha, a, a_, b, b_, &beta, d, d_, d, d_, &result_.algo,
                          workspace, bytes, stream);
  }
  const cublasLtMatmulHeuristicResult_t& result() const { return result_; }
  cublasLtMatmulHeuristicResult_t& mutable_result() { return result_; }
  cublasLtHandle_t handle() const { return handle_; }
  cublasLtMatmulDesc_t desc() const { return desc_; }
  cublasLtMatrixLayout_t d_layout() const { return d_; }
  cublasLtMatmulPreference_t preference() const { return pref_; }

 private:
  cublasLtHandle_t handle_ = nullptr;
  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatrixLayout_t a_ = nullptr, b_ = nullptr, d_ = nullptr;
  cublasLtMatmulPreference_t pref_ = nullptr;
  cublasLtMatmulHeuristicResult_t result_{};
};

// Device memory for one Lt test: 256-byte aligned buffers, as cudaMalloc gives.
struct LtBuffers {
  LtBuffers(const std::vector<float>& a, const std::vector<float>& b, size_t d, size_t bias)
      : a(a), b(b), d(d), bias(bias) {
    EXPECT_EQ(cudaMalloc(&workspace, 8192), cudaSuccess);
  }
  ~LtBuffers() { cudaFree(workspace); }
  DeviceFloats a, b, d, bias;
  void* workspace = nullptr;
};

TEST_F(FakeBlas, LtBiasEpilogueMatchesNaiveLoops) {
  // dense_forward's call: D (m, n) = op(A stored k x m)^T op(B stored k x n) + bias per row of D.
  const int m = 5, n = 3, k = 4, lda = k + 1, ldb = k + 2, ldd = m + 3;
  const auto a = padded_matrix(k, m, lda, 0.5f), b = padded_matrix(k, n, ldb, -0.25f);
  const std::vector<float> bias = {1, -2, 3, -4, 5};
  LtBuffers buf(a, b, size_t(ldd) * n, bias.size());
  ASSERT_EQ(cudaMemcpy(buf.bias.get(), bias.data(), bias.size() * 4, cudaMemcpyHostToDevice),
            cudaSuccess);
  LtCall call(CUBLASLT_EPILOGUE_BIAS, true, false, m, n, k, lda, ldb, ldd, buf.bias.get());
  int found = 0;
  ASSERT_EQ(call.heuristic(1 << 20, 256, &found), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(found, 1);
  ASSERT_EQ(call.result().state, CUBLAS_STATUS_SUCCESS);
  const int64_t matmuls = blas_counts().lt_matmul;
  ASSERT_EQ(call.run(buf.a.get(), buf.b.get(), buf.d.get(), buf.workspace, 8192, stream_),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(blas_counts().lt_matmul, matmuls + 1);
  sync();
  const auto got = buf.d.read();
  for (int j = 0; j < n; ++j) {
    for (int i = 0; i < m; ++i) {
      double sum = 0.0;
      for (int l = 0; l < k; ++l)
        sum += double(op_at(a, lda, true, i, l)) * double(op_at(b, ldb, false, l, j));
      EXPECT_FLOAT_EQ(got[i + size_t(j) * ldd], float(sum + bias[i])) << i << ", " << j;
    }
    for (int i = m; i < ldd; ++i) EXPECT_TRUE(std::isnan(got[i + size_t(j) * ldd]));  // padding
  }
  unsigned char first = 0;
  ASSERT_EQ(cudaMemcpy(&first, buf.workspace, 1, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_NE(first, 0xFF) << "the matmul did not write its workspace";
  // RELU_BIAS in place (C == D) with beta: D = max(0, op(A) op(B) + beta D + bias).
  const uint32_t relu_bias = CUBLASLT_EPILOGUE_RELU_BIAS;
  ASSERT_EQ(call.set(CUBLASLT_MATMUL_DESC_EPILOGUE, relu_bias), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(call.heuristic(1 << 20, 256, &found), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(call.run(buf.a.get(), buf.b.get(), buf.d.get(), buf.workspace, 8192, stream_, -0.5f),
            CUBLAS_STATUS_SUCCESS);
  sync();
  const auto relu = buf.d.read();
  for (int j = 0; j < n; ++j) {
    for (int i = 0; i < m; ++i) {
      double sum = 0.0;
      for (int l = 0; l < k; ++l) {
        sum += double(op_at(a, lda, true, i, l)) * double(op_at(b, ldb, false, l, j));
      }
      const double want = sum - 0.5 * double(got[i + size_t(j) * ldd]) + bias[i];
      EXPECT_FLOAT_EQ(relu[i + size_t(j) * ldd], float(want > 0 ? want : 0.0)) << i << ", " << j;
    }
  }
}

TEST_F(FakeBlas, LtBgradbEpilogueSumsOpBOverK) {
  // dense_weight_backward's call: D (m, n) = A (m x k) op(B stored n x k); bias gets n sums.
  const int m = 3, n = 4, k = 6, lda = m + 1, ldb = n + 2, ldd = m;
  const auto a = padded_matrix(m, k, lda, 1.0f), b = padded_matrix(n, k, ldb, -2.0f);
  LtBuffers buf(a, b, size_t(ldd) * n, size_t(n) + 4);  // room past n: must stay untouched
  LtCall call(CUBLASLT_EPILOGUE_BGRADB, false, true, m, n, k, lda, ldb, ldd, buf.bias.get());
  int found = 0;
  ASSERT_EQ(call.heuristic(4096, 16, &found), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(found, 1);
  ASSERT_EQ(call.run(buf.a.get(), buf.b.get(), buf.d.get(), buf.workspace, 4096, stream_),
            CUBLAS_STATUS_SUCCESS);
  sync();
  const auto d = buf.d.read();
  const auto bias = buf.bias.read();
  for (int j = 0; j < n; ++j) {
    double column_sum = 0.0;
    for (int l = 0; l < k; ++l) column_sum += double(op_at(b, ldb, true, l, j));
    EXPECT_FLOAT_EQ(bias[j], float(column_sum)) << j;
    for (int i = 0; i < m; ++i) {
      double sum = 0.0;
      for (int l = 0; l < k; ++l)
        sum += double(op_at(a, lda, false, i, l)) * double(op_at(b, ldb, true, l, j));
      EXPECT_FLOAT_EQ(d[i + size_t(j) * ldd], float(sum)) << i << ", " << j;
    }
  }
  for (size_t j = n; j < bias.size(); ++j)
    EXPECT_TRUE(std::isnan(bias[j])) << "bias written past n";
}

TEST_F(FakeBlas, LtHeuristicRefusesWeakAlignmentAndFollowsTheTestRule) {
  const int m = 4, n = 4, k = 4;
  LtBuffers buf(std::vector<float>(16, 1.0f), std::vector<float>(16, 1.0f), 16, 8);
  int found = -1;
  {
    LtCall call(CUBLASLT_EPILOGUE_BIAS, false, false, m, n, k, m, k, m, buf.bias.get());
    EXPECT_EQ(call.heuristic(4096, 4, &found), CUBLAS_STATUS_NOT_SUPPORTED);  // 4-byte A..D
    EXPECT_EQ(found, 0);
    EXPECT_EQ(call.heuristic(4096, 16, &found), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(found, 1);
    const uint32_t weak = 8;  // one weak matrix is enough
    ASSERT_EQ(call.prefer(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, weak), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                             nullptr, 1, nullptr, &found),
              CUBLAS_STATUS_NOT_INITIALIZED);
  }
  {
    // The heuristic reads the bias pointer's value: a 4-byte aligned bias gets no algorithm.
    LtCall call(CUBLASLT_EPILOGUE_BIAS, false, false, m, n, k, m, k, m, buf.bias.get() + 1);
    EXPECT_EQ(call.heuristic(4096, 256, &found), CUBLAS_STATUS_NOT_SUPPORTED);
    EXPECT_EQ(found, 0);
  }
  LtQuery seen;
  set_lt_heuristic_rule([&](const LtQuery& q) {
    seen = q;
    return q.epilogue == CUBLASLT_EPILOGUE_BGRADB ? int(CUBLAS_STATUS_NOT_SUPPORTED)
                                                  : int(CUBLAS_STATUS_SUCCESS);
  });
  {
    LtCall refused(CUBLASLT_EPILOGUE_BGRADB, false, true, 2, 3, 4, 2, 3, 2, buf.bias.get());
    const int64_t queries = blas_counts().lt_heuristic;
    EXPECT_EQ(refused.heuristic(4096, 256, &found), CUBLAS_STATUS_NOT_SUPPORTED);
    EXPECT_EQ(found, 0);
    EXPECT_EQ(blas_counts().lt_heuristic, queries + 1);
    EXPECT_EQ(seen.epilogue, int(CUBLASLT_EPILOGUE_BGRADB));
    EXPECT_EQ(seen.m, 2);
    EXPECT_EQ(seen.n, 3);
    EXPECT_EQ(seen.k, 4);
    LtCall allowed(CUBLASLT_EPILOGUE_BIAS, false, false, m, n, k, m, k, m, buf.bias.get());
    EXPECT_EQ(allowed.heuristic(4096, 256, &found), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(found, 1);
  }
  set_lt_heuristic_rule(nullptr);
  LtCall again(CUBLASLT_EPILOGUE_BGRADB, false, true, 2, 3, 4, 2, 3, 2, buf.bias.get());
  EXPECT_EQ(again.heuristic(4096, 256, &found), CUBLAS_STATUS_SUCCESS);
}

TEST_F(FakeBlas, LtMatmulRefusesMisalignedPointersWorkspacesAndForgedAlgos) {
  const int m = 4, n = 4, k = 4;
  // 8 floats of slack, so that every offset pointer's range still lies in its allocation.
  LtBuffers buf(std::vector<float>(24, 1.0f), std::vector<float>(24, 1.0f), 24, 16);
  LtCall call(CUBLASLT_EPILOGUE_BIAS, false, false, m, n, k, m, k, m, buf.bias.get());
  int found = 0;
  ASSERT_EQ(call.heuristic(4096, 16, &found), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(call.result().workspaceSize, 4096u);
  float *a = buf.a.get(), *b = buf.b.get(), *d = buf.d.get();
  void* ws = buf.workspace;
  EXPECT_EQ(call.run(a + 1, b, d, ws, 4096, stream_), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(call.run(a, b + 2, d, ws, 4096, stream_), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(call.run(a, b, d + 1, ws, 4096, stream_), CUBLAS_STATUS_INVALID_VALUE);    // C == D
  EXPECT_EQ(call.run(a + 4, b + 4, d + 4, ws, 4096, stream_), CUBLAS_STATUS_SUCCESS);  // 16 bytes
  EXPECT_EQ(call.run(a, b, d, ws, 2048, stream_), CUBLAS_STATUS_INVALID_VALUE);  // workspace small
  EXPECT_EQ(call.run(a, b, d, static_cast<char*>(ws) + 16, 4096, stream_),
            CUBLAS_STATUS_INVALID_VALUE);  // workspace not 256-byte aligned
  EXPECT_EQ(call.run(a, b, d, nullptr, 0, stream_), CUBLAS_STATUS_INVALID_VALUE);
  // The bias pointer changed after the heuristic (as cairn's cached plans do) to a weaker one.
  ASSERT_EQ(
      call.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(buf.bias.get() + 2)),
      CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(call.run(a, b, d, ws, 4096, stream_), CUBLAS_STATUS_INVALID_VALUE);
  ASSERT_EQ(call.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(buf.bias.get())),
            CUBLAS_STATUS_SUCCESS);
  // Host memory, and a workspace claimed larger than its allocation: refused before queueing.
  std::vector<float> host(24, 1.0f);
  const int faults = fault_count();
  EXPECT_EQ(call.run(host.data(), b, d, ws, 4096, stream_), CUBLAS_STATUS_EXECUTION_FAILED);
  EXPECT_EQ(call.run(a, b, d, ws, 8193, stream_), CUBLAS_STATUS_EXECUTION_FAILED);
  EXPECT_EQ(fault_count(), faults + 2);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  // An algo the heuristic did not make.
  call.mutable_result().algo.data[2] = 0;  // claims to need no workspace
  EXPECT_EQ(call.run(a, b, d, nullptr, 0, stream_), CUBLAS_STATUS_INVALID_VALUE);
  call.mutable_result().algo = cublasLtMatmulAlgo_t{};
  EXPECT_EQ(call.run(a, b, d, ws, 4096, stream_), CUBLAS_STATUS_INVALID_VALUE);
}

TEST_F(FakeBlas, LtDescriptorsRefuseWhatTheyDoNotModel) {
  cublasLtMatrixLayout_t layout = nullptr;
  EXPECT_EQ(cublasLtMatrixLayoutCreate(&layout, CUDA_R_32F, 4, 2, 3), CUBLAS_STATUS_INVALID_VALUE);
  LtBuffers buf(std::vector<float>(16, 1.0f), std::vector<float>(16, 1.0f), 16, 4);
  LtCall call(CUBLASLT_EPILOGUE_DEFAULT, false, false, 4, 4, 4, 4, 4, 4, nullptr);
  EXPECT_EQ(call.set(CUBLASLT_MATMUL_DESC_TRANSA, int64_t(0)), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(call.set(CUBLASLT_MATMUL_DESC_TRANSB, int32_t(9)), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(call.set(CUBLASLT_MATMUL_DESC_AMAX_D_POINTER, static_cast<void*>(nullptr)),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(call.prefer(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, uint64_t(16)),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(call.prefer(CUBLASLT_MATMUL_PREF_MAX_WAVES_COUNT, 1.0f), CUBLAS_STATUS_INVALID_VALUE);
  // A 4 x 2 layout as A against B 4 x 4, or as D: the op sizes disagree.
  cublasLtMatrixLayout_t narrow = nullptr;
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&narrow, CUDA_R_32F, 4, 2, 4), CUBLAS_STATUS_SUCCESS);
  cublasLtMatrixLayout_t square = call.d_layout();
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(call.handle(), call.desc(), narrow, square, square,
                                           square, call.preference(), 1, &result, &found),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(call.handle(), call.desc(), square, square, square,
                                           square, call.preference(), 0, &result, &found),
            CUBLAS_STATUS_INVALID_VALUE);
  // Default preferences (no workspace, 256-byte alignment promised) give an algo needing none.
  ASSERT_EQ(cublasLtMatmulAlgoGetHeuristic(call.handle(), call.desc(), square, square, square,
                                           square, call.preference(), 1, &result, &found),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(result.workspaceSize, 0u);
  // An epilogue the fake does not model has no algorithm; the query still counts.
  const int64_t queries = blas_counts().lt_heuristic;
  const uint32_t gelu = CUBLASLT_EPILOGUE_GELU;
  ASSERT_EQ(call.set(CUBLASLT_MATMUL_DESC_EPILOGUE, gelu), CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulHeuristicResult_t refused{};
  EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(call.handle(), call.desc(), square, square, square,
                                           square, call.preference(), 1, &refused, &found),
            CUBLAS_STATUS_NOT_SUPPORTED);
  EXPECT_EQ(found, 0);
  EXPECT_EQ(blas_counts().lt_heuristic, queries + 1);
  const uint32_t plain = CUBLASLT_EPILOGUE_DEFAULT;
  ASSERT_EQ(call.set(CUBLASLT_MATMUL_DESC_EPILOGUE, plain), CUBLAS_STATUS_SUCCESS);
  const float one = 1.0f, zero = 0.0f;
  EXPECT_EQ(cublasLtMatmul(call.handle(), call.desc(), &one, buf.a.get(), square, buf.b.get(),
                           square, &zero, buf.d.get(), square, buf.d.get(), narrow, &result.algo,
                           nullptr, 0, stream_),
            CUBLAS_STATUS_INVALID_VALUE);
  ASSERT_EQ(cublasLtMatmul(call.handle(), call.desc(), &one, buf.a.get(), square, buf.b.get(),
                           square, &zero, buf.d.get(), square, buf.d.get(), square, &result.algo,
                           nullptr, 0, stream_),
            CUBLAS_STATUS_SUCCESS);
  sync();
  EXPECT_EQ(buf.d.read(), std::vector<float>(16, 4.0f));
  // Destroyed objects are refused, not dereferenced.
  EXPECT_EQ(cublasLtMatrixLayoutDestroy(narrow), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasLtMatrixLayoutDestroy(narrow), CUBLAS_STATUS_INVALID_VALUE);
  cublasLtHandle_t handle = nullptr;
  ASSERT_EQ(cublasLtCreate(&handle), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasLtDestroy(handle), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasLtDestroy(handle), CUBLAS_STATUS_NOT_INITIALIZED);
  EXPECT_EQ(
      cublasLtMatmul(handle, call.desc(), &one, buf.a.get(), square, buf.b.get(), square, &zero,
                     buf.d.get(), square, buf.d.get(), square, &result.algo, nullptr, 0, stream_),
      CUBLAS_STATUS_NOT_INITIALIZED);
}

}  // namespace
}  // namespace cairn::fake_cuda
