// The fused Dense op: one recorded op for y = act(x W^T + b). On the GPU, cuBLASLt epilogues (and
// the composed ops where cuBLASLt has no fused algorithm); on the CPU, the GEMM then the bias and
// the ReLU applied in place: the same kernels, in the same order, as the composed ops (matmul,
// bias_add, relu), so the same bits, without their two extra outputs and two extra tape entries
// (which, for a tiny network, cost more than the arithmetic).
#include <atomic>

#include "cairn/core/autograd.h"
#include "cairn/core/ops.h"
#include "cairn/core/ops/op_support.h"
#include "cairn/kernels/dense.h"
#include "cairn/kernels/elementwise.h"
#include "cairn/kernels/gemm.h"

namespace cairn::ops {
namespace {
std::atomic<bool> g_fused_dense{true};

// y = act(x W^T + b) on the CPU, as matmul, bias_add and relu compute it.
void dense_forward_cpu(const Tensor& x, const Tensor& weight, const Tensor& bias,
                       DenseActivation activation, Tensor& y) {
  const int64_t n = x.dim(0), in = x.dim(1), out = weight.dim(0);
  kernels::RowMajorGemm request;
  request.a = x.data();
  request.b = weight.data();
  request.c = y.data();
  request.m = n;
  request.n = out;
  request.k = in;
  request.transpose_b = Transpose::kYes;
  kernels::cpu::gemm(kernels::plan_gemm(request));
  kernels::cpu::binary(kernels::BinaryOp::kAdd, y.data(), bias.data(), y.data(), n, out,
                       kernels::Broadcast::kRow);
  if (activation == DenseActivation::kRelu) {
    kernels::cpu::unary(kernels::UnaryOp::kRelu, y.data(), y.data(), n * out);
  }
}

}  // namespace

void set_fused_dense(bool enabled) { g_fused_dense.store(enabled); }
bool fused_dense() { return g_fused_dense.load(); }

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

  // The CPU's path, and the GPU's fallback: every op records its own backward.
  auto composed = [&] {
    const Tensor y = linear(x, weight, bias);
    return activation == DenseActivation::kRelu ? relu(y) : y;
  };
  const Device device = x.device();
  if (n == 0 || in == 0 || out == 0 || (device.is_cuda() && !fused_dense())) return composed();

  const kernels::MatmulPrecision precision = matmul_precision();
  Tensor y = Tensor::empty({n, out}, device);
  if (device.is_cpu()) {
    dense_forward_cpu(x, weight, bias, activation, y);
  } else {
    cuda::DeviceGuard guard(device);
    const cuda::Stream stream = cuda::current_stream(device);
    auto workspace = detail::workspace(device, kernels::cuda::kLtWorkspaceBytes);
    if (!kernels::cuda::dense_forward(cuda::lt_handle(device), x.data(), weight.data(), bias.data(),
                                      y.data(), n, in, out, precision, workspace->data(),
                                      kernels::cuda::kLtWorkspaceBytes, stream)) {
      return composed();  // no fused algorithm for this shape (said once by dense_forward)
    }
    // cairn's ReLU, in place, not the RELU_BIAS epilogue, which turns NaN into 0 (see dense.h).
    if (activation == DenseActivation::kRelu) {
      kernels::cuda::unary(kernels::UnaryOp::kRelu, y.data(), y.data(), y.numel(), stream);
    }
  }
  const Tensor saved_y = y.detach();
  autograd::record(
      kOp, {x, weight, bias}, y,
      [x, weight, bias, saved_y, activation, precision](const Tensor& dy) {
        // y > 0 exactly where the pre-activation was (NaN in neither), so y stands in for it.
        const Tensor dz = activation == DenseActivation::kRelu ? relu_backward(saved_y, dy) : dy;
        Tensor dx, dw, db;
        if (x.requires_grad()) dx = matmul(dz, weight.detach());
        const Device device = dz.device();
        if (device.is_cpu()) {  // as matmul's and bias_add's backward compute them
          if (weight.requires_grad()) dw = matmul(dz, x.detach(), Transpose::kYes, Transpose::kNo);
          if (bias.requires_grad()) db = sum_columns(dz);
        } else if (weight.requires_grad() || bias.requires_grad()) {
          const int64_t n = dz.dim(0), out = dz.dim(1), in = x.dim(1);
          dw = Tensor::empty({out, in}, device);
          db = Tensor::empty({out}, device);
          bool fused = false;
          if (fused_dense()) {
            cuda::DeviceGuard guard(device);
            auto workspace = detail::workspace(device, kernels::cuda::kLtWorkspaceBytes);
            fused = kernels::cuda::dense_weight_backward(
                cuda::lt_handle(device), dz.data(), x.data(), dw.data(), db.data(), n, in, out,
                precision, workspace->data(), kernels::cuda::kLtWorkspaceBytes,
                cuda::current_stream(device));
          }
          if (!fused) {  // as linear's backward computes them
            dw = matmul(dz, x.detach(), Transpose::kYes, Transpose::kNo);
            db = sum_columns(dz);
          }
        }
        return std::vector<Tensor>{dx, dw, db};
      });
  return y;
}

}  // namespace cairn::ops
