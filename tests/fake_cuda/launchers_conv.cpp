// The fake device's conv.h launchers: kernels/cuda/conv.cu's checks, every range the real kernel
// touches checked against live device memory, then the CPU twin queued on the stream.
#include <cstdint>

#include "cairn/base/error.h"
#include "cairn/kernels/conv.h"
#include "cairn/tests/fake_cuda/launch_support.h"

namespace cairn::kernels::cuda {
namespace {

using fake_cuda::elements;
using fake_cuda::floats;
using fake_cuda::launch;

// conv.cu's check_geometry, with the same message.
void check_geometry(const char* what, const Conv2DGeometry& g, int64_t images) {
  CAIRN_CHECK(images >= 0 && g.channels >= 0 && g.height >= 0 && g.width >= 0 &&
                  g.kernel_h >= 1 && g.kernel_w >= 1 && g.out_h >= 0 && g.out_w >= 0 &&
                  g.stride_h >= 1 && g.stride_w >= 1 && g.pad_h >= 0 && g.pad_w >= 0 &&
                  g.dilation_h >= 1 && g.dilation_w >= 1,
              what, ": invalid geometry (images=", images, " C=", g.channels, " H=", g.height,
              " W=", g.width, " R=", g.kernel_h, " S=", g.kernel_w, " P=", g.out_h, " Q=",
              g.out_w, ")");
}

// conv.cu's check_layout.
void check_layout(const char* what, int64_t images, int64_t k, int64_t pq) {
  CAIRN_CHECK(images >= 0 && k >= 0 && pq >= 0, what, ": negative size (images=", images,
              " k=", k, " pq=", pq, ")");
}

// The elements of x (images, C, H, W) and of col (C*R*S, images*P*Q), refusing overflow.
int64_t image_elements(const char* what, const Conv2DGeometry& g, int64_t images) {
  return elements(what, elements(what, images, g.channels), elements(what, g.height, g.width));
}
int64_t col_elements(const char* what, const Conv2DGeometry& g, int64_t images) {
  const int64_t rows = elements(what, g.channels, elements(what, g.kernel_h, g.kernel_w));
  return elements(what, rows, elements(what, images, elements(what, g.out_h, g.out_w)));
}

}  // namespace

void im2col(const Conv2DGeometry& g, const float* x, int64_t images, float* col,
            StreamHandle stream) {
  const char* what = "im2col";
  check_geometry(what, g, images);
  const int64_t n = col_elements(what, g, images);
  if (n == 0) return;
  launch(what, stream,
         {floats(what, "x", x, image_elements(what, g, images)), floats(what, "col", col, n)},
         [=] { cpu::im2col(g, x, images, col); });
}

void col2im(const Conv2DGeometry& g, const float* col, int64_t images, float* dx,
            StreamHandle stream) {
  const char* what = "col2im";
  check_geometry(what, g, images);
  const int64_t n = image_elements(what, g, images);
  if (n == 0) return;
  launch(what, stream,
         {floats(what, "col", col, col_elements(what, g, images)), floats(what, "dx", dx, n)},
         [=] { cpu::col2im(g, col, images, dx); });
}

void rows_to_images(const float* rows, const float* bias, int64_t images, int64_t k, int64_t pq,
                    float* y, StreamHandle stream) {
  const char* what = "rows_to_images";
  check_layout(what, images, k, pq);
  const int64_t n = elements(what, elements(what, images, k), pq);
  if (n == 0) return;
  fake_cuda::Ranges ranges{floats(what, "rows", rows, n), floats(what, "y", y, n)};
  if (bias != nullptr) ranges.push_back(floats(what, "bias", bias, k));
  launch(what, stream, ranges, [=] { cpu::rows_to_images(rows, bias, images, k, pq, y); });
}

void images_to_rows(const float* y, int64_t images, int64_t k, int64_t pq, float* rows,
                    StreamHandle stream) {
  const char* what = "images_to_rows";
  check_layout(what, images, k, pq);
  const int64_t n = elements(what, elements(what, images, k), pq);
  if (n == 0) return;
  launch(what, stream, {floats(what, "y", y, n), floats(what, "rows", rows, n)},
         [=] { cpu::images_to_rows(y, images, k, pq, rows); });
}

void add_channel_bias(float* y, const float* bias, int64_t images, int64_t k, int64_t pq,
                      StreamHandle stream) {
  const char* what = "add_channel_bias";
  check_layout(what, images, k, pq);
  const int64_t n = elements(what, elements(what, images, k), pq);
  if (n == 0) return;
  launch(what, stream, {floats(what, "y", y, n), floats(what, "bias", bias, k)},
         [=] { cpu::add_channel_bias(y, bias, images, k, pq); });
}

}  // namespace cairn::kernels::cuda
