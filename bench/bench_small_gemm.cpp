// Where small_gemm stops paying (kernels/cpu/small_gemm.h): cpu::small_gemm against OpenBLAS on
// the same plan, one thread, for the three layouts a Dense layer makes (forward, dx, dW) at sizes
// either side of kSmallGemmMaxWork. Each figure is the minimum over 7 timed blocks of calls on
// buffers that stay in cache; "small / BLAS" below 1 means small_gemm is faster, and the name in
// brackets is the one cpu::gemm picks for that plan.
//
// Then cpu::gemm against a plain cblas_sgemm call on the book's MLP's GEMMs at batch 256, where
// the only difference is who zeroes C for beta = 0 (cairn, in wide stores, then beta = 1; or
// OpenBLAS's own pass).
//
// Then the size of the change in results: the tiny network (20-256-10, batch 2, SGD lr 0.1)
// trained for 1, 10 and 100 steps with small_gemm and again with OpenBLAS only, from the same
// start on the same data; for each parameter, the largest difference relative to the largest
// magnitude in it, and the largest difference in ulps of float at that magnitude.
//
//   bench_small_gemm
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

namespace {

using cairn::kernels::ColumnMajorGemmPlan;

template <typename F>
double min_us_per_call(F&& call, int calls = 2000) {
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

// Parameters after `steps` SGD steps of the tiny network.
std::map<std::string, std::vector<float>> train_tiny(int steps) {
  using namespace cairn;
  auto net = make<Sequential>();
  net->add(make<Dense>(256, "relu", 20));
  net->add(make<Dense>(10, "", 256));
  net->initialize(init::xavier(), Device::cpu(), /*seed=*/5);
  Trainer trainer(net->collect_params(), std::make_shared<SGD>(0.1f));
  const SoftmaxCrossEntropyLoss loss_fn;
  const Tensor y = Tensor::from_int32({3, 7}, {2}, Device::cpu());
  std::map<std::string, std::vector<float>> out;
  for (int s = 0; s < steps; ++s) {
    const Tensor x = Tensor::normal({2, 20}, 0.0f, 1.0f, 100 + uint64_t(s), Device::cpu());
    Tensor loss;
    {
      autograd::RecordScope record;
      loss = loss_fn((*net)(x), y);
    }
    loss.backward();
    trainer.step(1);
    out["loss (last step)"] = loss.to_vector();
  }
  for (const auto& [name, parameter] : net->collect_params()) {
    out[name] = parameter->data().to_vector();
  }
  return out;
}

void print_beta_zero_pass() {
  std::printf("\n| the book's MLP, batch 256 (column-major) | m | n | k | cpu::gemm us | cblas_sgemm beta=0 us | ratio |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- |\n");
  struct Case {
    const char* name;
    bool transpose_first, transpose_second;
    int64_t m, n, k;
  };
  const Case cases[] = {{"layer 1 forward (T,N)", true, false, 256, 256, 784},
                        {"layer 2 dx (N,N)", false, false, 256, 256, 10},
                        {"layer 1 dW (N,T)", false, true, 784, 256, 256}};
  for (const Case& c : cases) {
    const int64_t first_size = c.m * c.k, second_size = c.k * c.n;
    std::vector<float> first(size_t(first_size), 0.01f), second(size_t(second_size), 0.02f),
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
    double ours = 1e30, theirs = 1e30;
    for (int round = 0; round < 5; ++round) {  // interleaved
      ours = std::min(ours, min_us_per_call([&] { cairn::kernels::cpu::blas_gemm(plan); }, 20));
      theirs = std::min(theirs, min_us_per_call(plain, 20));
    }
    std::printf("| %s | %lld | %lld | %lld | %.1f | %.1f | %.3f |\n", c.name, (long long)c.m,
                (long long)c.n, (long long)c.k, ours, theirs, ours / theirs);
  }
}

void print_result_differences() {
  std::printf("\n| steps | tensor | max abs difference | relative to max abs value | ulps at max |\n");
  std::printf("| --- | --- | --- | --- | --- |\n");
  for (int steps : {1, 10, 100}) {
    cairn::kernels::cpu::set_small_gemm_enabled(true);
    const auto with_small = train_tiny(steps);
    cairn::kernels::cpu::set_small_gemm_enabled(false);
    const auto blas_only = train_tiny(steps);
    cairn::kernels::cpu::set_small_gemm_enabled(true);
    for (const auto& [name, values] : with_small) {
      const std::vector<float>& other = blas_only.at(name);
      double max_diff = 0.0, max_value = 0.0;
      for (size_t i = 0; i < values.size(); ++i) {
        max_diff = std::max(max_diff, std::fabs(double(values[i]) - double(other[i])));
        max_value = std::max(max_value, std::fabs(double(other[i])));
      }
      const double ulp = max_value > 0 ? std::ldexp(1.0, std::ilogb(max_value) - 23) : 1.0;
      std::printf("| %d | %s | %.3g | %.3g | %.1f |\n", steps, name.c_str(), max_diff,
                  max_value > 0 ? max_diff / max_value : 0.0, max_diff / ulp);
    }
  }
}

}  // namespace

int main() {
  openblas_set_num_threads(1);
  std::printf("| layout (column-major) | m | n | k | m*n*k | small_gemm us | OpenBLAS us | small / BLAS |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  struct Case {
    const char* layout;
    bool transpose_first, transpose_second;
    int64_t m, n, k;
  };
  // Dense(out, in) at batch b: forward is (T, N) m=out n=b k=in; dx is (N, N) m=in n=b k=out;
  // dW is (N, T) m=in n=out k=b.
  const Case cases[] = {
      // The tiny network's five (20-256-10 at batch 2), then larger.
      {"forward (T,N)", true, false, 256, 2, 20},  {"forward (T,N)", true, false, 10, 2, 256},
      {"dW (N,T)", false, true, 256, 10, 2},       {"dx (N,N)", false, false, 256, 2, 10},
      {"dW (N,T)", false, true, 20, 256, 2},       {"forward (T,N)", true, false, 256, 4, 32},
      {"forward (T,N)", true, false, 256, 8, 32},  {"forward (T,N)", true, false, 256, 16, 64},
      {"dx (N,N)", false, false, 256, 4, 16},
      {"dx (N,N)", false, false, 256, 8, 32},      {"dx (N,N)", false, false, 256, 16, 64},
      {"dW (N,T)", false, true, 64, 256, 2},
      {"dW (N,T)", false, true, 64, 256, 4},       {"dW (N,T)", false, true, 128, 256, 4},
      {"dW (N,T)", false, true, 256, 256, 8},
      // The book's MLP at batch 256: layer 2's dx (k = 10 outputs), the last batch's (96 rows).
      {"dx (N,N)", false, false, 256, 256, 10},    {"dx (N,N)", false, false, 256, 96, 10},
  };
  for (const Case& c : cases) {
    const int64_t first_size = (c.transpose_first ? c.k : c.m) * (c.transpose_first ? c.m : c.k);
    const int64_t second_size = c.k * c.n;
    std::vector<float> first(size_t(first_size), 0.5f), second(size_t(second_size), 0.25f),
        out(size_t(c.m * c.n));
    ColumnMajorGemmPlan plan;
    plan.transpose_first = c.transpose_first;
    plan.transpose_second = c.transpose_second;
    plan.m = c.m, plan.n = c.n, plan.k = c.k;
    plan.first = first.data(), plan.ld_first = c.transpose_first ? c.k : c.m;
    plan.second = second.data(), plan.ld_second = c.transpose_second ? c.n : c.k;
    plan.c = out.data(), plan.ldc = c.m;
    const double blas = min_us_per_call([&] { cairn::kernels::cpu::blas_gemm(plan); });
    const bool takes = cairn::kernels::cpu::small_gemm_takes(plan);
    if (c.transpose_first) {  // not a layout small_gemm reads
      std::printf("| %s | %lld | %lld | %lld | %lld | - | %.2f | - (OpenBLAS) |\n", c.layout,
                  (long long)c.m, (long long)c.n, (long long)c.k, (long long)(c.m * c.n * c.k),
                  blas);
      continue;
    }
    const double small = min_us_per_call([&] { cairn::kernels::cpu::small_gemm(plan); });
    std::printf("| %s | %lld | %lld | %lld | %lld | %.2f | %.2f | %.2f (%s) |\n", c.layout,
                (long long)c.m, (long long)c.n, (long long)c.k, (long long)(c.m * c.n * c.k),
                small, blas, small / blas, takes ? "small_gemm" : "OpenBLAS");
  }
  std::printf("\nkSmallGemmMaxWork = %lld\n", (long long)cairn::kernels::cpu::kSmallGemmMaxWork);
  print_beta_zero_pass();
  print_result_differences();
  return 0;
}
