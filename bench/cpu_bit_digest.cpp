// Prints a 64-bit digest (FNV-1a over the bytes) of every CPU result that issue 13's speed-ups
// could change: trained parameters after a few steps (SGD plain, with momentum and weight decay,
// Adam; the W1 and W2 networks; one and two OpenBLAS threads), and the outputs of the rewritten
// kernels (binary ops with every broadcast, bias_add, ReLU and its backward, softmax, softmax
// cross-entropy, sum_columns). bench/check_bit_identity.sh runs it from two builds and diffs the
// lines: the CPU path is the GPU's oracle, so a speed-up must not move a single bit, or the
// difference must be explained.
#include <cblas.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cairn/cairn.h"

namespace cairn::bench {
namespace {

uint64_t fnv1a(const void* data, size_t bytes, uint64_t hash = 0xcbf29ce484222325ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    hash ^= p[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}

void print_digest(const std::string& name, const Tensor& t) {
  std::printf("%-48s %016llx\n", name.c_str(),
              static_cast<unsigned long long>(fnv1a(t.raw_data(), size_t(t.nbytes()))));
}

void train_and_print(const std::string& label, int64_t in, int64_t hidden, int64_t batch,
                     std::shared_ptr<Optimizer> optimizer, int steps) {
  auto net = make<Sequential>();
  net->add(make<Dense>(hidden, "relu", in));
  net->add(make<Dense>(10, "", hidden));
  net->initialize(init::xavier(), Device::cpu(), /*seed=*/5);
  Trainer trainer(net->collect_params(), std::move(optimizer));
  const SoftmaxCrossEntropyLoss loss_fn;
  std::vector<int32_t> labels(static_cast<size_t>(batch));
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = int32_t((i * 7 + 3) % 10);
  const Tensor y = Tensor::from_int32(labels, {batch}, Device::cpu());
  for (int s = 0; s < steps; ++s) {
    const Tensor x = Tensor::normal({batch, in}, 0.0f, 1.0f, 100 + uint64_t(s), Device::cpu());
    Tensor loss;
    {
      autograd::RecordScope record;
      loss = loss_fn((*net)(x), y);
    }
    loss.backward();
    trainer.step(1);
    print_digest(label + " loss[" + std::to_string(s) + "]", loss);
  }
  for (const auto& [name, parameter] : net->collect_params()) {
    print_digest(label + " " + name, parameter->data());
    print_digest(label + " " + name + ".grad", parameter->grad());
  }
}

void kernels_and_print() {
  const Device cpu = Device::cpu();
  const int64_t rows = 37, cols = 53;
  const Tensor a = Tensor::normal({rows, cols}, 0.0f, 1.0f, 1, cpu);
  const Tensor b_full = Tensor::normal({rows, cols}, 0.0f, 1.0f, 2, cpu);
  const Tensor b_row = Tensor::uniform({cols}, 0.5f, 2.0f, 3, cpu);
  const Tensor b_col = Tensor::uniform({rows, 1}, 0.5f, 2.0f, 4, cpu);
  const Tensor b_scalar = Tensor::full({1}, 1.7f, cpu);
  const std::vector<std::pair<std::string, Tensor>> operands{
      {"none", b_full}, {"row", b_row}, {"column", b_col}, {"scalar", b_scalar}};
  for (const auto& [kind, b] : operands) {
    print_digest("add/" + kind, ops::add(a, b));
    print_digest("sub/" + kind, ops::sub(a, b));
    print_digest("mul/" + kind, ops::mul(a, b));
    print_digest("div/" + kind, ops::div(a, b));
  }
  print_digest("bias_add", ops::bias_add(a, b_row));
  print_digest("relu", ops::relu(a));
  print_digest("relu_backward", ops::relu_backward(a, b_full));
  print_digest("softmax", ops::softmax(a));
  print_digest("sum_columns", ops::sum_columns(a));
  std::vector<int32_t> labels(static_cast<size_t>(rows));
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = int32_t((i * 11) % size_t(cols));
  const Tensor y = Tensor::from_int32(labels, {rows}, cpu);
  print_digest("softmax_cross_entropy", ops::softmax_cross_entropy(a, y));
}

}  // namespace
}  // namespace cairn::bench

int main() {
  using namespace cairn;
  try {
    bench::kernels_and_print();
    for (int threads : {1, 2}) {
      openblas_set_num_threads(threads);
      const std::string t = "t" + std::to_string(threads) + " ";
      bench::train_and_print(t + "W1 sgd", 784, 256, 256, std::make_shared<SGD>(0.1f), 3);
      bench::train_and_print(t + "W1 sgd+momentum+wd", 784, 256, 256,
                             std::make_shared<SGD>(0.1f, 0.9f, 1e-4f), 3);
      bench::train_and_print(t + "W1 adam", 784, 256, 256, std::make_shared<Adam>(1e-3f), 3);
      bench::train_and_print(t + "W2 sgd", 20, 256, 2, std::make_shared<SGD>(0.1f), 5);
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "cpu_bit_digest: %s\n", error.what());
    return 1;
  }
  return 0;
}
