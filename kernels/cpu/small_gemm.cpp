// Column-major C = alpha * op(first) op(second) + beta * C for small sizes (see small_gemm.h).
//
// Every element of C is the sum of its k rounded products in order p = 0, 1, ..., k - 1: a column
// of C is built as k scaled columns of `first` added in turn, 32 rows at a time held in
// registers (an axpy per p, vectorised down the column). `first` must not be transposed, so that
// its columns are contiguous; `second` is read one scalar at a time either way.
#include "cairn/kernels/cpu/small_gemm.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "cairn/base/error.h"
#include "cairn/kernels/cpu/vector_dispatch.h"

// The 8-float vectors below are only ever inside always_inline functions of one translation unit:
// no value of them crosses a call, so the ABI note GCC gives for them does not apply. The note is
// silenced by -Wno-psabi on this file (kernels/cpu/sources.cmake): GCC emits it after parsing,
// where `#pragma GCC diagnostic ignored "-Wpsabi"` no longer reaches it.

namespace cairn::kernels::cpu {

namespace {

using detail::run_widest;

// CAIRN_CPU_SMALL_GEMM=0 turns it off from the start; set_small_gemm_enabled() at any time.
std::atomic<bool>& small_gemm_switch() {
  static std::atomic<bool> enabled{[] {
    const char* setting = std::getenv("CAIRN_CPU_SMALL_GEMM");
    return setting == nullptr || setting[0] != '0';
  }()};
  return enabled;
}

// value = alpha * sum (+ beta * c), as BLAS defines it; with beta == 0 the caller passes 0 for c
// rather than reading C, so a NaN already in C does not survive.
CAIRN_VECTOR_LOOP inline float finish(float sum, float alpha, float beta, float c) {
  const float scaled = alpha == 1.0f ? sum : alpha * sum;
  if (beta == 0.0f) return scaled;
  return scaled + (beta == 1.0f ? c : beta * c);
}

// Eight floats, one lane each: GCC's generic vectors, one AVX2 register in the AVX2 build and
// two SSE2 registers in the baseline one; each lane's multiply and add are the scalar IEEE
// operations either way. Loads and stores go through memcpy: the operands need no alignment.
typedef float Lanes __attribute__((vector_size(32)));

CAIRN_VECTOR_LOOP inline Lanes load(const float* from) {
  Lanes v;
  std::memcpy(&v, from, sizeof v);
  return v;
}

CAIRN_VECTOR_LOOP inline void store(float* to, Lanes v) { std::memcpy(to, &v, sizeof v); }

// The plan's operands, copied out of it so that the compiler knows stores into C cannot change
// them.
struct Operands {
  const float* a;  // op(first), column-major (m x k), columns contiguous
  int64_t lda;
  const float* b;  // op(second): element (p, j) at b[p * b_step + j * b_column]
  int64_t b_step, b_column;
  float* c;
  int64_t ldc, m, n, k;
  float alpha, beta;
};

// Rows [row, row + 8 * kBlocks) of column j of C, the sums held in kBlocks registers across the
// k products. kPlain: alpha == 1 and beta == 0, so the sums are C.
template <int kBlocks, bool kPlain>
CAIRN_VECTOR_LOOP inline void column_block(const Operands& o, int64_t j, int64_t row) {
  const float* __restrict a = o.a + row;
  const float* __restrict b = o.b + j * o.b_column;
  float* __restrict c = o.c + j * o.ldc + row;
  Lanes sum[kBlocks];
  const float b0 = b[0];
  for (int q = 0; q < kBlocks; ++q) sum[q] = load(a + 8 * q) * b0;
  for (int64_t p = 1; p < o.k; ++p) {
    const float* __restrict ap = a + p * o.lda;
    const float bp = b[p * o.b_step];
    for (int q = 0; q < kBlocks; ++q) sum[q] = sum[q] + load(ap + 8 * q) * bp;
  }
  for (int q = 0; q < kBlocks; ++q) {
    if (kPlain) {
      store(c + 8 * q, sum[q]);
      continue;
    }
    Lanes out = o.alpha == 1.0f ? sum[q] : sum[q] * o.alpha;
    if (o.beta != 0.0f) {
      const Lanes old = load(c + 8 * q);
      out = out + (o.beta == 1.0f ? old : old * o.beta);
    }
    store(c + 8 * q, out);
  }
}

// Row `row` of column j of C (the m % 8 left over), the same arithmetic on one lane.
CAIRN_VECTOR_LOOP inline void column_row(const Operands& o, int64_t j, int64_t row) {
  const float* b = o.b + j * o.b_column;
  float sum = o.a[row] * b[0];
  for (int64_t p = 1; p < o.k; ++p) sum = sum + o.a[p * o.lda + row] * b[p * o.b_step];
  float& c = o.c[j * o.ldc + row];
  c = finish(sum, o.alpha, o.beta, o.beta == 0.0f ? 0.0f : c);
}

template <bool kPlain>
CAIRN_VECTOR_LOOP inline void all_columns(const Operands o) {
  for (int64_t j = 0; j < o.n; ++j) {
    int64_t row = 0;
    for (; row + 32 <= o.m; row += 32) column_block<4, kPlain>(o, j, row);
    for (; row + 8 <= o.m; row += 8) column_block<1, kPlain>(o, j, row);
    if (row < o.m && o.m >= 8 && o.beta == 0.0f) {
      // The last m % 8 rows as the block ending at row m: the rows it repeats come out the same
      // (same products, same order), and with beta == 0 C is not read, so writing them twice is
      // harmless.
      column_block<1, kPlain>(o, j, o.m - 8);
      row = o.m;
    }
    for (; row < o.m; ++row) column_row(o, j, row);
  }
}

}  // namespace

bool small_gemm_takes(const ColumnMajorGemmPlan& plan) {
  // Measured (bench_small_gemm): with `first` transposed each element is a dot product that
  // OpenBLAS's packed kernels compute as fast as a copy-then-add would; and a column shorter
  // than one 8-row register block is all scalar tail.
  if (plan.transpose_first || plan.m < 8 || plan.k < 1 || plan.n > kSmallGemmMaxWork) return false;
  if (plan.m * plan.n > kSmallGemmMaxWork || plan.m * plan.n * plan.k > kSmallGemmMaxWork) {
    return false;
  }
  return small_gemm_switch().load(std::memory_order_relaxed);
}

void set_small_gemm_enabled(bool enabled) {
  small_gemm_switch().store(enabled, std::memory_order_relaxed);
}

void small_gemm(const ColumnMajorGemmPlan& plan) {
  CAIRN_CHECK(plan.k >= 1 && !plan.transpose_first,
              "cpu::small_gemm: needs k >= 1 and `first` not transposed, got k=", plan.k,
              " transpose_first=", plan.transpose_first);
  if (plan.m == 0 || plan.n == 0) return;
  Operands o;
  o.a = plan.first, o.lda = plan.ld_first;
  // Element (p, j) of op(second): stored (k, n) or, transposed, (n, k).
  o.b = plan.second;
  o.b_step = plan.transpose_second ? plan.ld_second : 1;
  o.b_column = plan.transpose_second ? 1 : plan.ld_second;
  o.c = plan.c, o.ldc = plan.ldc;
  o.m = plan.m, o.n = plan.n, o.k = plan.k;
  o.alpha = plan.alpha, o.beta = plan.beta;
  if (o.alpha == 1.0f && o.beta == 0.0f) {
    run_widest([o]() CAIRN_VECTOR_LOOP { all_columns<true>(o); });
  } else {
    run_widest([o]() CAIRN_VECTOR_LOOP { all_columns<false>(o); });
  }
}

}  // namespace cairn::kernels::cpu
