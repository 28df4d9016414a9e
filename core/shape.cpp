#include "cairn/core/shape.h"

#include <limits>

#include "cairn/base/error.h"

namespace cairn {

std::string shape_str(const Shape& shape) {
  std::string out = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  if (shape.size() == 1) out += ",";
  return out + ")";
}

int64_t checked_numel(const Shape& shape, const char* op) {
  int64_t count = 1;
  for (int64_t dim : shape) {
    CAIRN_CHECK(dim >= 0, op, ": negative dimension in shape ", shape_str(shape));
    if (dim != 0 && count > std::numeric_limits<int64_t>::max() / dim) {
      CAIRN_FAIL(op, ": shape ", shape_str(shape), " has more elements than int64_t can count");
    }
    count *= dim;
  }
  return count;
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return 4;
    case DType::kInt32:
      return 4;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kInt32:
      return "int32";
  }
  return "unknown";
}

}  // namespace cairn
