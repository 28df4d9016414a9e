// The op API: what blocks and users call on tensors.
//
// Each op checks its arguments (throwing cairn::Error with the op's name, the shapes and devices
// involved), picks the kernel for the tensors' device (CUDA tensors run on CUDA or throw; nothing
// falls back to the CPU silently), launches it on that device's current stream, and records its
// backward when autograd is recording. Results are new tensors; inputs are never modified.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cairn/core/random_state.h"
#include "cairn/core/tensor.h"
#include "cairn/kernels/gemm.h"

namespace cairn::kernels {
// The op table's enum (kernels/elementwise_ops.h), declared only: a new row recompiles the files
// that include the table, not every user of the ops.
enum class UnaryOp;
}  // namespace cairn::kernels

namespace cairn::ops {

using kernels::Transpose;
using kernels::UnaryOp;

// ---- Unary, elementwise ----
// Any row of the op table (kernels/elementwise_ops.h), recorded with the row's backward: what the
// named ops below are, and what the table-driven tests call.
Tensor unary(UnaryOp op, const Tensor& x);
Tensor relu(const Tensor& x);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor square(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
// PyTorch's gelu(x, approximate='none' | 'tanh')
enum class GeluApproximation { kNone, kTanh };
Tensor gelu(const Tensor& x, GeluApproximation approximation = GeluApproximation::kNone);
Tensor silu(const Tensor& x);  // x * sigmoid(x)
// x op s for every element: the binary ops with a scalar operand by value
Tensor add_scalar(const Tensor& x, float s);
Tensor mul_scalar(const Tensor& x, float s);
Tensor div_scalar(const Tensor& x, float s);
Tensor rsub_scalar(float s, const Tensor& x);  // s - x
// dx = dy where x > 0 (the backward of relu, itself an op)
Tensor relu_backward(const Tensor& x, const Tensor& dy);

// ---- Binary, elementwise with broadcast ----
// b is laid over a when b has a's shape, one element, a's last dimension (a bias over a batch), or
// shape (rows, 1) for a of shape (rows, cols). add and mul also accept the broadcast on a's side.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
// x: (N, C), bias: (C) -> (N, C)
Tensor bias_add(const Tensor& x, const Tensor& bias);

// ---- Reductions ----
Tensor sum(const Tensor& x);          // -> shape ()
Tensor mean(const Tensor& x);         // -> shape (); NaN for an empty tensor
Tensor max(const Tensor& x);          // -> shape (); not differentiable; throws when empty
Tensor sum_squares(const Tensor& x);  // -> shape ()
Tensor norm(const Tensor& x);         // L2 norm over all elements -> shape ()
// Along the last axis of x viewed as (rows, cols): -> (rows)
Tensor sum_rows(const Tensor& x);
Tensor mean_rows(const Tensor& x);  // NaN for rows of length 0, like mean()
Tensor max_rows(const Tensor& x);   // not differentiable; throws for rows of length 0
Tensor sum_squares_rows(const Tensor& x);
// Down the columns of x: (N, C) -> (C); the bias gradient. Deterministic.
Tensor sum_columns(const Tensor& x);
// x: (rows, cols) -> int32 (rows), index of each row's first maximum
Tensor argmax_rows(const Tensor& x);

// ---- Softmax and loss ----
Tensor softmax(const Tensor& x);  // along the last axis
// logits: (N, C), labels: int32 (N) in [0, C) -> per-sample loss (N)
Tensor softmax_cross_entropy(const Tensor& logits, const Tensor& labels);
// pred, label: (N, C) or (N) -> per-sample 0.5 * mean_c (pred - label)^2, (N); no gradient to label
Tensor l2_loss(const Tensor& pred, const Tensor& label);

// ---- Matrix product ----
// op(a) op(b) with op = transpose where asked; a and b are 2-d.
Tensor matmul(const Tensor& a, const Tensor& b, Transpose transpose_a = Transpose::kNo,
              Transpose transpose_b = Transpose::kNo);
// x (N, in) * weight (out, in)^T + bias (out) -> (N, out): a Dense layer's affine map.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);
// relu(linear(...)) or linear(...) with a bias. On a GPU one cuBLASLt call with the bias
// epilogue (then cairn's ReLU, which keeps NaN) forward, and one with the bias-gradient epilogue
// for dW and db backward; on the CPU the same function composed from the ops above.
enum class DenseActivation { kNone, kRelu };
Tensor dense(const Tensor& x, const Tensor& weight, const Tensor& bias, DenseActivation activation);
// Debug switch, on by default: off, dense on a GPU takes the path it takes where cuBLASLt has no
// fused algorithm for a shape (cuBLAS GEMM, cairn's bias and ReLU kernels), read at each forward
// and backward. Tests hold the fused path against it.
void set_fused_dense(bool enabled);
bool fused_dense();

// ---- Shape ----
Tensor reshape(const Tensor& x, const Shape& shape);  // shares the data; -1 is inferred

// ---- Convolution ----
struct Conv2DParams {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;
};
// x: (N, C, H, W), weight: (K, C / groups, R, S), bias: (K) or undefined -> (N, K, P, Q), PyTorch's
// conv2d semantics (zero padding, cross-correlation). im2col + GEMM on both devices (no cuDNN);
// deterministic (col2im gathers, no atomics).
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2DParams& params);
// Debug switch: the most bytes of scratch one GPU chunk of conv2d's batch may use (0: the default,
// 256 MiB). Tests set it small to run the chunked path on small shapes.
void set_conv2d_chunk_bytes(size_t bytes);
// ---- Pooling and dropout ----
// PyTorch's max_pool2d / avg_pool2d (dilation 1) on (N, C, H, W) -> (N, C, P, Q), with
// P = floor((H + 2 pad_h - kernel_h) / stride_h) + 1 (the ceiling with ceil_mode, less one when
// the last window would start in the right padding), Q likewise. Padding is at most half the
// kernel. Max pooling pads with -inf, gives a window's NaN when it holds one, and sends the
// gradient to the window's first maximum; average pooling divides by the window clipped to the
// padded input (count_include_pad) or to the input alone. Backward passes are deterministic.
struct Pool2DParams {
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w;  // the block defaults them to the kernel size
  int64_t pad_h = 0, pad_w = 0;
  bool ceil_mode = false;
  bool count_include_pad = true;  // avg only (PyTorch's default)
};
Tensor max_pool2d(const Tensor& x, const Pool2DParams& params);
Tensor avg_pool2d(const Tensor& x, const Pool2DParams& params);
Tensor global_avg_pool2d(const Tensor& x);  // (N, C, H, W) -> (N, C, 1, 1)
// (N, ...) -> (N, prod(...)), sharing the data; (N) -> (N, 1), as Gluon's Flatten.
Tensor flatten(const Tensor& x);
// Inverted dropout: in training mode (autograd::is_training()) zeroes each element with
// probability `rate` and scales the rest by 1 / (1 - rate); identity (the same tensor) when
// predicting or rate == 0; zeros for rate == 1 (PyTorch's p = 1). The mask comes from
// `generator`'s state on x's device, which the call advances on the device (so a captured graph
// draws a new mask each replay): see core/random_state.h. rate outside [0, 1] throws.
Tensor dropout(const Tensor& x, float rate, DropoutGenerator& generator);
// ---- Normalisation ----
// x: (N, C) or (N, C, H, W) (any rank >= 2: channel axis 1). weight/bias (C) or undefined (no
// affine). Training: normalises with the batch mean and biased variance, and when
// running_mean/running_var are defined updates them in place: running = (1 - momentum) * running +
// momentum * batch, with the UNBIASED batch variance for running_var (PyTorch's rule).
// Predicting: normalises with running_mean/running_var.
// Training needs more than one value per channel (N * H * W > 1), as PyTorch's does; momentum lies
// in [0, 1] and epsilon > 0. The backward differentiates through the batch statistics when
// training and treats the running ones as constants when predicting. Statistics in double on
// both devices; the in-place update is a kernel on the stream (capturable in a CUDA graph).
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                  Tensor running_var, bool training, float momentum, float epsilon);
// Normalises over the last `normalized_axes` axes; weight/bias of those axes' shape or undefined.
Tensor layer_norm(const Tensor& x, int64_t normalized_axes, const Tensor& weight,
                  const Tensor& bias, float epsilon);

}  // namespace cairn::ops

namespace cairn {

// Arithmetic operators: the ops above, recorded like them. `x /= 2` rebinds x to a new tensor.
inline Tensor operator+(const Tensor& a, const Tensor& b) { return ops::add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return ops::sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return ops::mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return ops::div(a, b); }
inline Tensor operator-(const Tensor& x) { return ops::neg(x); }
inline Tensor operator+(const Tensor& x, float s) { return ops::add_scalar(x, s); }
inline Tensor operator+(float s, const Tensor& x) { return ops::add_scalar(x, s); }
inline Tensor operator-(const Tensor& x, float s) { return ops::add_scalar(x, -s); }
inline Tensor operator-(float s, const Tensor& x) { return ops::rsub_scalar(s, x); }
inline Tensor operator*(const Tensor& x, float s) { return ops::mul_scalar(x, s); }
inline Tensor operator*(float s, const Tensor& x) { return ops::mul_scalar(x, s); }
inline Tensor operator/(const Tensor& x, float s) { return ops::div_scalar(x, s); }
inline Tensor& operator+=(Tensor& a, const Tensor& b) { return a = ops::add(a, b); }
inline Tensor& operator-=(Tensor& a, const Tensor& b) { return a = ops::sub(a, b); }
inline Tensor& operator*=(Tensor& a, const Tensor& b) { return a = ops::mul(a, b); }
inline Tensor& operator/=(Tensor& a, const Tensor& b) { return a = ops::div(a, b); }
inline Tensor& operator+=(Tensor& x, float s) { return x = ops::add_scalar(x, s); }
inline Tensor& operator-=(Tensor& x, float s) { return x = ops::add_scalar(x, -s); }
inline Tensor& operator*=(Tensor& x, float s) { return x = ops::mul_scalar(x, s); }
inline Tensor& operator/=(Tensor& x, float s) { return x = ops::div_scalar(x, s); }

}  // namespace cairn
