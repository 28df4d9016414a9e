// Matrix products: ops::matmul (cuBLAS through the shared GEMM plan) and ops::dense (cuBLASLt with
// the bias epilogue) against a raw cublasSgemm of the same product on the same handle and stream.
//
// All three compute y (m, n) = x (m, k) W^T, W stored (n, k) as a Dense layer keeps it; the raw
// call is cublasSgemm(T, N, n, m, k) on those row-major buffers. Dense also adds the bias in its
// epilogue (m n extra additions: nothing next to 2 m n k). "of_cublas" = cairn TFLOP/s / raw
// cuBLAS TFLOP/s, the raw call timed in the same process just before; the target is
// Dense at 8192^3 within 5% of raw cuBLAS (of_cublas >= 0.95).
//
// Precision: float32 (cairn's default) and TF32 (set_matmul_precision(kTf32) for cairn; the raw
// call then runs in CUBLAS_TF32_TENSOR_OP_MATH). Inputs are not rotated: the MLP shapes fit in L2,
// and so they are in a training step; cairn and the raw call see the same cache.
#include <cublas_v2.h>

#include <chrono>

#include "bench_support.h"

namespace cairn::bench {
namespace {

using kernels::MatmulPrecision;

enum class Impl { kMatmul, kDense, kCublas };

class PrecisionScope {
 public:
  explicit PrecisionScope(MatmulPrecision precision) : previous_(matmul_precision()) {
    set_matmul_precision(precision);
  }
  ~PrecisionScope() { set_matmul_precision(previous_); }
  PrecisionScope(const PrecisionScope&) = delete;
  PrecisionScope& operator=(const PrecisionScope&) = delete;

 private:
  MatmulPrecision previous_;
};

struct Operands {
  Tensor x, w, b, y;
};

Operands make_operands(int64_t m, int64_t n, int64_t k) {
  Operands o;
  o.x = Tensor::uniform({m, k}, -1.0f, 1.0f, 1, gpu());
  o.w = Tensor::uniform({n, k}, -0.05f, 0.05f, 2, gpu());
  o.b = Tensor::uniform({n}, -0.5f, 0.5f, 3, gpu());
  o.y = Tensor::empty({m, n}, gpu());
  return o;
}

// y = x W^T on cuBLAS directly: row-major y (m, n) is column-major y^T (n, m) = W (n, k as k x n
// column-major, transposed) * x^T (k, m).
void raw_sgemm(const Operands& o, int64_t m, int64_t n, int64_t k, MatmulPrecision precision,
               cudaStream_t stream) {
  const cuda::BlasLease lease(gpu());  // cairn's handle, exclusively for this call
  cublasHandle_t handle = lease.handle();
  CAIRN_CUBLAS_CHECK(cublasSetStream(handle, stream));  // cuBLAS's own workspace from here on
  CAIRN_CUBLAS_CHECK(cublasSetMathMode(handle, precision == MatmulPrecision::kTf32
                                                   ? CUBLAS_TF32_TENSOR_OP_MATH
                                                   : CUBLAS_DEFAULT_MATH));
  const float alpha = 1.0f, beta = 0.0f;
  CAIRN_CUBLAS_CHECK(cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(m), int(k), &alpha,
                                 o.w.data(), int(k), o.x.data(), int(k), &beta, o.y.data(),
                                 int(n)));
}

// Launches per timed interval: about 5e10 flops, at least one, at most 1000.
Rotation reps_for(double flops) {
  Rotation r;
  r.sets = 1;
  r.reps = int(std::clamp(5e10 / flops, 1.0, 1000.0));
  return r;
}

// Median seconds of one raw cublasSgemm, timed like the benchmark.
double raw_seconds(const Operands& o, int64_t m, int64_t n, int64_t k, MatmulPrecision precision) {
  const Rotation r = reps_for(2.0 * double(m) * double(n) * double(k));
  cudaStream_t stream = cuda::current_stream(gpu());
  EventPair events;
  for (int i = 0; i < r.reps; ++i) raw_sgemm(o, m, n, k, precision, stream);
  CAIRN_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> samples;
  for (int s = 0; s < 9; ++s) {
    events.start(stream);
    for (int i = 0; i < r.reps; ++i) raw_sgemm(o, m, n, k, precision, stream);
    samples.push_back(events.stop(stream) / r.reps);
  }
  return median(samples);
}

void gemm(benchmark::State& state, Impl impl, MatmulPrecision precision) {
  if (skip_without_cuda(state)) return;
  ReleaseCacheAtExit release;
  guarded(state, [&] {
    const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
    const double flops = 2.0 * double(m) * double(n) * double(k);
    PrecisionScope scope(precision);
    const Operands o = make_operands(m, n, k);
    const double raw = raw_seconds(o, m, n, k, precision);
    const Rotation r = reps_for(flops);
    std::vector<double> per_call;
    if (impl == Impl::kCublas) {
      per_call = time_launches(
          state, r, [&](int, cudaStream_t stream) { raw_sgemm(o, m, n, k, precision, stream); });
    } else if (impl == Impl::kMatmul) {
      per_call = time_launches(state, r, [&](int, cudaStream_t) {
        benchmark::DoNotOptimize(ops::matmul(o.x, o.w, ops::Transpose::kNo, ops::Transpose::kYes));
      });
    } else {
      per_call = time_launches(state, r, [&](int, cudaStream_t) {
        benchmark::DoNotOptimize(ops::dense(o.x, o.w, o.b, ops::DenseActivation::kNone));
      });
    }
    if (per_call.empty()) return;
    const double t = median(per_call);
    state.counters["us"] = t * 1e6;
    state.counters["TFLOPs"] = flops / t * 1e-12;
    state.counters["cublas_TFLOPs"] = flops / raw * 1e-12;
    state.counters["of_cublas"] = raw / t;
    state.SetLabel(precision == MatmulPrecision::kTf32 ? "tf32" : "float32");
  });
}

void BM_gpu_matmul_f32(benchmark::State& s) { gemm(s, Impl::kMatmul, MatmulPrecision::kFloat32); }
void BM_gpu_dense_f32(benchmark::State& s) { gemm(s, Impl::kDense, MatmulPrecision::kFloat32); }
void BM_gpu_cublas_f32(benchmark::State& s) { gemm(s, Impl::kCublas, MatmulPrecision::kFloat32); }
void BM_gpu_matmul_tf32(benchmark::State& s) { gemm(s, Impl::kMatmul, MatmulPrecision::kTf32); }
void BM_gpu_dense_tf32(benchmark::State& s) { gemm(s, Impl::kDense, MatmulPrecision::kTf32); }
void BM_gpu_cublas_tf32(benchmark::State& s) { gemm(s, Impl::kCublas, MatmulPrecision::kTf32); }

void gemm_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"m", "k", "n"});
  b->Args({8192, 8192, 8192});
  // The MLPs' layers (784-256-10 and 784-1024-1024-10) at batch 64, 256, 4096.
  for (int64_t batch : {64, 256, 4096}) {
    for (auto [in, out] : std::vector<std::pair<int64_t, int64_t>>{
             {784, 256}, {256, 10}, {784, 1024}, {1024, 1024}, {1024, 10}}) {
      b->Args({batch, in, out});
    }
  }
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_gpu_cublas_f32)->Apply(gemm_shapes);
BENCHMARK(BM_gpu_matmul_f32)->Apply(gemm_shapes);
BENCHMARK(BM_gpu_dense_f32)->Apply(gemm_shapes);
BENCHMARK(BM_gpu_cublas_tf32)->Apply(gemm_shapes);
BENCHMARK(BM_gpu_matmul_tf32)->Apply(gemm_shapes);
BENCHMARK(BM_gpu_dense_tf32)->Apply(gemm_shapes);

// The CPU path (BLAS) for the MLP shapes at batch 256, labelled CPU: something to run without a
// GPU.
void BM_cpu_matmul_f32(benchmark::State& state) {
  guarded(state, [&] {
    const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
    const Tensor x = Tensor::uniform({m, k}, -1.0f, 1.0f, 1, Device::cpu());
    const Tensor w = Tensor::uniform({n, k}, -0.05f, 0.05f, 2, Device::cpu());
    benchmark::DoNotOptimize(ops::matmul(x, w, ops::Transpose::kNo, ops::Transpose::kYes));
    std::vector<double> samples;
    for (auto _ : state) {
      const auto start = std::chrono::steady_clock::now();
      benchmark::DoNotOptimize(ops::matmul(x, w, ops::Transpose::kNo, ops::Transpose::kYes));
      samples.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    state.SetLabel("CPU");
    state.counters["us"] = median(samples) * 1e6;
    state.counters["GFLOPs"] = 2.0 * double(m) * double(n) * double(k) / median(samples) * 1e-9;
  });
}
BENCHMARK(BM_cpu_matmul_f32)
    ->ArgNames({"m", "k", "n"})
    ->Args({256, 784, 256})
    ->Args({256, 256, 10})
    ->Args({256, 1024, 1024})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace cairn::bench

int main(int argc, char** argv) { return cairn::bench::run_main(argc, argv); }
