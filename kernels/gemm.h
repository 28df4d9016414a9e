// GEMM, planned once.
//
// cairn's matrices are row-major; cuBLAS and the reference BLAS are column-major. A row-major
// C (M x N) = op(A) op(B) is, read column-major, C^T = op(B)^T op(A)^T: the same bytes, the
// operands swapped. plan_gemm() turns the row-major request into that column-major call once, as a
// pure function, and both executors (cuBLAS on the GPU, cblas_sgemm on the CPU) run the same plan.
// The CPU tests against a naive triple loop therefore also prove the plan that the GPU runs.
#pragma once

#include <cstdint>

#include "cairn/kernels/common.h"

namespace cairn::kernels {

enum class Transpose { kNo, kYes };

// A row-major request: C = alpha * op(A) op(B) (+ C when accumulating).
// op(A) is (m, k), op(B) is (k, n), C is (m, n). A is stored (m, k) when not transposed and
// (k, m) when transposed; likewise B is stored (k, n) or (n, k).
struct RowMajorGemm {
  const float* a = nullptr;
  const float* b = nullptr;
  float* c = nullptr;
  int64_t m = 0, n = 0, k = 0;
  Transpose transpose_a = Transpose::kNo;
  Transpose transpose_b = Transpose::kNo;
  float alpha = 1.0f;
  Accumulate accumulate = Accumulate::kOverwrite;
};

// The column-major call both executors make: C' = alpha * op(first) op(second) + beta * C'.
struct ColumnMajorGemmPlan {
  bool transpose_first = false;
  bool transpose_second = false;
  int64_t m = 0, n = 0, k = 0;  // column-major sizes of C' (m x n) and the inner dimension k
  const float* first = nullptr;
  int64_t ld_first = 1;
  const float* second = nullptr;
  int64_t ld_second = 1;
  float* c = nullptr;
  int64_t ldc = 1;
  float alpha = 1.0f;
  float beta = 0.0f;
};

ColumnMajorGemmPlan plan_gemm(const RowMajorGemm& request);

namespace cpu {
// Runs the plan through cblas_sgemm (column-major). k == 0 scales C by beta (zero when
// overwriting), as BLAS defines it.
void gemm(const ColumnMajorGemmPlan& plan);

// Whether cpu::gemm splits a large GEMM across threads itself (kernels/cpu/parallel.h says why):
// on by default, off when the environment has CAIRN_CPU_SPLIT_GEMM=0, in which case OpenBLAS
// threads it, as before. Results at one thread are the same either way; at two or more they
// differ in the last bits (bench_gemm_split measures by how much).
void set_gemm_split_enabled(bool enabled);

// c: column-major (m, n), leading dimension ldc. c = beta * c, exactly 0 where beta == 0 (a NaN
// in c does not survive): the k == 0 product as BLAS defines it.
void scale_matrix(float* c, int64_t m, int64_t n, int64_t ldc, float beta);
}  // namespace cpu

namespace cuda {
// Runs the plan through cublasSgemm on the handle, which must already be bound to the stream.
void gemm(const ColumnMajorGemmPlan& plan, BlasHandle handle);
void scale_matrix(float* c, int64_t m, int64_t n, int64_t ldc, float beta, StreamHandle stream);
}  // namespace cuda
}  // namespace cairn::kernels
