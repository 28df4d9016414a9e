// Shape ops: views that share the data.
#include "cairn/core/autograd.h"
#include "cairn/core/ops.h"
#include "cairn/core/ops/op_support.h"

namespace cairn::ops {

Tensor reshape(const Tensor& x, const Shape& requested) {
  constexpr const char* kOp = "reshape";
  detail::check_defined(kOp, x, "input");
  Shape shape = requested;
  int64_t inferred_axis = -1, known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      CAIRN_CHECK(inferred_axis < 0, kOp, ": more than one -1 in ", shape_str(requested));
      inferred_axis = int64_t(i);
    } else {
      CAIRN_CHECK(shape[i] >= 0, kOp, ": negative dimension in ", shape_str(requested));
      CAIRN_CHECK(!__builtin_mul_overflow(known, shape[i], &known), kOp, ": shape ",
                  shape_str(requested), " has more elements than int64_t can count");
    }
  }
  if (inferred_axis >= 0) {
    CAIRN_CHECK(known > 0 && x.numel() % known == 0, kOp, ": cannot infer -1 in ",
                shape_str(requested), " for ", x.numel(), " elements");
    shape[size_t(inferred_axis)] = x.numel() / known;
  }
  CAIRN_CHECK(checked_numel(shape, kOp) == x.numel(), kOp, ": cannot view ", shape_str(x.shape()),
              " (", x.numel(), " elements) as ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = x.impl()->storage;
  impl->shape = shape;
  impl->numel = x.numel();
  impl->dtype = x.dtype();
  Tensor y(std::move(impl));
  autograd::record(kOp, {x}, y, [original = x.shape()](const Tensor& dy) {
    return std::vector<Tensor>{reshape(dy, original)};
  });
  return y;
}

}  // namespace cairn::ops
