// The fake cuBLAS (v2 API): the handle calls and cublasSgemm that cairn makes, on the CPU, after
// NVIDIA's cuBLAS documentation, stricter than the library where that catches caller bugs.
//
// What it models:
// - A handle is a heap object found through a registry, so a destroyed or garbage handle returns
//   CUBLAS_STATUS_NOT_INITIALIZED instead of being dereferenced. Handle state is guarded by one
//   mutex: cuBLAS may be called "from multiple host threads, even with the same handle", and a
//   configuration change then affects every thread's later calls, which is the caller's to order.
// - cublasSgemm: column-major, op(A) m x k, op(B) k x n, C m x n; the documented refusals
//   ("If m, n, k < 0 or if transa, transb != CUBLAS_OP_N, CUBLAS_OP_C, CUBLAS_OP_T or if
//   lda < max(1, m) if transa == CUBLAS_OP_N and lda < max(1, k) otherwise or if ldb < max(1, k)
//   if transb == CUBLAS_OP_N and ldb < max(1, n) otherwise or if ldc < max(1, m) or if alpha,
//   beta == NULL") return CUBLAS_STATUS_INVALID_VALUE. Every element is computed in double and
//   rounded once. beta == 0 means C is not read ("If beta==0, C does not have to be a valid
//   input"); k == 0 or alpha == 0 means C = beta * C, as the reference BLAS defines it.
// - Host pointer mode: alpha and beta are read when the call is made (so a captured graph
//   replays the values of the capture); device memory there is refused (INVALID_VALUE), as real
//   cuBLAS would dereference it on the host. Device pointer mode: read from device memory when
//   the queued work runs.
// - Every range the GEMM touches (A, B, C exactly as lda/ldb/ldc and the op sizes imply, device
//   scalars, the workspace) must lie inside one live cudaMalloc allocation: otherwise the call
//   returns CUBLAS_STATUS_EXECUTION_FAILED with nothing queued (a GPU would fault, or corrupt
//   memory silently). The ranges are checked again when the work runs.
// - The workspace set by cublasSetWorkspace must be 256-byte aligned ("The workspace pointer has
//   to be aligned to at least 256 bytes, otherwise CUBLAS_STATUS_INVALID_VALUE error is
//   returned"), and each GEMM writes its first 256 bytes when it starts and when it ends, as
//   cuBLAS does use it: two GEMMs sharing one workspace on two unordered streams are a data race
//   under ThreadSanitizer, as on a GPU. A NULL workspace of nonzero size is refused too.
//   cublasSetStream "unconditionally resets the cuBLAS library workspace back to the default
//   workspace pool".
// What it does not model: the default workspace pool itself (cuBLAS's own memory, per stream, so
// nothing of the caller's can race on it; the fake touches nothing for it), minimum workspace
// sizes (any workspace, even none, is enough here), TF32 rounding under CUBLAS_TF32_TENSOR_OP_MATH
// (the math mode is recorded, the arithmetic is always double), atomics (deterministic always),
// and every cuBLAS routine cairn does not call.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "cairn/tests/fake_cuda/blas_common.h"
#include "cairn/tests/fake_cuda/fake_device.h"

// The handle type cublas_api.h only declares.
struct cublasContext {
  static constexpr uint32_t kMagic = 0xB1A5C0DEu;
  uint32_t magic = kMagic;
  cudaStream_t stream = nullptr;  // as set: resolved by enqueue on the calling thread
  void* workspace = nullptr;      // the user's workspace, when user_workspace
  size_t workspace_bytes = 0;
  bool user_workspace = false;  // false: the library's default pool
  cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
  cublasMath_t math_mode = CUBLAS_DEFAULT_MATH;
  cublasAtomicsMode_t atomics_mode = CUBLAS_ATOMICS_NOT_ALLOWED;
};

namespace cairn::fake_cuda {

// For blas_counts() (cublaslt.cpp).
int64_t sgemm_count();

namespace {

struct Registry {
  std::mutex mutex;
  std::set<const cublasContext*> live;
};

// Leaked: a handle may be used by code running during static destruction.
Registry& registry() {
  static auto* r = new Registry();
  return *r;
}

std::atomic<int64_t> g_sgemm_count{0};

cublasStatus_t refuse(cublasStatus_t status, const char* what, const std::string& message) {
  return blas::refuse("cuBLAS", status, what, message);
}

using blas::guarded;
using blas::raw;

// Runs `body` on the live handle with the registry locked; NOT_INITIALIZED for anything else
// (looked up by address first, so a destroyed handle is never dereferenced).
template <typename Body>
cublasStatus_t with_handle(cublasHandle_t handle, Body body) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  if (handle == nullptr || r.live.count(handle) == 0 || handle->magic != cublasContext::kMagic) {
    return CUBLAS_STATUS_NOT_INITIALIZED;
  }
  return body(*handle);
}

bool valid_op(int op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C; }

// Bytes spanned by a column-major rows x cols matrix with leading dimension ld: the last
// column's start plus its rows. Saturates at SIZE_MAX, which no allocation can contain.
size_t matrix_bytes(int64_t rows, int64_t cols, int64_t ld) {
  if (rows <= 0 || cols <= 0) return 0;
  const unsigned __int128 elements =
      (unsigned __int128)(cols - 1) * (unsigned __int128)ld + (unsigned __int128)rows;
  const unsigned __int128 bytes = elements * sizeof(float);
  return bytes > std::numeric_limits<size_t>::max() ? std::numeric_limits<size_t>::max()
                                                    : size_t(bytes);
}

// "lda = 2 < max(1, m = 3)"
std::string too_small(const char* name, int64_t value, const char* bound, int64_t bound_value) {
  return std::string(name) + " = " + std::to_string(value) + " < max(1, " + bound + " = " +
         std::to_string(bound_value) + ")";
}

// The documented INVALID_VALUE cases of cublas<t>gemm, checked in the documented order.
cublasStatus_t check_gemm_arguments(int transa, int transb, int m, int n, int k, const float* alpha,
                                    int lda, int ldb, const float* beta, int ldc) {
  constexpr const char* kWhat = "cublasSgemm";
  const cublasStatus_t invalid = CUBLAS_STATUS_INVALID_VALUE;
  if (m < 0 || n < 0 || k < 0) {
    return refuse(invalid, kWhat,
                  "m, n, k = " + std::to_string(m) + ", " + std::to_string(n) + ", " +
                      std::to_string(k) + ": sizes must not be negative");
  }
  if (!valid_op(transa) || !valid_op(transb)) {
    return refuse(invalid, kWhat,
                  "transa, transb = " + std::to_string(transa) + ", " + std::to_string(transb) +
                      ": each must be CUBLAS_OP_N, _T or _C");
  }
  const bool a_plain = transa == CUBLAS_OP_N, b_plain = transb == CUBLAS_OP_N;
  const int a_rows = a_plain ? m : k, b_rows = b_plain ? k : n;
  if (lda < std::max(1, a_rows)) {
    return refuse(invalid, kWhat, too_small("lda", lda, a_plain ? "m" : "k", a_rows));
  }
  if (ldb < std::max(1, b_rows)) {
    return refuse(invalid, kWhat, too_small("ldb", ldb, b_plain ? "k" : "n", b_rows));
  }
  if (ldc < std::max(1, m)) return refuse(invalid, kWhat, too_small("ldc", ldc, "m", m));
  if (alpha == nullptr || beta == nullptr) {
    return refuse(invalid, kWhat, "alpha and beta must not be NULL");
  }
  return CUBLAS_STATUS_SUCCESS;
}

// One GEMM, as queued: everything copied, so the handle may change or go before it runs.
struct GemmJob {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  int64_t lda = 0;
  const float* b = nullptr;
  int64_t ldb = 0;
  float* c = nullptr;
  int64_t ldc = 0;
  bool device_scalars = false;
  const float* alpha_ptr = nullptr;  // read at run time when device_scalars
  const float* beta_ptr = nullptr;
  float alpha = 0.0f, beta = 0.0f;  // read at call time otherwise
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  std::vector<Range> ranges;  // re-checked at run time
};

// What cuBLAS's kernels do to their workspace: written when the GEMM starts and again when it
// ends, with no lock taken in between, so that two GEMMs sharing it whose runs overlap are
// unordered for ThreadSanitizer however the runtime's own mutexes order the rest. Through a
// volatile pointer: GCC expands a memset of bounded size inline (rep stos), which ThreadSanitizer
// does not see, and then the race would go unreported.
void* (*volatile const g_write_bytes)(void*, int, size_t) = std::memset;

void scribble(void* workspace, size_t bytes) {
  if (workspace != nullptr) g_write_bytes(workspace, 0x5A, std::min<size_t>(bytes, 256));
}

void run_gemm(const GemmJob& job) {
  for (const Range& range : job.ranges) {
    if (!is_device_range(range.ptr, range.bytes)) {
      throw std::runtime_error(std::string("cublasSgemm: argument ") + range.name +
                               " was freed before the GEMM ran");
    }
  }
  scribble(job.workspace, job.workspace_bytes);
  const float alpha = job.device_scalars ? *job.alpha_ptr : job.alpha;
  const float beta = job.device_scalars ? *job.beta_ptr : job.beta;
  const bool multiply = job.k > 0 && alpha != 0.0f;  // else C = beta * C, A and B unread
  for (int64_t j = 0; j < job.n; ++j) {
    for (int64_t i = 0; i < job.m; ++i) {
      double value = 0.0;
      if (multiply) {
        double sum = 0.0;
        for (int64_t l = 0; l < job.k; ++l) {
          const float a = job.trans_a ? job.a[l + i * job.lda] : job.a[i + l * job.lda];
          const float b = job.trans_b ? job.b[j + l * job.ldb] : job.b[l + j * job.ldb];
          sum += double(a) * double(b);
        }
        value = double(alpha) * sum;
      }
      float& c = job.c[i + j * job.ldc];
      if (beta != 0.0f) value += double(beta) * double(c);  // beta == 0: C is not read
      c = float(value);
    }
  }
  scribble(job.workspace, job.workspace_bytes);
}

// Checks the ranges at call time. A refusal leaves no pending CUDA error behind (unless one was
// pending already), so that the caller's next, unrelated launch check does not fail on it.
bool ranges_are_device_memory(const std::vector<Range>& ranges) {
  const bool error_pending = cudaPeekAtLastError() != cudaSuccess;
  for (const Range& range : ranges) {
    if (check_device_ranges("cublasSgemm", {range})) continue;
    if (!error_pending) cudaGetLastError();
    return false;
  }
  return true;
}

cublasStatus_t sgemm(cublasHandle_t handle, int transa, int transb, int m, int n, int k,
                     const float* alpha, const float* A, int lda, const float* B, int ldb,
                     const float* beta, float* C, int ldc) {
  constexpr const char* kWhat = "cublasSgemm";
  cublasContext state;
  const cublasStatus_t found = with_handle(handle, [&](cublasContext& h) {
    state = h;
    return CUBLAS_STATUS_SUCCESS;
  });
  if (found != CUBLAS_STATUS_SUCCESS) return found;
  const cublasStatus_t checked =
      check_gemm_arguments(transa, transb, m, n, k, alpha, lda, ldb, beta, ldc);
  if (checked != CUBLAS_STATUS_SUCCESS) return checked;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;  // nothing to compute or write
  if (C == nullptr) return refuse(CUBLAS_STATUS_INVALID_VALUE, kWhat, "C is NULL");

  GemmJob job;
  job.trans_a = transa != CUBLAS_OP_N;  // real data: CUBLAS_OP_C is CUBLAS_OP_T
  job.trans_b = transb != CUBLAS_OP_N;
  job.m = m, job.n = n, job.k = k;
  job.a = A, job.lda = lda, job.b = B, job.ldb = ldb, job.c = C, job.ldc = ldc;
  job.device_scalars = state.pointer_mode == CUBLAS_POINTER_MODE_DEVICE;
  if (job.device_scalars) {
    job.alpha_ptr = alpha;
    job.beta_ptr = beta;
    job.ranges.push_back(Range{"alpha", alpha, sizeof(float)});
    job.ranges.push_back(Range{"beta", beta, sizeof(float)});
  } else {
    // Host mode: a device address here would be dereferenced on the host by real cuBLAS.
    if (is_device_range(alpha, sizeof(float)) || is_device_range(beta, sizeof(float))) {
      return refuse(CUBLAS_STATUS_INVALID_VALUE, kWhat,
                    "alpha or beta is device memory, but the handle is in host pointer mode");
    }
    job.alpha = *alpha;
    job.beta = *beta;
  }
  job.ranges.push_back(Range{"A", A, matrix_bytes(job.trans_a ? k : m, job.trans_a ? m : k, lda)});
  job.ranges.push_back(Range{"B", B, matrix_bytes(job.trans_b ? n : k, job.trans_b ? k : n, ldb)});
  job.ranges.push_back(Range{"C", C, matrix_bytes(m, n, ldc)});
  if (state.user_workspace && state.workspace_bytes > 0) {
    job.workspace = state.workspace;
    job.workspace_bytes = state.workspace_bytes;
    job.ranges.push_back(Range{"workspace", state.workspace, state.workspace_bytes});
  }
  if (!ranges_are_device_memory(job.ranges)) return CUBLAS_STATUS_EXECUTION_FAILED;
  const cudaError_t queued = enqueue(state.stream, kWhat, [job] { run_gemm(job); });
  if (queued != cudaSuccess) {
    return refuse(CUBLAS_STATUS_EXECUTION_FAILED, kWhat,
                  std::string("the launch failed: ") + cudaGetErrorName(queued));
  }
  g_sgemm_count.fetch_add(1);
  return CUBLAS_STATUS_SUCCESS;
}

bool valid_math_mode(int mode) {
  const int base = mode & ~int(CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  return base == CUBLAS_DEFAULT_MATH || base == CUBLAS_TENSOR_OP_MATH ||
         base == CUBLAS_PEDANTIC_MATH || base == CUBLAS_TF32_TENSOR_OP_MATH;
}

struct StatusText {
  cublasStatus_t status;
  const char* name;
  const char* text;
};

constexpr StatusText kStatusTexts[] = {
    {CUBLAS_STATUS_SUCCESS, "CUBLAS_STATUS_SUCCESS", "success"},
    {CUBLAS_STATUS_NOT_INITIALIZED, "CUBLAS_STATUS_NOT_INITIALIZED",
     "the library was not initialized"},
    {CUBLAS_STATUS_ALLOC_FAILED, "CUBLAS_STATUS_ALLOC_FAILED", "the resource allocation failed"},
    {CUBLAS_STATUS_INVALID_VALUE, "CUBLAS_STATUS_INVALID_VALUE",
     "an invalid numeric value was used as an argument"},
    {CUBLAS_STATUS_ARCH_MISMATCH, "CUBLAS_STATUS_ARCH_MISMATCH",
     "an absent device architectural feature is required"},
    {CUBLAS_STATUS_MAPPING_ERROR, "CUBLAS_STATUS_MAPPING_ERROR",
     "an access to GPU memory space failed"},
    {CUBLAS_STATUS_EXECUTION_FAILED, "CUBLAS_STATUS_EXECUTION_FAILED",
     "the GPU program failed to execute"},
    {CUBLAS_STATUS_INTERNAL_ERROR, "CUBLAS_STATUS_INTERNAL_ERROR", "an internal operation failed"},
    {CUBLAS_STATUS_NOT_SUPPORTED, "CUBLAS_STATUS_NOT_SUPPORTED",
     "the functionality requested is not supported"},
    {CUBLAS_STATUS_LICENSE_ERROR, "CUBLAS_STATUS_LICENSE_ERROR",
     "the functionality requested requires some license"},
};

const StatusText* status_text(int status) {
  for (const StatusText& text : kStatusTexts) {
    if (text.status == status) return &text;
  }
  return nullptr;
}

}  // namespace

int64_t sgemm_count() { return g_sgemm_count.load(); }

}  // namespace cairn::fake_cuda

using namespace cairn::fake_cuda;  // NOLINT: this file implements a C API

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  return guarded([&] {
    if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    auto* created = new cublasContext();
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    r.live.insert(created);
    *handle = created;
    return CUBLAS_STATUS_SUCCESS;
  });
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  return guarded([&] {
    {
      Registry& r = registry();
      std::lock_guard<std::mutex> lock(r.mutex);
      if (handle == nullptr || r.live.erase(handle) == 0) return CUBLAS_STATUS_NOT_INITIALIZED;
      handle->magic = 0;
      delete handle;
    }
    // "the release of those resources by calling cublasDestroy() will implicitly call
    // cudaDeviceSynchronize()": the fake's queued work owns copies, but callers may rely on the
    // synchronisation.
    cudaDeviceSynchronize();
    return CUBLAS_STATUS_SUCCESS;
  });
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId) {
  return guarded([&] {
    return with_handle(handle, [&](cublasContext& h) {
      h.stream = streamId;
      // "cublasSetStream() unconditionally resets the cuBLAS library workspace back to the
      // default workspace pool".
      h.user_workspace = false;
      h.workspace = nullptr;
      h.workspace_bytes = 0;
      return CUBLAS_STATUS_SUCCESS;
    });
  });
}

cublasStatus_t cublasGetStream_v2(cublasHandle_t handle, cudaStream_t* streamId) {
  return guarded([&] {
    return with_handle(handle, [&](cublasContext& h) {
      if (streamId == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
      *streamId = h.stream;
      return CUBLAS_STATUS_SUCCESS;
    });
  });
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace,
                                     size_t workspaceSizeInBytes) {
  return guarded([&] {
    return with_handle(handle, [&](cublasContext& h) {
      if (reinterpret_cast<uintptr_t>(workspace) % 256 != 0) {
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasSetWorkspace",
                      "the workspace must be aligned to at least 256 bytes");
      }
      if (workspace == nullptr && workspaceSizeInBytes > 0) {  // stricter than cuBLAS
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasSetWorkspace",
                      "a NULL workspace of " + std::to_string(workspaceSizeInBytes) + " bytes");
      }
      h.user_workspace = true;  // even 0 bytes: the default pool is no longer used
      h.workspace = workspace;
      h.workspace_bytes = workspaceSizeInBytes;
      return CUBLAS_STATUS_SUCCESS;
    });
  });
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  return guarded([&] {
    return with_handle(handle, [&](cublasContext& h) {
      if (!valid_math_mode(raw(mode))) return CUBLAS_STATUS_INVALID_VALUE;
      h.math_mode = mode;
      return CUBLAS_STATUS_SUCCESS;
    });
  });
}

cublasStatus_t cublasSetAtomicsMode(cublasHandle_t handle, cublasAtomicsMode_t mode) {
  return guarded([&] {
    return with_handle(handle, [&](cublasContext& h) {
      if (raw(mode) != CUBLAS_ATOMICS_NOT_ALLOWED && raw(mode) != CUBLAS_ATOMICS_ALLOWED) {
        return CUBLAS_STATUS_INVALID_VALUE;
      }
      h.atomics_mode = mode;
      return CUBLAS_STATUS_SUCCESS;
    });
  });
}

cublasStatus_t cublasGetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t* mode) {
  return guarded([&] {
    return with_handle(handle, [&](cublasContext& h) {
      if (mode == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
      *mode = h.pointer_mode;
      return CUBLAS_STATUS_SUCCESS;
    });
  });
}

cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t mode) {
  return guarded([&] {
    return with_handle(handle, [&](cublasContext& h) {
      if (raw(mode) != CUBLAS_POINTER_MODE_HOST && raw(mode) != CUBLAS_POINTER_MODE_DEVICE) {
        return CUBLAS_STATUS_INVALID_VALUE;
      }
      h.pointer_mode = mode;
      return CUBLAS_STATUS_SUCCESS;
    });
  });
}

cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa,
                              cublasOperation_t transb, int m, int n, int k, const float* alpha,
                              const float* A, int lda, const float* B, int ldb, const float* beta,
                              float* C, int ldc) {
  return guarded([&] {
    return sgemm(handle, raw(transa), raw(transb), m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  });
}

const char* cublasGetStatusName(cublasStatus_t status) {
  const StatusText* text = status_text(raw(status));
  return text != nullptr ? text->name : "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t status) {
  const StatusText* text = status_text(raw(status));
  return text != nullptr ? text->text : "unknown error";
}

}  // extern "C"
