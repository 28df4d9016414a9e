// Debug mode that finds where NaN and Inf come from.
//
// With set_check_numerics(true) (or CAIRN_CHECK_NUMERICS=1), every op checks its result and throws
// a cairn::Error naming itself when the result holds a NaN or an Inf that its inputs did not: the
// first op producing one is the one reported. An input that is already non-finite when it reaches
// the first op (bad data) is reported as such. Each check reads the result back to the host, so
// this mode is slow and synchronous; it is skipped inside CUDA graph capture.
#pragma once

#include <vector>

#include "cairn/core/tensor.h"

namespace cairn {

void set_check_numerics(bool enabled);
bool check_numerics();

namespace detail {
// Called by the op layer with each op's inputs and result.
void check_finite(const char* op, const std::vector<Tensor>& inputs, const Tensor& output);
}  // namespace detail

}  // namespace cairn
