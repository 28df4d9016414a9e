// What the three benchmark programs share: skipping without a GPU, cudaEvent timing of a batch of
// launches, rotation among several input sets so that repeated launches do not measure the L2
// cache, the device-to-device copy that every bandwidth number is held against, and a main() that
// records the device in the JSON context.
//
// Timing convention: one Google Benchmark iteration is `reps` launches between two events on the
// stream cairn launches on; SetIterationTime() gets the whole interval (UseManualTime), and the
// per-launch median goes into the counters ("us", "GBps", ...), which are what bench/compare.py
// reads.
#pragma once

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "cairn/cairn.h"
#include "cairn/core/allocator.h"

namespace cairn::bench {

inline Device gpu() { return Device::cuda(0); }

// True (and the benchmark marked skipped with the reason) when there is no usable CUDA device.
inline bool skip_without_cuda(benchmark::State& state) {
  if (cuda_available()) return false;
  const std::string message = "no CUDA device: " + cuda_unavailable_reason();
  state.SkipWithError(message.c_str());
  return true;
}

// Runs a benchmark body; a cairn::Error (or any exception) marks the benchmark as errored with its
// message instead of terminating the program (Google Benchmark does not catch exceptions).
inline void guarded(benchmark::State& state, const std::function<void()>& body) {
  try {
    body();
  } catch (const std::exception& error) {
    state.SkipWithError(error.what());
  }
}

// Gives the caching allocator's cached blocks back when a benchmark ends, so that the large
// rotation sets of one benchmark do not crowd out the next one.
class ReleaseCacheAtExit {
 public:
  ReleaseCacheAtExit() = default;
  ~ReleaseCacheAtExit() {
    if (!cuda_available()) return;
    CAIRN_CUDA_REPORT(cudaStreamSynchronize(cuda::current_stream(gpu())));
    cuda_allocator(0).empty_cache();
  }
  ReleaseCacheAtExit(const ReleaseCacheAtExit&) = delete;
  ReleaseCacheAtExit& operator=(const ReleaseCacheAtExit&) = delete;
};

class EventPair {
 public:
  EventPair() {
    CAIRN_CUDA_CHECK(cudaEventCreate(&start_));
    CAIRN_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~EventPair() {
    CAIRN_CUDA_REPORT(cudaEventDestroy(start_));
    CAIRN_CUDA_REPORT(cudaEventDestroy(stop_));
  }
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
  void start(cudaStream_t stream) { CAIRN_CUDA_CHECK(cudaEventRecord(start_, stream)); }
  // Records the stop event, waits for it and returns the interval in seconds.
  double stop(cudaStream_t stream) {
    CAIRN_CUDA_CHECK(cudaEventRecord(stop_, stream));
    CAIRN_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0.0f;
    CAIRN_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return double(ms) * 1e-3;
  }

 private:
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

inline double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid] : 0.5 * (values[mid - 1] + values[mid]);
}

inline int64_t l2_cache_bytes() {
  int device = 0, bytes = 0;
  CAIRN_CUDA_CHECK(cudaGetDevice(&device));
  CAIRN_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrL2CacheSize, device));
  return bytes;
}

// How many independent input sets to rotate among, and how many launches one timed interval holds,
// for a kernel that touches `footprint` bytes a launch: the sets together span at least three L2
// caches (so each launch finds its inputs in device memory, not in L2), and one interval moves at
// least 512 MiB (so the event resolution, about a microsecond, is far below the interval).
struct Rotation {
  int sets = 1;
  int reps = 1;
};

inline Rotation rotation_for(int64_t footprint) {
  constexpr int kMaxSets = 1024;
  constexpr int64_t kMinIntervalBytes = int64_t(512) << 20;
  footprint = std::max<int64_t>(footprint, 1);
  Rotation r;
  const int64_t want_sets = (3 * l2_cache_bytes() + footprint - 1) / footprint;
  r.sets = int(std::clamp<int64_t>(want_sets, 1, kMaxSets));
  const int64_t passes =
      std::max<int64_t>(1, (kMinIntervalBytes + r.sets * footprint - 1) / (r.sets * footprint));
  r.reps = int(std::min<int64_t>(int64_t(r.sets) * passes, 100000));
  return r;
}

// Times `launch(set, stream)` for reps launches (set = launch index modulo sets) per iteration,
// after one warm-up interval. Returns the per-launch time of every iteration, in seconds.
inline std::vector<double> time_launches(benchmark::State& state, const Rotation& rotation,
                                         const std::function<void(int, cudaStream_t)>& launch) {
  cudaStream_t stream = cuda::current_stream(gpu());
  EventPair events;
  for (int r = 0; r < rotation.reps; ++r) launch(r % rotation.sets, stream);
  CAIRN_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> per_launch;
  for (auto _ : state) {
    events.start(stream);
    for (int r = 0; r < rotation.reps; ++r) launch(r % rotation.sets, stream);
    const double seconds = events.stop(stream);
    state.SetIterationTime(seconds);
    per_launch.push_back(seconds / rotation.reps);
  }
  return per_launch;
}

// The reference every bandwidth number is held against: cudaMemcpyAsync device to device of
// bytes_moved / 2 bytes (so that bytes read + bytes written = bytes_moved), rotated and timed the
// same way, in the same process, just before the kernel. Returns GB/s (1e9 bytes) of the median.
inline double copy_gbps(int64_t bytes_moved) {
  const int64_t half = std::max<int64_t>(bytes_moved / 2, 4) / 4 * 4;
  const Rotation rotation = rotation_for(2 * half);
  cudaStream_t stream = cuda::current_stream(gpu());
  std::vector<Tensor> src, dst;
  for (int s = 0; s < rotation.sets; ++s) {
    src.push_back(Tensor::uniform({half / 4}, -1.0f, 1.0f, 1000 + uint64_t(s), gpu()));
    dst.push_back(Tensor::empty({half / 4}, gpu()));
  }
  auto run = [&] {
    for (int r = 0; r < rotation.reps; ++r) {
      const int s = r % rotation.sets;
      CAIRN_CUDA_CHECK(cudaMemcpyAsync(dst[size_t(s)].data(), src[size_t(s)].data(), size_t(half),
                                       cudaMemcpyDeviceToDevice, stream));
    }
  };
  EventPair events;
  run();
  CAIRN_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> samples;
  for (int i = 0; i < 15; ++i) {
    events.start(stream);
    run();
    samples.push_back(events.stop(stream) / rotation.reps);
  }
  return double(2 * half) / median(samples) * 1e-9;
}

// Bandwidth counters for a kernel that moves `bytes` a launch (each input read once, each output
// written once), given the per-launch samples time_launches() returned.
inline void report_bandwidth(benchmark::State& state, int64_t bytes, const Rotation& rotation,
                             const std::vector<double>& per_launch, double copy_GBps) {
  if (per_launch.empty()) return;
  state.SetBytesProcessed(int64_t(state.iterations()) * rotation.reps * bytes);
  const double t = median(per_launch);
  const double gbps = double(bytes) / t * 1e-9;
  state.counters["us"] = t * 1e6;
  state.counters["GBps"] = gbps;
  state.counters["copy_GBps"] = copy_GBps;
  state.counters["of_copy_bw"] = gbps / copy_GBps;
  state.counters["bytes"] = double(bytes);
  state.counters["sets"] = rotation.sets;
}

inline std::string device_description() {
  if (!cuda_available()) return "none (" + cuda_unavailable_reason() + ")";
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "unknown";
  return std::string(prop.name) + " (sm_" + std::to_string(prop.major) +
         std::to_string(prop.minor) + ", " + std::to_string(prop.multiProcessorCount) + " SMs, " +
         std::to_string(prop.l2CacheSize >> 20) + " MiB L2)";
}

// main() for each program: the device goes into the JSON context, then the benchmarks run.
inline int run_main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("cuda_device", device_description());
  benchmark::AddCustomContext("cairn_matmul_precision_default", "float32");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace cairn::bench
