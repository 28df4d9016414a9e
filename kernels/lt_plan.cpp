#include "cairn/kernels/lt_plan.h"

#include <cublas_api.h>

namespace cairn::kernels {

uint32_t pointer_alignment(const void* pointer) {
  const auto address = reinterpret_cast<uintptr_t>(pointer);
  uint32_t alignment = 256;
  while (alignment > 4 && address % alignment != 0) alignment /= 2;
  return alignment;
}

bool lt_heuristic_usable(int call_status, int returned, int result_state, bool* error) {
  *error = call_status != CUBLAS_STATUS_SUCCESS && call_status != CUBLAS_STATUS_NOT_SUPPORTED &&
           call_status != CUBLAS_STATUS_INVALID_VALUE;
  return call_status == CUBLAS_STATUS_SUCCESS && returned > 0 &&
         result_state == CUBLAS_STATUS_SUCCESS;
}

bool lt_bias_alignment_ok(const void* bias) {
  return bias == nullptr || reinterpret_cast<uintptr_t>(bias) % kLtBiasAlignment == 0;
}

}  // namespace cairn::kernels
