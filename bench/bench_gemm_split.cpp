// cpu::gemm's own split of a large GEMM across threads (kernels/cpu/gemm.cpp, parallel.h) against
// OpenBLAS threading the same call itself, at two threads:
//
// 1. Time: the book's MLP's five GEMMs at batch 256, cpu::gemm with the split on and off, and a
//    plain cblas_sgemm call, interleaved; each figure the minimum over 5 rounds of 7 blocks of 20
//    calls on buffers that stay in cache. Run alone, with nothing between the calls, this is what
//    the split costs or saves the GEMM itself; what it is for shows between GEMMs
//    (bench_cpu_epoch W1 at two threads), where OpenBLAS's threads no longer spin against cairn's.
// 2. The size of the change in results: the MLP (784-256-10, batch 256, SGD lr 0.1, momentum 0.9)
//    trained for 1, 10 and 100 steps on the same synthetic batches with the split on and off;
//    for each parameter the largest difference relative to its largest magnitude and in ulps of
//    float at that magnitude. For scale, the same between one thread and OpenBLAS's two.
//
//   bench_gemm_split
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "cairn/cairn.h"
#include "cairn/kernels/cpu/small_gemm.h"
#include "cairn/kernels/gemm.h"

namespace {

using cairn::kernels::ColumnMajorGemmPlan;

template <typename F>
double min_us_per_call(F&& call, int calls) {
  double best = 1e30;
  for (int block = 0; block < 7; ++block) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i) call();
    const double us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
    best = std::min(best, us / calls);
  }
  return best;
}

void print_gemm_times() {
  std::printf("| the book's MLP, batch 256 (column-major) | m | n | k | split us | OpenBLAS-threaded us | cblas_sgemm us | split / cblas |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  struct Case {
    const char* name;
    bool transpose_first, transpose_second;
    int64_t m, n, k;
  };
  const Case cases[] = {{"layer 1 forward (T,N)", true, false, 256, 256, 784},
                        {"layer 2 forward (T,N)", true, false, 10, 256, 256},
                        {"layer 2 dW (N,T)", false, true, 256, 10, 256},
                        {"layer 2 dx (N,N)", false, false, 256, 256, 10},
                        {"layer 1 dW (N,T)", false, true, 784, 256, 256}};
  for (const Case& c : cases) {
    std::vector<float> first(size_t(c.m * c.k), 0.01f), second(size_t(c.k * c.n), 0.02f),
        out(size_t(c.m * c.n));
    ColumnMajorGemmPlan plan;
    plan.transpose_first = c.transpose_first;
    plan.transpose_second = c.transpose_second;
    plan.m = c.m, plan.n = c.n, plan.k = c.k;
    plan.first = first.data(), plan.ld_first = c.transpose_first ? c.k : c.m;
    plan.second = second.data(), plan.ld_second = c.transpose_second ? c.n : c.k;
    plan.c = out.data(), plan.ldc = c.m;
    auto plain = [&] {
      cblas_sgemm(CblasColMajor, c.transpose_first ? CblasTrans : CblasNoTrans,
                  c.transpose_second ? CblasTrans : CblasNoTrans, int(c.m), int(c.n), int(c.k),
                  1.0f, plan.first, int(plan.ld_first), plan.second, int(plan.ld_second), 0.0f,
                  plan.c, int(plan.ldc));
    };
    auto ours = [&] { cairn::kernels::cpu::blas_gemm(plan); };
    double split = 1e30, unsplit = 1e30, theirs = 1e30;
    for (int round = 0; round < 5; ++round) {
      cairn::kernels::cpu::set_gemm_split_enabled(true);
      split = std::min(split, min_us_per_call(ours, 20));
      cairn::kernels::cpu::set_gemm_split_enabled(false);
      unsplit = std::min(unsplit, min_us_per_call(ours, 20));
      theirs = std::min(theirs, min_us_per_call(plain, 20));
    }
    cairn::kernels::cpu::set_gemm_split_enabled(true);
    std::printf("| %s | %lld | %lld | %lld | %.1f | %.1f | %.1f | %.3f |\n", c.name, (long long)c.m,
                (long long)c.n, (long long)c.k, split, unsplit, theirs, split / theirs);
  }
}

// Parameters after `steps` SGD steps of the book's MLP on synthetic batches.
std::map<std::string, std::vector<float>> train_mlp(int steps) {
  using namespace cairn;
  auto net = make<Sequential>();
  net->add(make<Dense>(256, "relu", 784));
  net->add(make<Dense>(10, "", 256));
  net->initialize(init::xavier(), Device::cpu(), /*seed=*/5);
  Trainer trainer(net->collect_params(), std::make_shared<SGD>(0.1f, 0.9f));
  const SoftmaxCrossEntropyLoss loss_fn;
  std::vector<int32_t> labels(256);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = int32_t((i * 7) % 10);
  const Tensor y = Tensor::from_int32(labels, {256}, Device::cpu());
  for (int s = 0; s < steps; ++s) {
    const Tensor x = Tensor::uniform({256, 784}, 0.0f, 1.0f, 100 + uint64_t(s), Device::cpu());
    Tensor loss;
    {
      autograd::RecordScope record;
      loss = loss_fn((*net)(x), y);
    }
    loss.backward();
    trainer.step(256);
  }
  std::map<std::string, std::vector<float>> out;
  for (const auto& [name, parameter] : net->collect_params()) {
    out[name] = parameter->data().to_vector();
  }
  return out;
}

void print_difference(int steps, const char* what,
                      const std::map<std::string, std::vector<float>>& ours,
                      const std::map<std::string, std::vector<float>>& other) {
  for (const auto& [name, values] : ours) {
    const std::vector<float>& theirs = other.at(name);
    double max_diff = 0.0, max_value = 0.0;
    for (size_t i = 0; i < values.size(); ++i) {
      max_diff = std::max(max_diff, std::fabs(double(values[i]) - double(theirs[i])));
      max_value = std::max(max_value, std::fabs(double(theirs[i])));
    }
    const double ulp = max_value > 0 ? std::ldexp(1.0, std::ilogb(max_value) - 23) : 1.0;
    std::printf("| %d | %s | %s | %.3g | %.3g | %.1f |\n", steps, what, name.c_str(), max_diff,
                max_value > 0 ? max_diff / max_value : 0.0, max_diff / ulp);
  }
}

void print_result_differences() {
  std::printf("\n| steps | compared | tensor | max abs difference | relative to max abs value | ulps at max |\n");
  std::printf("| --- | --- | --- | --- | --- | --- |\n");
  for (int steps : {1, 10, 100}) {
    openblas_set_num_threads(2);
    cairn::kernels::cpu::set_gemm_split_enabled(true);
    const auto split = train_mlp(steps);
    cairn::kernels::cpu::set_gemm_split_enabled(false);
    const auto openblas_threaded = train_mlp(steps);
    cairn::kernels::cpu::set_gemm_split_enabled(true);
    openblas_set_num_threads(1);
    const auto one_thread = train_mlp(steps);
    openblas_set_num_threads(2);
    print_difference(steps, "split vs OpenBLAS-threaded", split, openblas_threaded);
    print_difference(steps, "one thread vs OpenBLAS-threaded", one_thread, openblas_threaded);
  }
}

}  // namespace

int main() {
  openblas_set_num_threads(2);
  std::printf("bench_gemm_split: two threads; %s\n\n", openblas_get_config());
  print_gemm_times();
  print_result_differences();
  return 0;
}
