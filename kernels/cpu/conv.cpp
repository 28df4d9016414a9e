// CPU 2-D convolution: im2col, col2im, the layout changes, and the drivers that run whole images
// per thread (kernels/conv.h). The index math is kernels/conv_math.h's; the loops here walk it a
// row at a time (contiguous copies, zero fills) instead of an element at a time.
#include "cairn/kernels/conv.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "cairn/base/error.h"
#include "cairn/kernels/cpu/conv_avx2.h"
#include "cairn/kernels/cpu/conv_avx512.h"
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

// Two buffers per thread (the column matrix, and a GEMM's rows), kept between calls: a chunk's
// im2col lands in the cache of the core that multiplies it.
float* scratch(int which, int64_t floats) {
  thread_local std::vector<float> buffers[2];
  std::vector<float>& buffer = buffers[which];
  if (int64_t(buffer.size()) < floats) buffer.resize(size_t(floats));
  return buffer.data();
}

// Images a thread multiplies at once: enough that the GEMM is at least kMinColumns wide (one GEMM
// per 8x8 image is mostly overhead), one where an image alone is that wide (its product is then
// already NCHW: no layout pass).
constexpr int64_t kMinColumns = 256;
int64_t chunk_of(const Conv2DGeometry& g, int64_t images) {
  const int64_t pq = std::max<int64_t>(1, g.out_pixels());
  return std::max<int64_t>(1, std::min(images, (kMinColumns + pq - 1) / pq));
}

// The threads the drivers use: whole images each, so no more than there are images.
int image_parts(int64_t images) { return int(std::min<int64_t>(threads(), images)); }

// The R*S rows of channel c of the column matrix for image `image` of the chunk (their P*Q
// columns each): one input plane, read while it is in L1. The contiguous runs go through memcpy
// and memset, which pick the widest vector instructions at run time (the build targets baseline
// x86-64, so the compiler's own loops would be SSE2 or scalar).
void im2col_plane(const Conv2DGeometry& g, const float* x, int64_t images, int64_t image,
                  int64_t c, float* col) {
  const float* plane = x + (image * g.channels + c) * g.in_pixels();
  const int64_t q_out = g.out_w, columns = images * g.out_pixels();
  const bool shifted_copy = g.stride_h == 1 && g.stride_w == 1 && q_out == g.width;
  for (int64_t r = 0; r < g.kernel_h; ++r) {
    int64_t p0, p1;
    conv_valid_outputs(r, g.height, g.out_h, g.stride_h, g.pad_h, g.dilation_h, &p0, &p1);
    for (int64_t s = 0; s < g.kernel_w; ++s) {
      const int64_t row = (c * g.kernel_h + r) * g.kernel_w + s;
      float* out = col + row * columns + image * g.out_pixels();
      int64_t q0, q1;
      conv_valid_outputs(s, g.width, g.out_w, g.stride_w, g.pad_w, g.dilation_w, &q0, &q1);
      const int64_t offset = s * g.dilation_w - g.pad_w;  // input column of output column 0
      std::memset(out, 0, size_t(p0 * q_out) * sizeof(float));
      if (shifted_copy && p1 > p0 && q1 > q0) {
        // Stride 1 with output rows as wide as the input's: output (p, q) reads input element
        // p * W + q + shift, so rows p0 to p1 are one contiguous run of the plane (in bounds:
        // its first and last elements are valid taps), copied at once; then the columns outside
        // [q0, q1), which picked up the neighbouring rows' ends, are zeroed.
        const int64_t shift = conv_in_index(0, r, 1, g.pad_h, g.dilation_h) * g.width + offset;
        const int64_t first = p0 * q_out + q0, last = (p1 - 1) * q_out + q1;
        std::memcpy(out + first, plane + first + shift, size_t(last - first) * sizeof(float));
        for (int64_t p = p0; p < p1; ++p) {
          float* o = out + p * q_out;
          for (int64_t q = 0; q < q0; ++q) o[q] = 0.0f;
          for (int64_t q = q1; q < q_out; ++q) o[q] = 0.0f;
        }
        std::memset(out + p1 * q_out, 0, size_t((g.out_h - p1) * q_out) * sizeof(float));
        continue;
      }
      for (int64_t p = p0; p < p1; ++p) {
        // Indices, not a pointer moved by `offset`, which may point before the plane.
        const int64_t base = conv_in_index(p, r, g.stride_h, g.pad_h, g.dilation_h) * g.width + offset;
        float* o = out + p * q_out;
        for (int64_t q = 0; q < q0; ++q) o[q] = 0.0f;
        if (g.stride_w == 1) {
          if (q1 > q0) std::memcpy(o + q0, plane + base + q0, size_t(q1 - q0) * sizeof(float));
        } else {
          for (int64_t q = q0; q < q1; ++q) o[q] = plane[base + q * g.stride_w];
        }
        for (int64_t q = q1; q < q_out; ++q) o[q] = 0.0f;
      }
      std::memset(out + p1 * q_out, 0, size_t((g.out_h - p1) * q_out) * sizeof(float));
    }
  }
}

// dx plane (image, c) from the R*S rows of channel c: zeroed, then each row scattered in order
// (r, then s). Each input element gets at most one entry per row, so it receives its terms in
// col2im_value's order, added in float from 0: the same bits as the gather, at a cost of one
// pass over the rows.
void col2im_plane(const Conv2DGeometry& g, const float* col, int64_t images, int64_t image,
                  int64_t c, float* dx) {
  float* __restrict plane = dx + (image * g.channels + c) * g.in_pixels();
  std::memset(plane, 0, size_t(g.in_pixels()) * sizeof(float));
  const int64_t q_out = g.out_w, columns = images * g.out_pixels();
  for (int64_t r = 0; r < g.kernel_h; ++r) {
    int64_t p0, p1;
    conv_valid_outputs(r, g.height, g.out_h, g.stride_h, g.pad_h, g.dilation_h, &p0, &p1);
    for (int64_t s = 0; s < g.kernel_w; ++s) {
      const int64_t row = (c * g.kernel_h + r) * g.kernel_w + s;
      const float* in = col + row * columns + image * g.out_pixels();
      int64_t q0, q1;
      conv_valid_outputs(s, g.width, g.out_w, g.stride_w, g.pad_w, g.dilation_w, &q0, &q1);
      const int64_t offset = s * g.dilation_w - g.pad_w;
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t base = conv_in_index(p, r, g.stride_h, g.pad_h, g.dilation_h) * g.width + offset;
        const float* __restrict src = in + p * q_out;
        if (g.stride_w == 1) {
          for (int64_t q = q0; q < q1; ++q) plane[base + q] += src[q];
        } else {
          for (int64_t q = q0; q < q1; ++q) plane[base + q * g.stride_w] += src[q];
        }
      }
    }
  }
}

}  // namespace

void im2col(const Conv2DGeometry& g, const float* x, int64_t images, float* col) {
  const int64_t planes = images * g.channels;
  const int64_t per_plane = std::max<int64_t>(1, g.taps() * g.out_pixels());
  parallel_for(planes, std::max<int64_t>(1, kMinPerThread / per_plane),
               [&](int64_t begin, int64_t end) {
                 for (int64_t u = begin; u < end; ++u) {
                   im2col_plane(g, x, images, u / g.channels, u % g.channels, col);
                 }
               });
}

void col2im(const Conv2DGeometry& g, const float* col, int64_t images, float* dx) {
  const int64_t planes = images * g.channels;
  const int64_t per_plane = std::max<int64_t>(1, g.taps() * g.out_pixels());
  parallel_for(planes, std::max<int64_t>(1, kMinPerThread / per_plane),
               [&](int64_t begin, int64_t end) {
                 for (int64_t u = begin; u < end; ++u) {
                   col2im_plane(g, col, images, u / g.channels, u % g.channels, dx);
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


// ---- The packed drivers (kernels/cpu/conv_avx512.h, conv_avx2.h) ----
namespace {

// The floats of column matrix one chunk may use: about 1 MB, so that im2col's output is still in
// the L2 of the core that multiplies it (2 MB on the Xeons measured, 512 KB on Zen: there the
// chunk reads from L3, still without a pass through memory).
constexpr int64_t kColumnFloats = int64_t(1) << 18;

int64_t l2_chunk(const Conv2DGeometry& g, int64_t images) {
  const int64_t per_image = std::max<int64_t>(1, g.col_rows() * g.out_pixels());
  return std::max<int64_t>(1, std::min(images, kColumnFloats / per_image));
}

// The packed products this CPU runs: AVX-512 where it has it, else AVX2 with FMA, else none
// (the OpenBLAS drivers below). The two give the same bits.
struct PackedKernels {
  void (*im2col)(const Conv2DGeometry&, const float*, int64_t, float*);
  void (*multiply)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, const float*,
                   float*);
};
const PackedKernels* packed_kernels() {
  static const PackedKernels kAvx512{conv_avx512::im2col, conv_avx512::multiply};
  static const PackedKernels kAvx2{nullptr, conv_avx2::multiply};  // im2col: the plain one
  if (conv_avx512::available()) return &kAvx512;
  if (conv_avx2::available()) return &kAvx2;
  return nullptr;
}

// im2col, through the packed kernels' where the CPU has them and they take the geometry.
void fast_im2col(const Conv2DGeometry& g, const float* x, int64_t images, float* col) {
  const PackedKernels* kernels = packed_kernels();
  if (kernels != nullptr && kernels->im2col != nullptr && g.stride_w == 1) {
    kernels->im2col(g, x, images, col);
  } else {
    im2col(g, x, images, col);
  }
}

void forward_packed(const PackedKernels& kernels, const Conv2DGeometry& g, int64_t n,
                    const float* x, const float* w, const float* bias, float* y) {
  const int64_t k = g.filters, rows = g.col_rows(), pq = g.out_pixels();
  const int64_t blocks = (k + conv_avx512::kBlock - 1) / conv_avx512::kBlock;
  std::vector<float> packed(size_t(blocks * conv_avx512::kBlock * rows));
  conv_avx512::pack_rows(w, k, rows, rows, packed.data());
  const int parts = image_parts(n);
  parallel_blas_parts(parts, [&](int part) {
    const int64_t begin = n * part / parts, end = n * (part + 1) / parts;
    // Pointwise: each image's x is its column matrix already.
    const int64_t chunk = g.pointwise() ? 1 : l2_chunk(g, end - begin);
    for (int64_t first = begin; first < end; first += chunk) {
      const int64_t images = std::min(chunk, end - first), columns = images * pq;
      const float* x_chunk = x + first * g.channels * g.in_pixels();
      const float* matrix = x_chunk;
      if (!g.pointwise()) {
        float* col = scratch(0, rows * columns);
        fast_im2col(g, x_chunk, images, col);
        matrix = col;
      }
      kernels.multiply(packed.data(), k, rows, matrix, columns, pq, bias, y + first * k * pq);
    }
  });
}

void backward_data_packed(const PackedKernels& kernels, const Conv2DGeometry& g, int64_t n,
                          const float* dy, const float* w, float* dx) {
  const int64_t k = g.filters, rows = g.col_rows(), pq = g.out_pixels();
  const int64_t blocks = (rows + conv_avx512::kBlock - 1) / conv_avx512::kBlock;
  std::vector<float> packed(size_t(blocks * conv_avx512::kBlock * k));
  conv_avx512::pack_columns(w, rows, k, rows, packed.data());  // W^T: (C*R*S, K)
  const int parts = image_parts(n);
  parallel_blas_parts(parts, [&](int part) {
    const int64_t begin = n * part / parts, end = n * (part + 1) / parts;
    const int64_t chunk = g.pointwise() ? 1 : l2_chunk(g, end - begin);
    for (int64_t first = begin; first < end; first += chunk) {
      const int64_t images = std::min(chunk, end - first), columns = images * pq;
      const float* dy_chunk = dy + first * k * pq;
      float* dx_chunk = dx + first * g.channels * g.in_pixels();
      const float* dy_matrix = dy_chunk;  // (K, images*P*Q)
      if (images > 1) {
        float* dy_rows = scratch(1, k * columns);
        images_to_rows(dy_chunk, images, k, pq, dy_rows);
        dy_matrix = dy_rows;
      }
      float* target = g.pointwise() ? dx_chunk : scratch(0, rows * columns);
      kernels.multiply(packed.data(), rows, k, dy_matrix, columns, 0, nullptr, target);
      if (!g.pointwise()) col2im(g, target, images, dx_chunk);
    }
  });
}

}  // namespace

// ---- Drivers: whole images per thread ----

void conv2d_forward(const Conv2DGeometry& g, int64_t n, const float* x, const float* w,
                    const float* bias, float* y) {
  if (n == 0 || g.filters == 0 || g.out_pixels() == 0) return;
  if (const PackedKernels* kernels = packed_kernels(); kernels != nullptr && g.groups == 1) {
    return forward_packed(*kernels, g, n, x, w, bias, y);
  }
  const int64_t kg = g.filters / g.groups, rows_g = g.col_rows() / g.groups, pq = g.out_pixels();
  const int parts = image_parts(n);
  parallel_blas_parts(parts, [&](int part) {
    const int64_t begin = n * part / parts, end = n * (part + 1) / parts;
    const int64_t chunk = chunk_of(g, end - begin);
    for (int64_t first = begin; first < end; first += chunk) {
      const int64_t images = std::min(chunk, end - first), columns = images * pq;
      const float* x_chunk = x + first * g.channels * g.in_pixels();
      float* y_chunk = y + first * g.filters * pq;
      const float* matrix = x_chunk;  // pointwise, one image: x is already (C, P*Q)
      if (!(g.pointwise() && images == 1)) {
        float* col = scratch(0, g.col_rows() * columns);
        im2col(g, x_chunk, images, col);
        matrix = col;
      }
      float* out = images == 1 ? y_chunk : scratch(1, g.filters * columns);
      for (int64_t group = 0; group < g.groups; ++group) {
        gemm_rows(w + group * kg * rows_g, matrix + group * rows_g * columns,
                  out + group * kg * columns, kg, columns, rows_g, Transpose::kNo,
                  Transpose::kNo, Accumulate::kOverwrite);
      }
      if (images > 1) {
        rows_to_images(out, bias, images, g.filters, pq, y_chunk);
      } else if (bias != nullptr) {
        add_channel_bias(y_chunk, bias, 1, g.filters, pq);
      }
    }
  });
}

void conv2d_backward_data(const Conv2DGeometry& g, int64_t n, const float* dy, const float* w,
                          float* dx) {
  if (n == 0 || g.channels == 0 || g.in_pixels() == 0) return;
  if (const PackedKernels* kernels = packed_kernels(); kernels != nullptr && g.groups == 1) {
    return backward_data_packed(*kernels, g, n, dy, w, dx);
  }
  const int64_t kg = g.filters / g.groups, rows_g = g.col_rows() / g.groups, pq = g.out_pixels();
  const int parts = image_parts(n);
  parallel_blas_parts(parts, [&](int part) {
    const int64_t begin = n * part / parts, end = n * (part + 1) / parts;
    const int64_t chunk = chunk_of(g, end - begin);
    for (int64_t first = begin; first < end; first += chunk) {
      const int64_t images = std::min(chunk, end - first), columns = images * pq;
      const float* dy_chunk = dy + first * g.filters * pq;
      float* dx_chunk = dx + first * g.channels * g.in_pixels();
      const float* dy_matrix = dy_chunk;  // (K, images*P*Q)
      if (images > 1) {
        float* rows = scratch(1, g.filters * columns);
        images_to_rows(dy_chunk, images, g.filters, pq, rows);
        dy_matrix = rows;
      }
      const bool direct = g.pointwise() && images == 1;  // dx_n is the column matrix
      float* target = direct ? dx_chunk : scratch(0, g.col_rows() * columns);
      for (int64_t group = 0; group < g.groups; ++group) {
        // d col_g = W_g^T dy_g: (C/G*R*S, K/G) (K/G, images*P*Q)
        gemm_rows(w + group * kg * rows_g, dy_matrix + group * kg * columns,
                  target + group * rows_g * columns, rows_g, columns, kg, Transpose::kYes,
                  Transpose::kNo, Accumulate::kOverwrite);
      }
      if (!direct) col2im(g, target, images, dx_chunk);
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
    const int64_t chunk = chunk_of(g, end - begin);
    for (int64_t first = begin; first < end; first += chunk) {
      const int64_t images = std::min(chunk, end - first), columns = images * pq;
      const float* x_chunk = x + first * g.channels * g.in_pixels();
      const float* dy_chunk = dy + first * g.filters * pq;
      const float* matrix = x_chunk;
      if (!(g.pointwise() && images == 1)) {
        float* col = scratch(0, g.col_rows() * columns);
        fast_im2col(g, x_chunk, images, col);
        matrix = col;
      }
      const float* dy_matrix = dy_chunk;
      if (images > 1) {
        float* rows = scratch(1, g.filters * columns);
        images_to_rows(dy_chunk, images, g.filters, pq, rows);
        dy_matrix = rows;
      }
      const Accumulate accumulate = first == begin ? Accumulate::kOverwrite : Accumulate::kAdd;
      for (int64_t group = 0; group < g.groups; ++group) {
        // dW_g (+)= dy_g col_g^T: (K/G, images*P*Q) (images*P*Q, C/G*R*S)
        gemm_rows(dy_matrix + group * kg * columns, matrix + group * rows_g * columns,
                  target + group * kg * rows_g, kg, rows_g, columns, Transpose::kNo,
                  Transpose::kYes, accumulate);
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
