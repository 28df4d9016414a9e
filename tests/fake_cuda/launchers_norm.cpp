// Fake launchers of kernels/norm.h: the argument checks kernels/cuda/norm.cu makes, with its
// messages; every range the real kernels touch checked against live device memory; then the CPU
// twin queued on the stream (launch_support.h).
#include <climits>
#include <cstdint>

#include "cairn/base/error.h"
#include "cairn/kernels/norm.h"
#include "cairn/tests/fake_cuda/launch_support.h"

namespace cairn::fake_cuda {
namespace {

// norm.cu's shape checks.
void check_shape(const char* what, kernels::BatchNormShape shape) {
  CAIRN_CHECK(shape.batch >= 0 && shape.channels >= 0 && shape.spatial >= 0, what,
              ": negative shape (", shape.batch, ", ", shape.channels, ", ", shape.spatial, ")");
  CAIRN_CHECK((shape.channels == 0 || shape.spatial == 0 ||
               shape.batch <= INT64_MAX / shape.channels / shape.spatial),
              what, ": shape (", shape.batch, ", ", shape.channels, ", ", shape.spatial,
              ") overflows int64");
}

void check_rows(const char* what, int64_t rows, int64_t cols) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, what, ": negative shape (", rows, ", ", cols, ")");
  elements(what, rows, cols);
}

bool valid(kernels::NormStatistics statistics) {
  return statistics == kernels::NormStatistics::kBatch ||
         statistics == kernels::NormStatistics::kFixed;
}

// A pointer the kernel reads only when non-null (weight, bias, running statistics): its range
// when given, nothing when not.
int64_t when(const void* ptr, int64_t count) { return ptr != nullptr ? count : 0; }

}  // namespace
}  // namespace cairn::fake_cuda

namespace cairn::kernels::cuda {

using fake_cuda::floats;
using fake_cuda::int32s;
using fake_cuda::launch;
using fake_cuda::when;

void batch_norm_statistics(const float* x, BatchNormShape shape, float momentum, float* mean,
                           float* var, float* running_mean, float* running_var,
                           StreamHandle stream) {
  const char* what = "batch_norm_statistics";
  fake_cuda::check_shape(what, shape);
  CAIRN_CHECK((running_mean == nullptr) == (running_var == nullptr),
              "batch_norm_statistics: running_mean and running_var come together");
  if (shape.channels == 0) return;
  const int64_t C = shape.channels;
  launch(what, stream,
         {floats(what, "x", x, shape.elements()), floats(what, "mean", mean, C),
          floats(what, "var", var, C),
          floats(what, "running_mean", running_mean, when(running_mean, C)),
          floats(what, "running_var", running_var, when(running_var, C))},
         [=] {
           cpu::batch_norm_statistics(x, shape, momentum, mean, var, running_mean, running_var);
         });
}

void batch_norm_forward(const float* x, BatchNormShape shape, const float* mean, const float* var,
                        const float* weight, const float* bias, float epsilon, float* y,
                        StreamHandle stream) {
  const char* what = "batch_norm_forward";
  fake_cuda::check_shape(what, shape);
  const int64_t n = shape.elements(), C = shape.channels;
  if (n == 0) return;
  launch(what, stream,
         {floats(what, "x", x, n), floats(what, "mean", mean, C), floats(what, "var", var, C),
          floats(what, "weight", weight, when(weight, C)),
          floats(what, "bias", bias, when(bias, C)), floats(what, "y", y, n)},
         [=] { cpu::batch_norm_forward(x, shape, mean, var, weight, bias, epsilon, y); });
}

void batch_norm_backward_reduce(const float* x, const float* dy, BatchNormShape shape,
                                const float* mean, const float* var, float epsilon, float* sum_dy,
                                float* sum_dy_xhat, StreamHandle stream) {
  const char* what = "batch_norm_backward_reduce";
  fake_cuda::check_shape(what, shape);
  const int64_t n = shape.elements(), C = shape.channels;
  if (C == 0) return;
  launch(what, stream,
         {floats(what, "x", x, n), floats(what, "dy", dy, n), floats(what, "mean", mean, C),
          floats(what, "var", var, C), floats(what, "sum_dy", sum_dy, C),
          floats(what, "sum_dy_xhat", sum_dy_xhat, C)},
         [=] {
           cpu::batch_norm_backward_reduce(x, dy, shape, mean, var, epsilon, sum_dy, sum_dy_xhat);
         });
}

void batch_norm_backward_input(const float* x, const float* dy, BatchNormShape shape,
                               const float* mean, const float* var, const float* weight,
                               const float* sum_dy, const float* sum_dy_xhat, float epsilon,
                               NormStatistics statistics, float* dx, StreamHandle stream) {
  const char* what = "batch_norm_backward_input";
  fake_cuda::check_shape(what, shape);
  // The real launcher picks a template by the enum: anything else is no kernel at all.
  CAIRN_CHECK(fake_cuda::valid(statistics), what, ": invalid NormStatistics ", int(statistics));
  const int64_t n = shape.elements(), C = shape.channels;
  if (n == 0) return;
  const bool batch = statistics == NormStatistics::kBatch;
  // The fixed-statistics kernel reads neither x nor mean nor the sums.
  launch(what, stream,
         {floats(what, "x", x, batch ? n : 0), floats(what, "dy", dy, n),
          floats(what, "mean", mean, batch ? C : 0), floats(what, "var", var, C),
          floats(what, "weight", weight, when(weight, C)),
          floats(what, "sum_dy", sum_dy, batch ? C : 0),
          floats(what, "sum_dy_xhat", sum_dy_xhat, batch ? C : 0), floats(what, "dx", dx, n)},
         [=] {
           cpu::batch_norm_backward_input(x, dy, shape, mean, var, weight, sum_dy, sum_dy_xhat,
                                          epsilon, statistics, dx);
         });
}

void increment_counter(int32_t* counter, StreamHandle stream) {
  const char* what = "increment_counter";
  launch(what, stream, {int32s(what, "counter", counter, 1)},
         [=] { cpu::increment_counter(counter); });
}

void layer_norm_forward(const float* x, int64_t rows, int64_t cols, const float* weight,
                        const float* bias, float epsilon, float* y, float* mean, float* var,
                        StreamHandle stream) {
  const char* what = "layer_norm_forward";
  fake_cuda::check_rows(what, rows, cols);
  if (rows == 0) return;
  const int64_t n = rows * cols;
  launch(what, stream,
         {floats(what, "x", x, n), floats(what, "weight", weight, when(weight, cols)),
          floats(what, "bias", bias, when(bias, cols)), floats(what, "y", y, n),
          floats(what, "mean", mean, rows), floats(what, "var", var, rows)},
         [=] { cpu::layer_norm_forward(x, rows, cols, weight, bias, epsilon, y, mean, var); });
}

void layer_norm_backward(const float* x, const float* dy, int64_t rows, int64_t cols,
                         const float* mean, const float* var, const float* weight, float epsilon,
                         float* dx, float* dy_xhat, StreamHandle stream) {
  const char* what = "layer_norm_backward";
  fake_cuda::check_rows(what, rows, cols);
  if (rows == 0) return;
  const int64_t n = rows * cols;
  launch(what, stream,
         {floats(what, "x", x, n), floats(what, "dy", dy, n), floats(what, "mean", mean, rows),
          floats(what, "var", var, rows), floats(what, "weight", weight, when(weight, cols)),
          floats(what, "dx", dx, n), floats(what, "dy_xhat", dy_xhat, when(dy_xhat, n))},
         [=] {
           cpu::layer_norm_backward(x, dy, rows, cols, mean, var, weight, epsilon, dx, dy_xhat);
         });
}

}  // namespace cairn::kernels::cuda
