// plan_gemm: the one place where a row-major GEMM request becomes a column-major BLAS call.
#include <algorithm>

#include "cairn/base/error.h"
#include "cairn/kernels/gemm.h"

namespace cairn::kernels {

// Row-major C (m x n) = op(A) op(B) occupies the same bytes as column-major C^T (n x m), and
// C^T = op(B)^T op(A)^T. A row-major matrix read column-major is its own transpose, so B's storage
// read column-major is already B^T when B is not transposed: the column-major call keeps each
// operand's transpose flag and only swaps the operands (first = B, second = A) and m with n.
// Leading dimensions are the stored row lengths; BLAS wants them >= 1 even for empty matrices.
ColumnMajorGemmPlan plan_gemm(const RowMajorGemm& request) {
  CAIRN_CHECK(request.m >= 0 && request.n >= 0 && request.k >= 0,
              "plan_gemm: sizes must be non-negative, got m=", request.m, " n=", request.n,
              " k=", request.k);
  const bool transpose_a = request.transpose_a == Transpose::kYes;
  const bool transpose_b = request.transpose_b == Transpose::kYes;

  ColumnMajorGemmPlan plan;
  plan.transpose_first = transpose_b;
  plan.transpose_second = transpose_a;
  plan.m = request.n;
  plan.n = request.m;
  plan.k = request.k;
  plan.first = request.b;
  // B is stored (k, n), or (n, k) when transposed.
  plan.ld_first = std::max<int64_t>(1, transpose_b ? request.k : request.n);
  plan.second = request.a;
  // A is stored (m, k), or (k, m) when transposed.
  plan.ld_second = std::max<int64_t>(1, transpose_a ? request.m : request.k);
  plan.c = request.c;
  plan.ldc = std::max<int64_t>(1, request.n);
  plan.alpha = request.alpha;
  plan.beta = request.accumulate == Accumulate::kAdd ? 1.0f : 0.0f;
  return plan;
}

}  // namespace cairn::kernels
