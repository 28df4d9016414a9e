// Data for training: an in-memory labelled image set, Fashion-MNIST from IDX files, and a loader
// that shuffles with a seed, batches, normalises, and overlaps the next batch's host-to-device
// copy with the current batch's work.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cairn/core/tensor.h"

namespace cairn {

// Samples of `features` bytes each (pixels 0..255) with int32 labels in [0, classes).
struct LabelledImages {
  std::vector<uint8_t> pixels;  // (count, features), row-major
  std::vector<int32_t> labels;  // (count)
  int64_t count = 0;
  int64_t features = 0;
  int32_t classes = 0;
};

// Reads <dir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (the IDX files of MNIST and
// Fashion-MNIST). Throws cairn::Error naming the file when one is missing or malformed, or when the
// images and labels disagree.
LabelledImages load_fashion_mnist(const std::string& dir, bool train);

// Where Debian's dataset-fashion-mnist package puts the files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

struct Batch {
  Tensor x;  // (batch, features) float32, (pixel / 255 - mean) / stddev
  Tensor y;  // (batch) int32
};

// What data-parallel sharding does with the count % shards samples an even split leaves over.
enum class ShardRemainder {
  kDrop,    // every shard gets count / shards samples (training: every rank takes as many steps)
  kUneven,  // every sample is served once; the first count % shards shards get one more
            // (evaluation)
};

struct LoaderOptions {
  int64_t batch_size = 256;
  bool shuffle = true;
  uint64_t seed = 0;
  bool drop_last = false;  // keep the short final batch by default, as Gluon does
  float mean = 0.0f;       // normalisation applied after scaling pixels to [0, 1]
  float stddev = 1.0f;
  // Data-parallel sharding (one loader per rank: shards = size, shard = rank): each epoch's
  // permutation is dealt out like cards, shard r taking positions r, r + shards, r + 2 shards, ...
  // so the shards are disjoint and together cover the epoch, and with drop_last or equal batch
  // counts, batch k of all shards together is batch k of a single loader over batch_size * shards
  // (PyTorch's DistributedSampler deals the same way). With ShardRemainder::kDrop the last
  // count % shards positions of the permutation are left out, so they change from epoch to epoch.
  int64_t shards = 1;
  int64_t shard = 0;
  ShardRemainder shard_remainder = ShardRemainder::kDrop;
  // Training-set augmentation of (height x width) images (height * width = features): each
  // sample, each epoch, is shifted by up to `max_shift` pixels along each axis (the uncovered
  // border is pixel 0, the background) and, with `horizontal_flip`, mirrored with probability
  // one half: the standard recipe for Fashion-MNIST's CNNs. The draws are a pure function of
  // (seed, epoch, sample), so a resumed run sees the same images. Off by default.
  struct Augmentation {
    int64_t height = 0, width = 0;
    int64_t max_shift = 0;
    bool horizontal_flip = false;
    bool enabled() const { return max_shift > 0 || horizontal_flip; }
  } augmentation;
};

// Iterates one epoch at a time. The order of epoch e is a pure function of (seed, e), so a run
// resumed at epoch e sees exactly the batches the uninterrupted run saw.
//
// On a GPU, batches live in three device buffers fed from pinned host memory by asynchronous
// copies on a copy stream: next() hands out batch k while batch k+1 is already on its way. A
// batch's tensors stay valid until next() has been called twice more; clone() one to keep it.
class DataLoader {
 public:
  DataLoader(std::shared_ptr<const LabelledImages> data, const LoaderOptions& options,
             const Device& device);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  void start_epoch(int64_t epoch);
  bool next(Batch& batch);  // false at the end of the epoch
  int64_t batches_per_epoch() const;
  int64_t samples() const { return data_->count; }
  int64_t epoch_samples() const { return int64_t(order_.size()); }  // this shard's, per epoch
  const LoaderOptions& options() const { return options_; }
  int64_t features() const { return data_->features; }

 private:
  struct Slot;
  void create_cuda_resources();
  void release_cuda_resources() noexcept;
  void stage(int64_t batch_index, Slot& slot);  // host gather + normalise + async copy
  int64_t batch_length(int64_t batch_index) const;

  std::shared_ptr<const LabelledImages> data_;
  LoaderOptions options_;
  Device device_;
  std::vector<int64_t> order_;
  int64_t epoch_ = 0;
  int64_t next_batch_ = 0;
  int64_t staged_ = 0;  // batches staged so far this epoch
  std::vector<std::unique_ptr<Slot>> slots_;
  void* copy_stream_ = nullptr;
};

// The seeded permutation the loader uses: Fisher-Yates over splitmix64, the same on every
// platform (std::shuffle's algorithm is implementation-defined).
std::vector<int64_t> seeded_permutation(int64_t count, uint64_t seed);

// What the ranks of a data-parallel job must hold equal about their training loaders, as named
// values for Trainer::enable_data_parallel's `must_agree` (dist::Quantities): the data set's size
// and sample size, the number of shards, the batch size, the steps per epoch, this shard's
// samples per epoch, the shuffle and its seed, drop_last and the normalisation. (The shard index
// differs by design.) Ranks that took different data or a different --limit then stop before
// their first step, each value named, instead of deadlocking when one runs out of steps first.
std::vector<std::pair<std::string, std::string>> data_parallel_quantities(const DataLoader& loader);

// The positions of `order` that shard `shard` of `shards` serves (see LoaderOptions::shards).
std::vector<int64_t> shard_of(const std::vector<int64_t>& order, int64_t shard, int64_t shards,
                              ShardRemainder remainder);

}  // namespace cairn
