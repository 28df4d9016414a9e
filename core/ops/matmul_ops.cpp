// Matrix products (cuBLAS on the GPU, BLAS on the CPU, one shared plan) and the Dense affine map.
#include "cairn/core/autograd.h"
#include "cairn/core/ops.h"
#include "cairn/core/ops/op_support.h"
#include "cairn/kernels/gemm.h"

namespace cairn::ops {
namespace {

constexpr Transpose flip(Transpose t) {
  return t == Transpose::kNo ? Transpose::kYes : Transpose::kNo;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, Transpose transpose_a, Transpose transpose_b) {
  constexpr const char* kOp = "matmul";
  detail::check_float(kOp, a, "a");
  detail::check_float(kOp, b, "b");
  detail::check_same_device(kOp, a, b);
  detail::check_matrix(kOp, a, "a");
  detail::check_matrix(kOp, b, "b");
  const bool ta = transpose_a == Transpose::kYes, tb = transpose_b == Transpose::kYes;
  const int64_t m = ta ? a.dim(1) : a.dim(0);
  const int64_t k = ta ? a.dim(0) : a.dim(1);
  const int64_t k_b = tb ? b.dim(1) : b.dim(0);
  const int64_t n = tb ? b.dim(0) : b.dim(1);
  CAIRN_CHECK(k == k_b, kOp, ": inner dimensions differ: op(a) is (", m, ", ", k, ") from a ",
              shape_str(a.shape()), ta ? " transposed" : "", ", op(b) is (", k_b, ", ", n,
              ") from b ", shape_str(b.shape()), tb ? " transposed" : "");
  Tensor c = Tensor::empty({m, n}, a.device());

  kernels::RowMajorGemm request;
  request.a = a.data();
  request.b = b.data();
  request.c = c.data();
  request.m = m;
  request.n = n;
  request.k = k;
  request.transpose_a = transpose_a;
  request.transpose_b = transpose_b;
  const kernels::ColumnMajorGemmPlan plan = kernels::plan_gemm(request);
  detail::dispatch(
      a.device(), [&] { kernels::cpu::gemm(plan); },
      [&](cuda::Stream) {
        const cuda::BlasLease blas(a.device());
        kernels::cuda::gemm(plan, blas.handle());
      });

  autograd::record(kOp, {a, b}, c, [a, b, transpose_a, transpose_b](const Tensor& dc) {
    const Tensor a_data = a.detach(), b_data = b.detach();
    const bool ta = transpose_a == Transpose::kYes, tb = transpose_b == Transpose::kYes;
    Tensor da, db;
    // C = op(A) op(B): d op(A) = dC op(B)^T and d op(B) = op(A)^T dC, then undo the op.
    if (a.requires_grad()) {
      da = ta ? matmul(b_data, dc, transpose_b, Transpose::kYes)        // dA = op(B) dC^T
              : matmul(dc, b_data, Transpose::kNo, flip(transpose_b));  // dA = dC op(B)^T
    }
    if (b.requires_grad()) {
      db = tb ? matmul(dc, a_data, Transpose::kYes, transpose_a)        // dB = dC^T op(A)
              : matmul(a_data, dc, flip(transpose_a), Transpose::kNo);  // dB = op(A)^T dC
    }
    return std::vector<Tensor>{da, db};
  });
  return c;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  constexpr const char* kOp = "linear";
  detail::check_float(kOp, x, "x");
  detail::check_float(kOp, weight, "weight");
  detail::check_matrix(kOp, x, "x");
  detail::check_matrix(kOp, weight, "weight");
  CAIRN_CHECK(x.dim(1) == weight.dim(1), kOp, ": x ", shape_str(x.shape()), " has ", x.dim(1),
              " features but weight ", shape_str(weight.shape()), " expects ", weight.dim(1));
  Tensor y = matmul(x, weight, Transpose::kNo, Transpose::kYes);
  return bias.defined() ? bias_add(y, bias) : y;
}

}  // namespace cairn::ops
