// Every block type and the lecture's five networks: gradients against central finite differences
// on the CPU (with respect to the input and every parameter), and GPU against CPU where a device
// is present (outputs and every gradient).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "blocks_tour/lecture_networks.h"
#include "support/test_support.h"

namespace cairn {
namespace {

const Device kCpu = Device::cpu();

// Scalar the checks differentiate: the network's output summed (FancyMLP is already a scalar).
float evaluate(Block& net, const Tensor& x) { return ops::sum(net(x)).item(); }

struct Mismatch {
  int64_t checked = 0, failed = 0, kinks = 0;
  std::string first;
};

// Compares one tensor's analytic gradient with central differences of evaluate(), perturbing its
// elements in place (CPU tensors). At most `limit` elements, spread evenly, to keep it quick.
void compare(Block& net, Tensor x, Tensor target, const Tensor& analytic, const std::string& what,
             Mismatch& result, double eps = 1e-3, double atol = 5e-4, double rtol = 2e-2,
             int64_t limit = 400) {
  float* values = target.data();
  const std::vector<float> expected = analytic.to_vector();
  const int64_t stride = std::max<int64_t>(1, target.numel() / limit);
  for (int64_t i = 0; i < target.numel(); i += stride) {
    const float saved = values[i];
    const double centre = evaluate(net, x);
    values[i] = saved + float(eps);
    const double plus = evaluate(net, x);
    values[i] = saved - float(eps);
    const double minus = evaluate(net, x);
    values[i] = saved;
    const double numeric = (plus - minus) / (2 * eps);
    // A ReLU that switches within +-eps makes the function non-smooth here, and the central
    // difference means nothing. Then the one-sided slopes disagree, and the analytic gradient must
    // equal the slope on the side the point itself lies on (Caffe skips the kink similarly).
    const double forward = (plus - centre) / eps, backward = (centre - minus) / eps;
    const double analytic = expected[size_t(i)];
    auto near = [&](double value) {
      return std::abs(value - analytic) <= atol + rtol * std::abs(value);
    };
    const bool sides_disagree = std::abs(forward - backward) > atol + rtol * std::abs(numeric);
    if (!near(numeric) && sides_disagree && (near(forward) || near(backward))) {
      ++result.kinks;
      continue;
    }
    ++result.checked;
    if (!near(numeric)) {
      if (result.failed++ == 0) {
        result.first = what + "[" + std::to_string(i) + "]: analytic " +
                       std::to_string(expected[size_t(i)]) + ", numeric " +
                       std::to_string(numeric) + " (one-sided " + std::to_string(forward) + ", " +
                       std::to_string(backward) + ")";
      }
    }
  }
}

void expect_network_gradients(const BlockPtr& net, const Tensor& input) {
  net->initialize(init::uniform(0.07f), kCpu, 0);
  (*net)(input);  // fixes deferred shapes
  // Dense biases start at zero (Gluon's default), which puts ReLUs fed by dead units exactly on
  // their kink; generic values keep the function smooth at the points checked.
  uint64_t seed = 100;
  for (const auto& [name, bias] : net->collect_params(".*bias")) {
    bias->set_data(Tensor::uniform(bias->shape(), -0.07f, 0.07f, seed++, kCpu), kCpu);
  }
  Tensor x = input.clone();
  x.attach_grad();
  {
    autograd::RecordScope record;
    ops::sum((*net)(x)).backward();
  }
  Mismatch result;
  compare(*net, x, x, x.grad(), "input", result);
  for (const auto& [name, parameter] : net->collect_params()) {
    if (parameter->is_constant()) continue;
    compare(*net, x, parameter->data(), parameter->grad(), name, result);
  }
  EXPECT_GT(result.checked, 50);
  EXPECT_LT(result.kinks, result.checked / 10 + 1) << "too many points skipped as kinks";
  EXPECT_EQ(result.failed, 0) << result.failed << " of " << result.checked
                              << " gradient entries differ; first: " << result.first;
}

Tensor lecture_input() { return Tensor::uniform({2, 20}, 0.0f, 1.0f, 2024, kCpu); }

TEST(BlockGradients, DenseWithEveryActivation) {
  std::vector<std::string> activations = Activation::names();  // the registry's, "linear" first
  activations.push_back("");
  for (const std::string& activation : activations) {
    SCOPED_TRACE(activation);
    auto net = make<Sequential>();
    net->add(make<Dense>(7, activation), make<Dense>(3, "", 0, /*use_bias=*/false));
    expect_network_gradients(net, Tensor::uniform({4, 5}, -1, 1, 9, kCpu));
  }
}

TEST(BlockGradients, ActivationBlocks) {
  auto net = make<Sequential>();
  net->add(make<Dense>(6), make<Activation>("tanh"), make<Dense>(6), make<Activation>("sigmoid"));
  expect_network_gradients(net, Tensor::uniform({3, 4}, -1, 1, 4, kCpu));
}

TEST(BlockGradients, SequentialMlp) {
  expect_network_gradients(lecture::sequential_mlp(), lecture_input());
}
TEST(BlockGradients, MlpAsUserBlock) {
  expect_network_gradients(make<lecture::MLP>(), lecture_input());
}
TEST(BlockGradients, MySequential) {
  expect_network_gradients(lecture::my_sequential_mlp(), lecture_input());
}
TEST(BlockGradients, FancyMlp) {
  expect_network_gradients(make<lecture::FancyMLP>(), lecture_input());
}
TEST(BlockGradients, Chimera) { expect_network_gradients(lecture::chimera(), lecture_input()); }

// ---- GPU against CPU ----

class BlockParityTest : public testing::CudaTest {};

TEST_F(BlockParityTest, FiveLectureNetworksMatchTheCpu) {
  const auto on_cpu = lecture::all_networks();
  const auto on_gpu = lecture::all_networks();
  for (size_t i = 0; i < on_cpu.size(); ++i) {
    SCOPED_TRACE(on_cpu[i].title);
    Tensor outputs[2];
    const Device devices[2] = {kCpu, Device::cuda(0)};
    const BlockPtr nets[2] = {on_cpu[i].block, on_gpu[i].block};
    for (int d = 0; d < 2; ++d) {
      nets[d]->initialize(init::uniform(0.07f), devices[d], 0);
      autograd::RecordScope record;
      outputs[d] = (*nets[d])(lecture_input().to(devices[d]));
      ops::sum(outputs[d]).backward();
    }
    testing::expect_close(outputs[1].to_host(), outputs[0], 1e-5, 1e-4, "output");
    const ParameterDict gpu_params = nets[1]->collect_params();
    for (const auto& [name, parameter] : nets[0]->collect_params()) {
      testing::expect_close(gpu_params.at(name)->data().to_host(), parameter->data(), 0, 0,
                            name + " initial value");
      if (parameter->is_constant()) continue;
      testing::expect_close(gpu_params.at(name)->grad().to_host(), parameter->grad(), 1e-5, 1e-3,
                            name + " gradient");
    }
  }
}

}  // namespace
}  // namespace cairn
