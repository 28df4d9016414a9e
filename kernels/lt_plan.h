// The host-side decisions behind dense_lt.cpp's cached cuBLASLt plans, kept out of the .cu file so
// that the CPU tests prove them: what a plan is keyed by, and when the heuristic's answer is
// usable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <tuple>

namespace cairn::kernels {

// The largest power of two, from 4 up to 256, dividing the address. cuBLASLt assumes 256-byte
// alignment unless told otherwise, and a wrapped application pointer may have less.
uint32_t pointer_alignment(const void* pointer);

// Everything a cached plan (descriptors, layouts, the heuristic's algorithm) depends on. The
// heuristic reads the bias pointer set on the descriptor, so the bias's alignment is part of the
// key: a plan chosen for a 256-byte aligned bias must not run with a 4-byte aligned one.
struct LtPlanKey {
  const void* handle = nullptr;
  int epilogue = 0, compute = 0, trans_a = 0, trans_b = 0;
  int64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldd = 0;
  uint32_t align_a = 0, align_b = 0, align_d = 0, align_bias = 0;
  size_t workspace_bytes = 0;

  auto tied() const {
    return std::tie(handle, epilogue, compute, trans_a, trans_b, m, n, k, lda, ldb, ldd, align_a,
                    align_b, align_d, align_bias, workspace_bytes);
  }
  bool operator<(const LtPlanKey& other) const { return tied() < other.tied(); }
  bool operator==(const LtPlanKey& other) const { return tied() == other.tied(); }
};

// Whether cublasLtMatmulAlgoGetHeuristic's answer gives an algorithm to run: the call succeeded,
// returned at least one result, and that result's `state` is CUBLAS_STATUS_SUCCESS (its other
// fields are only valid then). CUBLAS_STATUS_NOT_SUPPORTED (no algorithm for this configuration)
// and CUBLAS_STATUS_INVALID_VALUE (a configuration it refuses, such as an operand's alignment)
// from the call are not errors: the caller falls back to the composed path, which computes any
// shape. Any other failing status is an error, which this reports by returning false with
// `*error` set. Statuses are cublasStatus_t values.
bool lt_heuristic_usable(int call_status, int returned, int result_state, bool* error);

// The epilogues read (BIAS) or write (BGRADB) the bias vector with vector accesses: a bias less
// than 16-byte aligned (a wrapped application pointer, a view into a larger buffer) is refused or
// faults on some GPUs, so cairn falls back below 16 bytes, as PyTorch's and Marian's cuBLASLt
// paths do; cuBLASLt has no preference attribute that filters algorithms by the bias's alignment.
constexpr uint32_t kLtBiasAlignment = 16;
bool lt_bias_alignment_ok(const void* bias);

}  // namespace cairn::kernels
