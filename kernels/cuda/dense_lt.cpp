// Dense forward and weight backward as cuBLASLt matmuls with fused epilogues (see dense.h).
// Host code only (no kernel): the fake CUDA device's build compiles it unchanged.
#include <cublasLt.h>

#include <cstdint>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "cairn/base/error.h"
#include "cairn/kernels/dense.h"
#include "cairn/kernels/lt_plan.h"

namespace cairn::kernels::cuda {
namespace {

// One prepared cuBLASLt call: descriptors, layouts and the heuristic's algorithm. Building these
// and asking the heuristic costs host time on every layer of every step, so plans are cached per
// LtPlanKey (shape, epilogue, precision, pointer alignments); only the bias pointer changes
// between calls. A configuration cuBLASLt refuses is cached too (`supported` false), so the
// caller's fallback is decided once per key.
struct LtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool supported = true;
  ~LtPlan() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

// Per thread, so that no lock is needed and a descriptor is never shared between threads that
// set its bias pointer. Freed when its thread ends: an application that runs cairn on short-lived
// threads would otherwise leak every thread's plans (the fake device's leak check found it). The
// descriptors are host memory; destroying them needs no device.
std::map<LtPlanKey, std::unique_ptr<LtPlan>>& plans() {
  thread_local std::map<LtPlanKey, std::unique_ptr<LtPlan>> cache;
  return cache;
}

void check_int_range(const char* op, int64_t value, const char* name) {
  CAIRN_CHECK(value >= 0 && value <= std::numeric_limits<int32_t>::max(), op, ": ", name, " = ",
              value, " exceeds cuBLASLt's 32-bit range");
}

template <typename T>
void set(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute, const T& value) {
  CAIRN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)));
}

// One line on stderr the first time an op falls back, whatever the shape: a fallback is slower,
// never wrong, and a training loop must not print it every step.
void say_fallback_once(const char* op, int64_t m, int64_t n, int64_t k, const char* why) {
  static std::mutex mutex;
  static std::set<std::string> said;
  std::lock_guard<std::mutex> lock(mutex);
  if (!said.insert(op).second) return;
  std::cerr << "cairn: " << op << ": cuBLASLt " << why << " for its fused epilogue (m=" << m
            << " n=" << n << " k=" << k
            << "); using cuBLAS GEMM and cairn's own bias kernels for such shapes (said once)\n";
}

// Column-major matmul D (m, n) = op(A) op(B) with `epilogue` (its bias pointer set on the cached
// descriptor before each call), run with the heuristic's best algorithm for this shape. Returns
// false, having queued nothing, when cuBLASLt has no algorithm for it.
bool run(const char* op, cublasLtHandle_t handle, cublasLtEpilogue_t epilogue,
         cublasComputeType_t compute, const float* bias, cublasOperation_t trans_a,
         cublasOperation_t trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
         const float* b, int64_t ldb, float* d, int64_t ldd, void* workspace,
         size_t workspace_bytes, cudaStream_t stream) {
  if (!lt_bias_alignment_ok(bias)) {
    say_fallback_once(op, m, n, k, "is not used with a bias less than 16-byte aligned");
    return false;
  }
  LtPlanKey key;
  key.handle = handle;
  key.epilogue = int(epilogue);
  key.compute = int(compute);
  key.trans_a = int(trans_a);
  key.trans_b = int(trans_b);
  key.m = m;
  key.n = n;
  key.k = k;
  key.lda = lda;
  key.ldb = ldb;
  key.ldd = ldd;
  key.align_a = pointer_alignment(a);
  key.align_b = pointer_alignment(b);
  key.align_d = pointer_alignment(d);
  key.align_bias = pointer_alignment(bias);
  key.workspace_bytes = workspace_bytes;
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
      set_preference(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a);
      set_preference(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b);
      set_preference(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_d);
      set_preference(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_d);
      status = cublasLtMatmulAlgoGetHeuristic(handle, plan->desc, plan->a, plan->b, plan->d,
                                              plan->d, preference, 1, &heuristic, &found);
    } catch (...) {
      cublasLtMatmulPreferenceDestroy(preference);
      throw;
    }
    cublasLtMatmulPreferenceDestroy(preference);
    bool error = false;
    plan->supported = lt_heuristic_usable(int(status), found, int(heuristic.state), &error);
    if (error) {
      // Named as the call it came from, not as the variable that holds its status.
      const cublasStatus_t cublasLtMatmulAlgoGetHeuristic = status;
      CAIRN_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic);
    }
    if (plan->supported) {
      plan->algo = heuristic.algo;
    } else {
      say_fallback_once(op, m, n, k, "has no algorithm");
    }
    slot = std::move(plan);
  } else if (slot->supported) {
    set(slot->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
  }
  if (!slot->supported) return false;
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t status =
      cublasLtMatmul(handle, slot->desc, &alpha, a, slot->a, b, slot->b, &beta, d, slot->d, d,
                     slot->d, &slot->algo, workspace, workspace_bytes, stream);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) {
    // Refused before anything was queued: remember, and let the caller fall back.
    slot->supported = false;
    say_fallback_once(op, m, n, k, "refused the heuristic's algorithm");
    return false;
  }
  CAIRN_CUBLAS_CHECK(status);
  return true;
}

}  // namespace

bool dense_forward(LtHandle handle, const float* x, const float* w, const float* b, float* y,
                   int64_t n, int64_t in, int64_t out, MatmulPrecision precision, void* workspace,
                   size_t workspace_bytes, StreamHandle stream) {
  constexpr const char* kOp = "dense_forward";
  check_int_range(kOp, n, "n");
  check_int_range(kOp, in, "in");
  check_int_range(kOp, out, "out");
  if (n == 0 || out == 0) return true;
  CAIRN_CHECK(in > 0, kOp, ": in = 0 is handled by the caller (y = act(b))");
  const cublasComputeType_t compute =
      precision == MatmulPrecision::kTf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  // y^T (out, n) = op(W^T stored (in, out)) * x^T (in, n); the bias runs along D's rows (out).
  return run(kOp, reinterpret_cast<cublasLtHandle_t>(handle), CUBLASLT_EPILOGUE_BIAS, compute, b,
             CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, w, in, x, in, y, out, workspace, workspace_bytes,
             reinterpret_cast<cudaStream_t>(stream));
}

bool dense_weight_backward(LtHandle handle, const float* dz, const float* x, float* dw, float* db,
                           int64_t n, int64_t in, int64_t out, MatmulPrecision precision,
                           void* workspace, size_t workspace_bytes, StreamHandle stream) {
  constexpr const char* kOp = "dense_weight_backward";
  check_int_range(kOp, n, "n");
  check_int_range(kOp, in, "in");
  check_int_range(kOp, out, "out");
  if (in == 0 || out == 0) return true;
  CAIRN_CHECK(n > 0, kOp, ": n = 0 is handled by the caller (zero gradients)");
  const cublasComputeType_t compute =
      precision == MatmulPrecision::kTf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  // dW^T (in, out) = x^T (in, n) * op(dz^T stored (out, n)); BGRADB sums op(B) = dz over k = n,
  // one value per column of D: the bias gradient.
  return run(kOp, reinterpret_cast<cublasLtHandle_t>(handle), CUBLASLT_EPILOGUE_BGRADB, compute, db,
             CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, x, in, dz, out, dw, in, workspace,
             workspace_bytes, reinterpret_cast<cudaStream_t>(stream));
}

}  // namespace cairn::kernels::cuda
