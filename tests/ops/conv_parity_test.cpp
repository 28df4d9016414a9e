// conv2d on the GPU against the CPU: the kernels against their CPU twins (bit for bit: the same
// copies and the same ordered double sums), and the op forward and backward on awkward shapes,
// with the batch in one chunk, in chunks with a remainder, and one image at a time; every
// allocation poisoned with NaN. Plus mixed devices and run-to-run determinism.
//
// Every test derives from CudaTest and skips, saying why, without a usable GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cairn/kernels/conv.h"
#include "support/test_support.h"

namespace cairn {
namespace {

using kernels::Conv2DGeometry;
using testing::expect_close;
using testing::expect_error;
using testing::poison;
using testing::random_tensor;

const Device kCpu = Device::cpu();
Device gpu() { return Device::cuda(0); }  // a function: no CUDA work at static initialisation
cuda::Stream stream() { return cuda::current_stream(gpu()); }

class PoisonGuard {
 public:
  PoisonGuard() : previous_(poison_allocations()) { set_poison_allocations(true); }
  ~PoisonGuard() { set_poison_allocations(previous_); }
  PoisonGuard(const PoisonGuard&) = delete;
  PoisonGuard& operator=(const PoisonGuard&) = delete;

 private:
  bool previous_;
};

// Restores conv2d's GPU chunk size however the test ends.
class ChunkBytesGuard {
 public:
  explicit ChunkBytesGuard(size_t bytes) { ops::set_conv2d_chunk_bytes(bytes); }
  ~ChunkBytesGuard() { ops::set_conv2d_chunk_bytes(0); }
  ChunkBytesGuard(const ChunkBytesGuard&) = delete;
  ChunkBytesGuard& operator=(const ChunkBytesGuard&) = delete;
};

class ConvParity : public testing::CudaTest {
 protected:
  void SetUp() override {
    testing::CudaTest::SetUp();
    if (IsSkipped()) return;
    poison_ = std::make_unique<PoisonGuard>();
  }
  void TearDown() override { poison_.reset(); }

 private:
  std::unique_ptr<PoisonGuard> poison_;
};

struct ConvShape {
  const char* name;
  Shape x, w;
  ops::Conv2DParams params;
  bool bias;
};

// The awkward shapes of the CPU golden tests, a little larger.
const std::vector<ConvShape>& shapes() {
  static const std::vector<ConvShape> list = {
      {"1x1 pointwise", {3, 5, 6, 7}, {4, 5, 1, 1}, {}, true},
      {"1x1 stride 2", {3, 5, 7, 7}, {4, 5, 1, 1}, {2, 2, 0, 0, 1, 1, 1}, true},
      {"7x7 pad 3 stride 2", {2, 3, 15, 13}, {5, 3, 7, 7}, {2, 2, 3, 3, 1, 1, 1}, true},
      {"stride 3 leftover", {3, 2, 11, 10}, {3, 2, 3, 3}, {3, 3, 0, 0, 1, 1, 1}, true},
      {"padding beyond half the kernel", {2, 2, 5, 6}, {3, 2, 3, 3}, {1, 1, 2, 3, 1, 1, 1}, true},
      {"dilation 2", {3, 3, 9, 8}, {4, 3, 3, 3}, {1, 1, 2, 1, 2, 2, 1}, true},
      {"groups 2", {3, 4, 7, 6}, {6, 2, 3, 3}, {1, 1, 1, 1, 1, 1, 2}, true},
      {"depthwise stride 2", {3, 6, 9, 9}, {6, 1, 3, 3}, {2, 2, 1, 1, 1, 1, 6}, true},
      {"no bias rectangular", {3, 2, 6, 7}, {3, 2, 2, 3}, {2, 1, 0, 1, 1, 1, 1}, false},
      {"batch 1", {1, 3, 8, 8}, {4, 3, 3, 3}, {1, 1, 1, 1, 1, 1, 1}, true},
      {"pointwise groups 2", {3, 4, 5, 5}, {6, 2, 1, 1}, {1, 1, 0, 0, 1, 1, 2}, false},
  };
  return list;
}

Conv2DGeometry geometry_of(const ConvShape& s) {
  Conv2DGeometry g;
  g.channels = s.x[1];
  g.height = s.x[2];
  g.width = s.x[3];
  g.filters = s.w[0];
  g.kernel_h = s.w[2];
  g.kernel_w = s.w[3];
  g.stride_h = s.params.stride_h;
  g.stride_w = s.params.stride_w;
  g.pad_h = s.params.pad_h;
  g.pad_w = s.params.pad_w;
  g.dilation_h = s.params.dilation_h;
  g.dilation_w = s.params.dilation_w;
  g.groups = s.params.groups;
  g.out_h = kernels::conv_out_size(g.height, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h);
  g.out_w = kernels::conv_out_size(g.width, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w);
  return g;
}

Tensor poisoned_gpu(const Shape& shape) {
  Tensor t = Tensor::empty(shape, gpu());
  poison(t);
  return t;
}

void expect_same_bits(const Tensor& gpu_result, const Tensor& cpu_result, const std::string& what) {
  const std::vector<float> a = gpu_result.to_vector(), b = cpu_result.to_vector();
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_TRUE(a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0)
      << what << ": GPU and CPU differ";
}

TEST_F(ConvParity, KernelsMatchTheirCpuTwinsBitForBit) {
  uint64_t seed = 1;
  for (const ConvShape& s : shapes()) {
    SCOPED_TRACE(s.name);
    const Conv2DGeometry g = geometry_of(s);
    const int64_t images = s.x[0], pq = g.out_pixels();
    const Shape col_shape{g.col_rows(), images * pq};
    const Tensor x = random_tensor(s.x, seed++, kCpu);
    const Tensor x_gpu = x.to(gpu());

    Tensor col_cpu = Tensor::empty(col_shape, kCpu);
    kernels::cpu::im2col(g, x.data(), images, col_cpu.data());
    Tensor col_gpu = poisoned_gpu(col_shape);
    kernels::cuda::im2col(g, x_gpu.data(), images, col_gpu.data(), stream());
    expect_same_bits(col_gpu, col_cpu, "im2col");

    const Tensor dcol = random_tensor(col_shape, seed++, kCpu);
    const Tensor dcol_gpu = dcol.to(gpu());
    Tensor dx_cpu = Tensor::empty(s.x, kCpu);
    kernels::cpu::col2im(g, dcol.data(), images, dx_cpu.data());
    Tensor dx_gpu = poisoned_gpu(s.x);
    kernels::cuda::col2im(g, dcol_gpu.data(), images, dx_gpu.data(), stream());
    expect_same_bits(dx_gpu, dx_cpu, "col2im");

    const int64_t k = g.filters;
    const Tensor rows = random_tensor({k, images * pq}, seed++, kCpu);
    const Tensor bias = random_tensor({k}, seed++, kCpu);
    const Tensor rows_gpu = rows.to(gpu()), bias_gpu = bias.to(gpu());
    const Shape y_shape{images, k, pq};
    for (const bool with_bias : {false, true}) {
      Tensor y_cpu = Tensor::empty(y_shape, kCpu);
      kernels::cpu::rows_to_images(rows.data(), with_bias ? bias.data() : nullptr, images, k, pq,
                                   y_cpu.data());
      Tensor y_gpu = poisoned_gpu(y_shape);
      kernels::cuda::rows_to_images(rows_gpu.data(), with_bias ? bias_gpu.data() : nullptr,
                                    images, k, pq, y_gpu.data(), stream());
      expect_same_bits(y_gpu, y_cpu, with_bias ? "rows_to_images with bias" : "rows_to_images");
    }
    Tensor back_cpu = Tensor::empty({k, images * pq}, kCpu);
    const Tensor y = random_tensor(y_shape, seed++, kCpu);
    const Tensor y_gpu = y.to(gpu());
    kernels::cpu::images_to_rows(y.data(), images, k, pq, back_cpu.data());
    Tensor back_gpu = poisoned_gpu({k, images * pq});
    kernels::cuda::images_to_rows(y_gpu.data(), images, k, pq, back_gpu.data(), stream());
    expect_same_bits(back_gpu, back_cpu, "images_to_rows");

    Tensor biased_cpu = y.clone();
    kernels::cpu::add_channel_bias(biased_cpu.data(), bias.data(), images, k, pq);
    Tensor biased_gpu = y.to(gpu());
    kernels::cuda::add_channel_bias(biased_gpu.data(), bias_gpu.data(), images, k, pq, stream());
    expect_same_bits(biased_gpu, biased_cpu, "add_channel_bias");
  }
}

// Forward and the three gradients on both devices, with the same head gradient.
void expect_conv_parity(const ConvShape& s, uint64_t seed) {
  std::vector<Tensor> cpu_in{random_tensor(s.x, seed, kCpu), random_tensor(s.w, seed + 1, kCpu)};
  if (s.bias) cpu_in.push_back(random_tensor({s.w[0]}, seed + 2, kCpu));
  std::vector<Tensor> gpu_in;
  for (Tensor& t : cpu_in) {
    gpu_in.push_back(t.to(gpu()));
    t.attach_grad();
    gpu_in.back().attach_grad();
  }
  auto run = [&](const std::vector<Tensor>& in) {
    return ops::conv2d(in[0], in[1], in.size() > 2 ? in[2] : Tensor(), s.params);
  };
  Tensor y_cpu, y_gpu;
  {
    autograd::RecordScope record;
    y_cpu = run(cpu_in);
    y_gpu = run(gpu_in);
  }
  ASSERT_EQ(y_gpu.device(), gpu());
  ASSERT_EQ(shape_str(y_gpu.shape()), shape_str(y_cpu.shape()));
  // GEMMs summing a few hundred products in different orders (and the GPU's fused multiply-adds).
  expect_close(y_gpu.to_vector(), y_cpu.to_vector(), 1e-4, 1e-4, "forward");
  const Tensor head = random_tensor(y_cpu.shape(), seed + 3, kCpu);
  y_cpu.backward(head);
  y_gpu.backward(head.to(gpu()));
  const char* names[] = {"dx", "dw", "db"};
  for (size_t i = 0; i < cpu_in.size(); ++i) {
    ASSERT_TRUE(gpu_in[i].grad().defined()) << names[i];
    expect_close(gpu_in[i].grad().to_vector(), cpu_in[i].grad().to_vector(), 2e-4, 1e-4,
                 names[i]);
  }
}

TEST_F(ConvParity, ForwardAndBackwardOnAwkwardShapes) {
  uint64_t seed = 100;
  for (const ConvShape& s : shapes()) {
    SCOPED_TRACE(s.name);
    expect_conv_parity(s, seed);
    seed += 4;
  }
}

TEST_F(ConvParity, ChunkedBatchesMatchTheCpu) {
  // Room for two images of each shape's column matrix and product: chunks of two with a
  // remainder of one (the batches have three images), or one image at a time.
  uint64_t seed = 300;
  for (const ConvShape& s : shapes()) {
    SCOPED_TRACE(s.name);
    const Conv2DGeometry g = geometry_of(s);
    const size_t per_image = sizeof(float) * size_t(g.out_pixels() * (g.col_rows() + g.filters));
    for (const size_t images : {size_t(1), size_t(2)}) {
      SCOPED_TRACE(std::to_string(images) + " image(s) a chunk");
      ChunkBytesGuard chunk(images * per_image);
      expect_conv_parity(s, seed);
    }
    seed += 4;
  }
}

TEST_F(ConvParity, BackwardIsDeterministicOnTheGpu) {
  const ConvShape& s = shapes()[2];  // 7x7, stride 2: col2im gathers up to 49 terms per element
  std::vector<std::vector<float>> runs[2];
  for (auto& grads : runs) {
    Tensor x = random_tensor(s.x, 7, kCpu).to(gpu());
    Tensor w = random_tensor(s.w, 8, kCpu).to(gpu());
    Tensor b = random_tensor({s.w[0]}, 9, kCpu).to(gpu());
    x.attach_grad();
    w.attach_grad();
    b.attach_grad();
    {
      autograd::RecordScope record;
      const Tensor y = ops::conv2d(x, w, b, s.params);
      y.backward(random_tensor(y.shape(), 10, kCpu).to(gpu()));
    }
    grads = {x.grad().to_vector(), w.grad().to_vector(), b.grad().to_vector()};
  }
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(std::memcmp(runs[0][i].data(), runs[1][i].data(), runs[0][i].size() * 4), 0)
        << "gradient " << i << " differs between two runs";
  }
}

TEST_F(ConvParity, MixedDevicesAreRefused) {
  const Tensor x = random_tensor({1, 2, 5, 5}, 1, kCpu);
  const Tensor w = random_tensor({3, 2, 3, 3}, 2, kCpu);
  const Tensor b = random_tensor({3}, 3, kCpu);
  expect_error([&] { ops::conv2d(x.to(gpu()), w, b, {}); },
               {"conv2d", "different devices", "cuda:0", "cpu"});
  expect_error([&] { ops::conv2d(x, w.to(gpu()), b, {}); },
               {"conv2d", "different devices", "cpu", "cuda:0"});
  expect_error([&] { ops::conv2d(x.to(gpu()), w.to(gpu()), b, {}); },
               {"conv2d", "different devices", "cuda:0", "cpu"});
}

}  // namespace
}  // namespace cairn
