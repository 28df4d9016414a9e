// What every op implementation shares: argument checks with the op's name in the message, and the
// one place where an op picks the CPU or the CUDA kernel.
#pragma once

#include <memory>

#include "cairn/core/cuda_context.h"
#include "cairn/base/error.h"
#include "cairn/core/storage.h"
#include "cairn/core/tensor.h"

namespace cairn::ops::detail {

inline void check_defined(const char* op, const Tensor& x, const char* role) {
  CAIRN_CHECK(x.defined(), op, ": ", role, " is an undefined tensor");
}

inline void check_float(const char* op, const Tensor& x, const char* role = "input") {
  check_defined(op, x, role);
  CAIRN_CHECK(x.dtype() == DType::kFloat32, op, ": ", role, " must be float32, got ",
              dtype_name(x.dtype()), " of shape ", shape_str(x.shape()));
}

inline void check_same_device(const char* op, const Tensor& a, const Tensor& b) {
  CAIRN_CHECK(a.device() == b.device(), op, ": tensors are on different devices: ", a.device(), " ",
              shape_str(a.shape()), " and ", b.device(), " ", shape_str(b.shape()));
}

inline void check_matrix(const char* op, const Tensor& x, const char* role) {
  CAIRN_CHECK(x.ndim() == 2, op, ": ", role, " must be 2-d, got shape ", shape_str(x.shape()));
}

// The last axis is the row; everything before it counts rows. A 0-d tensor is one 1-wide row.
inline int64_t cols_of(const Tensor& x) { return x.ndim() == 0 ? 1 : x.dim(-1); }
inline int64_t rows_of(const Tensor& x) {
  int64_t rows = 1;
  for (int64_t axis = 0; axis + 1 < x.ndim(); ++axis) rows *= x.shape()[size_t(axis)];
  return rows;
}

// Runs the CPU or the CUDA launcher for `device`; the CUDA one gets the current stream with the
// device made current.
template <typename OnCpu, typename OnCuda>
void dispatch(const Device& device, OnCpu&& on_cpu, OnCuda&& on_cuda) {
  if (device.is_cuda()) {
    cuda::DeviceGuard guard(device);
    on_cuda(cuda::current_stream(device));
  } else {
    on_cpu();
  }
}

// Scratch memory for one op (CUB's temporaries). Freed blocks go back to the caching allocator's
// list for the current stream, and are only reused by later work on that stream, so returning it
// as soon as the op has been queued is safe.
inline std::shared_ptr<Storage> workspace(const Device& device, size_t bytes) {
  return Storage::allocate(bytes, device);
}

}  // namespace cairn::ops::detail
