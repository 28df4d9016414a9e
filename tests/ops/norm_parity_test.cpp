// batch_norm and layer_norm on the GPU against the CPU on awkward shapes: forward, backward for
// x, weight and bias, the running statistics updated in place, prediction mode; every allocation
// poisoned with NaN so that an element a kernel forgets fails. Also tensors on two devices, and
// run-to-run determinism. Skips, saying why, without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace cairn {
namespace {

using testing::expect_close;
using testing::expect_error;
using testing::random_tensor;

const Device kCpu = Device::cpu();
Device gpu() { return Device::cuda(0); }

class PoisonGuard {
 public:
  PoisonGuard() : previous_(poison_allocations()) { set_poison_allocations(true); }
  ~PoisonGuard() { set_poison_allocations(previous_); }
  PoisonGuard(const PoisonGuard&) = delete;
  PoisonGuard& operator=(const PoisonGuard&) = delete;

 private:
  bool previous_;
};

class NormParity : public testing::CudaTest {};

// Both twins sum in double and round the statistics once; they differ only in the order of the
// double additions, so the float results agree to a few ulps of O(1) values.
constexpr double kAtol = 1e-5, kRtol = 1e-5;

struct Outputs {
  std::vector<float> y, dx, dweight, dbias, running_mean, running_var;
};

Outputs batch_norm_on(const Device& device, const Shape& shape, bool affine, bool training,
                      uint64_t seed) {
  const int64_t C = shape[1];
  Tensor x = random_tensor(shape, seed, device, -2.0f, 4.0f);
  Tensor weight = affine ? random_tensor({C}, seed + 1, device, 0.5f, 1.5f) : Tensor();
  Tensor bias = affine ? random_tensor({C}, seed + 2, device) : Tensor();
  Tensor running_mean = random_tensor({C}, seed + 3, device);
  Tensor running_var = random_tensor({C}, seed + 4, device, 0.5f, 2.0f);
  const Tensor dy = random_tensor(shape, seed + 5, device);
  x.attach_grad();
  if (affine) {
    weight.attach_grad();
    bias.attach_grad();
  }
  Outputs out;
  {
    autograd::RecordScope record;
    Tensor y = ops::batch_norm(x, weight, bias, running_mean, running_var, training, 0.1f, 1e-5f);
    // A second training forward moves the running statistics again: the first's backward must
    // still use its own batch statistics.
    if (training) {
      ops::batch_norm(x.detach(), Tensor(), Tensor(), running_mean, running_var, true, 0.25f,
                      1e-3f);
    }
    y.backward(dy);
    out.y = y.to_vector();
  }
  out.dx = x.grad().to_vector();
  if (affine) {
    out.dweight = weight.grad().to_vector();
    out.dbias = bias.grad().to_vector();
  }
  out.running_mean = running_mean.to_vector();
  out.running_var = running_var.to_vector();
  return out;
}

void expect_same(const Outputs& gpu_out, const Outputs& cpu_out) {
  expect_close(gpu_out.y, cpu_out.y, kAtol, kRtol, "y");
  expect_close(gpu_out.dx, cpu_out.dx, kAtol, kRtol, "dx");
  expect_close(gpu_out.dweight, cpu_out.dweight, 1e-4, kRtol, "dweight");
  expect_close(gpu_out.dbias, cpu_out.dbias, 1e-4, kRtol, "dbias");
  expect_close(gpu_out.running_mean, cpu_out.running_mean, kAtol, kRtol, "running_mean");
  expect_close(gpu_out.running_var, cpu_out.running_var, kAtol, kRtol, "running_var");
}

TEST_F(NormParity, BatchNormMatchesTheCpu) {
  PoisonGuard poison;
  const std::vector<Shape> shapes = {{2, 1},         {7, 3},    {1, 5, 3, 3},
                                     {3, 7, 5, 9},   {257, 33}, {2, 3, 1, 1},
                                     {4, 2, 65, 67}, {5, 300},  {2, 3, 0, 4}};
  for (const Shape& shape : shapes) {
    for (bool training : {true, false}) {
      for (bool affine : {true, false}) {
        if (training && shape[0] * (shape.size() > 2 ? shape[2] * shape[3] : 1) < 2) continue;
        SCOPED_TRACE(shape_str(shape) + (training ? " training" : " predicting") +
                     (affine ? " affine" : ""));
        expect_same(batch_norm_on(gpu(), shape, affine, training, 100),
                    batch_norm_on(kCpu, shape, affine, training, 100));
      }
    }
  }
}

TEST_F(NormParity, LayerNormMatchesTheCpu) {
  PoisonGuard poison;
  struct Case {
    Shape shape;
    int64_t axes;
  };
  // Rows of up to 1024 take a warp, longer ones a block.
  for (const Case& c : {Case{{1, 7}, 1}, Case{{33, 1}, 1}, Case{{5, 3, 11}, 2}, Case{{3, 1025}, 1},
                        Case{{2, 5000}, 1}, Case{{257, 64}, 1}, Case{{9}, 1}, Case{{0, 4}, 1}}) {
    for (bool affine : {true, false}) {
      SCOPED_TRACE(shape_str(c.shape) + " over " + std::to_string(c.axes) +
                   (affine ? " affine" : ""));
      const Shape normalized(c.shape.end() - c.axes, c.shape.end());
      std::vector<std::vector<float>> results[2];
      int which = 0;
      for (const Device& device : {gpu(), kCpu}) {
        Tensor x = random_tensor(c.shape, 7, device, -3.0f, 5.0f);
        Tensor w = affine ? random_tensor(normalized, 8, device, 0.5f, 1.5f) : Tensor();
        Tensor b = affine ? random_tensor(normalized, 9, device) : Tensor();
        x.attach_grad();
        if (affine) {
          w.attach_grad();
          b.attach_grad();
        }
        Tensor y;
        {
          autograd::RecordScope record;
          y = ops::layer_norm(x, c.axes, w, b, 1e-5f);
          y.backward(random_tensor(c.shape, 10, device));
        }
        results[which] = {y.to_vector(), x.grad().to_vector()};
        if (affine) {
          results[which].push_back(w.grad().to_vector());
          results[which].push_back(b.grad().to_vector());
        }
        ++which;
      }
      const char* names[] = {"y", "dx", "dweight", "dbias"};
      for (size_t i = 0; i < results[0].size(); ++i) {
        expect_close(results[0][i], results[1][i], i < 2 ? kAtol : 1e-4, kRtol, names[i]);
      }
    }
  }
}

TEST_F(NormParity, RunToRunTheSameBits) {
  for (int run = 0; run < 2; ++run) {
    static Outputs first;
    const Outputs out = batch_norm_on(gpu(), {16, 5, 31, 7}, true, true, 200);
    if (run == 0) {
      first = out;
      continue;
    }
    EXPECT_EQ(out.y, first.y);
    EXPECT_EQ(out.dx, first.dx);
    EXPECT_EQ(out.dweight, first.dweight);
    EXPECT_EQ(out.running_var, first.running_var);
  }
}

TEST_F(NormParity, TensorsOnTwoDevicesAreRefused) {
  const Tensor x = random_tensor({4, 3}, 1, gpu());
  const Tensor on_cpu = Tensor::ones({3}, kCpu), on_gpu = Tensor::ones({3}, gpu());
  expect_error([&] { ops::batch_norm(x, on_cpu, Tensor(), Tensor(), Tensor(), true, 0.1f, 1e-5f); },
               {"batch_norm", "different devices"});
  expect_error([&] { ops::batch_norm(x, on_gpu, on_gpu, on_cpu, on_cpu, false, 0.1f, 1e-5f); },
               {"batch_norm", "different devices"});
  expect_error([&] { ops::layer_norm(x, 1, Tensor(), on_cpu, 1e-5f); },
               {"layer_norm", "different devices"});
}

}  // namespace
}  // namespace cairn
