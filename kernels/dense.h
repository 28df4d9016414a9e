// A Dense layer's affine map as single cuBLASLt calls with fused epilogues.
//
//   forward:  z = x W^T + b             one matmul, the bias applied in its epilogue
//   backward: dW = dz^T x, db = sum dz  one matmul, the bias gradient reduced in its epilogue
//
// Row-major x (n, in), W (out, in), y (n, out) are, read column-major, x^T (in, n), W^T (in, out)
// and y^T (out, n): so y^T = op(W^T) x^T with op = transpose, and the bias runs along the rows
// of D = y^T, as the BIAS epilogue wants. The CPU twin is the unfused composition in the op layer
// (gemm, bias add, relu), which the parity tests hold this path against.
//
// No RELU_BIAS epilogue: it maps NaN to 0 (max(NaN, 0) picks 0), while cairn's ReLU propagates
// NaN as PyTorch's does, so the op layer applies its own ReLU kernel after the BIAS epilogue and
// GPU and CPU agree on NaN (and the numerics check sees it).
//
// Either call returns false, having queued nothing, when cuBLASLt has no algorithm for that
// shape and epilogue (the answer is cached per plan, and said once on stderr); the op layer then
// falls back to cuBLAS GEMM and cairn's own bias kernels.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cairn/kernels/common.h"


namespace cairn::kernels {


// How cuBLAS may round float32 products: exact float32 (the default) or TF32 tensor cores, an
// explicit opt-in (about 10 bits of mantissa in the products).
enum class MatmulPrecision { kFloat32, kTf32 };

namespace cuda {

// Scratch cuBLASLt may use for its fastest algorithms.
constexpr size_t kLtWorkspaceBytes = size_t(32) << 20;

// x: (n, in), w: (out, in), b: (out) -> y: (n, out) = x W^T + b
bool dense_forward(LtHandle handle, const float* x, const float* w, const float* b, float* y,
                   int64_t n, int64_t in, int64_t out, MatmulPrecision precision, void* workspace,
                   size_t workspace_bytes, StreamHandle stream);

// dz: (n, out), x: (n, in) -> dw: (out, in) and db: (out), in one call.
bool dense_weight_backward(LtHandle handle, const float* dz, const float* x, float* dw, float* db,
                           int64_t n, int64_t in, int64_t out, MatmulPrecision precision,
                           void* workspace, size_t workspace_bytes, StreamHandle stream);

}  // namespace cuda
}  // namespace cairn::kernels
