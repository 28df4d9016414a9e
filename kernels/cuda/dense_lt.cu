// Dense forward and weight backward as cuBLASLt matmuls with fused epilogues (see dense.h).
#include <cublasLt.h>

#include <limits>

#include "cairn/core/error.h"
#include "cairn/kernels/dense.h"

namespace cairn::kernels::cuda {
namespace {

// Owns the descriptors of one call; cuBLASLt descriptors are cheap to create.
struct LtCall {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;
  ~LtCall() {
    if (preference) cublasLtMatmulPreferenceDestroy(preference);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

void check_int_range(const char* op, int64_t value, const char* name) {
  CAIRN_CHECK(value >= 0 && value <= std::numeric_limits<int32_t>::max(), op, ": ", name, " = ",
              value, " exceeds cuBLASLt's 32-bit range");
}

template <typename T>
void set(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute, const T& value) {
  CAIRN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)));
}

// Column-major matmul D (m, n) = op(A) op(B) with `epilogue`, run with the best heuristic
// algorithm.
void run(const char* op, cublasLtHandle_t handle, LtCall& call, cublasOperation_t trans_a,
         cublasOperation_t trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
         const float* b, int64_t ldb, float* d, int64_t ldd, void* workspace,
         size_t workspace_bytes, cudaStream_t stream) {
  set(call.desc, CUBLASLT_MATMUL_DESC_TRANSA, trans_a);
  set(call.desc, CUBLASLT_MATMUL_DESC_TRANSB, trans_b);
  const bool ta = trans_a == CUBLAS_OP_T, tb = trans_b == CUBLAS_OP_T;
  // Layouts describe the stored matrices, before op().
  CAIRN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&call.a, CUDA_R_32F, uint64_t(ta ? k : m),
                                                uint64_t(ta ? m : k), lda));
  CAIRN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&call.b, CUDA_R_32F, uint64_t(tb ? n : k),
                                                uint64_t(tb ? k : n), ldb));
  CAIRN_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&call.d, CUDA_R_32F, uint64_t(m), uint64_t(n), ldd));
  CAIRN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&call.preference));
  CAIRN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      call.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
      sizeof(workspace_bytes)));
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  CAIRN_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(
      handle, call.desc, call.a, call.b, call.d, call.d, call.preference, 1, &heuristic, &found));
  CAIRN_CHECK(found > 0, op, ": cuBLASLt has no algorithm for m=", m, " n=", n, " k=", k,
              " with this epilogue");
  const float alpha = 1.0f, beta = 0.0f;
  CAIRN_CUBLAS_CHECK(cublasLtMatmul(handle, call.desc, &alpha, a, call.a, b, call.b, &beta, d,
                                    call.d, d, call.d, &heuristic.algo, workspace, workspace_bytes,
                                    stream));
}

}  // namespace

void dense_forward(LtHandle handle, const float* x, const float* w, const float* b, float* y,
                   int64_t n, int64_t in, int64_t out, DenseEpilogue epilogue,
                   MatmulPrecision precision, void* workspace, size_t workspace_bytes,
                   StreamHandle stream) {
  constexpr const char* kOp = "dense_forward";
  check_int_range(kOp, n, "n");
  check_int_range(kOp, in, "in");
  check_int_range(kOp, out, "out");
  if (n == 0 || out == 0) return;
  CAIRN_CHECK(in > 0, kOp, ": in = 0 is handled by the caller (y = act(b))");
  LtCall call;
  const cublasComputeType_t compute =
      precision == MatmulPrecision::kTf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  CAIRN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&call.desc, compute, CUDA_R_32F));
  const cublasLtEpilogue_t fused =
      epilogue == DenseEpilogue::kReluBias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
  set(call.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, fused);
  set(call.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, b);
  // y^T (out, n) = op(W^T stored (in, out)) * x^T (in, n)
  run(kOp, reinterpret_cast<cublasLtHandle_t>(handle), call, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in,
      w, in, x, in, y, out, workspace, workspace_bytes, reinterpret_cast<cudaStream_t>(stream));
}

void dense_weight_backward(LtHandle handle, const float* dz, const float* x, float* dw, float* db,
                           int64_t n, int64_t in, int64_t out, MatmulPrecision precision,
                           void* workspace, size_t workspace_bytes, StreamHandle stream) {
  constexpr const char* kOp = "dense_weight_backward";
  check_int_range(kOp, n, "n");
  check_int_range(kOp, in, "in");
  check_int_range(kOp, out, "out");
  if (in == 0 || out == 0) return;
  CAIRN_CHECK(n > 0, kOp, ": n = 0 is handled by the caller (zero gradients)");
  LtCall call;
  const cublasComputeType_t compute =
      precision == MatmulPrecision::kTf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  CAIRN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&call.desc, compute, CUDA_R_32F));
  // dW^T (in, out) = x^T (in, n) * op(dz^T stored (out, n)); BGRADB sums op(B) = dz over k = n,
  // one value per column of D: the bias gradient.
  set(call.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_BGRADB);
  set(call.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, db);
  run(kOp, reinterpret_cast<cublasLtHandle_t>(handle), call, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n,
      x, in, dz, out, dw, in, workspace, workspace_bytes, reinterpret_cast<cudaStream_t>(stream));
}

}  // namespace cairn::kernels::cuda
