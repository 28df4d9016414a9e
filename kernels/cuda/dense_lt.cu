// Dense forward and weight backward as cuBLASLt matmuls with fused epilogues (see dense.h).
#include <cublasLt.h>

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <tuple>

#include "cairn/core/error.h"
#include "cairn/kernels/dense.h"

namespace cairn::kernels::cuda {
namespace {

// One prepared cuBLASLt call: descriptors, layouts and the heuristic's algorithm. Building these
// and asking the heuristic costs host time on every layer of every step, so plans are cached per
// shape, epilogue, precision and pointer alignment; only the bias pointer changes between calls.
struct LtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~LtPlan() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

using PlanKey = std::tuple<cublasLtHandle_t, int /*epilogue*/, int /*compute*/, int /*trans_a*/,
                           int /*trans_b*/, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                           uint32_t, uint32_t, uint32_t, size_t>;

// Per thread, so that no lock is needed and a descriptor is never shared between threads that
// set its bias pointer. Never destroyed: descriptors are host memory, and tearing them down during
// static destruction could race cuBLASLt's own.
std::map<PlanKey, std::unique_ptr<LtPlan>>& plans() {
  thread_local auto* cache = new std::map<PlanKey, std::unique_ptr<LtPlan>>();
  return *cache;
}

void check_int_range(const char* op, int64_t value, const char* name) {
  CAIRN_CHECK(value >= 0 && value <= std::numeric_limits<int32_t>::max(), op, ": ", name, " = ",
              value, " exceeds cuBLASLt's 32-bit range");
}

template <typename T>
void set(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute, const T& value) {
  CAIRN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)));
}

// The largest power of two (at most 256) dividing the address: cuBLASLt picks algorithms that
// assume 256-byte alignment unless told otherwise, and a wrapped application pointer may have less.
uint32_t alignment_of(const void* pointer) {
  const auto address = reinterpret_cast<uintptr_t>(pointer);
  uint32_t alignment = 256;
  while (alignment > 4 && address % alignment != 0) alignment /= 2;
  return alignment;
}

// Column-major matmul D (m, n) = op(A) op(B) with `epilogue` (its bias pointer set on the cached
// descriptor before each call), run with the heuristic's best algorithm for this shape.
void run(const char* op, cublasLtHandle_t handle, cublasLtEpilogue_t epilogue,
         cublasComputeType_t compute, const float* bias, cublasOperation_t trans_a,
         cublasOperation_t trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
         const float* b, int64_t ldb, float* d, int64_t ldd, void* workspace,
         size_t workspace_bytes, cudaStream_t stream) {
  const uint32_t align_a = alignment_of(a), align_b = alignment_of(b), align_d = alignment_of(d);
  const PlanKey key{
      handle, int(epilogue), int(compute), int(trans_a), int(trans_b),   m, n, k, lda, ldb,
      ldd,    align_a,       align_b,      align_d,      workspace_bytes};
  std::unique_ptr<LtPlan>& slot = plans()[key];
  if (slot == nullptr) {
    auto plan = std::make_unique<LtPlan>();
    CAIRN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, compute, CUDA_R_32F));
    set(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, trans_a);
    set(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, trans_b);
    set(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue);
    set(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
    const bool ta = trans_a == CUBLAS_OP_T, tb = trans_b == CUBLAS_OP_T;
    // Layouts describe the stored matrices, before op().
    CAIRN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_32F, uint64_t(ta ? k : m),
                                                  uint64_t(ta ? m : k), lda));
    CAIRN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_32F, uint64_t(tb ? n : k),
                                                  uint64_t(tb ? k : n), ldb));
    CAIRN_CUBLAS_CHECK(
        cublasLtMatrixLayoutCreate(&plan->d, CUDA_R_32F, uint64_t(m), uint64_t(n), ldd));
    cublasLtMatmulPreference_t preference = nullptr;
    CAIRN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
    auto set_preference = [&](cublasLtMatmulPreferenceAttributes_t attribute, const auto& value) {
      CAIRN_CUBLAS_CHECK(
          cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, sizeof(value)));
    };
    cublasLtMatmulHeuristicResult_t heuristic{};
    int found = 0;
    cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
    try {
      set_preference(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, workspace_bytes);
      set_preference(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a);
      set_preference(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b);
      set_preference(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_d);
      set_preference(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_d);
      status = cublasLtMatmulAlgoGetHeuristic(handle, plan->desc, plan->a, plan->b, plan->d,
                                              plan->d, preference, 1, &heuristic, &found);
    } catch (...) {
      cublasLtMatmulPreferenceDestroy(preference);
      throw;
    }
    cublasLtMatmulPreferenceDestroy(preference);
    CAIRN_CUBLAS_CHECK(status);
    CAIRN_CHECK(found > 0, op, ": cuBLASLt has no algorithm for m=", m, " n=", n, " k=", k,
                " with this epilogue");
    plan->algo = heuristic.algo;
    slot = std::move(plan);
  } else {
    set(slot->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
  }
  const float alpha = 1.0f, beta = 0.0f;
  CAIRN_CUBLAS_CHECK(cublasLtMatmul(handle, slot->desc, &alpha, a, slot->a, b, slot->b, &beta, d,
                                    slot->d, d, slot->d, &slot->algo, workspace, workspace_bytes,
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
  const cublasComputeType_t compute =
      precision == MatmulPrecision::kTf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const cublasLtEpilogue_t fused =
      epilogue == DenseEpilogue::kReluBias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
  // y^T (out, n) = op(W^T stored (in, out)) * x^T (in, n); the bias runs along D's rows (out).
  run(kOp, reinterpret_cast<cublasLtHandle_t>(handle), fused, compute, b, CUBLAS_OP_T, CUBLAS_OP_N,
      out, n, in, w, in, x, in, y, out, workspace, workspace_bytes,
      reinterpret_cast<cudaStream_t>(stream));
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
  const cublasComputeType_t compute =
      precision == MatmulPrecision::kTf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  // dW^T (in, out) = x^T (in, n) * op(dz^T stored (out, n)); BGRADB sums op(B) = dz over k = n,
  // one value per column of D: the bias gradient.
  run(kOp, reinterpret_cast<cublasLtHandle_t>(handle), CUBLASLT_EPILOGUE_BGRADB, compute, db,
      CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, x, in, dz, out, dw, in, workspace, workspace_bytes,
      reinterpret_cast<cudaStream_t>(stream));
}

}  // namespace cairn::kernels::cuda
