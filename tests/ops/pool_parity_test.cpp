// Pooling and dropout, GPU against CPU: (a) the pooling launchers against their CPU twins on
// awkward geometries, outputs poisoned first, the same bits (both run kernels/pool_math.h);
// (b) the ops forward and backward on both devices; (c) dropout's masks, the same bits on both
// devices for the same (seed, offset); (d) dropout inside captured CUDA graphs: a CapturedStep
// and a hybridized block draw a new mask on every replay, the same sequence as eager runs, and a
// hybridized block predicts as the identity and masks under TrainModeScope.
//
// Every test derives from CudaTest and skips, saying why, without a usable GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cairn/kernels/dropout.h"
#include "cairn/kernels/pool.h"
#include "support/test_support.h"

namespace cairn {
namespace {

using kernels::AvgDivisor;
using kernels::Pool2DGeometry;
using testing::expect_close;
using testing::poison;
using testing::random_tensor;

const Device kCpu = Device::cpu();
Device gpu() { return Device::cuda(0); }  // a function: no CUDA work at static initialisation
cuda::Stream stream() { return cuda::current_stream(gpu()); }

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

class PoisonGuard {
 public:
  PoisonGuard() : previous_(poison_allocations()) { set_poison_allocations(true); }
  ~PoisonGuard() { set_poison_allocations(previous_); }
  PoisonGuard(const PoisonGuard&) = delete;
  PoisonGuard& operator=(const PoisonGuard&) = delete;

 private:
  bool previous_;
};

struct PoolShape {
  const char* name;
  Shape x;
  ops::Pool2DParams p;
};

// The golden fixture's kinds of case, on sizes with more than one block of threads.
std::vector<PoolShape> pool_shapes() {
  return {
      {"1x1", {2, 3, 4, 5}, {1, 1, 1, 1}},
      {"7x7 pad 3 ceil", {2, 3, 19, 17}, {7, 7, 2, 2, 3, 3, true}},
      {"stride > kernel", {3, 2, 16, 13}, {2, 2, 3, 3}},
      {"stride 1 pad 1", {2, 4, 15, 16}, {3, 3, 1, 1, 1, 1}},
      {"ceil, indivisible, excluded padding", {2, 2, 33, 30}, {3, 3, 2, 2, 1, 1, true, false}},
      {"ceil drops the last window", {1, 3, 5, 5}, {2, 2, 2, 2, 1, 1, true}},
      {"batch 1 non-square", {1, 5, 21, 11}, {2, 3, 1, 2, 1, 0, false, false}},
      {"kernel past the input (ceil)", {2, 2, 3, 2}, {4, 3, 4, 3, 0, 0, true}},
      {"many planes", {64, 33, 9, 9}, {3, 3, 2, 2, 1, 1}},
      {"empty batch", {0, 3, 8, 8}, {2, 2, 2, 2}},
  };
}

Pool2DGeometry geometry(const PoolShape& s) {
  Pool2DGeometry g;
  g.planes = s.x[0] * s.x[1];
  g.in_h = s.x[2];
  g.in_w = s.x[3];
  g.kernel_h = s.p.kernel_h;
  g.kernel_w = s.p.kernel_w;
  g.stride_h = s.p.stride_h;
  g.stride_w = s.p.stride_w;
  g.pad_h = s.p.pad_h;
  g.pad_w = s.p.pad_w;
  g.out_h = kernels::pool_output_size(g.in_h, g.kernel_h, g.stride_h, g.pad_h, s.p.ceil_mode);
  g.out_w = kernels::pool_output_size(g.in_w, g.kernel_w, g.stride_w, g.pad_w, s.p.ceil_mode);
  return g;
}

// Inputs with ties and NaNs as well as distinct values: a few levels, one NaN in 50.
Tensor awkward_input(const Shape& shape, uint64_t seed) {
  std::vector<float> v = random_tensor(shape, seed, kCpu, -2.0f, 2.0f).to_vector();
  for (size_t i = 0; i < v.size(); ++i) {
    if (i % 7 == 3) v[i] = 1.0f;  // ties
    if (i % 50 == 11) v[i] = std::nanf("");
  }
  return Tensor::from_vector(v, shape, kCpu);
}

// =============================================================================================
// (a) Kernel level

class PoolKernelParity : public testing::CudaTest {};

TEST_F(PoolKernelParity, MaxPoolForwardAndBackwardAreTheCpuBits) {
  PoisonGuard poisoned;  // every GPU output starts as NaN (ints as -1)
  for (const PoolShape& s : pool_shapes()) {
    SCOPED_TRACE(s.name);
    const Pool2DGeometry g = geometry(s);
    const Shape out = {s.x[0], s.x[1], g.out_h, g.out_w};
    const Tensor x = awkward_input(s.x, 1);
    const Tensor dy = random_tensor(out, 2, kCpu);
    Tensor y = Tensor::empty(out, kCpu), arg = Tensor::empty(out, kCpu, DType::kInt32);
    Tensor dx = Tensor::empty(s.x, kCpu);
    kernels::cpu::max_pool2d_forward(x.data(), g, y.data(), arg.data_int32());
    kernels::cpu::max_pool2d_backward(dy.data(), arg.data_int32(), g, dx.data());

    const Tensor x_gpu = x.to(gpu()), dy_gpu = dy.to(gpu());
    Tensor y_gpu = Tensor::empty(out, gpu()), arg_gpu = Tensor::empty(out, gpu(), DType::kInt32);
    Tensor dx_gpu = Tensor::empty(s.x, gpu());
    kernels::cuda::max_pool2d_forward(x_gpu.data(), g, y_gpu.data(), arg_gpu.data_int32(),
                                      stream());
    kernels::cuda::max_pool2d_backward(dy_gpu.data(), arg_gpu.data_int32(), g, dx_gpu.data(),
                                       stream());
    EXPECT_TRUE(same_bits(y_gpu.to_vector(), y.to_vector()));
    EXPECT_EQ(arg_gpu.to_int32_vector(), arg.to_int32_vector());
    EXPECT_TRUE(same_bits(dx_gpu.to_vector(), dx.to_vector()));
  }
}

TEST_F(PoolKernelParity, AvgPoolForwardAndBackwardAreTheCpuBits) {
  PoisonGuard poisoned;
  for (const PoolShape& s : pool_shapes()) {
    for (const AvgDivisor divisor : {AvgDivisor::kIncludePadding, AvgDivisor::kExcludePadding}) {
      SCOPED_TRACE(std::string(s.name) +
                   (divisor == AvgDivisor::kIncludePadding ? " incl" : " excl"));
      const Pool2DGeometry g = geometry(s);
      const Shape out = {s.x[0], s.x[1], g.out_h, g.out_w};
      const Tensor x = random_tensor(s.x, 3, kCpu), dy = random_tensor(out, 4, kCpu);
      Tensor y = Tensor::empty(out, kCpu), dx = Tensor::empty(s.x, kCpu);
      kernels::cpu::avg_pool2d_forward(x.data(), g, divisor, y.data());
      kernels::cpu::avg_pool2d_backward(dy.data(), g, divisor, dx.data());

      const Tensor x_gpu = x.to(gpu()), dy_gpu = dy.to(gpu());
      Tensor y_gpu = Tensor::empty(out, gpu()), dx_gpu = Tensor::empty(s.x, gpu());
      kernels::cuda::avg_pool2d_forward(x_gpu.data(), g, divisor, y_gpu.data(), stream());
      kernels::cuda::avg_pool2d_backward(dy_gpu.data(), g, divisor, dx_gpu.data(), stream());
      EXPECT_TRUE(same_bits(y_gpu.to_vector(), y.to_vector()));
      EXPECT_TRUE(same_bits(dx_gpu.to_vector(), dx.to_vector()));
    }
  }
}

TEST_F(PoolKernelParity, LaunchersRefuseABadGeometry) {
  Pool2DGeometry g = geometry(pool_shapes()[2]);
  g.pad_h = g.kernel_h;  // more than half the kernel
  Tensor x = Tensor::empty({g.planes * g.in_h * g.in_w}, gpu());
  Tensor y = Tensor::empty({g.planes * g.out_h * g.out_w}, gpu());
  testing::expect_error(
      [&] {
        kernels::cuda::avg_pool2d_forward(x.data(), g, AvgDivisor::kIncludePadding, y.data(),
                                          stream());
      },
      {"avg_pool2d_forward", "padding"});
}

// =============================================================================================
// (b) Op level, forward and backward through autograd

class PoolOpParity : public testing::CudaTest {};

// y = op(x), then backward with dy, on `device`: (y, dx).
std::pair<Tensor, Tensor> run_with_grad(const std::function<Tensor(const Tensor&)>& op,
                                        const Tensor& x_host, const Tensor& dy_host,
                                        const Device& device) {
  Tensor x = x_host.to(device);
  if (x.same(x_host)) x = x_host.clone();
  x.attach_grad();
  Tensor y;
  {
    autograd::RecordScope record;
    y = op(x);
  }
  y.backward(dy_host.to(device));
  return {y.to_host(), x.grad().to_host()};
}

TEST_F(PoolOpParity, PoolsForwardAndBackwardMatchTheCpu) {
  PoisonGuard poisoned;
  for (const PoolShape& s : pool_shapes()) {
    SCOPED_TRACE(s.name);
    const Tensor x = awkward_input(s.x, 5);
    const std::vector<std::pair<const char*, std::function<Tensor(const Tensor&)>>> pools = {
        {"max", [&](const Tensor& t) { return ops::max_pool2d(t, s.p); }},
        {"avg", [&](const Tensor& t) { return ops::avg_pool2d(t, s.p); }},
        {"global", [](const Tensor& t) { return ops::global_avg_pool2d(t); }},
    };
    for (const auto& [name, op] : pools) {
      SCOPED_TRACE(name);
      const Shape out = op(x).shape();
      const Tensor dy = random_tensor(out, 6, kCpu);
      const auto [y_cpu, dx_cpu] = run_with_grad(op, x, dy, kCpu);
      const auto [y_gpu, dx_gpu] = run_with_grad(op, x, dy, gpu());
      if (std::string(name) == "global") {
        // Row means: the CPU adds in double, the GPU in float, in another order.
        expect_close(y_gpu, y_cpu, 1e-5, 1e-5, "forward");
        expect_close(dx_gpu, dx_cpu, 1e-6, 1e-6, "backward");
      } else {
        EXPECT_TRUE(same_bits(y_gpu.to_vector(), y_cpu.to_vector())) << "forward";
        EXPECT_TRUE(same_bits(dx_gpu.to_vector(), dx_cpu.to_vector())) << "backward";
      }
    }
  }
}

TEST_F(PoolOpParity, FlattenOnTheGpuSharesTheData) {
  const Tensor x = random_tensor({3, 2, 5, 4}, 7, gpu());
  const Tensor y = ops::flatten(x);
  EXPECT_EQ(y.shape(), (Shape{3, 40}));
  EXPECT_EQ(y.data(), x.data());
  EXPECT_EQ(y.device(), gpu());
}

// =============================================================================================
// (c) Dropout masks

class DropoutParity : public testing::CudaTest {};

Tensor train_dropout(const Tensor& x, float rate, DropoutGenerator& generator) {
  autograd::TrainModeScope train;
  return ops::dropout(x, rate, generator);
}

TEST_F(DropoutParity, GpuMasksAreTheCpuMasksBitForBit) {
  PoisonGuard poisoned;
  DropoutGenerator on_cpu(77), on_gpu(77);
  // Several calls of odd sizes, so the later ones start at offsets other than 0.
  for (const int64_t n : {int64_t(1), int64_t(3), int64_t(4), int64_t(5), int64_t(1031),
                          int64_t(1) << 20 | 3, int64_t(0), int64_t(97)}) {
    SCOPED_TRACE(n);
    const Tensor x = random_tensor({n}, uint64_t(n) + 8, kCpu);
    for (const float rate : {0.5f, 0.1f}) {
      const std::vector<float> cpu = train_dropout(x, rate, on_cpu).to_vector();
      const std::vector<float> gpu_values = train_dropout(x.to(gpu()), rate, on_gpu).to_vector();
      EXPECT_TRUE(same_bits(gpu_values, cpu)) << "rate " << rate;
      EXPECT_EQ(on_gpu.offset(gpu()), on_cpu.offset(kCpu));
    }
  }
  EXPECT_EQ(on_gpu.offset(), on_cpu.offset(kCpu)) << "the GPU was used last";
  EXPECT_EQ(on_gpu.offset(kCpu), 0u) << "each device keeps its own offset";
}

TEST_F(DropoutParity, BackwardOnTheGpuMatchesTheCpu) {
  DropoutGenerator on_cpu(5), on_gpu(5);
  const Tensor x = random_tensor({3, 1001}, 9, kCpu), dy = random_tensor({3, 1001}, 10, kCpu);
  auto op_cpu = [&](const Tensor& t) { return ops::dropout(t, 0.3f, on_cpu); };
  auto op_gpu = [&](const Tensor& t) { return ops::dropout(t, 0.3f, on_gpu); };
  const auto [y_cpu, dx_cpu] = run_with_grad(op_cpu, x, dy, kCpu);
  const auto [y_gpu, dx_gpu] = run_with_grad(op_gpu, x, dy, gpu());
  EXPECT_TRUE(same_bits(y_gpu.to_vector(), y_cpu.to_vector()));
  EXPECT_TRUE(same_bits(dx_gpu.to_vector(), dx_cpu.to_vector()));
}

TEST_F(DropoutParity, SetSeedRestartsTheGpuStream) {
  DropoutGenerator generator(3);
  const Tensor x = Tensor::ones({100}, gpu());
  const std::vector<float> first = train_dropout(x, 0.5f, generator).to_vector();
  train_dropout(x, 0.5f, generator);
  EXPECT_EQ(generator.offset(gpu()), 200u);
  generator.set_seed(3);
  EXPECT_EQ(generator.offset(gpu()), 0u);
  EXPECT_EQ(train_dropout(x, 0.5f, generator).to_vector(), first);
}

// =============================================================================================
// (d) Dropout inside captured graphs

class DropoutCapture : public testing::CudaTest {};

TEST_F(DropoutCapture, ACapturedStepDrawsANewMaskEachReplayAndTheEagerSequence) {
  constexpr int kRuns = 6;
  const Tensor x = Tensor::ones({4, 257}, gpu());
  const Tensor labels = Tensor::zeros({4}, gpu());
  DropoutGenerator captured_generator(11), eager_generator(11);
  Tensor seen = Tensor::zeros({4, 257}, gpu());  // outlives the step: the graph copies into it
  CapturedStep step(
      [&](const Tensor& in, const Tensor&) {
        autograd::RecordScope record;
        seen.copy_from(ops::dropout(in, 0.5f, captured_generator));
      },
      gpu());
  std::vector<std::vector<float>> masks;
  for (int run = 0; run < kRuns; ++run) {
    step.run(x, labels);
    masks.push_back(seen.to_vector());
    autograd::RecordScope record;
    EXPECT_EQ(masks.back(), ops::dropout(x, 0.5f, eager_generator).to_vector())
        << "run " << run << ": the captured step's mask is not the eager sequence's";
  }
  EXPECT_TRUE(step.captured()) << step.eager_reason();
  EXPECT_GE(step.captures(), 1);
  for (int run = 1; run < kRuns; ++run) {
    EXPECT_NE(masks[size_t(run)], masks[size_t(run - 1)]) << "run " << run << " reused a mask";
  }
  EXPECT_EQ(captured_generator.offset(gpu()), uint64_t(kRuns) * 4 * 257);
}

// An MLP with a dropout between its layers, trained by SGD: eager steps and captured ones draw
// the same masks forward and backward, so the parameters stay together.
struct DropoutTraining {
  std::shared_ptr<Sequential> net = make<Sequential>();
  std::unique_ptr<Trainer> trainer;
  SoftmaxCrossEntropyLoss loss_fn;

  explicit DropoutTraining(const Device& device) {
    net->add(make<Dense>(32, "relu"), make<Dropout>(0.5f, 123), make<Dense>(10));
    net->initialize(init::xavier(), device, 2024);
    trainer = std::make_unique<Trainer>(net->collect_params(), std::make_shared<SGD>(0.1f, 0.9f));
  }
  void step(const Tensor& x, const Tensor& y) {
    Tensor loss;
    {
      autograd::RecordScope record;
      loss = loss_fn((*net)(x), y);
    }
    loss.backward();
    trainer->step(1);
  }
};

TEST_F(DropoutCapture, CapturedTrainingWithDropoutMatchesEagerTraining) {
  DropoutTraining eager(gpu()), captured(gpu());
  CapturedStep step([&](const Tensor& x, const Tensor& y) { captured.step(x, y); }, gpu());
  const Tensor x = random_tensor({16, 20}, 1, gpu());
  const Tensor y = Tensor::from_int32(
      std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5}, {16}, gpu());
  for (int i = 0; i < 8; ++i) {
    eager.step(x, y);
    step.run(x, y);
  }
  EXPECT_TRUE(step.captured()) << step.eager_reason();
  const ParameterDict a = eager.net->collect_params(), b = captured.net->collect_params();
  for (const auto& [name, parameter] : a) {
    expect_close(b.at(name)->data(), parameter->data(), 1e-5, 1e-5, name);
  }
  auto dropout = std::static_pointer_cast<Dropout>((*captured.net)[1]);
  EXPECT_EQ(dropout->offset(), 8u * 16 * 32);
}

TEST_F(DropoutCapture, AHybridizedBlockPredictsAsTheIdentityAndMasksWhenTraining) {
  auto make_net = [] {
    auto net = make<Sequential>();
    net->add(make<Dense>(64), make<Dropout>(0.5f, 9));
    net->initialize(init::xavier(), gpu(), 7);
    return net;
  };
  auto hybrid = make_net(), eager = make_net();
  hybrid->hybridize();
  const Tensor x = random_tensor({8, 20}, 3, gpu());
  std::vector<std::vector<float>> trained;
  for (int call = 0; call < 5; ++call) {
    SCOPED_TRACE(call);
    // Predicting: no dropout, whatever graph the training calls captured.
    const std::vector<float> predicted = (*hybrid)(x).to_vector();
    EXPECT_EQ(predicted, (*eager)(x).to_vector());
    {
      autograd::TrainModeScope train;
      trained.push_back((*hybrid)(x).to_vector());
      EXPECT_EQ(trained.back(), (*eager)(x).to_vector()) << "the eager sequence of masks";
    }
    EXPECT_NE(trained.back(), predicted);
    if (call > 0) EXPECT_NE(trained[size_t(call)], trained[size_t(call - 1)]);
  }
  EXPECT_EQ(hybrid->hybridize_state(), HybridState::kCaptured) << hybrid->hybridize_reason();
  auto dropout = std::static_pointer_cast<Dropout>((*hybrid)[1]);
  EXPECT_EQ(dropout->offset(), 5u * 8 * 64) << "predicting draws nothing";
}

}  // namespace
}  // namespace cairn
