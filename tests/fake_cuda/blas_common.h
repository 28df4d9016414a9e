// What the fake cuBLAS (cublas.cpp) and cuBLASLt (cublaslt.cpp) share: saying why a call is
// refused, keeping exceptions inside the C API, and reading enum arguments safely.
#pragma once

#include <cublas_api.h>

#include <cstdio>
#include <cstring>
#include <new>
#include <string>

namespace cairn::fake_cuda::blas {

// Says why on stderr (the real libraries say nothing unless logging is on; a test needs to know).
inline cublasStatus_t refuse(const char* library, cublasStatus_t status, const char* what,
                             const std::string& message) {
  std::fprintf(stderr, "fake %s: %s: %s\n", library, what, message.c_str());
  return status;
}

// Runs a C API body so that no exception escapes it.
template <typename Body>
cublasStatus_t guarded(Body body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return CUBLAS_STATUS_ALLOC_FAILED;
  } catch (...) {
    return CUBLAS_STATUS_INTERNAL_ERROR;
  }
}

// An enum argument's value as the caller passed it. A C caller may pass any int, and loading an
// out-of-range value as the enum type is undefined in C++ (UBSan reports it), so the fake reads
// the bytes instead and validates the int.
template <typename Enum>
int raw(const Enum& value) {
  static_assert(sizeof(Enum) == sizeof(int), "cuBLAS and cuBLASLt enums are int-sized");
  int bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

}  // namespace cairn::fake_cuda::blas
