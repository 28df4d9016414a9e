// CPU GEMM: runs a ColumnMajorGemmPlan through OpenBLAS's column-major cblas_sgemm, or, when it
// is too small for that to pay, through small_gemm (small_gemm.h). At two or more threads a large
// GEMM is split into blocks of C, one single-threaded OpenBLAS call per thread on cairn's own
// pool (parallel.h).
#include "cairn/kernels/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "cairn/base/error.h"
#include "cairn/kernels/cpu/parallel.h"
#include "cairn/kernels/cpu/small_gemm.h"

namespace cairn::kernels::cpu {

namespace {

// OpenBLAS's default interface takes 32-bit sizes.
bool fits_blas_int(int64_t value) { return value >= 0 && value <= INT_MAX; }

// C = 0 over its m x n block (leading dimension ldc), in wide stores and across threads.
void zero_block(float* c, int64_t m, int64_t n, int64_t ldc) {
  constexpr int64_t kElementsPerThread = 65536;
  if (ldc == m) {
    parallel_for(m * n, kElementsPerThread, [&](int64_t begin, int64_t end) {
      std::memset(c + begin, 0, size_t(end - begin) * sizeof(float));
    });
    return;
  }
  parallel_for(n, std::max<int64_t>(1, kElementsPerThread / m), [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) std::memset(c + j * ldc, 0, size_t(m) * sizeof(float));
  });
}

// One OpenBLAS call on the plan (k >= 1), at OpenBLAS's current thread count.
void blas_call(const ColumnMajorGemmPlan& plan) {
  // For beta = 0 OpenBLAS first zeroes C in a pass of its own, one store at a time (4% of an
  // epoch of the book's MLP, bench_cpu_epoch's profile). cairn zeroes C itself and asks for
  // beta = 1: OpenBLAS then skips that pass and adds its sums to the zeros, which is what it does
  // after its own pass, so the bits are the same (check_bit_identity.sh).
  float beta = plan.beta;
  if (beta == 0.0f) {
    zero_block(plan.c, plan.m, plan.n, plan.ldc);
    beta = 1.0f;
  }
  cblas_sgemm(CblasColMajor, plan.transpose_first ? CblasTrans : CblasNoTrans,
              plan.transpose_second ? CblasTrans : CblasNoTrans, static_cast<int>(plan.m),
              static_cast<int>(plan.n), static_cast<int>(plan.k), plan.alpha, plan.first,
              static_cast<int>(plan.ld_first), plan.second, static_cast<int>(plan.ld_second),
              beta, plan.c, static_cast<int>(plan.ldc));
}

// Multiply-adds above which a GEMM is split across threads: OpenBLAS's own threshold
// (SMP_THRESHOLD_MIN x GEMM_MULTITHREAD_THRESHOLD in its interface/gemm.c), below which it runs
// one thread too.
constexpr int64_t kSplitMinWork = int64_t(65536) * 4;
// Parts are whole multiples of this many columns (or rows): OpenBLAS's widest register tile on
// x86-64, so no part's edge falls inside a tile that one call would have made whole.
constexpr int64_t kSplitAlignment = 16;

// CAIRN_CPU_SPLIT_GEMM=0 turns the split off from the start; set_gemm_split_enabled() at any time.
std::atomic<bool>& split_switch() {
  static std::atomic<bool> enabled{[] {
    const char* setting = std::getenv("CAIRN_CPU_SPLIT_GEMM");
    return setting == nullptr || setting[0] != '0';
  }()};
  return enabled;
}

// How many threads share this GEMM: threads(), fewer where the work or the split side is small
// (each part at least half the threshold's work, so that a many-core machine does not cut a
// GEMM just above it into slivers that cost more to start than to compute).
int blas_parts(const ColumnMajorGemmPlan& plan) {
  if (!split_switch().load(std::memory_order_relaxed)) return 1;
  const int count = threads();
  const int64_t work = plan.m * plan.n * plan.k;
  if (count <= 1 || work <= kSplitMinWork) return 1;
  const int64_t extent = std::max(plan.m, plan.n);  // the side split_point divides
  return int(std::min({int64_t(count), extent / kSplitAlignment, work / (kSplitMinWork / 2)}));
}

// Where part `part` of `parts` begins along a side of length `extent`: equal shares, rounded to
// kSplitAlignment, the last part taking the remainder.
int64_t split_point(int64_t extent, int parts, int part) {
  if (part >= parts) return extent;
  const int64_t tiles = (extent + kSplitAlignment - 1) / kSplitAlignment;
  return std::min(extent, tiles * part / parts * kSplitAlignment);
}

enum class Executor { kChoose, kBlas };

void run(const ColumnMajorGemmPlan& plan, Executor executor) {
  CAIRN_CHECK(plan.m >= 0 && plan.n >= 0 && plan.k >= 0,
              "cpu::gemm: sizes must be non-negative, got m=", plan.m, " n=", plan.n,
              " k=", plan.k);
  if (plan.m == 0 || plan.n == 0) return;
  CAIRN_CHECK(plan.c != nullptr, "cpu::gemm: C is null");
  CAIRN_CHECK(plan.ldc >= plan.m, "cpu::gemm: ldc=", plan.ldc, " < m=", plan.m);

  if (plan.k == 0) {
    // An empty inner product: C = beta * C.
    scale_matrix(plan.c, plan.m, plan.n, plan.ldc, plan.beta);
    return;
  }

  CAIRN_CHECK(plan.first != nullptr && plan.second != nullptr, "cpu::gemm: an operand is null");
  CAIRN_CHECK(
      fits_blas_int(plan.m) && fits_blas_int(plan.n) && fits_blas_int(plan.k) &&
          fits_blas_int(plan.ld_first) && fits_blas_int(plan.ld_second) && fits_blas_int(plan.ldc),
      "cpu::gemm: sizes exceed the BLAS integer range: m=", plan.m, " n=", plan.n, " k=", plan.k);
  // The stored rows of op(first) (m x k) and op(second) (k x n) as column-major matrices.
  const int64_t first_rows = plan.transpose_first ? plan.k : plan.m;
  const int64_t second_rows = plan.transpose_second ? plan.n : plan.k;
  CAIRN_CHECK(plan.ld_first >= first_rows && plan.ld_second >= second_rows,
              "cpu::gemm: leading dimension too small: ld_first=", plan.ld_first, " (needs ",
              first_rows, "), ld_second=", plan.ld_second, " (needs ", second_rows, ")");

  if (executor == Executor::kChoose && small_gemm_takes(plan)) return small_gemm(plan);
  const int parts = blas_parts(plan);
  if (parts <= 1) return blas_call(plan);
  // Each thread takes a block of C's columns (or rows) and makes its own single-threaded
  // OpenBLAS call on it (parallel.h says why cairn splits GEMMs itself).
  const bool by_columns = plan.m <= plan.n;  // repeat the smaller operand in every part
  const int64_t extent = by_columns ? plan.n : plan.m;
  parallel_blas_parts(parts, [&](int part) {
    const int64_t begin = split_point(extent, parts, part);
    const int64_t end = split_point(extent, parts, part + 1);
    ColumnMajorGemmPlan block = plan;
    if (by_columns) {
      block.n = end - begin;
      block.second += plan.transpose_second ? begin : begin * plan.ld_second;
      block.c += begin * plan.ldc;
    } else {
      block.m = end - begin;
      block.first += plan.transpose_first ? begin * plan.ld_first : begin;
      block.c += begin;
    }
    if (block.m > 0 && block.n > 0) blas_call(block);
  });
}

}  // namespace

void gemm(const ColumnMajorGemmPlan& plan) { run(plan, Executor::kChoose); }

void scale_matrix(float* c, int64_t m, int64_t n, int64_t ldc, float beta) {
  CAIRN_CHECK(m >= 0 && n >= 0 && ldc >= m, "scale_matrix: m=", m, " n=", n, " ldc=", ldc);
  // beta == 0 overwrites without reading, as BLAS defines it.
  for (int64_t j = 0; j < n; ++j) {
    float* column = c + j * ldc;
    for (int64_t i = 0; i < m; ++i) column[i] = beta == 0.0f ? 0.0f : beta * column[i];
  }
}

void blas_gemm(const ColumnMajorGemmPlan& plan) { run(plan, Executor::kBlas); }

void set_gemm_split_enabled(bool enabled) {
  split_switch().store(enabled, std::memory_order_relaxed);
}

}  // namespace cairn::kernels::cpu
