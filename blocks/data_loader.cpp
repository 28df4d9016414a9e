#include "cairn/blocks/data_loader.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "cairn/blocks/idx.h"
#include "cairn/core/cuda_context.h"
#include "cairn/base/error.h"
#include "cairn/kernels/cpu/parallel.h"
#include "cairn/kernels/cpu/vector_dispatch.h"

namespace cairn {
namespace {

bool exists(const std::string& path) { return std::ifstream(path).good(); }

// "<dir>/<stem>" or "<dir>/<stem>.gz", whichever is there.
std::string find_idx(const std::string& dir, const std::string& stem) {
  const std::string plain = dir + "/" + stem;
  if (exists(plain)) return plain;
  if (exists(plain + ".gz")) return plain + ".gz";
  CAIRN_FAIL("load_fashion_mnist: neither ", plain, " nor ", plain,
             ".gz exists (on Debian: apt-get install dataset-fashion-mnist)");
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Rows of a batch per thread below which the gather stays on one thread.
constexpr int64_t kRowsPerThread = 32;
// How far ahead the gather asks for a row's pixels: the rows are scattered over the data set (tens
// of megabytes, more than the caches hold), so each one's first touch would otherwise wait on
// memory.
constexpr int64_t kPrefetchRows = 4;

// x[row] = pixels of samples[row] / 255, normalised; y[row] = its label. On the host, for both
// devices (a GPU's batch is then copied in). The same expression per pixel whichever thread and
// vector width computes it.
// One augmented sample: out(r, c) = in(r + dy, flip ? W - 1 - (c + dx) : c + dx) with the
// sample's own (dy, dx, flip), pixel 0 outside the image; then normalised as every pixel is.
void augment_row(const uint8_t* in, const LoaderOptions::Augmentation& aug, uint64_t key,
                 float scale, float shift, float* out) {
  uint64_t state = key;
  const uint64_t draw = splitmix64(state);
  const int64_t span = 2 * aug.max_shift + 1;
  const int64_t dy = int64_t(draw % uint64_t(span)) - aug.max_shift;
  const int64_t dx = int64_t((draw >> 20) % uint64_t(span)) - aug.max_shift;
  const bool flip = aug.horizontal_flip && ((draw >> 63) != 0);
  const int64_t h = aug.height, w = aug.width;
  for (int64_t r = 0; r < h; ++r) {
    const int64_t source_r = r + dy;
    for (int64_t c = 0; c < w; ++c) {
      const int64_t shifted = c + dx;
      const int64_t source_c = flip ? w - 1 - shifted : shifted;
      const bool inside = source_r >= 0 && source_r < h && shifted >= 0 && shifted < w;
      const uint8_t pixel = inside ? in[source_r * w + source_c] : uint8_t(0);
      out[r * w + c] = float(pixel) * scale - shift;
    }
  }
}

// The key of a sample's augmentation draws in an epoch.
uint64_t augmentation_key(uint64_t seed, int64_t epoch, int64_t sample) {
  uint64_t state = seed ^ 0x6a09e667f3bcc909ull;
  state = splitmix64(state) ^ uint64_t(epoch);
  state = splitmix64(state) ^ uint64_t(sample);
  return splitmix64(state);
}

void gather_batch(const LabelledImages& data, const int64_t* samples, int64_t length, float scale,
                  float shift, float* x, int32_t* y, const LoaderOptions::Augmentation& augmentation,
                  uint64_t seed, int64_t epoch) {
  if (augmentation.enabled()) {
    kernels::cpu::parallel_for(length, kRowsPerThread, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        augment_row(data.pixels.data() + samples[row] * data.features, augmentation,
                    augmentation_key(seed, epoch, samples[row]), scale, shift,
                    x + row * data.features);
        y[row] = data.labels[size_t(samples[row])];
      }
    });
    return;
  }
  const int64_t features = data.features;
  const uint8_t* pixels = data.pixels.data();
  const int32_t* labels = data.labels.data();
  kernels::cpu::parallel_for(length, kRowsPerThread, [&](int64_t begin, int64_t end) {
    kernels::cpu::detail::run_widest([&]() CAIRN_VECTOR_LOOP {
      for (int64_t row = begin; row < end; ++row) {
        if (row + kPrefetchRows < end) {
          const uint8_t* ahead = pixels + samples[row + kPrefetchRows] * features;
          for (int64_t byte = 0; byte < features; byte += 64) __builtin_prefetch(ahead + byte);
        }
        const uint8_t* in = pixels + samples[row] * features;
        float* out = x + row * features;
        for (int64_t f = 0; f < features; ++f) out[f] = float(in[f]) * scale - shift;
        y[row] = labels[samples[row]];
      }
    });
  });
}

}  // namespace

LabelledImages load_fashion_mnist(const std::string& dir, bool train) {
  const std::string prefix = train ? "train" : "t10k";
  const std::string images_path = find_idx(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = find_idx(dir, prefix + "-labels-idx1-ubyte");
  IdxArray images = read_idx(images_path);
  const IdxArray labels = read_idx(labels_path);
  CAIRN_CHECK(images.shape.size() == 3, "load_fashion_mnist: ", images_path,
              ": expected 3 dimensions (count, rows, cols), found ", images.shape.size());
  CAIRN_CHECK(labels.shape.size() == 1, "load_fashion_mnist: ", labels_path,
              ": expected 1 dimension (count), found ", labels.shape.size());
  CAIRN_CHECK(images.shape[0] == labels.shape[0], "load_fashion_mnist: ", images_path, " has ",
              images.shape[0], " images but ", labels_path, " has ", labels.shape[0], " labels");
  LabelledImages out;
  out.count = images.shape[0];
  out.features = images.shape[1] * images.shape[2];
  out.pixels = std::move(images.data);
  out.labels.resize(size_t(out.count));
  for (int64_t i = 0; i < out.count; ++i) {
    const int32_t label = labels.data[size_t(i)];
    CAIRN_CHECK(label < 10, "load_fashion_mnist: ", labels_path, ": label ", label, " at index ", i,
                " is not a class in [0, 10)");
    out.labels[size_t(i)] = label;
  }
  out.classes = 10;
  return out;
}

std::vector<int64_t> seeded_permutation(int64_t count, uint64_t seed) {
  std::vector<int64_t> order(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) order[size_t(i)] = i;
  uint64_t state = seed;
  for (int64_t i = count - 1; i > 0; --i) {
    // Multiply-shift maps 64 random bits to [0, i] without modulo bias worth measuring here.
    const auto j = int64_t((unsigned __int128)splitmix64(state) * uint64_t(i + 1) >> 64);
    std::swap(order[size_t(i)], order[size_t(j)]);
  }
  return order;
}

std::vector<int64_t> shard_of(const std::vector<int64_t>& order, int64_t shard, int64_t shards,
                              ShardRemainder remainder) {
  CAIRN_CHECK(shards >= 1 && shard >= 0 && shard < shards, "shard_of: shard ", shard, " of ",
              shards, " does not exist");
  const int64_t count = int64_t(order.size());
  const int64_t end = remainder == ShardRemainder::kDrop ? count - count % shards : count;
  std::vector<int64_t> out;
  out.reserve(size_t(end / shards + 1));
  for (int64_t position = shard; position < end; position += shards) {
    out.push_back(order[size_t(position)]);
  }
  return out;
}

// One of the staging areas on a GPU: pinned host buffers, device buffers, and the events that
// order the copy stream against the compute stream. Three of them: the batch handed out last, the
// one before it (valid until next() has been called twice more, as data_loader.h promises), and
// the one being copied in.
constexpr int kSlots = 3;
struct DataLoader::Slot {
  float* host_x = nullptr;
  int32_t* host_y = nullptr;
  Tensor device_x, device_y;
  cudaEvent_t copied = nullptr;    // the copy into the device buffers has finished
  cudaEvent_t released = nullptr;  // the compute stream is done with the previous batch here
  int64_t length = 0;
  bool pending = false;  // `copied` has been recorded since the last wait
};

DataLoader::DataLoader(std::shared_ptr<const LabelledImages> data, const LoaderOptions& options,
                       const Device& device)
    : data_(std::move(data)), options_(options), device_(device) {
  CAIRN_CHECK(data_ != nullptr && data_->count > 0, "DataLoader: the data set is empty");
  CAIRN_CHECK(options_.batch_size > 0, "DataLoader: batch_size must be positive, got ",
              options_.batch_size);
  CAIRN_CHECK(std::isfinite(options_.mean), "DataLoader: mean must be finite, got ", options_.mean);
  CAIRN_CHECK(std::isfinite(options_.stddev) && options_.stddev > 0.0f,
              "DataLoader: stddev must be finite and positive, got ", options_.stddev);
  // Finite arguments can still overflow float once divided by a tiny stddev: check the extremes
  // a batch can hold, pixel 0 and pixel 255, computed as stage() computes them.
  const float scale = 1.0f / (255.0f * options_.stddev), shift = options_.mean / options_.stddev;
  CAIRN_CHECK(std::isfinite(scale) && std::isfinite(shift) && std::isfinite(255.0f * scale - shift),
              "DataLoader: mean ", options_.mean, " and stddev ", options_.stddev,
              " normalise pixels beyond the float range");
  CAIRN_CHECK(options_.shards >= 1 && options_.shard >= 0 && options_.shard < options_.shards,
              "DataLoader: shard ", options_.shard, " of ", options_.shards, " does not exist");
  CAIRN_CHECK(
      options_.shard_remainder == ShardRemainder::kUneven || data_->count >= options_.shards,
      "DataLoader: ", data_->count, " samples cannot be split into ", options_.shards,
      " equal shards of at least one");
  int64_t pixel_count = 0;
  CAIRN_CHECK(data_->features > 0 &&
                  !__builtin_mul_overflow(data_->count, data_->features, &pixel_count) &&
                  int64_t(data_->pixels.size()) == pixel_count &&
                  int64_t(data_->labels.size()) == data_->count,
              "DataLoader: the data set's arrays do not match count ", data_->count,
              " and features ", data_->features);
  const LoaderOptions::Augmentation& aug = options_.augmentation;
  CAIRN_CHECK(!aug.enabled() || (aug.height > 0 && aug.width > 0 &&
                                 aug.height * aug.width == data_->features && aug.max_shift >= 0 &&
                                 aug.max_shift < std::min(aug.height, aug.width)),
              "DataLoader: augmentation of ", aug.height, "x", aug.width, " images shifted by up to ",
              aug.max_shift, " does not fit samples of ", data_->features,
              " features (height * width must equal it, and the shift be below both)");
  try {
    if (device_.is_cuda()) create_cuda_resources();
    start_epoch(0);
  } catch (...) {
    // The destructor does not run for a half-built loader.
    if (device_.is_cuda()) release_cuda_resources();
    throw;
  }
}

void DataLoader::create_cuda_resources() {
  cuda::DeviceGuard guard(device_);
  cudaStream_t stream = nullptr;
  CAIRN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  copy_stream_ = stream;
  int64_t x_count = 0;
  CAIRN_CHECK(!__builtin_mul_overflow(options_.batch_size, data_->features, &x_count) &&
                  x_count <= INT64_MAX / int64_t(sizeof(float)),
              "DataLoader: batch_size ", options_.batch_size, " x ", data_->features,
              " features is too large for the staging buffers");
  for (int i = 0; i < kSlots; ++i) {
    // Into slots_ first, so that release_cuda_resources() finds whatever was made before a failure.
    slots_.push_back(std::make_unique<Slot>());
    Slot& slot = *slots_.back();
    CAIRN_CUDA_CHECK(
        cudaMallocHost(reinterpret_cast<void**>(&slot.host_x), size_t(x_count) * sizeof(float)));
    CAIRN_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&slot.host_y),
                                    size_t(options_.batch_size) * sizeof(int32_t)));
    slot.device_x = Tensor::empty({options_.batch_size, data_->features}, device_);
    slot.device_y = Tensor::empty({options_.batch_size}, device_, DType::kInt32);
    CAIRN_CUDA_CHECK(cudaEventCreateWithFlags(&slot.copied, cudaEventDisableTiming));
    CAIRN_CUDA_CHECK(cudaEventCreateWithFlags(&slot.released, cudaEventDisableTiming));
    // The new device buffers may still be being poisoned (set_poison_allocations) on the compute
    // stream; the first copy into them, on the copy stream, waits for this.
    CAIRN_CUDA_CHECK(cudaEventRecord(slot.released, cuda::current_stream(device_)));
  }
}

void DataLoader::release_cuda_resources() noexcept {
  // Statuses are ignored: this runs from the destructor and from a failed constructor. Pending
  // copies finish first, so no transfer reads a freed pinned buffer.
  if (copy_stream_ != nullptr) cudaStreamSynchronize(static_cast<cudaStream_t>(copy_stream_));
  for (auto& slot : slots_) {
    if (slot->host_x != nullptr) cudaFreeHost(slot->host_x);
    if (slot->host_y != nullptr) cudaFreeHost(slot->host_y);
    if (slot->copied != nullptr) cudaEventDestroy(slot->copied);
    if (slot->released != nullptr) cudaEventDestroy(slot->released);
  }
  slots_.clear();
  if (copy_stream_ != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(copy_stream_));
  copy_stream_ = nullptr;
}

DataLoader::~DataLoader() {
  if (device_.is_cuda()) release_cuda_resources();
}

int64_t DataLoader::batches_per_epoch() const {
  const int64_t count = epoch_samples();
  const int64_t full = count / options_.batch_size;
  return options_.drop_last || count % options_.batch_size == 0 ? full : full + 1;
}

std::vector<std::pair<std::string, std::string>> data_parallel_quantities(const DataLoader& loader) {
  const LoaderOptions& options = loader.options();
  auto exact = [](float value) {
    char text[32];
    std::snprintf(text, sizeof(text), "%.9g", static_cast<double>(value));
    return std::string(text);
  };
  return {
      {"training samples", std::to_string(loader.samples())},
      {"features per sample", std::to_string(loader.features())},
      {"shards", std::to_string(options.shards)},
      {"batch size (per rank)", std::to_string(options.batch_size)},
      {"steps per epoch", std::to_string(loader.batches_per_epoch())},
      {"samples per epoch (per rank)", std::to_string(loader.epoch_samples())},
      {"shuffle", options.shuffle ? "seed " + std::to_string(options.seed) : "off"},
      {"drop_last", options.drop_last ? "true" : "false"},
      {"normalisation (mean, stddev)", exact(options.mean) + ", " + exact(options.stddev)},
  };
}

int64_t DataLoader::batch_length(int64_t batch_index) const {
  return std::min(options_.batch_size, epoch_samples() - batch_index * options_.batch_size);
}

void DataLoader::start_epoch(int64_t epoch) {
  CAIRN_CHECK(epoch >= 0, "DataLoader::start_epoch: negative epoch ", epoch);
  epoch_ = epoch;
  if (options_.shuffle) {
    order_ = seeded_permutation(data_->count, options_.seed * 1000003ull + uint64_t(epoch));
  } else {
    order_.resize(size_t(data_->count));
    for (int64_t i = 0; i < data_->count; ++i) order_[size_t(i)] = i;
  }
  if (options_.shards > 1) {
    order_ = shard_of(order_, options_.shard, options_.shards, options_.shard_remainder);
  }
  next_batch_ = 0;
  staged_ = 0;
  if (device_.is_cuda()) {
    // Anything still reading the slots from the last epoch must finish before they are refilled.
    cuda::synchronize(device_);
    CAIRN_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(copy_stream_)));
    for (auto& slot : slots_) slot->pending = false;
    if (batches_per_epoch() > 0) stage(0, *slots_[0]);
  }
}

void DataLoader::stage(int64_t batch_index, Slot& slot) {
  cuda::DeviceGuard guard(device_);
  auto copy_stream = static_cast<cudaStream_t>(copy_stream_);
  // The pinned buffers may still be feeding this slot's previous copy.
  if (slot.pending) CAIRN_CUDA_CHECK(cudaEventSynchronize(slot.copied));
  const int64_t length = batch_length(batch_index);
  const int64_t features = data_->features;
  const float scale = 1.0f / (255.0f * options_.stddev);
  const float shift = options_.mean / options_.stddev;
  gather_batch(*data_, order_.data() + batch_index * options_.batch_size, length, scale, shift,
               slot.host_x, slot.host_y, options_.augmentation, options_.seed, epoch_);
  // The compute stream must be done with whatever batch this slot held before.
  CAIRN_CUDA_CHECK(cudaStreamWaitEvent(copy_stream, slot.released, 0));
  CAIRN_CUDA_CHECK(cudaMemcpyAsync(slot.device_x.raw_data(), slot.host_x,
                                   size_t(length * features) * sizeof(float),
                                   cudaMemcpyHostToDevice, copy_stream));
  CAIRN_CUDA_CHECK(cudaMemcpyAsync(slot.device_y.raw_data(), slot.host_y,
                                   size_t(length) * sizeof(int32_t), cudaMemcpyHostToDevice,
                                   copy_stream));
  CAIRN_CUDA_CHECK(cudaEventRecord(slot.copied, copy_stream));
  slot.pending = true;
  slot.length = length;
  ++staged_;
}

bool DataLoader::next(Batch& batch) {
  if (next_batch_ >= batches_per_epoch()) return false;
  const int64_t length = batch_length(next_batch_);
  const int64_t features = data_->features;
  if (!device_.is_cuda()) {
    batch.x = Tensor::empty({length, features}, device_);
    batch.y = Tensor::empty({length}, device_, DType::kInt32);
    const float scale = 1.0f / (255.0f * options_.stddev);
    const float shift = options_.mean / options_.stddev;
    gather_batch(*data_, order_.data() + next_batch_ * options_.batch_size, length, scale, shift,
                 batch.x.data(), batch.y.data_int32(), options_.augmentation, options_.seed,
                 epoch_);
    ++next_batch_;
    return true;
  }

  cuda::DeviceGuard guard(device_);
  auto compute_stream = static_cast<cudaStream_t>(cuda::current_stream(device_));
  Slot& slot = *slots_[size_t(next_batch_ % kSlots)];
  CAIRN_CUDA_CHECK(cudaStreamWaitEvent(compute_stream, slot.copied, 0));
  batch.x = Tensor::wrap(slot.device_x.raw_data(), {length, features}, device_);
  batch.y = Tensor::wrap(slot.device_y.raw_data(), {length}, device_, DType::kInt32);

  // The next slot held the batch handed out two calls ago, whose work is all queued by now: once
  // the compute stream passes this point it is free, so the batch after this one can be copied
  // into it.
  Slot& other = *slots_[size_t((next_batch_ + 1) % kSlots)];
  CAIRN_CUDA_CHECK(cudaEventRecord(other.released, compute_stream));
  if (next_batch_ + 1 < batches_per_epoch()) stage(next_batch_ + 1, other);
  ++next_batch_;
  return true;
}

}  // namespace cairn
