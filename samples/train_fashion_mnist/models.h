// The networks train_fashion_mnist trains (--model): the lecture's MLP, the course's LeNet, and a
// small residual network with batch normalisation. Each takes Fashion-MNIST batches as the loader
// gives them, (N, 784) rows of pixels, and returns (N, 10) logits.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cairn/cairn.h"

namespace fashion_models {

// The names --model accepts, in the order --help lists them.
const std::vector<std::string>& names();

struct ModelOptions {
  std::string name = "mlp";
  int depth = 1;        // mlp: hidden layers
  int64_t width = 256;  // mlp: units per hidden layer
  uint64_t seed = 0;    // resnet: its dropout's masks
};

std::shared_ptr<cairn::Block> build(const ModelOptions& options);

// Restarts every Dropout's mask stream in `net` at a seed drawn from (seed, epoch, its place in
// the tree), called at the start of each epoch: the masks of an epoch then depend on the run's
// seed and the epoch alone, so a run resumed from a checkpoint (which holds parameters, not
// generator offsets) draws the masks the uninterrupted run drew.
void reseed_dropout(cairn::Block& net, uint64_t seed, int epoch);

// A user block (the lecture's pattern): its constructor registers its children, its forward is
// ordinary C++. Two 3x3 convolutions with batch normalisation, added to the input, which a 1x1
// convolution (`projection`) brings to the new shape when the block changes the channels or the
// stride: the course's Residual (He et al., "Deep residual learning", 2016).
class Residual : public cairn::Block {
 public:
  Residual(int64_t channels, int64_t stride, bool projection);
  cairn::Tensor forward(const cairn::Tensor& x) override;
  std::string describe() const override;

 private:
  int64_t channels_, stride_;
  std::shared_ptr<cairn::Conv2D> conv1_, conv2_, shortcut_;
  std::shared_ptr<cairn::BatchNorm> bn1_, bn2_, shortcut_bn_;
};

}  // namespace fashion_models
