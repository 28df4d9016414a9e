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

#include "cairn/base/handles.h"

namespace cairn::kernels {

// The CUDA launchers take the caller's stream as an opaque handle (a cudaStream_t), so that these
// headers need no CUDA include.
using cairn::BlasHandle;
using cairn::LtHandle;
using cairn::StreamHandle;

// Whether a kernel overwrites its output or adds into it. Never a bool.
enum class Accumulate { kOverwrite, kAdd };

}  // namespace cairn::kernels
