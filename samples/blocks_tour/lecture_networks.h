// The five networks of Dive into Deep Learning's "Blocks and Layers" lecture, in cairn's C++.
// Shared by samples/blocks_tour and the tests that check their gradients and GPU parity.
#pragma once

#include <cairn/blocks/block.h>
#include <cairn/blocks/layers.h>
#include <cairn/core/ops.h>

#include <memory>
#include <string>

namespace lecture {

using namespace cairn;

// 1. net = nn.Sequential(); net.add(nn.Dense(256, activation='relu')); net.add(nn.Dense(10))
inline std::shared_ptr<Sequential> sequential_mlp() {
  auto net = make<Sequential>();
  net->add(make<Dense>(256, "relu"));
  net->add(make<Dense>(10));
  return net;
}

// 2. The same MLP as a user-defined block: children registered in the constructor, forward in
//    plain C++.
class MLP : public Block {
 public:
  MLP() : Block("MLP") {
    hidden_ = register_block("hidden", make<Dense>(256, "relu"));
    output_ = register_block("output", make<Dense>(10));
  }
  Tensor forward(const Tensor& x) override { return (*output_)((*hidden_)(x)); }

 private:
  std::shared_ptr<Dense> hidden_, output_;
};

// 3. Sequential, written from Block alone: children kept in insertion order, run in that order.
class MySequential : public Block {
 public:
  MySequential() : Block("MySequential") {}
  void add(const BlockPtr& block) { register_block(std::to_string(children().size()), block); }
  Tensor forward(const Tensor& x) override {
    Tensor y = x;
    for (const auto& [name, child] : children()) y = (*child)(y);
    return y;
  }
};

inline std::shared_ptr<MySequential> my_sequential_mlp() {
  auto net = make<MySequential>();
  net->add(make<Dense>(256, "relu"));
  net->add(make<Dense>(10));
  return net;
}

// 4. FancyMLP: a constant random weight (never trained), one Dense layer used twice (its
//    parameters shared, its gradients summed), and Python-style control flow on tensor values.
class FancyMLP : public Block {
 public:
  explicit FancyMLP(uint64_t seed = 1) : Block("FancyMLP") {
    rand_weight_ = register_constant("rand_weight",
                                     Tensor::uniform({20, 20}, 0.0f, 1.0f, seed, Device::cpu()));
    dense_ = register_block("dense", make<Dense>(20, "relu"));
  }

  Tensor forward(const Tensor& input) override {
    Tensor x = (*dense_)(input);
    x = ops::relu(ops::matmul(x, rand_weight_->data()) + 1.0f);
    x = (*dense_)(x);  // the same layer again
    while (ops::norm(x).item() > 1.0f) x /= 2.0f;
    if (ops::norm(x).item() < 0.8f) x *= 10.0f;
    return ops::sum(x);
  }

 private:
  ParameterPtr rand_weight_;
  std::shared_ptr<Dense> dense_;
};

// 5. NestMLP, and the chimera that nests it with a Dense layer and a FancyMLP.
class NestMLP : public Block {
 public:
  NestMLP() : Block("NestMLP") {
    net_ = register_block("net", make<Sequential>());
    net_->add(make<Dense>(64, "relu"), make<Dense>(32, "relu"));
    dense_ = register_block("dense", make<Dense>(16, "relu"));
  }
  Tensor forward(const Tensor& x) override { return (*dense_)((*net_)(x)); }

 private:
  std::shared_ptr<Sequential> net_;
  std::shared_ptr<Dense> dense_;
};

inline std::shared_ptr<Sequential> chimera(uint64_t seed = 1) {
  auto net = make<Sequential>();
  net->add(make<NestMLP>(), make<Dense>(20), make<FancyMLP>(seed));
  return net;
}

struct Network {
  std::string title;
  BlockPtr block;
};

// The five, in the lecture's order.
inline std::vector<Network> all_networks() {
  return {{"1. Sequential MLP", sequential_mlp()},
          {"2. MLP as a user-defined block", make<MLP>()},
          {"3. MySequential, from Block alone", my_sequential_mlp()},
          {"4. FancyMLP: constant weight, shared layer, control flow", make<FancyMLP>()},
          {"5. The chimera: NestMLP + Dense(20) + FancyMLP", chimera()}};
}

}  // namespace lecture
