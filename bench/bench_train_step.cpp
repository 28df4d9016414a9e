// One training step (forward, softmax cross-entropy, backward, SGD step) of the MLPs 784-256-10 and
// 784-1024-1024-10 at batch 64, 256 and 4096: eager and hybridized (CapturedStep: one CUDA graph a
// step) on the GPU, and eager on the CPU.
//
// GPU timing: after a warm-up, one benchmark iteration is kStepsPerInterval steps between two
// cudaEvents (the host queues step after step, as a training loop does; nothing reads the loss).
// The counter "us_per_step" is the median over iterations of interval / steps: that is the number
// bench/compare.py holds against bench/torch_reference.py's (same MLPs, batches, loss, SGD).
// Data are synthetic and resident on the device: uniform inputs, random int32 labels.
#include <chrono>
#include <random>

#include "bench_support.h"

namespace cairn::bench {
namespace {

constexpr int kWarmupSteps = 10;
constexpr int kStepsPerInterval = 50;
constexpr float kLearningRate = 0.1f;

struct Setup {
  std::shared_ptr<Sequential> net;
  std::unique_ptr<Trainer> trainer;
  SoftmaxCrossEntropyLoss loss_fn;  // mean over the batch, so step(1)
  Tensor x, y;

  void step(const Tensor& inputs, const Tensor& labels) {
    Tensor loss;
    {
      autograd::RecordScope record;
      loss = loss_fn((*net)(inputs), labels);
    }
    loss.backward();
    trainer->step(1);
  }
};

// hidden: the hidden widths; 784 inputs and 10 classes as in Fashion-MNIST.
std::unique_ptr<Setup> make_setup(const std::vector<int64_t>& hidden, int64_t batch,
                                  const Device& device) {
  auto setup = std::make_unique<Setup>();
  setup->net = make<Sequential>();
  int64_t in = 784;
  for (int64_t width : hidden) {
    setup->net->add(make<Dense>(width, "relu", in));
    in = width;
  }
  setup->net->add(make<Dense>(10, "", in));
  setup->net->initialize(init::xavier(), device, /*seed=*/42);
  setup->trainer =
      std::make_unique<Trainer>(setup->net->collect_params(), std::make_shared<SGD>(kLearningRate));
  setup->x = Tensor::uniform({batch, 784}, 0.0f, 1.0f, 7, device);
  std::mt19937_64 rng(11);
  std::uniform_int_distribution<int32_t> pick(0, 9);
  std::vector<int32_t> labels(static_cast<size_t>(batch));
  for (int32_t& label : labels) label = pick(rng);
  setup->y = Tensor::from_int32(labels, {batch}, device);
  return setup;
}

std::vector<int64_t> hidden_of(int64_t mlp) {
  return mlp == 0 ? std::vector<int64_t>{256} : std::vector<int64_t>{1024, 1024};
}

double flops_per_step(int64_t mlp, int64_t batch) {
  // 2 n in out for the forward product, twice that backward (dx and dW); the first layer's dx is
  // not needed (inputs ask for no gradient).
  double flops = 0.0;
  int64_t in = 784;
  bool first = true;
  std::vector<int64_t> widths = hidden_of(mlp);
  widths.push_back(10);
  for (int64_t out : widths) {
    const double one = 2.0 * double(batch) * double(in) * double(out);
    flops += first ? 2 * one : 3 * one;
    first = false;
    in = out;
  }
  return flops;
}

// Times `run_step` on the GPU: kStepsPerInterval steps per iteration between events.
void time_steps(benchmark::State& state, const std::function<void()>& run_step, double flops) {
  cudaStream_t stream = cuda::current_stream(gpu());
  for (int i = 0; i < kWarmupSteps; ++i) run_step();
  CAIRN_CUDA_CHECK(cudaStreamSynchronize(stream));
  EventPair events;
  std::vector<double> per_step;
  for (auto _ : state) {
    events.start(stream);
    for (int i = 0; i < kStepsPerInterval; ++i) run_step();
    const double seconds = events.stop(stream);
    state.SetIterationTime(seconds);
    per_step.push_back(seconds / kStepsPerInterval);
  }
  if (per_step.empty()) return;
  const double t = median(per_step);
  state.counters["us_per_step"] = t * 1e6;
  state.counters["steps"] = kStepsPerInterval;
  state.counters["TFLOPs"] = flops / t * 1e-12;
}

void BM_gpu_train_step_eager(benchmark::State& state, int64_t mlp) {
  if (skip_without_cuda(state)) return;
  ReleaseCacheAtExit release;
  guarded(state, [&] {
    const int64_t batch = state.range(0);
    auto setup = make_setup(hidden_of(mlp), batch, gpu());
    time_steps(
        state, [&] { setup->step(setup->x, setup->y); }, flops_per_step(mlp, batch));
    state.SetLabel("eager");
  });
}

void BM_gpu_train_step_hybridized(benchmark::State& state, int64_t mlp) {
  if (skip_without_cuda(state)) return;
  ReleaseCacheAtExit release;
  guarded(state, [&] {
    const int64_t batch = state.range(0);
    auto setup = make_setup(hidden_of(mlp), batch, gpu());
    CapturedStep captured([&](const Tensor& x, const Tensor& y) { setup->step(x, y); }, gpu());
    // Warm-up inside time_steps: run 1 is eager, run 2 captures and replays, the rest replay.
    time_steps(
        state, [&] { captured.run(setup->x, setup->y); }, flops_per_step(mlp, batch));
    state.counters["captured"] = captured.captured() ? 1 : 0;
    state.SetLabel(captured.captured() ? std::string("CUDA graph")
                                       : "eager: " + captured.eager_reason());
  });
}

void BM_cpu_train_step_eager(benchmark::State& state, int64_t mlp) {
  guarded(state, [&] {
    const int64_t batch = state.range(0);
    auto setup = make_setup(hidden_of(mlp), batch, Device::cpu());
    setup->step(setup->x, setup->y);  // warm-up
    std::vector<double> per_step;
    for (auto _ : state) {
      const auto start = std::chrono::steady_clock::now();
      setup->step(setup->x, setup->y);
      per_step.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    const double t = median(per_step);
    state.counters["us_per_step"] = t * 1e6;
    state.counters["GFLOPs"] = flops_per_step(mlp, batch) / t * 1e-9;
    state.SetLabel("CPU eager");
  });
}

void gpu_batches(benchmark::internal::Benchmark* b) {
  b->ArgName("batch")->Arg(64)->Arg(256)->Arg(4096);
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}
// The CPU at batch 4096 of the wide MLP takes seconds a step on a small machine: 64 and 256 only.
void cpu_batches(benchmark::internal::Benchmark* b) {
  b->ArgName("batch")->Arg(64)->Arg(256)->UseRealTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK_CAPTURE(BM_gpu_train_step_eager, mlp_784_256_10, 0)->Apply(gpu_batches);
BENCHMARK_CAPTURE(BM_gpu_train_step_hybridized, mlp_784_256_10, 0)->Apply(gpu_batches);
BENCHMARK_CAPTURE(BM_gpu_train_step_eager, mlp_784_1024_1024_10, 1)->Apply(gpu_batches);
BENCHMARK_CAPTURE(BM_gpu_train_step_hybridized, mlp_784_1024_1024_10, 1)->Apply(gpu_batches);
BENCHMARK_CAPTURE(BM_cpu_train_step_eager, mlp_784_256_10, 0)->Apply(cpu_batches);
BENCHMARK_CAPTURE(BM_cpu_train_step_eager, mlp_784_1024_1024_10, 1)->Apply(cpu_batches);

}  // namespace
}  // namespace cairn::bench

int main(int argc, char** argv) { return cairn::bench::run_main(argc, argv); }
