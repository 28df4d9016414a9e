// Errors: one exception type, one macro family.
//
// Library code never exits or aborts. Every failed precondition and every failed CUDA, cuBLAS or
// cuRAND status becomes a cairn::Error whose message names what failed and where.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace cairn {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {

// Concatenates any streamable arguments: make_message("matmul: got ", a, " and ", b).
template <typename... Args>
std::string make_message(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

[[noreturn]] void throw_error(const std::string& message, const char* file, int line);

// Status-to-text for the libraries we check. Declared here, defined where the library headers are
// included, so that this header stays free of CUDA includes.
[[noreturn]] void throw_cuda_error(int status, const char* expr, const char* file, int line);
[[noreturn]] void throw_cublas_error(int status, const char* expr, const char* file, int line);
[[noreturn]] void throw_curand_error(int status, const char* expr, const char* file, int line);
// For release paths, which must not throw: one line on stderr, and the last error cleared.
void report_cuda_error(int status, const char* expr, const char* file, int line) noexcept;

}  // namespace detail
}  // namespace cairn

// CAIRN_CHECK(cond, "op: what was wrong ", value, ...): throws cairn::Error when cond is false.
#define CAIRN_CHECK(cond, ...)                                                           \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      ::cairn::detail::throw_error(::cairn::detail::make_message(__VA_ARGS__), __FILE__, \
                                   __LINE__);                                            \
    }                                                                                    \
  } while (0)

#define CAIRN_FAIL(...) \
  ::cairn::detail::throw_error(::cairn::detail::make_message(__VA_ARGS__), __FILE__, __LINE__)

// Each library's status checker: the expression, its status text, file and line go into the error.
#define CAIRN_CUDA_CHECK(expr)                                                          \
  do {                                                                                  \
    const auto cairn_status_ = (expr);                                                  \
    if (cairn_status_ != 0) {                                                           \
      ::cairn::detail::throw_cuda_error(int(cairn_status_), #expr, __FILE__, __LINE__); \
    }                                                                                   \
  } while (0)

// CAIRN_CUDA_CHECK for destructors and release paths (noexcept): a failure is said on stderr, not
// thrown, and does not linger as the thread's last error to fail an unrelated later check.
#define CAIRN_CUDA_REPORT(expr)                                                          \
  do {                                                                                   \
    const auto cairn_status_ = (expr);                                                   \
    if (cairn_status_ != 0) {                                                            \
      ::cairn::detail::report_cuda_error(int(cairn_status_), #expr, __FILE__, __LINE__); \
    }                                                                                    \
  } while (0)

#define CAIRN_CUBLAS_CHECK(expr)                                                          \
  do {                                                                                    \
    const auto cairn_status_ = (expr);                                                    \
    if (cairn_status_ != 0) {                                                             \
      ::cairn::detail::throw_cublas_error(int(cairn_status_), #expr, __FILE__, __LINE__); \
    }                                                                                     \
  } while (0)

#define CAIRN_CURAND_CHECK(expr)                                                          \
  do {                                                                                    \
    const auto cairn_status_ = (expr);                                                    \
    if (cairn_status_ != 0) {                                                             \
      ::cairn::detail::throw_curand_error(int(cairn_status_), #expr, __FILE__, __LINE__); \
    }                                                                                     \
  } while (0)

// After every kernel launch: surfaces launch errors at once, and, when debug synchronisation is on
// (cairn::set_sync_after_launch(true) or CAIRN_SYNC_LAUNCHES=1), faults inside the kernel too.
#define CAIRN_CHECK_LAUNCH(kernel_name, stream) \
  ::cairn::detail::check_launch(kernel_name, stream, __FILE__, __LINE__)

namespace cairn {
// Debug switch: synchronise after every launch so asynchronous faults surface at their source.
void set_sync_after_launch(bool enabled);
bool sync_after_launch();
namespace detail {
void check_launch(const char* kernel_name, void* stream, const char* file, int line);
}
}  // namespace cairn
