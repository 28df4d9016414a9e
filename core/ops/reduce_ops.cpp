// Reductions over a whole tensor, along rows and down columns, and their backward passes.
#include "cairn/core/autograd.h"
#include "cairn/core/numerics.h"
#include "cairn/core/ops.h"
#include "cairn/core/ops/op_support.h"
#include "cairn/kernels/elementwise.h"
#include "cairn/kernels/reduce.h"

namespace cairn::ops {
namespace {

using kernels::ReduceOp;

Tensor run_reduce_all(const char* op, ReduceOp kind, const Tensor& x) {
  detail::check_float(op, x);
  Tensor out = Tensor::empty({}, x.device());
  detail::dispatch(
      x.device(), [&] { kernels::cpu::reduce_all(kind, x.data(), x.numel(), out.data()); },
      [&](cuda::Stream stream) {
        const size_t bytes = kernels::cuda::reduce_all_workspace_bytes(kind, x.numel());
        auto scratch = detail::workspace(x.device(), bytes);
        kernels::cuda::reduce_all(kind, x.data(), x.numel(), out.data(), scratch->data(), bytes,
                                  stream);
      });
  return out;
}

Tensor run_reduce_rows(const char* op, ReduceOp kind, const Tensor& x) {
  detail::check_float(op, x);
  CAIRN_CHECK(x.ndim() >= 1, op, ": needs at least one axis, got a 0-d tensor");
  const int64_t rows = detail::rows_of(x), cols = detail::cols_of(x);
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  Tensor out = Tensor::empty(out_shape, x.device());
  detail::dispatch(
      x.device(), [&] { kernels::cpu::reduce_rows(kind, x.data(), rows, cols, out.data()); },
      [&](cuda::Stream stream) {
        kernels::cuda::reduce_rows(kind, x.data(), rows, cols, out.data(), stream);
      });
  return out;
}

// A scalar (shape ()) gradient spread over `shape`, times `scale`.
Tensor spread_scalar(const Tensor& grad, const Shape& shape, float scale) {
  Tensor out = Tensor::full(shape, scale, grad.device());
  return mul(out, grad);
}

// A per-row gradient (rows) spread over x's (rows, cols), times `scale`.
Tensor spread_rows(const Tensor& grad, const Tensor& x, float scale) {
  const int64_t rows = detail::rows_of(x), cols = detail::cols_of(x);
  Tensor out = Tensor::full({rows, cols}, scale, grad.device());
  return reshape(mul(out, reshape(grad, {rows, 1})), x.shape());
}

void refuse_gradient(const char* op, const Tensor& x) {
  CAIRN_CHECK(!autograd::should_record({x}), op,
              ": is not differentiable; compute it on x.detach() or outside autograd::RecordScope");
}

}  // namespace

Tensor sum(const Tensor& x) {
  Tensor y = run_reduce_all("sum", ReduceOp::kSum, x);
  autograd::record("sum", {x}, y, [shape = x.shape()](const Tensor& dy) {
    return std::vector<Tensor>{spread_scalar(dy, shape, 1.0f)};
  });
  return y;
}

Tensor mean(const Tensor& x) {
  Tensor y = run_reduce_all("mean", ReduceOp::kMean, x);
  autograd::record("mean", {x}, y, [shape = x.shape(), n = x.numel()](const Tensor& dy) {
    return std::vector<Tensor>{spread_scalar(dy, shape, 1.0f / float(n))};
  });
  return y;
}

Tensor max(const Tensor& x) {
  refuse_gradient("max", x);
  detail::check_float("max", x);
  // The kernels' identity, -inf, is not the maximum of anything: refuse rather than return it.
  CAIRN_CHECK(x.numel() > 0, "max: an empty tensor (shape ", shape_str(x.shape()),
              ") has no maximum");
  Tensor y = run_reduce_all("max", ReduceOp::kMax, x);
  cairn::detail::check_finite("max", {x}, y);
  return y;
}

Tensor sum_squares(const Tensor& x) {
  Tensor y = run_reduce_all("sum_squares", ReduceOp::kSumSquares, x);
  autograd::record("sum_squares", {x}, y, [x](const Tensor& dy) {
    return std::vector<Tensor>{mul(mul_scalar(x.detach(), 2.0f), dy)};
  });
  return y;
}

Tensor norm(const Tensor& x) {
  // Composed, so its backward is x * dy / norm through the recorded sqrt and sum_squares.
  return sqrt(sum_squares(x));
}

Tensor sum_rows(const Tensor& x) {
  Tensor y = run_reduce_rows("sum_rows", ReduceOp::kSum, x);
  autograd::record("sum_rows", {x}, y,
                   [x](const Tensor& dy) { return std::vector<Tensor>{spread_rows(dy, x, 1.0f)}; });
  return y;
}

Tensor mean_rows(const Tensor& x) {
  Tensor y = run_reduce_rows("mean_rows", ReduceOp::kMean, x);
  autograd::record("mean_rows", {x}, y, [x](const Tensor& dy) {
    return std::vector<Tensor>{spread_rows(dy, x, 1.0f / float(detail::cols_of(x)))};
  });
  return y;
}

Tensor max_rows(const Tensor& x) {
  refuse_gradient("max_rows", x);
  detail::check_float("max_rows", x);
  CAIRN_CHECK(x.ndim() == 0 || detail::cols_of(x) > 0 || detail::rows_of(x) == 0,
              "max_rows: rows of length 0 have no maximum (shape ", shape_str(x.shape()), ")");
  Tensor y = run_reduce_rows("max_rows", ReduceOp::kMax, x);
  cairn::detail::check_finite("max_rows", {x}, y);
  return y;
}

Tensor sum_squares_rows(const Tensor& x) {
  Tensor y = run_reduce_rows("sum_squares_rows", ReduceOp::kSumSquares, x);
  autograd::record("sum_squares_rows", {x}, y, [x](const Tensor& dy) {
    return std::vector<Tensor>{mul(mul_scalar(x.detach(), 2.0f), spread_rows(dy, x, 1.0f))};
  });
  return y;
}

Tensor sum_columns(const Tensor& x) {
  constexpr const char* kOp = "sum_columns";
  detail::check_float(kOp, x);
  detail::check_matrix(kOp, x, "input");
  const int64_t rows = x.dim(0), cols = x.dim(1);
  Tensor out = Tensor::empty({cols}, x.device());
  detail::dispatch(
      x.device(),
      [&] {
        kernels::cpu::sum_columns(x.data(), rows, cols, out.data(),
                                  kernels::Accumulate::kOverwrite);
      },
      [&](cuda::Stream stream) {
        const size_t bytes = kernels::cuda::sum_columns_workspace_bytes(rows, cols);
        auto scratch = detail::workspace(x.device(), bytes);
        kernels::cuda::sum_columns(x.data(), rows, cols, out.data(),
                                   kernels::Accumulate::kOverwrite, scratch->data(), bytes, stream);
      });
  autograd::record(kOp, {x}, out, [rows](const Tensor& dy) {
    // Each row receives the column gradient: (rows, cols) of ones times dy broadcast by row.
    Tensor ones = Tensor::ones({rows, dy.dim(0)}, dy.device());
    return std::vector<Tensor>{mul(ones, dy)};
  });
  return out;
}

Tensor argmax_rows(const Tensor& x) {
  constexpr const char* kOp = "argmax_rows";
  detail::check_float(kOp, x);
  detail::check_matrix(kOp, x, "input");
  const int64_t rows = x.dim(0), cols = x.dim(1);
  CAIRN_CHECK(cols > 0 || rows == 0, kOp, ": rows of length 0 have no maximum (shape ",
              shape_str(x.shape()), ")");
  Tensor out = Tensor::empty({rows}, x.device(), DType::kInt32);
  if (rows == 0) return out;
  detail::dispatch(
      x.device(), [&] { kernels::cpu::argmax_rows(x.data(), rows, cols, out.data_int32()); },
      [&](cuda::Stream stream) {
        kernels::cuda::argmax_rows(x.data(), rows, cols, out.data_int32(), stream);
      });
  return out;
}

}  // namespace cairn::ops
