// CPU 2-d pooling: loops over kernels/pool_math.h, split across planes and rows by parallel_for.
// Each element is the header's expression, so the bits do not depend on the thread count and
// equal the CUDA twin's.
#include "cairn/kernels/pool.h"

#include <algorithm>
#include <climits>
#include <limits>
#include <vector>

#include "cairn/base/error.h"
#include "cairn/kernels/cpu/parallel.h"

namespace cairn::kernels {

void check_pool2d_geometry(const char* what, const Pool2DGeometry& g) {
  CAIRN_CHECK(g.planes >= 0, what, ": negative plane count ", g.planes);
  CAIRN_CHECK(g.in_h >= 1 && g.in_w >= 1 && g.in_h <= INT32_MAX && g.in_w <= INT32_MAX, what,
              ": input plane ", g.in_h, "x", g.in_w, " is empty or too large");
  CAIRN_CHECK(g.out_h >= 1 && g.out_w >= 1, what, ": output plane ", g.out_h, "x", g.out_w,
              " is empty");
  CAIRN_CHECK(
      g.kernel_h >= 1 && g.kernel_w >= 1 && g.kernel_h <= INT32_MAX && g.kernel_w <= INT32_MAX,
      what, ": kernel ", g.kernel_h, "x", g.kernel_w, " out of range");
  CAIRN_CHECK(
      g.stride_h >= 1 && g.stride_w >= 1 && g.stride_h <= INT32_MAX && g.stride_w <= INT32_MAX,
      what, ": stride ", g.stride_h, "x", g.stride_w, " out of range");
  CAIRN_CHECK(
      g.pad_h >= 0 && g.pad_w >= 0 && g.pad_h <= g.kernel_h / 2 && g.pad_w <= g.kernel_w / 2, what,
      ": padding ", g.pad_h, "x", g.pad_w, " must be in [0, kernel / 2] for kernel ", g.kernel_h,
      "x", g.kernel_w);
  // (out - 1) * stride < in + pad, written so that it cannot overflow: every window starts inside
  // the input or the left padding, and (pad < kernel) ends past the left padding, so it holds
  // at least one input element.
  CAIRN_CHECK(g.out_h - 1 <= (g.in_h + g.pad_h - 1) / g.stride_h &&
                  g.out_w - 1 <= (g.in_w + g.pad_w - 1) / g.stride_w,
              what, ": output plane ", g.out_h, "x", g.out_w, " has windows past the input ",
              g.in_h, "x", g.in_w, " (stride ", g.stride_h, "x", g.stride_w, ", padding ", g.pad_h,
              "x", g.pad_w, ")");
  CAIRN_CHECK(g.in_h * g.in_w <= INT32_MAX, what, ": input plane ", g.in_h, "x", g.in_w,
              " has more elements than int32 indices reach");
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  CAIRN_CHECK(g.planes == 0 || (g.in_h * g.in_w <= kMax / g.planes && g.out_h <= kMax / g.out_w &&
                                g.out_h * g.out_w <= kMax / g.planes),
              what, ": ", g.planes, " planes of ", g.in_h, "x", g.in_w, " -> ", g.out_h, "x",
              g.out_w, " overflow int64");
}

namespace cpu {
namespace {

// Rows a thread takes at least: enough window reads to be worth a hand-off.
int64_t min_rows(int64_t work_per_row) {
  constexpr int64_t kWorkPerThread = 1 << 15;
  return work_per_row >= kWorkPerThread ? 1
                                        : kWorkPerThread / (work_per_row > 0 ? work_per_row : 1);
}

// body(plane, row) for every (plane, row < rows), split across threads.
template <typename Body>
void for_rows(int64_t planes, int64_t rows, int64_t work_per_row, const Body& body) {
  parallel_for(planes * rows, min_rows(work_per_row), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) body(r / rows, r % rows);
  });
}

// The outputs covering each input column, [first[iw], last[iw]]: pool_math.h's covering_outputs,
// computed once a call (and the rows' once a row) instead of once an element, whose integer
// divisions were most of the backward's time. The sums over them are the header's
// (*_backward_over), the CUDA twin's, so the bits are the same.
struct ColumnCover {
  std::vector<int64_t> first, last;
  explicit ColumnCover(const Pool2DGeometry& g) : first(size_t(g.in_w)), last(size_t(g.in_w)) {
    for (int64_t iw = 0; iw < g.in_w; ++iw) {
      covering_outputs(iw, g.kernel_w, g.stride_w, g.pad_w, g.out_w, &first[size_t(iw)],
                       &last[size_t(iw)]);
    }
  }
};

}  // namespace

void max_pool2d_forward(const float* x, const Pool2DGeometry& g, float* y, int32_t* argmax) {
  check_pool2d_geometry("cpu::max_pool2d_forward", g);
  std::vector<PoolSpan> columns(size_t(g.out_w));
  for (int64_t ow = 0; ow < g.out_w; ++ow) {
    columns[size_t(ow)] = pool_span(ow, g.in_w, g.kernel_w, g.stride_w, g.pad_w);
  }
  for_rows(g.planes, g.out_h, g.out_w * g.kernel_h * g.kernel_w, [&](int64_t p, int64_t oh) {
    const float* plane = x + p * g.in_h * g.in_w;
    const int64_t row = (p * g.out_h + oh) * g.out_w;
    const PoolSpan hs = pool_span(oh, g.in_h, g.kernel_h, g.stride_h, g.pad_h);
    for (int64_t ow = 0; ow < g.out_w; ++ow) {
      y[row + ow] = max_pool_over(plane, g.in_w, hs, columns[size_t(ow)], &argmax[row + ow]);
    }
  });
}

void max_pool2d_backward(const float* dy, const int32_t* argmax, const Pool2DGeometry& g,
                         float* dx) {
  check_pool2d_geometry("cpu::max_pool2d_backward", g);
  if (g.stride_h >= g.kernel_h && g.stride_w >= g.kernel_w) {
    // Windows that do not overlap (the usual 2x2, stride 2): each input element is covered by at
    // most one window, so its gathered sum is 0 + dy of that window where it is the argmax, and
    // 0 elsewhere. A scatter into a zeroed plane writes exactly that (0.0f + dy, so -0 becomes +0
    // as in the gather), without looking at every covering window of every element.
    const int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
    parallel_for(g.planes, min_rows(in_plane), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        float* dx_plane = dx + p * in_plane;
        std::fill(dx_plane, dx_plane + in_plane, 0.0f);
        const float* dy_plane = dy + p * out_plane;
        const int32_t* argmax_plane = argmax + p * out_plane;
        for (int64_t o = 0; o < out_plane; ++o) dx_plane[argmax_plane[o]] = 0.0f + dy_plane[o];
      }
    });
    return;
  }
  const int64_t covering = (g.kernel_h / g.stride_h + 1) * (g.kernel_w / g.stride_w + 1);
  const ColumnCover columns(g);
  for_rows(g.planes, g.in_h, g.in_w * covering, [&](int64_t p, int64_t ih) {
    const int64_t out_plane = p * g.out_h * g.out_w;
    const float* dy_plane = dy + out_plane;
    const int32_t* argmax_plane = argmax + out_plane;
    int64_t oh0, oh1;
    covering_outputs(ih, g.kernel_h, g.stride_h, g.pad_h, g.out_h, &oh0, &oh1);
    float* row = dx + (p * g.in_h + ih) * g.in_w;
    for (int64_t iw = 0; iw < g.in_w; ++iw) {
      row[iw] = max_pool_backward_over(dy_plane, argmax_plane, g, ih * g.in_w + iw, oh0, oh1,
                                       columns.first[size_t(iw)], columns.last[size_t(iw)]);
    }
  });
}

void avg_pool2d_forward(const float* x, const Pool2DGeometry& g, AvgDivisor divisor, float* y) {
  check_pool2d_geometry("cpu::avg_pool2d_forward", g);
  for_rows(g.planes, g.out_h, g.out_w * g.kernel_h * g.kernel_w, [&](int64_t p, int64_t oh) {
    const float* plane = x + p * g.in_h * g.in_w;
    float* row = y + (p * g.out_h + oh) * g.out_w;
    for (int64_t ow = 0; ow < g.out_w; ++ow) row[ow] = avg_pool_at(plane, g, oh, ow, divisor);
  });
}

void avg_pool2d_backward(const float* dy, const Pool2DGeometry& g, AvgDivisor divisor, float* dx) {
  check_pool2d_geometry("cpu::avg_pool2d_backward", g);
  const int64_t covering = (g.kernel_h / g.stride_h + 1) * (g.kernel_w / g.stride_w + 1);
  const ColumnCover columns(g);
  for_rows(g.planes, g.in_h, g.in_w * covering, [&](int64_t p, int64_t ih) {
    const float* dy_plane = dy + p * g.out_h * g.out_w;
    int64_t oh0, oh1;
    covering_outputs(ih, g.kernel_h, g.stride_h, g.pad_h, g.out_h, &oh0, &oh1);
    float* row = dx + (p * g.in_h + ih) * g.in_w;
    for (int64_t iw = 0; iw < g.in_w; ++iw) {
      row[iw] = avg_pool_backward_over(dy_plane, g, oh0, oh1, columns.first[size_t(iw)],
                                       columns.last[size_t(iw)], divisor);
    }
  });
}

}  // namespace cpu
}  // namespace cairn::kernels
