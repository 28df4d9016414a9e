// The fuzz build compiles cairn's host code with clang and libFuzzer, not its CUDA kernels: the
// readers only ever make CPU tensors. core/ links against the kernel launchers all the same, so
// each one is defined here to throw. Reaching one would mean a CPU-only path touched the GPU,
// which is a finding in itself. A new launcher in kernels/*.h needs a line here.
#include "cairn/base/error.h"
#include "cairn/kernels/conv.h"
#include "cairn/kernels/dense.h"
#include "cairn/kernels/dropout.h"
#include "cairn/kernels/elementwise.h"
#include "cairn/kernels/gemm.h"
#include "cairn/kernels/loss.h"
#include "cairn/kernels/norm.h"
#include "cairn/kernels/optimizer.h"
#include "cairn/kernels/pool.h"
#include "cairn/kernels/random.h"
#include "cairn/kernels/reduce.h"
#include "cairn/kernels/softmax.h"

namespace cairn::kernels::cuda {
namespace {
[[noreturn]] void no_cuda(const char* launcher) {
  CAIRN_FAIL(launcher, ": no CUDA in the fuzz build (a CPU-only path reached a CUDA kernel)");
}
}  // namespace

bool dense_forward(LtHandle, const float*, const float*, const float*, float*, int64_t, int64_t,
                   int64_t, MatmulPrecision, void*, size_t, StreamHandle) {
  no_cuda("dense_forward");
}
bool dense_weight_backward(LtHandle, const float*, const float*, float*, float*, int64_t, int64_t,
                           int64_t, MatmulPrecision, void*, size_t, StreamHandle) {
  no_cuda("dense_weight_backward");
}
void fill(float*, int64_t, float, StreamHandle) { no_cuda("fill"); }
void fill_int32(int32_t*, int64_t, int32_t, StreamHandle) { no_cuda("fill_int32"); }
void unary(UnaryOp, const float*, float*, int64_t, StreamHandle) { no_cuda("unary"); }
void unary_backward(UnaryOp, const float*, const float*, const float*, float*, int64_t,
                    StreamHandle) {
  no_cuda("unary_backward");
}
void binary(BinaryOp, const float*, const float*, float*, int64_t, int64_t, Broadcast,
            StreamHandle) {
  no_cuda("binary");
}
void binary_scalar(BinaryOp, const float*, float, ScalarSide, float*, int64_t, StreamHandle) {
  no_cuda("binary_scalar");
}
void gemm(const ColumnMajorGemmPlan&, BlasHandle) { no_cuda("gemm"); }
void scale_matrix(float*, int64_t, int64_t, int64_t, float, StreamHandle) {
  no_cuda("scale_matrix");
}
void l2_loss_forward(const float*, const float*, int64_t, int64_t, float*, StreamHandle) {
  no_cuda("l2_loss_forward");
}
void l2_loss_backward(const float*, const float*, const float*, int64_t, int64_t, float*,
                      StreamHandle) {
  no_cuda("l2_loss_backward");
}
void sgd_update(float*, const float*, float*, int64_t, const SgdConfig&, StreamHandle) {
  no_cuda("sgd_update");
}
void adam_update(float*, const float*, float*, float*, int64_t, const AdamConfig&, StreamHandle) {
  no_cuda("adam_update");
}
void uniform(float*, int64_t, uint64_t, float, float, StreamHandle) { no_cuda("uniform"); }
void normal(float*, int64_t, uint64_t, float, float, StreamHandle) { no_cuda("normal"); }
size_t reduce_all_workspace_bytes(ReduceOp, int64_t) { no_cuda("reduce_all_workspace_bytes"); }
void reduce_all(ReduceOp, const float*, int64_t, float*, void*, size_t, StreamHandle) {
  no_cuda("reduce_all");
}
void reduce_rows(ReduceOp, const float*, int64_t, int64_t, float*, StreamHandle) {
  no_cuda("reduce_rows");
}
size_t sum_columns_workspace_bytes(int64_t, int64_t) { no_cuda("sum_columns_workspace_bytes"); }
void sum_columns(const float*, int64_t, int64_t, float*, Accumulate, void*, size_t, StreamHandle) {
  no_cuda("sum_columns");
}
void argmax_rows(const float*, int64_t, int64_t, int32_t*, StreamHandle) { no_cuda("argmax_rows"); }
void softmax_rows(const float*, int64_t, int64_t, float*, StreamHandle) { no_cuda("softmax_rows"); }
void softmax_backward_rows(const float*, const float*, int64_t, int64_t, float*, StreamHandle) {
  no_cuda("softmax_backward_rows");
}
void softmax_xent_forward(const float*, const int32_t*, int64_t, int64_t, float*, float*,
                          StreamHandle) {
  no_cuda("softmax_xent_forward");
}
void softmax_xent_backward(const float*, const int32_t*, const float*, int64_t, int64_t, float*,
                           StreamHandle) {
  no_cuda("softmax_xent_backward");
}

void batch_norm_statistics(const float*, BatchNormShape, float, float*, float*, float*, float*,
                           StreamHandle) {
  no_cuda("batch_norm_statistics");
}
void batch_norm_forward(const float*, BatchNormShape, const float*, const float*, const float*,
                        const float*, float, float*, StreamHandle) {
  no_cuda("batch_norm_forward");
}
void batch_norm_backward_reduce(const float*, const float*, BatchNormShape, const float*,
                                const float*, float, float*, float*, StreamHandle) {
  no_cuda("batch_norm_backward_reduce");
}
void batch_norm_backward_input(const float*, const float*, BatchNormShape, const float*,
                               const float*, const float*, const float*, const float*, float,
                               NormStatistics, float*, StreamHandle) {
  no_cuda("batch_norm_backward_input");
}
void increment_counter(int32_t*, StreamHandle) { no_cuda("increment_counter"); }
void layer_norm_forward(const float*, int64_t, int64_t, const float*, const float*, float, float*,
                        float*, float*, StreamHandle) {
  no_cuda("layer_norm_forward");
}
void layer_norm_backward(const float*, const float*, int64_t, int64_t, const float*, const float*,
                         const float*, float, float*, float*, StreamHandle) {
  no_cuda("layer_norm_backward");
}

void im2col(const Conv2DGeometry&, const float*, int64_t, float*, StreamHandle) {
  no_cuda("im2col");
}
void col2im(const Conv2DGeometry&, const float*, int64_t, float*, StreamHandle) {
  no_cuda("col2im");
}
void rows_to_images(const float*, const float*, int64_t, int64_t, int64_t, float*, StreamHandle) {
  no_cuda("rows_to_images");
}
void images_to_rows(const float*, int64_t, int64_t, int64_t, float*, StreamHandle) {
  no_cuda("images_to_rows");
}
void add_channel_bias(float*, const float*, int64_t, int64_t, int64_t, StreamHandle) {
  no_cuda("add_channel_bias");
}
void max_pool2d_forward(const float*, const Pool2DGeometry&, float*, int32_t*, StreamHandle) {
  no_cuda("max_pool2d_forward");
}
void max_pool2d_backward(const float*, const int32_t*, const Pool2DGeometry&, float*,
                         StreamHandle) {
  no_cuda("max_pool2d_backward");
}
void avg_pool2d_forward(const float*, const Pool2DGeometry&, AvgDivisor, float*, StreamHandle) {
  no_cuda("avg_pool2d_forward");
}
void avg_pool2d_backward(const float*, const Pool2DGeometry&, AvgDivisor, float*, StreamHandle) {
  no_cuda("avg_pool2d_backward");
}
void dropout(const float*, int64_t, float, float, const int32_t*, float*, float*, StreamHandle) {
  no_cuda("dropout");
}
void advance_dropout_state(int32_t*, int64_t, StreamHandle) { no_cuda("advance_dropout_state"); }

}  // namespace cairn::kernels::cuda
