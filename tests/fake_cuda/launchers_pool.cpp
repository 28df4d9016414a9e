// The fake device's pooling kernels (kernels/pool.h): the checks kernels/cuda/pool.cu makes, the
// ranges its kernels touch, then the CPU twin queued on the stream.
#include "cairn/base/error.h"
#include "cairn/kernels/pool.h"
#include "cairn/tests/fake_cuda/launch_support.h"

namespace cairn::kernels::cuda {
namespace {

using fake_cuda::floats;
using fake_cuda::int32s;
using fake_cuda::launch;

void check_divisor(const char* what, AvgDivisor divisor) {
  CAIRN_CHECK(divisor == AvgDivisor::kIncludePadding || divisor == AvgDivisor::kExcludePadding,
              what, ": unknown AvgDivisor ", static_cast<int>(divisor));
}

int64_t inputs(const Pool2DGeometry& g) { return g.planes * g.in_h * g.in_w; }
int64_t outputs(const Pool2DGeometry& g) { return g.planes * g.out_h * g.out_w; }

}  // namespace

void max_pool2d_forward(const float* x, const Pool2DGeometry& g, float* y, int32_t* argmax,
                        StreamHandle stream) {
  const char* what = "max_pool2d_forward";
  check_pool2d_geometry(what, g);
  if (outputs(g) == 0) return;
  launch(what, stream,
         {floats(what, "x", x, inputs(g)), floats(what, "y", y, outputs(g)),
          int32s(what, "argmax", argmax, outputs(g))},
         [=] { cpu::max_pool2d_forward(x, g, y, argmax); });
}

void max_pool2d_backward(const float* dy, const int32_t* argmax, const Pool2DGeometry& g, float* dx,
                         StreamHandle stream) {
  const char* what = "max_pool2d_backward";
  check_pool2d_geometry(what, g);
  if (inputs(g) == 0) return;
  launch(what, stream,
         {floats(what, "dy", dy, outputs(g)), int32s(what, "argmax", argmax, outputs(g)),
          floats(what, "dx", dx, inputs(g))},
         [=] { cpu::max_pool2d_backward(dy, argmax, g, dx); });
}

void avg_pool2d_forward(const float* x, const Pool2DGeometry& g, AvgDivisor divisor, float* y,
                        StreamHandle stream) {
  const char* what = "avg_pool2d_forward";
  check_pool2d_geometry(what, g);
  check_divisor(what, divisor);
  if (outputs(g) == 0) return;
  launch(what, stream, {floats(what, "x", x, inputs(g)), floats(what, "y", y, outputs(g))},
         [=] { cpu::avg_pool2d_forward(x, g, divisor, y); });
}

void avg_pool2d_backward(const float* dy, const Pool2DGeometry& g, AvgDivisor divisor, float* dx,
                         StreamHandle stream) {
  const char* what = "avg_pool2d_backward";
  check_pool2d_geometry(what, g);
  check_divisor(what, divisor);
  if (inputs(g) == 0) return;
  launch(what, stream, {floats(what, "dy", dy, outputs(g)), floats(what, "dx", dx, inputs(g))},
         [=] { cpu::avg_pool2d_backward(dy, g, divisor, dx); });
}

}  // namespace cairn::kernels::cuda
