// Shapes and element types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cairn {

using Shape = std::vector<int64_t>;

// "(2, 20)"; a 0-d tensor's shape is "()".
std::string shape_str(const Shape& shape);

// The product of the dimensions (1 for a 0-d shape). Throws cairn::Error for a negative dimension
// or a product that overflows int64_t, naming `op`.
int64_t checked_numel(const Shape& shape, const char* op);

// float32 first; the enum leaves room for bf16/f16. int32 carries labels and argmax indices.
enum class DType { kFloat32, kInt32 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // "float32", "int32"

}  // namespace cairn
