// The CPU path on convolutional networks (issue 20), cairn's side of bench/cpu_cnn_epoch.sh:
// one epoch of the sample's LeNet or ResNet (samples/train_fashion_mnist/models.cpp), batch 256,
// AdamW, the sample's loop (DataLoader, forward, softmax cross-entropy, backward, Trainer::step,
// loss.item()), on synthetic data of Fashion-MNIST's shape, at one OpenBLAS thread count, and its
// BLAS bound: the GEMMs the convolutions and dense layers of a step lower to (forward, the
// weights' gradient, the input's gradient where one is needed), called on OpenBLAS directly with
// the same shapes for every batch of the epoch, and nothing else (no im2col, pooling,
// normalisation, optimizer). PyTorch's epoch on the same shapes is torch_cnn_epoch.py; the script
// interleaves the three and prints the ratios.
//
//   bench_cnn_epoch --model lenet|resnet --threads N [--repeats R] [--samples 60000]
//                   [--what cairn|blas] [--device cpu|cuda]
//
// --device cuda trains on the GPU instead (bench/gpu_cnn_epoch.sh, against PyTorch on the same GPU;
// the BLAS bound is a CPU figure only).
//
// Prints one JSON line: {"model", "threads", "what", "epoch_s": [wall seconds per timed epoch]}.
// The first epoch is a warm-up and is not reported.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cairn/cairn.h"
#include "train_fashion_mnist/models.h"

namespace cairn::bench {
namespace {

constexpr int64_t kFeatures = 784, kClasses = 10, kBatch = 256;

std::shared_ptr<LabelledImages> synthetic_fashion_mnist(int64_t samples) {
  auto data = std::make_shared<LabelledImages>();
  data->count = samples;
  data->features = kFeatures;
  data->classes = int32_t(kClasses);
  data->pixels.resize(size_t(samples * kFeatures));
  data->labels.resize(size_t(samples));
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
  CairnEpoch(const std::string& model, int64_t samples, const Device& device) : device_(device) {
    fashion_models::ModelOptions options;
    options.name = model;
    net_ = fashion_models::build(options);
    net_->initialize(init::xavier(), device, /*seed=*/0);
    LoaderOptions loader;
    loader.batch_size = kBatch;
    loader.mean = 0.2860f;
    loader.stddev = 0.3530f;
    loader_ = std::make_unique<DataLoader>(synthetic_fashion_mnist(samples), loader, device);
    // Deferred shapes complete at the first forward; the trainer takes the parameters after.
    Batch batch;
    loader_->start_epoch(0);
    loader_->next(batch);
    (*net_)(batch.x);
    trainer_ = std::make_unique<Trainer>(net_->collect_params(), std::make_shared<AdamW>(1e-3f));
  }

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
    if (!(loss_sum == loss_sum)) std::fprintf(stderr, "bench_cnn_epoch: loss is NaN\n");
    cuda::synchronize(device_);
  }

 private:
  Device device_;
  std::shared_ptr<Block> net_;
  std::unique_ptr<Trainer> trainer_;
  std::unique_ptr<DataLoader> loader_;
  SoftmaxCrossEntropyLoss loss_fn_;
  int64_t epoch_ = 1;
};

// A layer's GEMMs per group: forward Y (K, N*P*Q) = W (K, C*R*S) cols (C*R*S, N*P*Q); dW = dY
// cols^T; dcols = W^T dY (skipped for the first layer, whose input needs no gradient). A dense
// layer is the 1x1 case with P*Q = 1.
struct GemmLayer {
  int64_t out, in_patch, positions, groups;  // K/groups, C/groups*R*S, P*Q
  bool input_gradient;
};

std::vector<GemmLayer> layers_of(const std::string& model) {
  if (model == "lenet") {
    return {{6, 25, 28 * 28, 1, false},  {16, 150, 10 * 10, 1, true}, {120, 400, 1, 1, true},
            {84, 120, 1, 1, true},       {10, 84, 1, 1, true}};
  }
  // The stem at 28x28; after the max pool, Residual(32) at 14x14, Residual(64, stride 2, 1x1
  // projection) at 7x7, Residual(128, stride 2, projection) at 4x4; the classifier.
  return {{32, 9, 28 * 28, 1, false},  {32, 288, 14 * 14, 1, true}, {32, 288, 14 * 14, 1, true},
          {64, 288, 7 * 7, 1, true},   {64, 576, 7 * 7, 1, true},   {64, 32, 7 * 7, 1, true},
          {128, 576, 4 * 4, 1, true},  {128, 1152, 4 * 4, 1, true}, {128, 64, 4 * 4, 1, true},
          {10, 128, 1, 1, true}};
}

class BlasOnlyEpoch {
 public:
  BlasOnlyEpoch(const std::string& model, int64_t samples) : layers_(layers_of(model)), samples_(samples) {
    for (const GemmLayer& layer : layers_) {
      const int64_t columns = kBatch * layer.positions;
      buffers_.push_back({std::vector<float>(size_t(layer.out * layer.in_patch), 0.01f),
                          std::vector<float>(size_t(layer.in_patch * columns), 0.01f),
                          std::vector<float>(size_t(layer.out * columns), 0.01f),
                          std::vector<float>(size_t(layer.out * layer.in_patch))});
    }
  }

  void run() {
    for (int64_t done = 0; done < samples_; done += kBatch) {
      const int64_t batch = std::min(kBatch, samples_ - done);
      for (size_t i = 0; i < layers_.size(); ++i) step(layers_[i], buffers_[i], batch);
    }
  }

 private:
  struct Buffers {
    std::vector<float> weight, cols, y, dweight;
  };

  static void step(const GemmLayer& l, Buffers& b, int64_t batch) {
    const int m = int(l.out), k = int(l.in_patch), n = int(batch * l.positions);
    for (int64_t g = 0; g < l.groups; ++g) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, b.weight.data(), k,
                  b.cols.data(), n, 0.0f, b.y.data(), n);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, k, n, 1.0f, b.y.data(), n,
                  b.cols.data(), n, 0.0f, b.dweight.data(), k);
      if (l.input_gradient) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, n, m, 1.0f, b.weight.data(), k,
                    b.y.data(), n, 0.0f, b.cols.data(), n);
      }
    }
  }

  std::vector<GemmLayer> layers_;
  std::vector<Buffers> buffers_;
  int64_t samples_;
};

int run(int argc, char** argv) {
  std::string model, what = "cairn", device = "cpu";
  int threads = 1, repeats = 1;
  int64_t samples = 60000;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model") {
      model = value;
    } else if (flag == "--threads") {
      threads = std::max(1, std::atoi(value.c_str()));
    } else if (flag == "--repeats") {
      repeats = std::max(1, std::atoi(value.c_str()));
    } else if (flag == "--samples") {
      samples = std::max<int64_t>(kBatch, std::atoll(value.c_str()));
    } else if (flag == "--what") {
      what = value;
    } else if (flag == "--device") {
      device = value;
    } else {
      model.clear();
      break;
    }
  }
  if ((model != "lenet" && model != "resnet") || (what != "cairn" && what != "blas") ||
      (device != "cpu" && device != "cuda") || (device == "cuda" && what == "blas") ||
      argc % 2 == 0) {
    std::fprintf(stderr,
                 "usage: bench_cnn_epoch --model lenet|resnet --threads N [--repeats R] "
                 "[--samples N] [--what cairn|blas] [--device cpu|cuda]\n");
    return 2;
  }
  openblas_set_num_threads(threads);
  std::unique_ptr<CairnEpoch> cairn_epoch;
  std::unique_ptr<BlasOnlyEpoch> blas_epoch;
  if (what == "cairn") {
    cairn_epoch = std::make_unique<CairnEpoch>(
        model, samples, device == "cuda" ? Device::cuda(0) : Device::cpu());
  } else {
    blas_epoch = std::make_unique<BlasOnlyEpoch>(model, samples);
  }
  auto epoch = [&] { cairn_epoch ? cairn_epoch->run() : blas_epoch->run(); };
  epoch();  // warm-up: page faults, the allocator's cache, OpenBLAS's thread pool
  std::string times;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    epoch();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    times += (r ? ", " : "") + std::to_string(seconds);
  }
  std::printf(
      "{\"model\": \"%s\", \"threads\": %d, \"what\": \"%s\", \"device\": \"%s\", "
      "\"epoch_s\": [%s]}\n",
      model.c_str(), threads, what.c_str(), device.c_str(), times.c_str());
  return 0;
}

}  // namespace
}  // namespace cairn::bench

int main(int argc, char** argv) {
  try {
    return cairn::bench::run(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "bench_cnn_epoch: %s\n", error.what());
    return 1;
  }
}
