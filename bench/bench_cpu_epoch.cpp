// The CPU path against its BLAS bound (issue 13), in one run on one machine:
//
//   W1  one epoch of the book's MLP (784-256-10, batch 256, SGD, the sample's loop: DataLoader,
//       forward, softmax cross-entropy, backward, Trainer::step, loss.item()) on synthetic data
//       of Fashion-MNIST's shape (60000 x 784 bytes), at each requested OpenBLAS thread count,
//       against the BLAS-only reference: the same five GEMMs a step (layer 1 and 2 forward,
//       layer 2 dW and dx, layer 1 dW) called on OpenBLAS directly, for the same batch sizes.
//   W2  a tiny network's per-call overhead: 20-256-10 at batch 2, forward + loss + backward (and,
//       separately, with the SGD step), one thread: the minimum over 8 x repeats blocks of 2,000
//       calls.
//
// Runs are interleaved (cairn, reference, cairn, reference, ...) so that load from other
// processes hits both alike, and every figure is the minimum over the repeats: on a shared
// machine the minimum is the run least disturbed. The ratio is cairn's minimum over the
// reference's minimum, both from this run. "paired ratio" is the median, over the repeats, of
// each cairn epoch's wall time over that of the reference epoch run right after it: where the
// machine's speed drifts over minutes (a VM whose neighbours come and go), neighbours in time
// share the drift, so this is the steadier estimate of the two. Each run is timed twice: wall clock, and the CPU time
// of the whole process (user + system, all threads: CLOCK_PROCESS_CPUTIME_ID), which on a
// machine shared with other work is the steadier of the two at one thread (time spent waiting
// for a core is not counted; page faults and the kernel's work are). No GPU is needed or used.
//
//   bench_cpu_epoch [--repeats N] [--threads 1,2] [--skip-w1] [--skip-w2] [--cairn-only]
//
// --cairn-only runs cairn's epochs alone (no reference, no ratio): for a profiler.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cairn/cairn.h"

namespace cairn::bench {
namespace {

constexpr int64_t kSamples = 60000, kFeatures = 784, kHidden = 256, kClasses = 10;
constexpr int64_t kBatch = 256;
constexpr float kLearningRate = 0.1f;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double process_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return double(now.tv_sec) + 1e-9 * double(now.tv_nsec);
}

// Wall and process CPU seconds of one run.
struct Timing {
  double wall = std::numeric_limits<double>::infinity();
  double cpu = std::numeric_limits<double>::infinity();
  void keep_min(const Timing& other) {
    wall = std::min(wall, other.wall);
    cpu = std::min(cpu, other.cpu);
  }
};

template <typename F>
Timing timed(F&& run) {
  const double cpu_start = process_cpu_seconds();
  const auto start = std::chrono::steady_clock::now();
  run();
  Timing t;
  t.wall = seconds_since(start);
  t.cpu = process_cpu_seconds() - cpu_start;
  return t;
}

// Deterministic pseudo-random bytes and labels: the timing does not depend on the values, and no
// data set needs to be installed.
std::shared_ptr<LabelledImages> synthetic_fashion_mnist() {
  auto data = std::make_shared<LabelledImages>();
  data->count = kSamples;
  data->features = kFeatures;
  data->classes = int32_t(kClasses);
  data->pixels.resize(size_t(kSamples * kFeatures));
  data->labels.resize(size_t(kSamples));
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&state] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  for (auto& pixel : data->pixels) pixel = uint8_t(next() >> 56);
  for (auto& label : data->labels) label = int32_t(next() % uint64_t(kClasses));
  return data;
}

class CairnEpoch {
 public:
  explicit CairnEpoch(std::shared_ptr<const LabelledImages> data) {
    net_ = make<Sequential>();
    net_->add(make<Dense>(kHidden, "relu", kFeatures));
    net_->add(make<Dense>(kClasses, "", kHidden));
    net_->initialize(init::xavier(), Device::cpu(), /*seed=*/0);
    trainer_ =
        std::make_unique<Trainer>(net_->collect_params(), std::make_shared<SGD>(kLearningRate));
    LoaderOptions options;
    options.batch_size = kBatch;
    options.mean = 0.2860f;  // Fashion-MNIST's, as the sample uses
    options.stddev = 0.3530f;
    loader_ = std::make_unique<DataLoader>(std::move(data), options, Device::cpu());
  }

  // One epoch.
  void run() {
    loader_->start_epoch(epoch_++);
    Batch batch;
    double loss_sum = 0.0;
    while (loader_->next(batch)) {
      Tensor loss;
      {
        autograd::RecordScope record;
        loss = loss_fn_((*net_)(batch.x), batch.y);
      }
      loss.backward();
      trainer_->step(1);
      loss_sum += loss.item();
    }
    if (!(loss_sum == loss_sum)) std::fprintf(stderr, "bench_cpu_epoch: loss is NaN\n");
  }

 private:
  std::shared_ptr<Sequential> net_;
  std::unique_ptr<Trainer> trainer_;
  std::unique_ptr<DataLoader> loader_;
  SoftmaxCrossEntropyLoss loss_fn_;
  int64_t epoch_ = 1;
};

// The GEMMs of one epoch and nothing else, row-major on OpenBLAS, on buffers allocated once.
class BlasOnlyEpoch {
 public:
  BlasOnlyEpoch()
      : x_(size_t(kBatch * kFeatures), 0.01f),
        w1_(size_t(kHidden * kFeatures), 0.01f),
        w2_(size_t(kClasses * kHidden), 0.01f),
        h_(size_t(kBatch * kHidden)),
        out_(size_t(kBatch * kClasses)),
        dout_(size_t(kBatch * kClasses), 0.01f),
        dh_(size_t(kBatch * kHidden)),
        dw1_(size_t(kHidden * kFeatures)),
        dw2_(size_t(kClasses * kHidden)) {}

  void run() {
    for (int64_t done = 0; done < kSamples; done += kBatch) {
      step(int(std::min(kBatch, kSamples - done)));
    }
  }

 private:
  void step(int b) {
    const int in = int(kFeatures), hid = int(kHidden), cls = int(kClasses);
    // h = x W1^T; out = h W2^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, hid, in, 1.0f, x_.data(), in,
                w1_.data(), in, 0.0f, h_.data(), hid);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, cls, hid, 1.0f, h_.data(), hid,
                w2_.data(), hid, 0.0f, out_.data(), cls);
    // dW2 = dout^T h; dh = dout W2; dW1 = dh^T x
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cls, hid, b, 1.0f, dout_.data(), cls,
                h_.data(), hid, 0.0f, dw2_.data(), hid);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, hid, cls, 1.0f, dout_.data(), cls,
                w2_.data(), hid, 0.0f, dh_.data(), hid);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hid, in, b, 1.0f, dh_.data(), hid,
                x_.data(), in, 0.0f, dw1_.data(), in);
  }

  std::vector<float> x_, w1_, w2_, h_, out_, dout_, dh_, dw1_, dw2_;
};

// W2: 20-256-10 at batch 2. Returns microseconds per call (the minimum over `repeats` timed
// blocks of `calls` calls each), wall and CPU.
Timing tiny_network_us(bool with_step, int repeats, int calls) {
  auto net = make<Sequential>();
  net->add(make<Dense>(256, "relu", 20));
  net->add(make<Dense>(10, "", 256));
  net->initialize(init::xavier(), Device::cpu(), /*seed=*/0);
  Trainer trainer(net->collect_params(), std::make_shared<SGD>(kLearningRate));
  const SoftmaxCrossEntropyLoss loss_fn;
  const Tensor x = Tensor::uniform({2, 20}, -1.0f, 1.0f, 3, Device::cpu());
  const Tensor y = Tensor::from_int32({3, 7}, {2}, Device::cpu());
  auto call = [&] {
    Tensor loss;
    {
      autograd::RecordScope record;
      loss = loss_fn((*net)(x), y);
    }
    loss.backward();
    if (with_step) trainer.step(1);
  };
  for (int i = 0; i < calls / 10 + 10; ++i) call();  // warm-up
  Timing best;
  for (int r = 0; r < repeats; ++r) {
    best.keep_min(timed([&] {
      for (int i = 0; i < calls; ++i) call();
    }));
  }
  best.wall *= 1e6 / calls;
  best.cpu *= 1e6 / calls;
  return best;
}

std::vector<int> parse_threads(const std::string& text) {
  std::vector<int> threads;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    const int n = std::atoi(item.c_str());
    CAIRN_CHECK(n >= 1, "bench_cpu_epoch: bad thread count '", item, "' in --threads ", text);
    threads.push_back(n);
  }
  return threads;
}

int run(int argc, char** argv) {
  int repeats = 5;
  std::vector<int> threads{1, 2};
  bool w1 = true, w2 = true, reference = true;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--repeats" && i + 1 < argc) {
      repeats = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--threads" && i + 1 < argc) {
      threads = parse_threads(argv[++i]);
    } else if (arg == "--skip-w1") {
      w1 = false;
    } else if (arg == "--skip-w2") {
      w2 = false;
    } else if (arg == "--cairn-only") {
      reference = false;
    } else {
      std::fprintf(stderr,
                   "usage: bench_cpu_epoch [--repeats N] [--threads 1,2] [--skip-w1] "
                   "[--skip-w2] [--cairn-only]\n");
      return 2;
    }
  }
  std::printf("bench_cpu_epoch: min of %d interleaved runs; OpenBLAS %s\n\n", repeats,
              openblas_get_config());
  if (w1) {
    auto data = synthetic_fashion_mnist();
    CairnEpoch cairn_epoch(data);
    BlasOnlyEpoch blas_epoch;
    std::printf(
        "| W1: 784-256-10, batch 256, one epoch | threads | cairn s | BLAS-only s | ratio | "
        "cairn CPU s | BLAS-only CPU s | CPU ratio | paired ratio |\n");
    std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (int n : threads) {
      openblas_set_num_threads(n);
      cairn_epoch.run();  // warm-up: caches, page faults, OpenBLAS's thread pool
      if (reference) blas_epoch.run();
      Timing best_cairn, best_blas;
      std::vector<double> paired;  // each cairn epoch's wall time over the reference's next to it
      for (int r = 0; r < repeats; ++r) {
        const Timing cairn_run = timed([&] { cairn_epoch.run(); });
        best_cairn.keep_min(cairn_run);
        if (reference) {
          const Timing blas_run = timed([&] { blas_epoch.run(); });
          best_blas.keep_min(blas_run);
          paired.push_back(cairn_run.wall / blas_run.wall);
        }
      }
      std::sort(paired.begin(), paired.end());
      const double median =
          paired.empty() ? 0.0
                         : 0.5 * (paired[(paired.size() - 1) / 2] + paired[paired.size() / 2]);
      std::printf("| W1 | %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |\n", n,
                  best_cairn.wall, best_blas.wall, best_cairn.wall / best_blas.wall,
                  best_cairn.cpu, best_blas.cpu, best_cairn.cpu / best_blas.cpu, median);
      std::fflush(stdout);
    }
    std::printf("\n");
  }
  if (w2) {
    openblas_set_num_threads(1);
    // Many short blocks rather than a few long ones: on a shared machine the minimum over 40
    // blocks of 2,000 calls finds an undisturbed stretch more reliably than 5 of 20,000.
    constexpr int kCalls = 2000;
    std::printf(
        "| W2: 20-256-10, batch 2, one thread | us per call | CPU us per call |\n"
        "| --- | --- | --- |\n");
    const Timing plain = tiny_network_us(false, 8 * repeats, kCalls);
    std::printf("| forward + loss + backward | %.2f | %.2f |\n", plain.wall, plain.cpu);
    const Timing stepped = tiny_network_us(true, 8 * repeats, kCalls);
    std::printf("| forward + loss + backward + SGD step | %.2f | %.2f |\n", stepped.wall,
                stepped.cpu);
  }
  return 0;
}

}  // namespace
}  // namespace cairn::bench

int main(int argc, char** argv) {
  try {
    return cairn::bench::run(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "bench_cpu_epoch: %s\n", error.what());
    return 1;
  }
}
