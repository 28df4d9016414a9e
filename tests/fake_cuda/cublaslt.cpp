// The fake cuBLASLt: the descriptor, heuristic and matmul calls cairn makes, on the CPU, after
// NVIDIA's cuBLASLt documentation and cublasLt.h, stricter than the library where that catches
// caller bugs.
//
// What it models:
// - Handles, matmul descriptors, layouts and preferences are heap objects found through one
//   registry (one mutex), so a destroyed or foreign one is refused, never dereferenced. Descriptors
//   keep TRANSA, TRANSB, EPILOGUE, BIAS_POINTER; preferences MAX_WORKSPACE_BYTES and
//   MIN_ALIGNMENT_{A,B,C,D}_BYTES (default 256, as documented). Other attributes, and sizes that
//   do not match the attribute's type, are CUBLAS_STATUS_INVALID_VALUE.
// - One algorithm. It needs 16-byte aligned A, B, C, D: the docs' Tensor Core rule ("pointers and
//   matrix dimension must support 16-byte alignment"). The docs state no bias alignment; cublasLt.h
//   says routines that do not dereference the bias pointer, like the heuristic, "depend on its
//   value to determine expected pointer alignment", so the fake asks 16 bytes of it too. It uses
//   min(4 KiB, MAX_WORKSPACE_BYTES) of workspace. The heuristic returns none (NOT_SUPPORTED,
//   count 0) when a MIN_ALIGNMENT preference or the bias pointer is weaker, or when the rule of
//   set_lt_heuristic_rule (control.h) says so. Its algo carries a magic, its needs and a checksum.
// - cublasLtMatmul: CUBLAS_STATUS_INVALID_VALUE for an algo the heuristic did not make, an A, B, C,
//   D or bias pointer less aligned than the algo needs, workspaceSizeInBytes below its need, a
//   workspace not 256-byte aligned ("Must be 256B aligned"), layouts that do not make op(A) m x k,
//   op(B) k x n, C and D m x n, C == D with another layout (in place is "C == D and Cdesc ==
//   Ddesc"), needed NULL pointers, and alpha / beta in device memory (host pointer mode only).
//   Every range it touches (sized from the layouts) must lie in live device memory, else
//   CUBLAS_STATUS_EXECUTION_FAILED with nothing queued; the ranges are checked again at run time.
// - Epilogues DEFAULT, RELU, BIAS, RELU_BIAS (D = act(alpha op(A) op(B) + beta C + bias), one bias
//   value per row of D) and BGRADB (the bias pointer receives the sum of op(B) over k, "length that
//   matches the number of columns of matrix D"); others are NOT_SUPPORTED. ReLU maps NaN to 0.
// - CUBLAS_COMPUTE_32F and CUBLAS_COMPUTE_32F_FAST_TF32 on float data: each element is computed
//   in double and rounded once. TF32's input rounding is not modelled (full FP32 accuracy).
// - The queued work writes the workspace the algo uses, so two matmuls sharing one workspace on
//   unordered streams race under ThreadSanitizer, as they do on a GPU.
// What it does not model: device pointer modes, batches, orders other than column-major, other
// types, leading-dimension alignment (the heuristic sees ld in the layout, so no caller mistake
// hides there), and every cuBLASLt call cairn does not make.
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "cairn/tests/fake_cuda/control.h"
#include "cairn/tests/fake_cuda/blas_common.h"
#include "cairn/tests/fake_cuda/fake_device.h"

// The handle type cublasLt.h only declares. It holds nothing: it is known by its address.
struct cublasLtContext {
  static constexpr int kKind = 1;
};

namespace cairn::fake_cuda {

int64_t sgemm_count();  // cublas.cpp

namespace {

constexpr uint32_t kAlignment = 16;  // A, B, C, D and bias, for the one algorithm
constexpr uintptr_t kWorkspaceAlignment = 256;
constexpr uint64_t kAlgoWorkspaceBytes = 4096;
constexpr uint64_t kAlgoMagic = 0xFA4EA1600000C0DEull;

struct MatmulDesc {
  static constexpr int kKind = 2;
  int compute = CUBLAS_COMPUTE_32F;
  int scale = CUDA_R_32F;
  int32_t trans[2] = {CUBLAS_OP_N, CUBLAS_OP_N};  // A, B
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
};

struct Layout {
  static constexpr int kKind = 3;
  int type = CUDA_R_32F;
  int64_t rows = 0, cols = 0, ld = 0;
};

struct Preference {
  static constexpr int kKind = 4;
  uint64_t max_workspace = 0;
  uint32_t min_alignment[4] = {256, 256, 256, 256};  // A, B, C, D
};

struct Registry {
  std::mutex mutex;
  std::map<const void*, int> live;  // every live object, by address, with its kind
  std::function<int(const LtQuery&)> rule;
  std::atomic<int64_t> matmuls{0}, heuristics{0};
};

// Leaked: cairn's per-thread descriptor caches are never destroyed either.
Registry& registry() {
  static auto* r = new Registry();
  return *r;
}

cublasStatus_t refuse(cublasStatus_t status, const char* what, const std::string& message) {
  return blas::refuse("cuBLASLt", status, what, message);
}

using blas::guarded;
using blas::raw;

// The live `Object` behind an opaque handle, or nullptr. Call with the registry locked.
template <typename Object>
Object* find(const void* handle) {
  const auto& live = registry().live;
  const auto it = live.find(handle);
  return it != live.end() && it->second == Object::kKind
             ? static_cast<Object*>(const_cast<void*>(handle))
             : nullptr;
}

// Registers a new `Object` and hands it out as the API's opaque pointer type.
template <typename Object, typename Handle>
cublasStatus_t create(Handle* out, const Object& value) {
  if (out == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  auto* object = new Object(value);
  std::lock_guard<std::mutex> lock(registry().mutex);
  registry().live.emplace(object, Object::kKind);
  *out = reinterpret_cast<Handle>(object);
  return CUBLAS_STATUS_SUCCESS;
}

// NULL is a no-op; an unknown or already destroyed object is `unknown`.
template <typename Object>
cublasStatus_t destroy(const void* handle, cublasStatus_t unknown) {
  if (handle == nullptr && unknown != CUBLAS_STATUS_NOT_INITIALIZED) return CUBLAS_STATUS_SUCCESS;
  std::lock_guard<std::mutex> lock(registry().mutex);
  Object* object = find<Object>(handle);
  if (object == nullptr) return unknown;
  registry().live.erase(handle);
  delete object;
  return CUBLAS_STATUS_SUCCESS;
}

// Applies `set` to the live `Object`; one refusal for every way an attribute can be wrong.
template <typename Object, typename Set>
cublasStatus_t set_attribute(const char* what, const void* handle, int attribute, Set set) {
  std::lock_guard<std::mutex> lock(registry().mutex);
  Object* object = find<Object>(handle);
  if (object != nullptr && set(*object)) return CUBLAS_STATUS_SUCCESS;
  return refuse(CUBLAS_STATUS_INVALID_VALUE, what,
                "attribute " + std::to_string(attribute) +
                    ": unknown descriptor, attribute the fake does not model, NULL buffer, size "
                    "that does not match the attribute's type, or invalid value");
}

template <typename T>
bool read_attribute(const void* buf, size_t size, T* value) {
  if (buf == nullptr || size != sizeof(T)) return false;
  std::memcpy(value, buf, sizeof(T));
  return true;
}

bool set_desc(MatmulDesc& desc, int attr, const void* buf, size_t size) {
  int32_t op = 0;
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB:
      if (!read_attribute(buf, size, &op)) return false;
      if (op != CUBLAS_OP_N && op != CUBLAS_OP_T && op != CUBLAS_OP_C) return false;
      desc.trans[attr == CUBLASLT_MATMUL_DESC_TRANSB] = op;
      return true;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:  // any value: the heuristic judges it
      return read_attribute(buf, size, &desc.epilogue);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      return read_attribute(buf, size, &desc.bias);
    default:
      return false;
  }
}

bool set_preference(Preference& pref, int attr, const void* buf, size_t size) {
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
      return read_attribute(buf, size, &pref.max_workspace);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
      return read_attribute(buf, size,
                            &pref.min_alignment[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES]);
    default:
      return false;
  }
}

uint32_t alignment_of(const void* pointer) {
  const auto address = reinterpret_cast<uintptr_t>(pointer);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

// Bytes spanned by a column-major rows x cols float matrix with leading dimension ld, saturating.
size_t matrix_bytes(int64_t rows, int64_t cols, int64_t ld) {
  if (rows <= 0 || cols <= 0) return 0;
  const unsigned __int128 bytes =
      ((unsigned __int128)(cols - 1) * (unsigned __int128)ld + (unsigned __int128)rows) * 4;
  return bytes > std::numeric_limits<size_t>::max() ? std::numeric_limits<size_t>::max()
                                                    : size_t(bytes);
}

bool adds_bias(uint32_t e) {
  return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_RELU_BIAS;
}
bool applies_relu(uint32_t e) {
  return e == CUBLASLT_EPILOGUE_RELU || e == CUBLASLT_EPILOGUE_RELU_BIAS;
}
bool uses_bias(uint32_t e) { return adds_bias(e) || e == CUBLASLT_EPILOGUE_BGRADB; }
bool modelled_epilogue(uint32_t e) {
  return e == CUBLASLT_EPILOGUE_DEFAULT || applies_relu(e) || uses_bias(e);
}

// A matmul's descriptors, copied out of the registry, and the sizes they imply.
struct Problem {
  MatmulDesc desc;
  Layout a, b, c, d;
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
};

std::string shape(const Layout& l) {
  return std::to_string(l.rows) + " x " + std::to_string(l.cols);
}

// Looks the descriptors up (Cdesc may be omitted: "this function assumes it to be equal to
// Ddesc") and checks that they describe one matmul (INVALID_VALUE) the fake models
// (NOT_SUPPORTED, checked last: a valid configuration cuBLASLt has no algorithm for).
cublasStatus_t load_problem(const char* what, cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                            cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                            cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d, Problem* p) {
  {
    std::lock_guard<std::mutex> lock(registry().mutex);
    if (find<cublasLtContext>(handle) == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
    const MatmulDesc* found_desc = find<MatmulDesc>(desc);
    const Layout *found_a = find<Layout>(a), *found_b = find<Layout>(b), *found_d = find<Layout>(d);
    const Layout* found_c = c == nullptr ? found_d : find<Layout>(c);
    if (!found_desc || !found_a || !found_b || !found_c || !found_d) {
      return refuse(CUBLAS_STATUS_INVALID_VALUE, what, "a NULL, destroyed or unknown descriptor");
    }
    p->desc = *found_desc, p->a = *found_a, p->b = *found_b, p->c = *found_c, p->d = *found_d;
  }
  p->trans_a = p->desc.trans[0] != CUBLAS_OP_N;  // real data: CUBLAS_OP_C is CUBLAS_OP_T
  p->trans_b = p->desc.trans[1] != CUBLAS_OP_N;
  p->m = p->d.rows;
  p->n = p->d.cols;
  p->k = p->trans_a ? p->a.rows : p->a.cols;
  const int64_t a_rows = p->trans_a ? p->a.cols : p->a.rows;
  const int64_t b_rows = p->trans_b ? p->b.cols : p->b.rows;
  const int64_t b_cols = p->trans_b ? p->b.rows : p->b.cols;
  if (a_rows != p->m || b_rows != p->k || b_cols != p->n || p->c.rows != p->m ||
      p->c.cols != p->n) {
    return refuse(CUBLAS_STATUS_INVALID_VALUE, what,
                  "layouts A " + shape(p->a) + ", B " + shape(p->b) + ", C " + shape(p->c) +
                      ", D " + shape(p->d) + " do not make op(A) m x k, op(B) k x n, C, D m x n");
  }
  const bool float_data = p->a.type == CUDA_R_32F && p->b.type == CUDA_R_32F &&
                          p->c.type == CUDA_R_32F && p->d.type == CUDA_R_32F;
  const int compute = p->desc.compute;
  if (!float_data || p->desc.scale != CUDA_R_32F ||
      (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32)) {
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, what,
                  "only CUDA_R_32F data and scale, CUBLAS_COMPUTE_32F(_FAST_TF32) are modelled");
  }
  if (!modelled_epilogue(p->desc.epilogue)) {
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, what,
                  "epilogue " + std::to_string(p->desc.epilogue) + " is not modelled");
  }
  return CUBLAS_STATUS_SUCCESS;
}

// The algo: a magic, the alignment and workspace it needs, and a checksum over them.
struct AlgoNeeds {
  uint64_t alignment = 0, workspace = 0;
};

uint64_t checksum(const uint64_t* data) {
  return (data[0] ^ (data[1] * 0x9E3779B97F4A7C15ull) ^ (data[2] * 0xC2B2AE3D27D4EB4Full)) + 1;
}

cublasLtMatmulAlgo_t make_algo(const AlgoNeeds& needs) {
  cublasLtMatmulAlgo_t algo{};
  algo.data[0] = kAlgoMagic;
  algo.data[1] = needs.alignment;
  algo.data[2] = needs.workspace;
  algo.data[3] = checksum(algo.data);
  return algo;
}

bool read_algo(const cublasLtMatmulAlgo_t& algo, AlgoNeeds* needs) {
  if (algo.data[0] != kAlgoMagic || algo.data[3] != checksum(algo.data)) return false;
  needs->alignment = algo.data[1];
  needs->workspace = algo.data[2];
  return true;
}

// The heuristic's decision: the test's rule first, then what the one algorithm needs against
// what the preference promises and the bias pointer's value.
cublasStatus_t choose_algo(const Problem& p, const Preference& pref, AlgoNeeds* needs) {
  std::function<int(const LtQuery&)> rule;
  {
    std::lock_guard<std::mutex> lock(registry().mutex);
    rule = registry().rule;
  }
  if (rule) {
    LtQuery query;
    query.epilogue = int(p.desc.epilogue);
    query.m = p.m, query.n = p.n, query.k = p.k;
    const int status = rule(query);  // unlocked: the rule may call anything
    if (status != CUBLAS_STATUS_SUCCESS) return cublasStatus_t(status);
  }
  for (uint32_t promised : pref.min_alignment) {
    if (promised < kAlignment) return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (uses_bias(p.desc.epilogue) && alignment_of(p.desc.bias) < kAlignment) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  needs->alignment = kAlignment;
  needs->workspace = std::min(pref.max_workspace, kAlgoWorkspaceBytes);
  return CUBLAS_STATUS_SUCCESS;
}

// One matmul, as queued: copies only, so descriptors may change or go before it runs.
struct MatmulJob {
  Problem p;
  float alpha = 0.0f, beta = 0.0f;
  const float *a = nullptr, *b = nullptr, *c = nullptr;
  float* d = nullptr;
  float* bias = nullptr;  // read (BIAS) or written (BGRADB)
  void* workspace = nullptr;
  size_t workspace_used = 0;
  std::vector<Range> ranges;  // re-checked at run time
};

// What cuBLASLt's kernels do to their workspace: written when the matmul starts and again when
// it ends, with no lock taken in between, so that two matmuls sharing it whose runs overlap are
// unordered for ThreadSanitizer however the runtime's own mutexes order the rest. Through a
// volatile pointer, so that no compiler expands it inline, out of ThreadSanitizer's sight.
void* (*volatile const g_write_bytes)(void*, int, size_t) = std::memset;

void scribble(const MatmulJob& job) {
  if (job.workspace != nullptr) g_write_bytes(job.workspace, 0x5A, job.workspace_used);
}

void run_matmul(const MatmulJob& job) {
  for (const Range& range : job.ranges) {
    if (!is_device_range(range.ptr, range.bytes)) {
      throw std::runtime_error(std::string("cublasLtMatmul: argument ") + range.name +
                               " was freed before the matmul ran");
    }
  }
  scribble(job);
  const Problem& p = job.p;
  auto op_a = [&](int64_t i, int64_t l) {
    return p.trans_a ? job.a[l + i * p.a.ld] : job.a[i + l * p.a.ld];
  };
  auto op_b = [&](int64_t l, int64_t j) {
    return p.trans_b ? job.b[j + l * p.b.ld] : job.b[l + j * p.b.ld];
  };
  const uint32_t epilogue = p.desc.epilogue;
  for (int64_t j = 0; epilogue == CUBLASLT_EPILOGUE_BGRADB && j < p.n; ++j) {
    double sum = 0.0;
    for (int64_t l = 0; l < p.k; ++l) sum += double(op_b(l, j));
    job.bias[j] = float(sum);
  }
  const bool multiply = p.k > 0 && job.alpha != 0.0f;  // else D = beta C: A, B unread
  for (int64_t j = 0; j < p.n; ++j) {
    for (int64_t i = 0; i < p.m; ++i) {
      double value = 0.0;
      if (multiply) {
        double sum = 0.0;
        for (int64_t l = 0; l < p.k; ++l) sum += double(op_a(i, l)) * double(op_b(l, j));
        value = double(job.alpha) * sum;
      }
      if (job.beta != 0.0f) value += double(job.beta) * double(job.c[i + j * p.c.ld]);
      if (adds_bias(epilogue)) value += double(job.bias[i]);
      if (applies_relu(epilogue)) value = value > 0.0 ? value : 0.0;  // as fmaxf(x, 0)
      job.d[i + j * p.d.ld] = float(value);
    }
  }
  scribble(job);
}

// Argument checks against the algo (INVALID_VALUE, before anything is queued), then the ranges
// in device memory (EXECUTION_FAILED). A range refusal leaves no CUDA error pending (unless one
// already was), so that the caller's next, unrelated launch check does not fail on it.
cublasStatus_t check_operands(MatmulJob& job, const AlgoNeeds& needs, size_t workspace_bytes) {
  constexpr const char* kWhat = "cublasLtMatmul";
  const Problem& p = job.p;
  const size_t bias_elements = p.desc.epilogue == CUBLASLT_EPILOGUE_BGRADB ? p.n : p.m;
  const Range operands[] = {
      {"A", job.a, matrix_bytes(p.a.rows, p.a.cols, p.a.ld)},
      {"B", job.b, matrix_bytes(p.b.rows, p.b.cols, p.b.ld)},
      {"C", job.c, job.beta != 0.0f ? matrix_bytes(p.m, p.n, p.c.ld) : 0},  // beta 0: unread
      {"D", job.d, matrix_bytes(p.m, p.n, p.d.ld)},
      {"bias", job.bias, uses_bias(p.desc.epilogue) ? bias_elements * sizeof(float) : 0}};
  for (const Range& operand : operands) {
    if (operand.bytes == 0) continue;
    const uint32_t alignment = alignment_of(operand.ptr);
    if (operand.ptr == nullptr || alignment < needs.alignment) {
      return refuse(CUBLAS_STATUS_INVALID_VALUE, kWhat,
                    std::string(operand.name) + " is NULL or " + std::to_string(alignment) +
                        "-byte aligned; the algo needs " + std::to_string(needs.alignment));
    }
    job.ranges.push_back(operand);
  }
  if (workspace_bytes < needs.workspace || (needs.workspace > 0 && job.workspace == nullptr) ||
      reinterpret_cast<uintptr_t>(job.workspace) % kWorkspaceAlignment != 0) {
    return refuse(CUBLAS_STATUS_INVALID_VALUE, kWhat,
                  "a workspace of " + std::to_string(workspace_bytes) + " bytes, " +
                      std::to_string(alignment_of(job.workspace)) + "-byte aligned; the algo " +
                      "needs " + std::to_string(needs.workspace) + ", 256-byte aligned");
  }
  if (job.workspace != nullptr && workspace_bytes > 0) {
    job.ranges.push_back(Range{"workspace", job.workspace, workspace_bytes});
  }
  const bool error_pending = cudaPeekAtLastError() != cudaSuccess;
  for (const Range& range : job.ranges) {
    if (check_device_ranges(kWhat, {range})) continue;
    if (!error_pending) cudaGetLastError();
    return CUBLAS_STATUS_EXECUTION_FAILED;
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

// ---- control.h ----

void set_lt_heuristic_rule(std::function<int(const LtQuery&)> rule) {
  std::lock_guard<std::mutex> lock(registry().mutex);
  registry().rule = std::move(rule);
}

BlasCounts blas_counts() {
  BlasCounts counts;
  counts.sgemm = sgemm_count();
  counts.lt_matmul = registry().matmuls.load();
  counts.lt_heuristic = registry().heuristics.load();
  return counts;
}

}  // namespace cairn::fake_cuda

using namespace cairn::fake_cuda;  // NOLINT: this file implements a C API

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* lightHandle) {
  return guarded([&] { return create(lightHandle, cublasLtContext{}); });
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t lightHandle) {
  return guarded(
      [&] { return destroy<cublasLtContext>(lightHandle, CUBLAS_STATUS_NOT_INITIALIZED); });
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* matmulDesc,
                                        cublasComputeType_t computeType, cudaDataType_t scaleType) {
  return guarded([&] {
    MatmulDesc desc;
    desc.compute = raw(computeType);  // judged by the heuristic, as the epilogue is
    desc.scale = raw(scaleType);
    return create(matmulDesc, desc);
  });
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t matmulDesc) {
  return guarded([&] { return destroy<MatmulDesc>(matmulDesc, CUBLAS_STATUS_INVALID_VALUE); });
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t matmulDesc,
                                              cublasLtMatmulDescAttributes_t attr, const void* buf,
                                              size_t sizeInBytes) {
  return guarded([&] {
    return set_attribute<MatmulDesc>(
        "cublasLtMatmulDescSetAttribute", matmulDesc, raw(attr),
        [&](MatmulDesc& d) { return set_desc(d, raw(attr), buf, sizeInBytes); });
  });
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* matLayout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  return guarded([&] {
    constexpr uint64_t kMax = uint64_t(std::numeric_limits<int64_t>::max());
    if (rows > kMax || cols > kMax || ld < 0 || uint64_t(ld) < rows) {
      return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatrixLayoutCreate",
                    "rows " + std::to_string(rows) + ", cols " + std::to_string(cols) + ", ld " +
                        std::to_string(ld) + ": ld must be at least rows");
    }
    Layout layout;
    layout.type = raw(type);
    layout.rows = int64_t(rows), layout.cols = int64_t(cols), layout.ld = ld;
    return create(matLayout, layout);
  });
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t matLayout) {
  return guarded([&] { return destroy<Layout>(matLayout, CUBLAS_STATUS_INVALID_VALUE); });
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  return guarded([&] { return create(pref, Preference{}); });
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  return guarded([&] { return destroy<Preference>(pref, CUBLAS_STATUS_INVALID_VALUE); });
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void* buf, size_t sizeInBytes) {
  return guarded([&] {
    return set_attribute<Preference>(
        "cublasLtMatmulPreferenceSetAttribute", pref, raw(attr),
        [&](Preference& p) { return set_preference(p, raw(attr), buf, sizeInBytes); });
  });
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t operationDesc, cublasLtMatrixLayout_t Adesc,
    cublasLtMatrixLayout_t Bdesc, cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
    cublasLtMatmulPreference_t preference, int requestedAlgoCount,
    cublasLtMatmulHeuristicResult_t heuristicResultsArray[], int* returnAlgoCount) {
  return guarded([&] {
    constexpr const char* kWhat = "cublasLtMatmulAlgoGetHeuristic";
    if (returnAlgoCount != nullptr) *returnAlgoCount = 0;
    Problem p;
    const cublasStatus_t loaded =
        load_problem(kWhat, lightHandle, operationDesc, Adesc, Bdesc, Cdesc, Ddesc, &p);
    if (loaded != CUBLAS_STATUS_SUCCESS && loaded != CUBLAS_STATUS_NOT_SUPPORTED) return loaded;
    Preference pref;
    {
      std::lock_guard<std::mutex> lock(registry().mutex);
      const Preference* found = find<Preference>(preference);
      if (found != nullptr) pref = *found;
      if (found == nullptr || requestedAlgoCount <= 0 || heuristicResultsArray == nullptr ||
          returnAlgoCount == nullptr) {
        return refuse(CUBLAS_STATUS_INVALID_VALUE, kWhat,
                      "an unknown preference, requestedAlgoCount <= 0 or a NULL result pointer");
      }
    }
    registry().heuristics.fetch_add(1);  // every query with valid arguments, answered or not
    if (loaded != CUBLAS_STATUS_SUCCESS) return loaded;
    AlgoNeeds needs;
    const cublasStatus_t status = choose_algo(p, pref, &needs);
    if (status != CUBLAS_STATUS_SUCCESS) return status;
    cublasLtMatmulHeuristicResult_t& result = heuristicResultsArray[0];
    result = cublasLtMatmulHeuristicResult_t{};
    result.algo = make_algo(needs);
    result.workspaceSize = size_t(needs.workspace);
    result.state = CUBLAS_STATUS_SUCCESS;
    result.wavesCount = 1.0f;
    *returnAlgoCount = 1;
    return CUBLAS_STATUS_SUCCESS;
  });
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t computeDesc,
                              const void* alpha, const void* A, cublasLtMatrixLayout_t Adesc,
                              const void* B, cublasLtMatrixLayout_t Bdesc, const void* beta,
                              const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t* algo,
                              void* workspace, size_t workspaceSizeInBytes, cudaStream_t stream) {
  return guarded([&] {
    constexpr const char* kWhat = "cublasLtMatmul";
    MatmulJob job;
    cublasStatus_t status =
        load_problem(kWhat, lightHandle, computeDesc, Adesc, Bdesc, Cdesc, Ddesc, &job.p);
    if (status != CUBLAS_STATUS_SUCCESS) return status;
    if (C == D && C != nullptr && job.p.c.ld != job.p.d.ld) {
      return refuse(CUBLAS_STATUS_INVALID_VALUE, kWhat, "C == D in place needs Cdesc == Ddesc");
    }
    if (alpha == nullptr || beta == nullptr || is_device_range(alpha, sizeof(float)) ||
        is_device_range(beta, sizeof(float))) {
      return refuse(CUBLAS_STATUS_INVALID_VALUE, kWhat,
                    "alpha and beta must be host pointers (only host pointer mode is modelled)");
    }
    AlgoNeeds needs;
    if (algo == nullptr) {
      // "When NULL, an implicit heuristics query with default search preferences".
      status = choose_algo(job.p, Preference{}, &needs);
      if (status != CUBLAS_STATUS_SUCCESS) return status;
    } else if (!read_algo(*algo, &needs)) {
      return refuse(CUBLAS_STATUS_INVALID_VALUE, kWhat,
                    "the algo was not made by cublasLtMatmulAlgoGetHeuristic");
    }
    job.alpha = *static_cast<const float*>(alpha);  // host mode: read now, also when captured
    job.beta = *static_cast<const float*>(beta);
    job.a = static_cast<const float*>(A);
    job.b = static_cast<const float*>(B);
    job.c = static_cast<const float*>(C);
    job.d = static_cast<float*>(D);
    if (uses_bias(job.p.desc.epilogue)) {
      job.bias = static_cast<float*>(const_cast<void*>(job.p.desc.bias));
    }
    job.workspace = workspace;
    job.workspace_used = size_t(needs.workspace);
    status = check_operands(job, needs, workspaceSizeInBytes);
    if (status != CUBLAS_STATUS_SUCCESS) return status;
    const cudaError_t queued = enqueue(stream, kWhat, [job] { run_matmul(job); });
    if (queued != cudaSuccess) {
      return refuse(CUBLAS_STATUS_EXECUTION_FAILED, kWhat,
                    std::string("the launch failed: ") + cudaGetErrorName(queued));
    }
    registry().matmuls.fetch_add(1);
    return CUBLAS_STATUS_SUCCESS;
  });
}

}  // extern "C"
