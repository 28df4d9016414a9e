// Shared by the data-parallel tests: a small labelled data set, a small MLP, and bitwise
// parameter snapshots.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cairn/blocks/data_loader.h"
#include "cairn/blocks/layers.h"
#include "cairn/blocks/loss.h"
#include "cairn/blocks/optimizer.h"
#include "cairn/blocks/trainer.h"
#include "cairn/core/autograd.h"

namespace cairn::testing {

// `count` samples of `features` seeded pixels; sample i's first two pixels spell i (i < 65536)
// so that a test can tell which samples a batch holds; labels i % classes.
inline std::shared_ptr<LabelledImages> numbered_images(int64_t count, int64_t features = 16,
                                                       int32_t classes = 4) {
  auto data = std::make_shared<LabelledImages>();
  data->count = count;
  data->features = features;
  data->classes = classes;
  data->pixels.resize(size_t(count * features));
  data->labels.resize(size_t(count));
  uint64_t state = 12345;
  for (int64_t i = 0; i < count; ++i) {
    for (int64_t f = 0; f < features; ++f) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      data->pixels[size_t(i * features + f)] = uint8_t(state >> 56);
    }
    data->pixels[size_t(i * features)] = uint8_t(i & 0xff);
    data->pixels[size_t(i * features + 1)] = uint8_t((i >> 8) & 0xff);
    data->labels[size_t(i)] = int32_t(i % classes);
  }
  return data;
}

// The sample numbers a CPU batch of numbered_images holds (mean 0, stddev 1 loader options).
inline std::vector<int64_t> sample_ids(const Batch& batch) {
  const std::vector<float> x = batch.x.to_vector();
  const int64_t features = batch.x.dim(1);
  std::vector<int64_t> ids;
  for (int64_t row = 0; row < batch.x.dim(0); ++row) {
    const auto low = int64_t(x[size_t(row * features)] * 255.0f + 0.5f);
    const auto high = int64_t(x[size_t(row * features + 1)] * 255.0f + 0.5f);
    ids.push_back(low + 256 * high);
  }
  return ids;
}

inline std::shared_ptr<Sequential> small_mlp(int64_t features = 16, int64_t hidden = 32,
                                             int64_t classes = 4) {
  auto net = make<Sequential>();
  net->add(make<Dense>(hidden, "relu", features));
  net->add(make<Dense>(classes, "", hidden));
  return net;
}

inline std::shared_ptr<Optimizer> make_optimizer(const std::string& name) {
  if (name == "sgd") return std::make_shared<SGD>(0.1f, 0.9f);
  return std::make_shared<Adam>(0.01f);
}

// Every parameter's float32 values, concatenated in collect_params() order.
inline std::vector<float> flat_parameters(const Block& net) {
  std::vector<float> out;
  for (const auto& [name, parameter] : net.collect_params()) {
    const std::vector<float> values = parameter->data().to_vector();
    out.insert(out.end(), values.begin(), values.end());
  }
  return out;
}

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// One training step on a batch: forward, backward, update.
inline float train_step(Block& net, Trainer& trainer, const Batch& batch) {
  const SoftmaxCrossEntropyLoss loss_fn;
  Tensor loss;
  {
    autograd::RecordScope record;
    loss = loss_fn(net(batch.x), batch.y);
  }
  loss.backward();
  trainer.step(1);
  return loss.item();
}

}  // namespace cairn::testing
