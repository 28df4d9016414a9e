// CPU 2-D convolution: im2col, col2im, the layout changes, and the drivers that run whole images
// per thread (kernels/conv.h). The index math is kernels/conv_math.h's; the loops here walk it a
// row at a time (contiguous copies, zero fills) instead of an element at a time.
#include "cairn/kernels/conv.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "cairn/base/error.h"
#include "cairn/kernels/cpu/parallel.h"
#include "cairn/kernels/gemm.h"

namespace cairn::kernels::cpu {
namespace {

// Below this many floats per range a loop is not worth a thread.
constexpr int64_t kMinPerThread = 16384;

// c (m, n) = op(a) op(b), row-major, through cpu::gemm.
void gemm_rows(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k,
               Transpose ta, Transpose tb, Accumulate accumulate) {
  RowMajorGemm request;
  request.a = a;
  request.b = b;
  request.c = c;
  request.m = m;
  request.n = n;
  request.k = k;
  request.transpose_a = ta;
  request.transpose_b = tb;
  request.accumulate = accumulate;
  gemm(plan_gemm(request));
}

// One column-matrix buffer per thread, kept between calls: each image's im2col lands in the
// cache of the core that multiplies it.
float* col_scratch(int64_t floats) {
  thread_local std::vector<float> scratch;
  if (int64_t(scratch.size()) < floats) scratch.resize(size_t(floats));
  return scratch.data();
}

// The threads the drivers use: whole images each, so no more than there are images.
int image_parts(int64_t images) { return int(std::min<int64_t>(threads(), images)); }

// Row `row` of the column matrix for image `image` of the chunk (its P*Q columns).
void im2col_row(const Conv2DGeometry& g, const float* x, int64_t images, int64_t row,
                int64_t image, float* col) {
  const int64_t s = row % g.kernel_w, r = (row / g.kernel_w) % g.kernel_h, c = row / g.taps();
  const float* plane = x + (image * g.channels + c) * g.in_pixels();
  float* out = col + row * images * g.out_pixels() + image * g.out_pixels();
  int64_t p0, p1, q0, q1;
  conv_valid_outputs(r, g.height, g.out_h, g.stride_h, g.pad_h, g.dilation_h, &p0, &p1);
  conv_valid_outputs(s, g.width, g.out_w, g.stride_w, g.pad_w, g.dilation_w, &q0, &q1);
  const int64_t q_out = g.out_w;
  std::memset(out, 0, size_t(p0 * q_out) * sizeof(float));
  for (int64_t p = p0; p < p1; ++p) {
    const float* src = plane + conv_in_index(p, r, g.stride_h, g.pad_h, g.dilation_h) * g.width;
    float* o = out + p * q_out;
    std::fill(o, o + q0, 0.0f);
    std::fill(o + q1, o + q_out, 0.0f);
    if (q1 <= q0) continue;
    const float* first = src + conv_in_index(q0, s, g.stride_w, g.pad_w, g.dilation_w);
    if (g.stride_w == 1) {
      std::memcpy(o + q0, first, size_t(q1 - q0) * sizeof(float));
    } else {
      for (int64_t q = q0; q < q1; ++q) o[q] = first[(q - q0) * g.stride_w];
    }
  }
  std::memset(out + p1 * q_out, 0, size_t((g.out_h - p1) * q_out) * sizeof(float));
}

// dx row (image, c, h), all W columns: col2im_value's sums, in its order (r, then s, in double),
// computed a row at a time where the stride along w is 1.
void col2im_row(const Conv2DGeometry& g, const float* col, int64_t images, int64_t image,
                int64_t c, int64_t h, double* acc, float* dx_row) {
  if (g.stride_w != 1) {
    for (int64_t w = 0; w < g.width; ++w) dx_row[w] = col2im_value(g, col, images, image, c, h, w);
    return;
  }
  const int64_t columns = images * g.out_pixels();
  std::fill(acc, acc + g.width, 0.0);
  for (int64_t r = 0; r < g.kernel_h; ++r) {
    const int64_t p = conv_out_index(h, r, g.out_h, g.stride_h, g.pad_h, g.dilation_h);
    if (p < 0) continue;
    for (int64_t s = 0; s < g.kernel_w; ++s) {
      const int64_t row = (c * g.kernel_h + r) * g.kernel_w + s;
      // q = w + pad_w - s * dilation_w must lie in [0, Q).
      const int64_t shift = g.pad_w - s * g.dilation_w;
      const int64_t w0 = std::max<int64_t>(0, -shift);
      const int64_t w1 = std::min<int64_t>(g.width, g.out_w - shift);
      const float* src = col + row * columns + image * g.out_pixels() + p * g.out_w;
      for (int64_t w = w0; w < w1; ++w) acc[w] += src[w + shift];
    }
  }
  for (int64_t w = 0; w < g.width; ++w) dx_row[w] = static_cast<float>(acc[w]);
}

}  // namespace

void im2col(const Conv2DGeometry& g, const float* x, int64_t images, float* col) {
  const int64_t units = g.col_rows() * images;
  parallel_for(units, std::max<int64_t>(1, kMinPerThread / std::max<int64_t>(1, g.out_pixels())),
               [&](int64_t begin, int64_t end) {
                 for (int64_t u = begin; u < end; ++u) im2col_row(g, x, images, u / images, u % images, col);
               });
}

void col2im(const Conv2DGeometry& g, const float* col, int64_t images, float* dx) {
  const int64_t rows = images * g.channels * g.height;
  parallel_for(rows, std::max<int64_t>(1, kMinPerThread / std::max<int64_t>(1, g.width * g.taps())),
               [&](int64_t begin, int64_t end) {
                 std::vector<double> acc(size_t(g.width));
                 for (int64_t u = begin; u < end; ++u) {
                   const int64_t h = u % g.height, c = (u / g.height) % g.channels;
                   const int64_t image = u / (g.height * g.channels);
                   col2im_row(g, col, images, image, c, h, acc.data(), dx + u * g.width);
                 }
               });
}

void rows_to_images(const float* rows, const float* bias, int64_t images, int64_t k, int64_t pq,
                    float* y) {
  parallel_for(images * k, std::max<int64_t>(1, kMinPerThread / std::max<int64_t>(1, pq)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t u = begin; u < end; ++u) {
                   const int64_t image = u / k, channel = u % k;
                   const float* src = rows + channel * images * pq + image * pq;
                   float* dst = y + u * pq;
                   if (bias == nullptr) {
                     std::memcpy(dst, src, size_t(pq) * sizeof(float));
                   } else {
                     const float b = bias[channel];
                     for (int64_t i = 0; i < pq; ++i) dst[i] = src[i] + b;
                   }
                 }
               });
}

void images_to_rows(const float* y, int64_t images, int64_t k, int64_t pq, float* rows) {
  parallel_for(images * k, std::max<int64_t>(1, kMinPerThread / std::max<int64_t>(1, pq)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t u = begin; u < end; ++u) {
                   const int64_t image = u / k, channel = u % k;
                   std::memcpy(rows + channel * images * pq + image * pq, y + u * pq,
                               size_t(pq) * sizeof(float));
                 }
               });
}

void add_channel_bias(float* y, const float* bias, int64_t images, int64_t k, int64_t pq) {
  parallel_for(images * k, std::max<int64_t>(1, kMinPerThread / std::max<int64_t>(1, pq)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t u = begin; u < end; ++u) {
                   const float b = bias[u % k];
                   float* row = y + u * pq;
                   for (int64_t i = 0; i < pq; ++i) row[i] += b;
                 }
               });
}

// ---- Drivers: whole images per thread ----

void conv2d_forward(const Conv2DGeometry& g, int64_t n, const float* x, const float* w,
                    const float* bias, float* y) {
  if (n == 0 || g.filters == 0 || g.out_pixels() == 0) return;
  const int64_t kg = g.filters / g.groups, rows_g = g.col_rows() / g.groups, pq = g.out_pixels();
  const int parts = image_parts(n);
  parallel_blas_parts(parts, [&](int part) {
    const int64_t begin = n * part / parts, end = n * (part + 1) / parts;
    float* col = g.pointwise() ? nullptr : col_scratch(g.col_rows() * pq);
    for (int64_t image = begin; image < end; ++image) {
      const float* x_n = x + image * g.channels * g.in_pixels();
      const float* matrix = x_n;  // pointwise: x_n is already (C, P*Q)
      if (col != nullptr) {
        im2col(g, x_n, 1, col);
        matrix = col;
      }
      float* y_n = y + image * g.filters * pq;
      for (int64_t group = 0; group < g.groups; ++group) {
        gemm_rows(w + group * kg * rows_g, matrix + group * rows_g * pq, y_n + group * kg * pq, kg,
                  pq, rows_g, Transpose::kNo, Transpose::kNo, Accumulate::kOverwrite);
      }
      if (bias != nullptr) add_channel_bias(y_n, bias, 1, g.filters, pq);
    }
  });
}

void conv2d_backward_data(const Conv2DGeometry& g, int64_t n, const float* dy, const float* w,
                          float* dx) {
  if (n == 0 || g.channels == 0 || g.in_pixels() == 0) return;
  const int64_t kg = g.filters / g.groups, rows_g = g.col_rows() / g.groups, pq = g.out_pixels();
  const int parts = image_parts(n);
  parallel_blas_parts(parts, [&](int part) {
    const int64_t begin = n * part / parts, end = n * (part + 1) / parts;
    float* dcol = g.pointwise() ? nullptr : col_scratch(g.col_rows() * pq);
    for (int64_t image = begin; image < end; ++image) {
      const float* dy_n = dy + image * g.filters * pq;
      float* dx_n = dx + image * g.channels * g.in_pixels();
      float* target = dcol != nullptr ? dcol : dx_n;  // pointwise: dx_n is the column matrix
      for (int64_t group = 0; group < g.groups; ++group) {
        // d col_g = W_g^T dy_g: (C/G*R*S, K/G) (K/G, P*Q)
        gemm_rows(w + group * kg * rows_g, dy_n + group * kg * pq, target + group * rows_g * pq,
                  rows_g, pq, kg, Transpose::kYes, Transpose::kNo, Accumulate::kOverwrite);
      }
      if (dcol != nullptr) col2im(g, dcol, 1, dx_n);
    }
  });
}

void conv2d_backward_weight(const Conv2DGeometry& g, int64_t n, const float* dy, const float* x,
                            float* dw) {
  const int64_t kg = g.filters / g.groups, rows_g = g.col_rows() / g.groups, pq = g.out_pixels();
  const int64_t dw_size = g.filters * rows_g;
  if (n == 0 || pq == 0) {
    std::fill(dw, dw + dw_size, 0.0f);
    return;
  }
  const int parts = image_parts(n);
  // Part 0 sums into dw itself, the others into their own partial sums, added in order after.
  std::vector<float> partials(size_t((parts - 1) * dw_size));
  parallel_blas_parts(parts, [&](int part) {
    const int64_t begin = n * part / parts, end = n * (part + 1) / parts;
    float* target = part == 0 ? dw : partials.data() + (part - 1) * dw_size;
    float* col = g.pointwise() ? nullptr : col_scratch(g.col_rows() * pq);
    for (int64_t image = begin; image < end; ++image) {
      const float* x_n = x + image * g.channels * g.in_pixels();
      const float* matrix = x_n;
      if (col != nullptr) {
        im2col(g, x_n, 1, col);
        matrix = col;
      }
      const float* dy_n = dy + image * g.filters * pq;
      const Accumulate accumulate = image == begin ? Accumulate::kOverwrite : Accumulate::kAdd;
      for (int64_t group = 0; group < g.groups; ++group) {
        // dW_g (+)= dy_g col_g^T: (K/G, P*Q) (P*Q, C/G*R*S)
        gemm_rows(dy_n + group * kg * pq, matrix + group * rows_g * pq,
                  target + group * kg * rows_g, kg, rows_g, pq, Transpose::kNo, Transpose::kYes,
                  accumulate);
      }
    }
  });
  for (int part = 1; part < parts; ++part) {
    const float* partial = partials.data() + (part - 1) * dw_size;
    parallel_for(dw_size, kMinPerThread, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) dw[i] += partial[i];
    });
  }
}

}  // namespace cairn::kernels::cpu
