// CPU batch norm and layer norm: statistics in double (the mean, then the centred squares), the
// per-element formulas of kernels/norm_math.h.
//
// Batch norm walks x in memory order (n, then c, then s) and keeps one accumulator per channel:
// each image's row of a channel is summed in interleaved partial sums (row_sum), and the rows are
// added in image order, a fixed order whatever the layout; threads split the channels, so the
// bits do not depend on the thread count.
#include "cairn/kernels/norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cairn/base/error.h"
#include "cairn/kernels/cpu/parallel.h"
#include "cairn/kernels/norm_math.h"

namespace cairn::kernels::cpu {
namespace {

// Below this many elements a loop is not worth waking another thread for.
constexpr int64_t kElementsPerThread = 32768;

void check_shape(const char* what, BatchNormShape shape) {
  CAIRN_CHECK(shape.batch >= 0 && shape.channels >= 0 && shape.spatial >= 0, what,
              ": negative shape (", shape.batch, ", ", shape.channels, ", ", shape.spatial, ")");
}

// Channels per parallel range: enough that a range holds kElementsPerThread elements.
int64_t channels_per_thread(BatchNormShape shape) {
  const int64_t per_channel = std::max<int64_t>(1, shape.count());
  return std::max<int64_t>(1, kElementsPerThread / per_channel);
}

// f(c, row) for every row (one image's spatial values of one channel, `spatial` floats) of
// channels [c0, c1), in memory order.
template <typename F>
void for_channel_rows(BatchNormShape shape, int64_t c0, int64_t c1, F&& f) {
  const int64_t C = shape.channels, S = shape.spatial;
  for (int64_t n = 0; n < shape.batch; ++n) {
    for (int64_t c = c0; c < c1; ++c) f(c, (n * C + c) * S);
  }
}

// The sum of term(s) over s in [0, count) in double, in kLanes interleaved partial sums (s mod
// kLanes) added at the end in lane order: a fixed order, and independent chains instead of one
// chain of dependent double additions (which held the statistics to a quarter of an element a
// cycle).
constexpr int kLanes = 8;
template <typename Term>
double row_sum(int64_t count, Term&& term) {
  double lanes[kLanes] = {};
  int64_t s = 0;
  for (; s + kLanes <= count; s += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] += term(s + j);
  }
  for (int j = 0; s < count; ++s, ++j) lanes[j] += term(s);
  double sum = 0.0;
  for (int j = 0; j < kLanes; ++j) sum += lanes[j];
  return sum;
}

thread_local std::vector<double> t_scratch;
double* scratch(size_t count) {
  if (t_scratch.size() < count) t_scratch.resize(count);
  return t_scratch.data();
}

// invstd of channels [c0, c1) at [0, c1 - c0), computed once a channel rather than once an element
// (the same function, so the same bits).
thread_local std::vector<float> t_invstd;
const float* channel_invstd(const float* var, float epsilon, int64_t c0, int64_t c1) {
  if (t_invstd.size() < size_t(c1 - c0)) t_invstd.resize(size_t(c1 - c0));
  for (int64_t c = c0; c < c1; ++c) t_invstd[size_t(c - c0)] = norm::invstd(var[c], epsilon);
  return t_invstd.data();  // indexed by c - c0
}

}  // namespace

void batch_norm_statistics(const float* x, BatchNormShape shape, float momentum, float* mean,
                           float* var, float* running_mean, float* running_var) {
  check_shape("cpu::batch_norm_statistics", shape);
  CAIRN_CHECK((running_mean == nullptr) == (running_var == nullptr),
              "cpu::batch_norm_statistics: running_mean and running_var come together");
  const int64_t M = shape.count();
  parallel_for(shape.channels, channels_per_thread(shape), [&](int64_t c0, int64_t c1) {
    double* acc = scratch(size_t(2 * (c1 - c0)));
    double* sums = acc;
    double* squares = acc + (c1 - c0);
    for (int64_t c = c0; c < c1; ++c) sums[c - c0] = squares[c - c0] = 0.0;
    const int64_t S = shape.spatial;
    for_channel_rows(shape, c0, c1, [&](int64_t c, int64_t row) {
      const float* xr = x + row;
      sums[c - c0] += row_sum(S, [xr](int64_t s) { return double(xr[s]); });
    });
    for (int64_t c = c0; c < c1; ++c) sums[c - c0] /= double(M);  // now the mean, in double
    for_channel_rows(shape, c0, c1, [&](int64_t c, int64_t row) {
      const float* xr = x + row;
      const double centre = sums[c - c0];
      squares[c - c0] += row_sum(S, [xr, centre](int64_t s) {
        const double d = double(xr[s]) - centre;
        return d * d;
      });
    });
    for (int64_t c = c0; c < c1; ++c) {
      mean[c] = static_cast<float>(sums[c - c0]);
      var[c] = norm::biased_variance(squares[c - c0], M);
      if (running_mean != nullptr) {
        running_mean[c] = norm::running_update(running_mean[c], mean[c], momentum);
        running_var[c] = norm::running_update(
            running_var[c], norm::unbiased_variance(squares[c - c0], M), momentum);
      }
    }
  });
}

void batch_norm_forward(const float* x, BatchNormShape shape, const float* mean, const float* var,
                        const float* weight, const float* bias, float epsilon, float* y) {
  check_shape("cpu::batch_norm_forward", shape);
  parallel_for(shape.channels, channels_per_thread(shape), [&](int64_t c0, int64_t c1) {
    const float* inv = channel_invstd(var, epsilon, c0, c1);
    const int64_t S = shape.spatial;
    for_channel_rows(shape, c0, c1, [&](int64_t c, int64_t row) {
      const float m = mean[c], invstd = inv[c - c0];
      const float* xr = x + row;
      float* yr = y + row;
      for (int64_t s = 0; s < S; ++s)
        yr[s] = norm::affine(norm::normalize(xr[s], m, invstd), weight, bias, c);
    });
  });
}

void batch_norm_backward_reduce(const float* x, const float* dy, BatchNormShape shape,
                                const float* mean, const float* var, float epsilon, float* sum_dy,
                                float* sum_dy_xhat) {
  check_shape("cpu::batch_norm_backward_reduce", shape);
  parallel_for(shape.channels, channels_per_thread(shape), [&](int64_t c0, int64_t c1) {
    double* acc = scratch(size_t(2 * (c1 - c0)));
    double* dys = acc;
    double* dy_centred = acc + (c1 - c0);
    for (int64_t c = c0; c < c1; ++c) dys[c - c0] = dy_centred[c - c0] = 0.0;
    const int64_t S = shape.spatial;
    for_channel_rows(shape, c0, c1, [&](int64_t c, int64_t row) {
      const float* xr = x + row;
      const float* dyr = dy + row;
      const double centre = double(mean[c]);
      dys[c - c0] += row_sum(S, [dyr](int64_t s) { return double(dyr[s]); });
      dy_centred[c - c0] += row_sum(
          S, [xr, dyr, centre](int64_t s) { return double(dyr[s]) * (double(xr[s]) - centre); });
    });
    for (int64_t c = c0; c < c1; ++c) {
      sum_dy[c] = static_cast<float>(dys[c - c0]);
      sum_dy_xhat[c] =
          static_cast<float>(dy_centred[c - c0] * double(norm::invstd(var[c], epsilon)));
    }
  });
}

void batch_norm_backward_input(const float* x, const float* dy, BatchNormShape shape,
                               const float* mean, const float* var, const float* weight,
                               const float* sum_dy, const float* sum_dy_xhat, float epsilon,
                               NormStatistics statistics, float* dx) {
  check_shape("cpu::batch_norm_backward_input", shape);
  const float count = static_cast<float>(shape.count());
  parallel_for(shape.channels, channels_per_thread(shape), [&](int64_t c0, int64_t c1) {
    const float* invstd = channel_invstd(var, epsilon, c0, c1);
    const int64_t S = shape.spatial;
    for_channel_rows(shape, c0, c1, [&](int64_t c, int64_t row) {
      const float inv = invstd[c - c0];
      const float scale = norm::backward_scale(weight, c, inv);
      const float* xr = x + row;
      const float* dyr = dy + row;
      float* dxr = dx + row;
      if (statistics == NormStatistics::kFixed) {
        for (int64_t s = 0; s < S; ++s) dxr[s] = norm::mul_rn(scale, dyr[s]);
        return;
      }
      // The per-channel terms once a row, not once an element (the same expressions: the same
      // bits).
      const float m = mean[c];
      const float mean_dy = norm::div_rn(sum_dy[c], count);
      const float mean_dy_xhat = norm::div_rn(sum_dy_xhat[c], count);
      for (int64_t s = 0; s < S; ++s) {
        dxr[s] = norm::backward_through_statistics(dyr[s], norm::normalize(xr[s], m, inv), scale,
                                                   mean_dy, mean_dy_xhat);
      }
    });
  });
}

void increment_counter(int32_t* counter) { counter[0] += 1; }

void layer_norm_forward(const float* x, int64_t rows, int64_t cols, const float* weight,
                        const float* bias, float epsilon, float* y, float* mean, float* var) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "cpu::layer_norm_forward: negative shape (", rows, ", ", cols,
              ")");
  const int64_t rows_per_thread =
      std::max<int64_t>(1, kElementsPerThread / std::max<int64_t>(1, cols));
  parallel_for(rows, rows_per_thread, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * cols;
      double sum = 0.0;
      for (int64_t c = 0; c < cols; ++c) sum += double(xr[c]);
      const double mean_d = sum / double(cols);
      double squares = 0.0;
      for (int64_t c = 0; c < cols; ++c) {
        const double d = double(xr[c]) - mean_d;
        squares += d * d;
      }
      mean[r] = static_cast<float>(mean_d);
      var[r] = norm::biased_variance(squares, cols);
      const float inv = norm::invstd(var[r], epsilon);
      float* yr = y + r * cols;
      for (int64_t c = 0; c < cols; ++c) {
        yr[c] = norm::affine(norm::normalize(xr[c], mean[r], inv), weight, bias, c);
      }
    }
  });
}

void layer_norm_backward(const float* x, const float* dy, int64_t rows, int64_t cols,
                         const float* mean, const float* var, const float* weight, float epsilon,
                         float* dx, float* dy_xhat) {
  CAIRN_CHECK(rows >= 0 && cols >= 0, "cpu::layer_norm_backward: negative shape (", rows, ", ",
              cols, ")");
  const int64_t rows_per_thread =
      std::max<int64_t>(1, kElementsPerThread / std::max<int64_t>(1, cols));
  const float count = static_cast<float>(cols);
  parallel_for(rows, rows_per_thread, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * cols;
      const float* dyr = dy + r * cols;
      const float inv = norm::invstd(var[r], epsilon);
      // g = dy * weight; sums of g and g * (x - mean) in double, the latter times invstd once.
      double sum_g = 0.0, sum_g_centred = 0.0;
      for (int64_t c = 0; c < cols; ++c) {
        const double g =
            weight != nullptr ? double(norm::mul_rn(dyr[c], weight[c])) : double(dyr[c]);
        sum_g += g;
        sum_g_centred += g * (double(xr[c]) - double(mean[r]));
      }
      const float mean_g = norm::div_rn(static_cast<float>(sum_g), count);
      const float mean_g_xhat =
          norm::div_rn(static_cast<float>(sum_g_centred * double(inv)), count);
      float* dxr = dx + r * cols;
      for (int64_t c = 0; c < cols; ++c) {
        const float xhat = norm::normalize(xr[c], mean[r], inv);
        const float g = weight != nullptr ? norm::mul_rn(dyr[c], weight[c]) : dyr[c];
        dxr[c] = norm::backward_through_statistics(g, xhat, inv, mean_g, mean_g_xhat);
        if (dy_xhat != nullptr) dy_xhat[r * cols + c] = norm::mul_rn(dyr[c], xhat);
      }
    }
  });
}

}  // namespace cairn::kernels::cpu
