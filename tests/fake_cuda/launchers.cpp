// The fake device's kernels: every cairn::kernels::cuda launcher of elementwise.h, reduce.h,
// loss.h, optimizer.h, random.h and softmax.h, plus scale_matrix (gemm.h), in place of the
// kernels/cuda/*.cu files.
//
// What it models: each launcher makes the argument checks its .cu twin makes, with the same
// messages; then checks that every range the real kernel would touch lies inside one live device
// allocation (a host pointer or a short buffer throws here, where a real GPU would fault later or
// corrupt silently); then queues the CPU twin (kernels::cpu) on the stream, so that it runs in
// stream order on the stream's worker thread or is recorded into the graph being captured. The
// ranges are checked again when the work runs, for memory freed in between. Workspaces are sized
// by the element count and written by the queued work, as CUB's temporary storage is, so that a
// caller that under-allocates is refused and one that shares a workspace across streams races.
//
// What it cannot: reproduce the GPU's bits. The CPU twins accumulate reductions in double and use
// the host libm; tests that compare with the twins compare exactly, tests that compare with a GPU
// must keep their tolerances. Launch configuration (grids, float4 paths, alignment) is not
// modelled: there are no blocks here, only the loop.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cairn/base/error.h"
#include "cairn/kernels/elementwise.h"
#include "cairn/kernels/gemm.h"
#include "cairn/kernels/loss.h"
#include "cairn/kernels/optimizer.h"
#include "cairn/kernels/random.h"
#include "cairn/kernels/reduce.h"
#include "cairn/kernels/softmax.h"
#include "cairn/tests/fake_cuda/fake_device.h"
#include "cairn/tests/fake_cuda/launch_support.h"

namespace cairn::fake_cuda {
namespace {

using kernels::valid;  // UnaryOp and BinaryOp: the op table's
bool valid(kernels::Broadcast b) {
  return int(b) >= int(kernels::Broadcast::kNone) && int(b) <= int(kernels::Broadcast::kColumn);
}
bool valid(kernels::ReduceOp op) {
  return int(op) >= int(kernels::ReduceOp::kSum) && int(op) <= int(kernels::ReduceOp::kSumSquares);
}

// Elements of b in binary(): kernels/elementwise.h's Broadcast table.
int64_t broadcast_elements(kernels::Broadcast broadcast, int64_t rows, int64_t cols) {
  switch (broadcast) {
    case kernels::Broadcast::kNone:
      return rows * cols;
    case kernels::Broadcast::kScalar:
      return 1;
    case kernels::Broadcast::kRow:
      return cols;
    case kernels::Broadcast::kColumn:
      return rows;
  }
  return rows * cols;
}

// The .cu files' shared shape check (loss.cu, softmax.cu, elementwise.cu's binary).
void check_shape(const char* what, int64_t rows, int64_t cols) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, what, ": negative shape (", rows, ", ", cols, ")");
  elements(what, rows, cols);
}

// Rows per chunk of sum_columns, as bias_grad.cu plans them, so the fake workspace grows like the
// real one.
int64_t column_chunks(int64_t rows) {
  constexpr int64_t kRowsPerChunk = 256, kMaxChunks = 65535;
  const int64_t per_chunk = std::max(kRowsPerChunk, (rows + kMaxChunks - 1) / kMaxChunks);
  return (rows + per_chunk - 1) / per_chunk;
}

}  // namespace
}  // namespace cairn::fake_cuda

namespace cairn::kernels::cuda {

using fake_cuda::floats;
using fake_cuda::int32s;
using fake_cuda::launch;

// ---- elementwise.h ----

void fill(float* y, int64_t n, float value, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "fill: negative size ", n);
  if (n == 0) return;
  launch("fill", stream, {floats("fill", "y", y, n)}, [=] { cpu::fill(y, n, value); });
}

void fill_int32(int32_t* y, int64_t n, int32_t value, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "fill_int32: negative size ", n);
  if (n == 0) return;
  launch("fill_int32", stream, {int32s("fill_int32", "y", y, n)},
         [=] { cpu::fill_int32(y, n, value); });
}

void unary(UnaryOp op, const float* x, float* y, int64_t n, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "unary: negative size ", n);
  if (n == 0) return;
  if (!fake_cuda::valid(op)) CAIRN_FAIL("unary: unknown UnaryOp ", static_cast<int>(op));
  launch("unary", stream, {floats("unary", "x", x, n), floats("unary", "y", y, n)},
         [=] { cpu::unary(op, x, y, n); });
}

void unary_backward(UnaryOp op, const float* x, const float* y, const float* dy, float* dx,
                    int64_t n, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "unary_backward: negative size ", n);
  if (n == 0) return;
  if (!fake_cuda::valid(op)) CAIRN_FAIL("unary_backward: unknown UnaryOp ", static_cast<int>(op));
  const char* what = "unary_backward";
  // Only what the row reads must be device memory (the real kernel loads nothing else).
  const Saves saves = info(op).saves;
  fake_cuda::Ranges ranges = {floats(what, "dy", dy, n), floats(what, "dx", dx, n)};
  if (saves == Saves::kInput) ranges.push_back(floats(what, "x", x, n));
  if (saves == Saves::kOutput) ranges.push_back(floats(what, "y", y, n));
  launch(what, stream, ranges, [=] { cpu::unary_backward(op, x, y, dy, dx, n); });
}

void binary(BinaryOp op, const float* a, const float* b, float* y, int64_t rows, int64_t cols,
            Broadcast broadcast, StreamHandle stream) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "binary: negative shape (", rows, ", ", cols, ")");
  CAIRN_CHECK(cols == 0 || rows <= INT64_MAX / cols, "binary: shape (", rows, ", ", cols,
              ") overflows int64");
  const int64_t n = rows * cols;
  if (n == 0) return;
  if (!fake_cuda::valid(op)) CAIRN_FAIL("binary: unknown BinaryOp ", static_cast<int>(op));
  if (!fake_cuda::valid(broadcast)) {
    CAIRN_FAIL("binary: unknown Broadcast ", static_cast<int>(broadcast));
  }
  const int64_t b_elements = fake_cuda::broadcast_elements(broadcast, rows, cols);
  launch("binary", stream,
         {floats("binary", "a", a, n), floats("binary", "b", b, b_elements),
          floats("binary", "y", y, n)},
         [=] { cpu::binary(op, a, b, y, rows, cols, broadcast); });
}

void binary_scalar(BinaryOp op, const float* a, float s, ScalarSide side, float* y, int64_t n,
                   StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "binary_scalar: negative size ", n);
  CAIRN_CHECK(side == ScalarSide::kRight || side == ScalarSide::kLeft,
              "binary_scalar: unknown ScalarSide ", static_cast<int>(side));
  if (n == 0) return;
  if (!fake_cuda::valid(op)) CAIRN_FAIL("binary_scalar: unknown BinaryOp ", static_cast<int>(op));
  const char* what = "binary_scalar";
  launch(what, stream, {floats(what, "a", a, n), floats(what, "y", y, n)},
         [=] { cpu::binary_scalar(op, a, s, side, y, n); });
}

// ---- reduce.h ----

size_t reduce_all_workspace_bytes(ReduceOp op, int64_t n) {
  CAIRN_CHECK(n >= 0, "reduce_all: negative size ", n);
  if (n == 0) return 0;
  if (!fake_cuda::valid(op)) CAIRN_FAIL("reduce_all: unknown ReduceOp ", static_cast<int>(op));
  return fake_cuda::workspace_size(n);
}

void reduce_all(ReduceOp op, const float* x, int64_t n, float* out, void* workspace,
                size_t workspace_bytes, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "reduce_all: negative size ", n);
  if (!fake_cuda::valid(op)) CAIRN_FAIL("reduce_all: unknown ReduceOp ", static_cast<int>(op));
  const char* what = "reduce_all";
  if (n == 0) {
    // The real launcher writes the empty value with a one-thread kernel and needs no workspace.
    launch(what, stream, {floats(what, "out", out, 1)}, [=] { cpu::reduce_all(op, x, 0, out); });
    return;
  }
  const size_t needed = reduce_all_workspace_bytes(op, n);
  CAIRN_CHECK(workspace != nullptr || needed == 0, "reduce_all: null workspace, ", needed,
              " bytes needed for ", n, " elements");
  CAIRN_CHECK(workspace_bytes >= needed, "reduce_all: workspace of ", workspace_bytes, " bytes, ",
              needed, " needed for ", n, " elements");
  launch(what, stream,
         {floats(what, "x", x, n), floats(what, "out", out, 1),
          fake_cuda::Range{"workspace", workspace, workspace_bytes}},
         [=] {
           fake_cuda::scribble(workspace, needed);
           cpu::reduce_all(op, x, n, out);
         });
}

void reduce_rows(ReduceOp op, const float* x, int64_t rows, int64_t cols, float* out,
                 StreamHandle stream) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "reduce_rows: negative shape (", rows, ", ", cols, ")");
  if (rows == 0) return;
  if (!fake_cuda::valid(op)) CAIRN_FAIL("reduce_rows: unknown ReduceOp ", static_cast<int>(op));
  const char* what = "reduce_rows";
  launch(
      what, stream,
      {floats(what, "x", x, fake_cuda::elements(what, rows, cols)), floats(what, "out", out, rows)},
      [=] { cpu::reduce_rows(op, x, rows, cols, out); });
}

size_t sum_columns_workspace_bytes(int64_t rows, int64_t cols) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "sum_columns: negative shape (", rows, ", ", cols, ")");
  if (rows == 0 || cols == 0) return 0;
  // Positive even where the real launcher needs none (one chunk), so that a caller that passes
  // no workspace for small inputs is caught on the first small test.
  return fake_cuda::workspace_size(
      fake_cuda::elements("sum_columns", fake_cuda::column_chunks(rows), cols));
}

void sum_columns(const float* x, int64_t rows, int64_t cols, float* out, Accumulate accumulate,
                 void* workspace, size_t workspace_bytes, StreamHandle stream) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "sum_columns: negative shape (", rows, ", ", cols, ")");
  CAIRN_CHECK((cols + 32 - 1) / 32 <= INT_MAX, "sum_columns: cols ", cols,
              " too many for the grid");
  if (cols == 0) return;
  const char* what = "sum_columns";
  if (rows == 0) {
    // As bias_grad.cu: the sum of no rows is zero; overwrite clears out through cudaMemsetAsync.
    if (accumulate == Accumulate::kOverwrite) {
      fake_cuda::require_device_ranges(what, {floats(what, "out", out, cols)});
      CAIRN_CUDA_CHECK(cudaMemsetAsync(out, 0, static_cast<size_t>(cols) * sizeof(float), stream));
    }
    return;
  }
  const size_t needed = sum_columns_workspace_bytes(rows, cols);
  CAIRN_CHECK(workspace != nullptr && workspace_bytes >= needed, "sum_columns: workspace of ",
              workspace_bytes, " bytes, ", needed, " needed for (", rows, ", ", cols, ")");
  launch(
      what, stream,
      {floats(what, "x", x, fake_cuda::elements(what, rows, cols)), floats(what, "out", out, cols),
       fake_cuda::Range{"workspace", workspace, workspace_bytes}},
      [=] {
        fake_cuda::scribble(workspace, needed);
        cpu::sum_columns(x, rows, cols, out, accumulate);
      });
}

void argmax_rows(const float* x, int64_t rows, int64_t cols, int32_t* out, StreamHandle stream) {
  CAIRN_CHECK(rows >= 0, "argmax_rows: negative rows ", rows);
  CAIRN_CHECK(cols >= 1, "argmax_rows: needs cols >= 1, got ", cols);
  CAIRN_CHECK(cols <= INT32_MAX, "argmax_rows: cols ", cols, " does not fit the int32 index");
  if (rows == 0) return;
  const char* what = "argmax_rows";
  launch(
      what, stream,
      {floats(what, "x", x, fake_cuda::elements(what, rows, cols)), int32s(what, "out", out, rows)},
      [=] { cpu::argmax_rows(x, rows, cols, out); });
}

// ---- loss.h ----

void l2_loss_forward(const float* pred, const float* label, int64_t rows, int64_t cols, float* loss,
                     StreamHandle stream) {
  const char* what = "l2_loss_forward";
  fake_cuda::check_shape(what, rows, cols);
  if (rows == 0) return;
  const int64_t n = rows * cols;
  launch(what, stream,
         {floats(what, "pred", pred, n), floats(what, "label", label, n),
          floats(what, "loss", loss, rows)},
         [=] { cpu::l2_loss_forward(pred, label, rows, cols, loss); });
}

void l2_loss_backward(const float* pred, const float* label, const float* dloss, int64_t rows,
                      int64_t cols, float* dpred, StreamHandle stream) {
  const char* what = "l2_loss_backward";
  fake_cuda::check_shape(what, rows, cols);
  const int64_t n = rows * cols;
  if (n == 0) return;
  launch(what, stream,
         {floats(what, "pred", pred, n), floats(what, "label", label, n),
          floats(what, "dloss", dloss, rows), floats(what, "dpred", dpred, n)},
         [=] { cpu::l2_loss_backward(pred, label, dloss, rows, cols, dpred); });
}

// ---- optimizer.h ----

void sgd_update(float* weight, const float* grad, float* velocity, int64_t n,
                const SgdConfig& config, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "sgd_update: negative size ", n);
  if (n == 0) return;  // nothing to update, and no buffer needed for it
  // Hyperparameter ranges are the optimizer layer's to check, as in optimizer.cu: any momentum
  // but 0 (a NaN too) takes the velocity path.
  const bool use_momentum = config.momentum != 0.0f;
  CAIRN_CHECK(!use_momentum || velocity != nullptr, "sgd_update: momentum ", config.momentum,
              " needs a velocity buffer");
  const char* what = "sgd_update";
  // The kernel reads velocity only with momentum (the CPU twin likewise).
  const int64_t velocity_elements = use_momentum ? n : 0;
  const SgdConfig settings = config;
  launch(what, stream,
         {floats(what, "weight", weight, n), floats(what, "grad", grad, n),
          floats(what, "velocity", velocity, velocity_elements)},
         [=] { cpu::sgd_update(weight, grad, velocity, n, settings); });
}

void adam_update(float* weight, const float* grad, float* mean, float* variance, int64_t n,
                 const AdamConfig& config, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "adam_update: negative size ", n);
  CAIRN_CHECK(config.step >= 1, "adam_update: step is 1-based, got ", config.step);
  if (n == 0) return;
  const char* what = "adam_update";
  const AdamConfig settings = config;
  launch(what, stream,
         {floats(what, "weight", weight, n), floats(what, "grad", grad, n),
          floats(what, "mean", mean, n), floats(what, "variance", variance, n)},
         [=] { cpu::adam_update(weight, grad, mean, variance, n, settings); });
}

// ---- random.h ----

void uniform(float* y, int64_t n, uint64_t seed, float lo, float hi, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "uniform: negative size ", n);
  if (n == 0) return;
  launch("uniform", stream, {floats("uniform", "y", y, n)},
         [=] { cpu::uniform(y, n, seed, lo, hi); });
}

void normal(float* y, int64_t n, uint64_t seed, float mean, float stddev, StreamHandle stream) {
  CAIRN_CHECK(n >= 0, "normal: negative size ", n);
  if (n == 0) return;
  launch("normal", stream, {floats("normal", "y", y, n)},
         [=] { cpu::normal(y, n, seed, mean, stddev); });
}

// ---- softmax.h ----

void softmax_rows(const float* x, int64_t rows, int64_t cols, float* y, StreamHandle stream) {
  const char* what = "softmax_rows";
  fake_cuda::check_shape(what, rows, cols);
  if (rows == 0 || cols == 0) return;
  const int64_t n = rows * cols;
  launch(what, stream, {floats(what, "x", x, n), floats(what, "y", y, n)},
         [=] { cpu::softmax_rows(x, rows, cols, y); });
}

void softmax_backward_rows(const float* y, const float* dy, int64_t rows, int64_t cols, float* dx,
                           StreamHandle stream) {
  const char* what = "softmax_backward_rows";
  fake_cuda::check_shape(what, rows, cols);
  if (rows == 0 || cols == 0) return;
  const int64_t n = rows * cols;
  launch(what, stream,
         {floats(what, "y", y, n), floats(what, "dy", dy, n), floats(what, "dx", dx, n)},
         [=] { cpu::softmax_backward_rows(y, dy, rows, cols, dx); });
}

void softmax_xent_forward(const float* logits, const int32_t* labels, int64_t rows, int64_t cols,
                          float* loss, float* probs, StreamHandle stream) {
  const char* what = "softmax_xent_forward";
  fake_cuda::check_shape(what, rows, cols);
  if (rows == 0) return;
  const int64_t n = rows * cols;  // cols == 0: the kernel still reads labels and writes loss
  launch(what, stream,
         {floats(what, "logits", logits, n), int32s(what, "labels", labels, rows),
          floats(what, "loss", loss, rows), floats(what, "probs", probs, n)},
         [=] { cpu::softmax_xent_forward(logits, labels, rows, cols, loss, probs); });
}

void softmax_xent_backward(const float* probs, const int32_t* labels, const float* dloss,
                           int64_t rows, int64_t cols, float* dlogits, StreamHandle stream) {
  const char* what = "softmax_xent_backward";
  fake_cuda::check_shape(what, rows, cols);
  const int64_t n = rows * cols;
  if (n == 0) return;
  launch(what, stream,
         {floats(what, "probs", probs, n), int32s(what, "labels", labels, rows),
          floats(what, "dloss", dloss, rows), floats(what, "dlogits", dlogits, n)},
         [=] { cpu::softmax_xent_backward(probs, labels, dloss, rows, cols, dlogits); });
}

// ---- gemm.h ----

// c: column-major (m, n), leading dimension ldc (scale_matrix.cu).
void scale_matrix(float* c, int64_t m, int64_t n, int64_t ldc, float beta, StreamHandle stream) {
  CAIRN_CHECK(m >= 0 && n >= 0 && ldc >= m, "scale_matrix: m=", m, " n=", n, " ldc=", ldc);
  if (m == 0 || n == 0) return;
  const char* what = "scale_matrix";
  // The last column ends m elements past its start: (n - 1) * ldc + m elements in all.
  CAIRN_CHECK(n - 1 <= (INT64_MAX - m) / std::max<int64_t>(ldc, 1), what, ": (", m, ", ", n,
              ") with ldc ", ldc, " overflows int64");
  launch(what, stream, {floats(what, "c", c, (n - 1) * ldc + m)},
         [=] { cpu::scale_matrix(c, m, n, ldc, beta); });
}

}  // namespace cairn::kernels::cuda
