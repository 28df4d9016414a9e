#include "cairn/base/error.h"

#include <cublas_api.h>
#include <cuda_runtime_api.h>
#include <curand.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace cairn {
namespace {

std::atomic<bool>& sync_flag() {
  static std::atomic<bool> flag{[] {
    const char* env = std::getenv("CAIRN_SYNC_LAUNCHES");
    return env != nullptr && env[0] != '\0' && std::strcmp(env, "0") != 0;
  }()};
  return flag;
}

const char* curand_status_name(int status) {
  switch (status) {
    case CURAND_STATUS_VERSION_MISMATCH:
      return "CURAND_STATUS_VERSION_MISMATCH";
    case CURAND_STATUS_NOT_INITIALIZED:
      return "CURAND_STATUS_NOT_INITIALIZED";
    case CURAND_STATUS_ALLOCATION_FAILED:
      return "CURAND_STATUS_ALLOCATION_FAILED";
    case CURAND_STATUS_TYPE_ERROR:
      return "CURAND_STATUS_TYPE_ERROR";
    case CURAND_STATUS_OUT_OF_RANGE:
      return "CURAND_STATUS_OUT_OF_RANGE";
    case CURAND_STATUS_LENGTH_NOT_MULTIPLE:
      return "CURAND_STATUS_LENGTH_NOT_MULTIPLE";
    case CURAND_STATUS_LAUNCH_FAILURE:
      return "CURAND_STATUS_LAUNCH_FAILURE";
    case CURAND_STATUS_INITIALIZATION_FAILED:
      return "CURAND_STATUS_INITIALIZATION_FAILED";
    case CURAND_STATUS_ARCH_MISMATCH:
      return "CURAND_STATUS_ARCH_MISMATCH";
    case CURAND_STATUS_INTERNAL_ERROR:
      return "CURAND_STATUS_INTERNAL_ERROR";
    default:
      return "unknown cuRAND status";
  }
}

// __FILE__ as the message shows it: relative to the source root (blocks/block.cpp). The build
// maps the root away with -fmacro-prefix-map, but a compiler cache that rewrites paths relative
// to the build directory (ccache's base_dir) can still hand the compiler ../blocks/block.cpp, and
// objects cached before the map was set keep whatever they had: leading ../ and ./ go here too.
const char* source_name(const char* file) {
  for (;;) {
    if (std::strncmp(file, "../", 3) == 0) {
      file += 3;
    } else if (std::strncmp(file, "./", 2) == 0) {
      file += 2;
    } else {
      return file;
    }
  }
}

}  // namespace

void set_sync_after_launch(bool enabled) { sync_flag().store(enabled); }
bool sync_after_launch() { return sync_flag().load(); }

namespace detail {

void throw_error(const std::string& message, const char* file, int line) {
  throw Error(make_message(message, " [", source_name(file), ":", line, "]"));
}

void throw_cuda_error(int status, const char* expr, const char* file, int line) {
  // Clear the sticky-free "last error" so that a caught error does not poison the next check.
  cudaGetLastError();
  const auto error = static_cast<cudaError_t>(status);
  throw Error(make_message("CUDA error ", cudaGetErrorName(error), " (", cudaGetErrorString(error),
                           ") in ", expr, " [", source_name(file), ":", line, "]"));
}

void report_cuda_error(int status, const char* expr, const char* file, int line) noexcept {
  cudaGetLastError();
  const auto error = static_cast<cudaError_t>(status);
  std::fprintf(stderr, "cairn: CUDA error %s (%s) in %s [%s:%d] (on a release path: not thrown)\n",
               cudaGetErrorName(error), cudaGetErrorString(error), expr,
               source_name(file), line);
}

void throw_cublas_error(int status, const char* expr, const char* file, int line) {
  const auto code = static_cast<cublasStatus_t>(status);
  throw Error(make_message("cuBLAS error ", cublasGetStatusName(code), " (",
                           cublasGetStatusString(code), ") in ", expr, " [", source_name(file), ":",
                           line, "]"));
}

void throw_curand_error(int status, const char* expr, const char* file, int line) {
  throw Error(make_message("cuRAND error ", curand_status_name(status), " in ", expr, " [",
                           source_name(file), ":", line, "]"));
}

void check_launch(const char* kernel_name, void* stream, const char* file, int line) {
  cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess && sync_after_launch()) {
    // A stream being captured into a CUDA graph runs nothing until replay, and synchronising it
    // would invalidate the capture: the launch is checked again when the graph is replayed.
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    status = cudaStreamIsCapturing(static_cast<cudaStream_t>(stream), &capture);
    if (status == cudaSuccess && capture == cudaStreamCaptureStatusNone) {
      status = cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
    }
  }
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw Error(make_message("CUDA error ", cudaGetErrorName(status), " (",
                             cudaGetErrorString(status), ") after launching ", kernel_name, " [",
                             source_name(file), ":", line, "]"));
  }
}

}  // namespace detail
}  // namespace cairn
