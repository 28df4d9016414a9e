// What a test can ask of, and tell, the fake CUDA device (tests/fake_cuda/). Only the fake-only
// test binary includes this; every other test runs unchanged on the fake and on a real GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

namespace cairn::fake_cuda {

// Operations that reached a range outside live device memory (each also reported on stderr).
int fault_count();
void reset_fault_count();

// Live cudaMalloc allocations and their bytes.
size_t live_allocations();
size_t live_bytes();

// cudaMalloc fails (cudaErrorMemoryAllocation) once live bytes would exceed this. Default: the
// CAIRN_FAKE_CUDA_MEMORY_BYTES environment variable, else 8 GiB (the machine's memory, not an
// H200's, bounds what the fake can hold; cudaMemGetInfo and the device properties still report an
// H200's 141 GiB as total).
void set_memory_limit(size_t bytes);
size_t memory_limit();

// Waits until every stream has run everything queued so far (cudaDeviceSynchronize, minus its
// capture checks), for tests that inspect the fake itself.
void drain();

// Delays before each queued operation: a seeded pseudo-random sleep of between half and all of
// `max_microseconds` for a `percent` share of operations (defaults from CAIRN_FAKE_CUDA_DELAY_US, 200, and
// CAIRN_FAKE_CUDA_DELAY_PERCENT, 10; seed CAIRN_FAKE_CUDA_SEED, 1).
void set_delays(int max_microseconds, int percent);

// What a cuBLASLt heuristic query or matmul is about, for a test's refusal rule.
struct LtQuery {
  int epilogue = 0;  // a cublasLtEpilogue_t
  int64_t m = 0, n = 0, k = 0;
};
// While set, cublasLtMatmulAlgoGetHeuristic returns the rule's status (a cublasStatus_t) when it
// is not CUBLAS_STATUS_SUCCESS, with no algorithm, as cuBLASLt does for an unsupported
// configuration; a rule returning CUBLAS_STATUS_SUCCESS lets the query through. nullptr clears.
void set_lt_heuristic_rule(std::function<int(const LtQuery&)> rule);
// Counters of cuBLASLt and cuBLAS calls that ran (queued, not refused), by kind.
struct BlasCounts {
  int64_t sgemm = 0;
  int64_t lt_matmul = 0;
  int64_t lt_heuristic = 0;
};
BlasCounts blas_counts();

}  // namespace cairn::fake_cuda
