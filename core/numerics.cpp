#include "cairn/core/numerics.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "cairn/core/cuda_context.h"
#include "cairn/base/error.h"

namespace cairn {
namespace {

std::atomic<bool>& flag() {
  static std::atomic<bool> enabled{[] {
    const char* env = std::getenv("CAIRN_CHECK_NUMERICS");
    return env != nullptr && env[0] != '\0' && std::strcmp(env, "0") != 0;
  }()};
  return enabled;
}

// Index of the first NaN or Inf, or -1.
int64_t first_non_finite(const Tensor& tensor) {
  const std::vector<float> values = tensor.to_vector();
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) return int64_t(i);
  }
  return -1;
}

}  // namespace

void set_check_numerics(bool enabled) { flag().store(enabled); }
bool check_numerics() { return flag().load(); }

namespace detail {

void check_finite(const char* op, const std::vector<Tensor>& inputs, const Tensor& output) {
  if (!flag().load() || !output.defined() || output.dtype() != DType::kFloat32) return;
  if (cuda::is_capturing(output.device())) return;
  const int64_t bad = first_non_finite(output);
  if (bad < 0) return;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& input = inputs[i];
    if (!input.defined() || input.dtype() != DType::kFloat32) continue;
    const int64_t bad_input = first_non_finite(input);
    CAIRN_CHECK(bad_input < 0, "check_numerics: input ", i, " of ", op, " (shape ",
                shape_str(input.shape()), ") already holds a non-finite value at element ",
                bad_input,
                ": it came into cairn's ops from outside (the data, or a tensor written "
                "directly)");
  }
  // Not reshape(): that is an op, whose own check would report this output as a bad input.
  const float value = output.to_vector()[size_t(bad)];
  CAIRN_FAIL("check_numerics: ", op, " produced ", std::isnan(value) ? "NaN" : "Inf",
             " at element ", bad, " of its ", shape_str(output.shape()), " result on ",
             output.device(), " from finite inputs");
}

}  // namespace detail
}  // namespace cairn
