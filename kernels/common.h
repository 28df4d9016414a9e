// Vocabulary shared by every kernel family, CPU and CUDA alike.
//
// Headers under kernels/ hold no CUDA syntax: host code and tests include them with the host
// compiler. The one exception is CAIRN_HOST_DEVICE, which expands to nothing outside nvcc.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define CAIRN_HOST_DEVICE __host__ __device__
#else
#define CAIRN_HOST_DEVICE
#endif

// The CUDA launchers take the caller's stream as an opaque handle (a cudaStream_t), so that these
// headers need no CUDA include.
struct CUstream_st;
struct cublasContext;

namespace cairn::kernels {

using StreamHandle = CUstream_st*;  // == cudaStream_t
using BlasHandle = cublasContext*;  // == cublasHandle_t

// Whether a kernel overwrites its output or adds into it. Never a bool.
enum class Accumulate { kOverwrite, kAdd };

}  // namespace cairn::kernels
