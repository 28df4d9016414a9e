// The fused Dense op: cuBLASLt epilogues on the GPU, the composed ops on the CPU.
#include "cairn/core/autograd.h"
#include "cairn/core/ops.h"
#include "cairn/core/ops/op_support.h"
#include "cairn/kernels/dense.h"

namespace cairn::ops {

Tensor dense(const Tensor& x, const Tensor& weight, const Tensor& bias,
             DenseActivation activation) {
  constexpr const char* kOp = "dense";
  detail::check_float(kOp, x, "x");
  detail::check_float(kOp, weight, "weight");
  detail::check_float(kOp, bias, "bias");
  detail::check_same_device(kOp, x, weight);
  detail::check_same_device(kOp, x, bias);
  detail::check_matrix(kOp, x, "x");
  detail::check_matrix(kOp, weight, "weight");
  const int64_t n = x.dim(0), in = x.dim(1), out = weight.dim(0);
  CAIRN_CHECK(weight.dim(1) == in, kOp, ": x ", shape_str(x.shape()), " has ", in,
              " features but weight ", shape_str(weight.shape()), " expects ", weight.dim(1));
  CAIRN_CHECK(bias.ndim() == 1 && bias.dim(0) == out, kOp, ": bias ", shape_str(bias.shape()),
              " does not match weight ", shape_str(weight.shape()));

  if (x.device().is_cpu() || n == 0 || in == 0 || out == 0) {
    const Tensor y = linear(x, weight, bias);
    return activation == DenseActivation::kRelu ? relu(y) : y;
  }

  const Device device = x.device();
  const kernels::MatmulPrecision precision = matmul_precision();
  Tensor y = Tensor::empty({n, out}, device);
  {
    cuda::DeviceGuard guard(device);
    auto workspace = detail::workspace(device, kernels::cuda::kLtWorkspaceBytes);
    kernels::cuda::dense_forward(
        cuda::lt_handle(device), x.data(), weight.data(), bias.data(), y.data(), n, in, out,
        activation == DenseActivation::kRelu ? kernels::DenseEpilogue::kReluBias
                                             : kernels::DenseEpilogue::kBias,
        precision, workspace->data(), kernels::cuda::kLtWorkspaceBytes,
        cuda::current_stream(device));
  }
  const Tensor saved_y = y.detach();
  autograd::record(kOp, {x, weight, bias}, y,
                   [x, weight, bias, saved_y, activation, precision](const Tensor& dy) {
                     // y > 0 exactly where the pre-activation was, so y stands in for it.
                     const Tensor dz =
                         activation == DenseActivation::kRelu ? relu_backward(saved_y, dy) : dy;
                     Tensor dx, dw, db;
                     if (x.requires_grad()) dx = matmul(dz, weight.detach());
                     if (weight.requires_grad() || bias.requires_grad()) {
                       const Device device = dz.device();
                       const int64_t n = dz.dim(0), out = dz.dim(1), in = x.dim(1);
                       dw = Tensor::empty({out, in}, device);
                       db = Tensor::empty({out}, device);
                       cuda::DeviceGuard guard(device);
                       auto workspace = detail::workspace(device, kernels::cuda::kLtWorkspaceBytes);
                       kernels::cuda::dense_weight_backward(
                           cuda::lt_handle(device), dz.data(), x.data(), dw.data(), db.data(), n,
                           in, out, precision, workspace->data(), kernels::cuda::kLtWorkspaceBytes,
                           cuda::current_stream(device));
                     }
                     return std::vector<Tensor>{dx, dw, db};
                   });
  return y;
}

}  // namespace cairn::ops
