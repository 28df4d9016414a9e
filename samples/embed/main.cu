// A CUDA application that embeds cairn: it owns its buffers, its kernel and its stream, and lends
// them to cairn without copies.
//
//   CPU: a host buffer of ours, wrapped as a tensor, through a small network; the result is
//        checked against a plain loop over the network's own parameters.
//   GPU: device memory of ours, filled by our kernel on our stream, wrapped, and run through the
//        same network on that stream (StreamGuard); the result must match the CPU's. Skipped,
//        saying why, where no GPU is usable.
//
// Exits non-zero on any mismatch or error, so that a test can run it.
#include <cairn/cairn.h>
#include <cairn/core/allocator.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr int64_t kBatch = 3;
constexpr int64_t kInputs = 8;
constexpr int64_t kHidden = 16;
constexpr int64_t kOutputs = 4;
constexpr uint64_t kSeed = 2024;
constexpr float kTolerance = 1e-5f;

// The application's own error check: cairn's macros are cairn's, an embedding program has its own.
void check_cuda(cudaError_t status, const char* expr, int line) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(expr) + " failed at main.cu:" + std::to_string(line) +
                             ": " + cudaGetErrorString(status));
  }
}
#define EMBED_CUDA_CHECK(expr) check_cuda((expr), #expr, __LINE__)

// The input, as a formula that host and device evaluate to the same bits: small integers times a
// power of two are exact in float32, so the two inputs are identical and any difference in the
// outputs is cairn's.
__host__ __device__ inline float input_value(int64_t i) { return float((i * 7) % 13 - 6) * 0.125f; }

// x: (n)
__global__ void fill_input_kernel(float* x, int64_t n) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n) x[i] = input_value(i);
}

// Dense(8 -> 16, relu), Dense(16 -> 4). The seeded initializers promise the same parameters on
// every device, so a network built for the GPU equals the one built for the CPU. Biases get a
// non-zero init (Dense's default is zeros) so that the check covers them too.
std::shared_ptr<cairn::Sequential> make_network(const cairn::Device& device) {
  auto net = cairn::make<cairn::Sequential>();
  auto hidden = net->add(cairn::make<cairn::Dense>(kHidden, "relu", kInputs));
  auto output = net->add(cairn::make<cairn::Dense>(kOutputs, "", kHidden));
  hidden->bias()->set_initializer(cairn::init::uniform(0.5f));
  output->bias()->set_initializer(cairn::init::uniform(0.5f));
  net->initialize(cairn::init::uniform(0.5f), device, kSeed);
  return net;
}

// y = W x + b for each row of x, in double; relu on request. W: (units, in), b: (units).
std::vector<double> dense_reference(const std::vector<double>& x, int64_t rows, int64_t in,
                                    const cairn::Dense& layer, bool relu) {
  const std::vector<float> w = layer.weight()->data().to_vector();
  const std::vector<float> b = layer.bias()->data().to_vector();
  const int64_t units = layer.units();
  std::vector<double> y(size_t(rows * units));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t u = 0; u < units; ++u) {
      double sum = b[size_t(u)];
      for (int64_t k = 0; k < in; ++k) sum += double(w[size_t(u * in + k)]) * x[size_t(r * in + k)];
      y[size_t(r * units + u)] = relu && sum < 0.0 ? 0.0 : sum;
    }
  }
  return y;
}

// Counts and prints the elements where |got - want| > tolerance * (1 + |want|).
template <typename Want>
int count_mismatches(const char* what, const std::vector<float>& got,
                     const std::vector<Want>& want) {
  if (got.size() != want.size()) {
    std::printf("%s: %zu values, expected %zu\n", what, got.size(), want.size());
    return 1;
  }
  int mismatches = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double difference = std::fabs(double(got[i]) - double(want[i]));
    if (!(difference <= kTolerance * (1.0 + std::fabs(double(want[i]))))) {
      std::printf("%s: element %zu is %.9g, expected %.9g\n", what, i, double(got[i]),
                  double(want[i]));
      ++mismatches;
    }
  }
  return mismatches;
}

void print_rows(const char* label, const std::vector<float>& values, int64_t columns) {
  std::printf("%s\n", label);
  for (size_t i = 0; i < values.size(); ++i) {
    std::printf("%s%10.6f", i % size_t(columns) == 0 ? "  " : " ", double(values[i]));
    if ((i + 1) % size_t(columns) == 0) std::printf("\n");
  }
}

// Returns the CPU result, after checking it against dense_reference.
std::vector<float> run_on_cpu(int& failures) {
  std::vector<float> input(size_t(kBatch * kInputs));  // ours; cairn only borrows it
  for (size_t i = 0; i < input.size(); ++i) input[i] = input_value(int64_t(i));

  const cairn::Device cpu = cairn::Device::cpu();
  auto net = make_network(cpu);
  const cairn::Tensor x = cairn::Tensor::wrap(input.data(), {kBatch, kInputs}, cpu);
  if (x.data() != input.data()) {
    std::printf("CPU: wrap copied the buffer\n");
    ++failures;
  }
  const std::vector<float> result = (*net)(x).to_vector();

  const auto& hidden = static_cast<const cairn::Dense&>(*(*net)[0]);
  const auto& output = static_cast<const cairn::Dense&>(*(*net)[1]);
  const std::vector<double> input_d(input.begin(), input.end());
  const std::vector<double> want = dense_reference(
      dense_reference(input_d, kBatch, kInputs, hidden, /*relu=*/true), kBatch, kHidden, output,
      /*relu=*/false);

  std::cout << "network:\n" << *net << "\n" << std::flush;
  print_rows("CPU result (3 x 4):", result, kOutputs);
  const int mismatches = count_mismatches("CPU vs reference", result, want);
  std::printf("CPU vs its own reference: %s\n", mismatches == 0 ? "match" : "MISMATCH");
  failures += mismatches;
  return result;
}

void run_on_gpu(const std::vector<float>& cpu_result, int& failures) {
  const int64_t count = kBatch * kInputs;
  const cairn::Device gpu = cairn::Device::cuda(0);
  EMBED_CUDA_CHECK(cudaSetDevice(gpu.index()));
  float* input = nullptr;  // ours: allocated, filled and freed here
  cudaStream_t stream = nullptr;
  EMBED_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&input), size_t(count) * sizeof(float)));
  EMBED_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  std::vector<float> result(size_t(kBatch * kOutputs));
  std::exception_ptr failure;
  try {
    // No synchronisation between our kernel and cairn's work: both go to `stream`, in order.
    const int threads = 128;
    const unsigned blocks = unsigned((count + threads - 1) / threads);
    fill_input_kernel<<<blocks, threads, 0, stream>>>(input, count);
    EMBED_CUDA_CHECK(cudaGetLastError());
    {
      cairn::cuda::StreamGuard on_our_stream(gpu, stream);
      if (cairn::cuda::current_stream(gpu) != stream) {
        throw std::runtime_error("StreamGuard did not route cairn to our stream");
      }
      auto net = make_network(gpu);  // parameters created and filled on the GPU, on our stream
      const cairn::Tensor x = cairn::Tensor::wrap(input, {kBatch, kInputs}, gpu);
      if (x.data() != input) throw std::runtime_error("GPU: wrap copied the buffer");
      const cairn::Tensor y = (*net)(x);
      EMBED_CUDA_CHECK(
          cudaMemcpyAsync(result.data(), y.data(), y.nbytes(), cudaMemcpyDeviceToHost, stream));
      EMBED_CUDA_CHECK(cudaStreamSynchronize(stream));
    }
    // cairn's caching allocator keeps freed blocks per stream; give back those tied to our
    // stream before the stream goes away.
    cairn::cuda::empty_cache(gpu);
  } catch (...) {
    failure = std::current_exception();
  }
  // Ours to free, whatever happened: cairn borrowed the pointer and the stream, never owned them.
  // On a failure, work may still be queued on the stream; let it finish first.
  const cudaError_t synced = cudaStreamSynchronize(stream);
  const cudaError_t freed = cudaFree(input);
  const cudaError_t destroyed = cudaStreamDestroy(stream);
  if (failure) std::rethrow_exception(failure);
  EMBED_CUDA_CHECK(synced);
  EMBED_CUDA_CHECK(freed);
  EMBED_CUDA_CHECK(destroyed);

  print_rows("GPU result (3 x 4):", result, kOutputs);
  const int mismatches = count_mismatches("GPU vs CPU", result, cpu_result);
  std::printf("GPU vs CPU (tolerance %g): %s\n", double(kTolerance),
              mismatches == 0 ? "match" : "MISMATCH");
  failures += mismatches;
}

}  // namespace

int main() {
  int failures = 0;
  try {
    const std::vector<float> cpu_result = run_on_cpu(failures);
    if (cairn::cuda_available()) {
      run_on_gpu(cpu_result, failures);
    } else {
      std::printf("GPU part skipped: %s\n", cairn::cuda_unavailable_reason().c_str());
    }
  } catch (const cairn::Error& error) {
    std::fprintf(stderr, "embed: cairn error: %s\n", error.what());
    return 1;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "embed: %s\n", error.what());
    return 1;
  }
  if (failures != 0) {
    std::fprintf(stderr, "embed: %d mismatches\n", failures);
    return 1;
  }
  std::printf("embed: ok\n");
  return 0;
}
