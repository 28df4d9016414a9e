// The block API: names and order, deferred initialisation, constants, sharing, selection,
// printing, intermediate results, and misuse.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <sstream>

#include "blocks_tour/lecture_networks.h"
#include "cairn/blocks/layers.h"
#include "support/test_support.h"

namespace cairn {
namespace {

using testing::expect_error;

const Device kCpu = Device::cpu();

Tensor lecture_input() { return Tensor::uniform({2, 20}, 0.0f, 1.0f, 2024, kCpu); }

TEST(Blocks, SequentialNamesChildrenInInsertionOrderLikePyTorch) {
  auto net = lecture::sequential_mlp();
  EXPECT_EQ(net->collect_params().names(),
            (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias"}));
  EXPECT_EQ(net->size(), 2u);
  EXPECT_EQ((*net)[1]->describe(), "Dense(? -> 10, linear)");
}

TEST(Blocks, NestedBlocksGetHierarchicalNames) {
  EXPECT_EQ(
      make<lecture::MLP>()->collect_params().names(),
      (std::vector<std::string>{"hidden.weight", "hidden.bias", "output.weight", "output.bias"}));
  EXPECT_EQ(
      lecture::chimera()->collect_params().names(),
      (std::vector<std::string>{"0.net.0.weight", "0.net.0.bias", "0.net.1.weight", "0.net.1.bias",
                                "0.dense.weight", "0.dense.bias", "1.weight", "1.bias",
                                "2.rand_weight", "2.dense.weight", "2.dense.bias"}));
}

TEST(Blocks, DeferredInitialisationInfersInUnitsOnFirstForward) {
  auto net = lecture::sequential_mlp();
  net->initialize(init::uniform(), kCpu, 0);
  const ParameterPtr weight = net->collect_params().at("0.weight");
  EXPECT_TRUE(weight->is_deferred());
  EXPECT_EQ(weight->shape(), (Shape{256, 0}));
  expect_error([&] { weight->data(); }, {"'weight'", "deferred shape", "forward"});

  const Tensor y = (*net)(lecture_input());
  EXPECT_EQ(y.shape(), (Shape{2, 10}));
  EXPECT_EQ(weight->shape(), (Shape{256, 20}));
  EXPECT_EQ(net->collect_params().at("1.weight")->shape(), (Shape{10, 256}));
  EXPECT_FALSE(weight->is_deferred());
  // Values follow the seed: a second network initialised alike computes the same output.
  auto twin = lecture::sequential_mlp();
  twin->initialize(init::uniform(), kCpu, 0);
  EXPECT_EQ((*twin)(lecture_input()).to_vector(), y.to_vector());
}

TEST(Blocks, UsingAnUninitialisedBlockSaysWhichLayerAndWhatToDo) {
  auto net = lecture::sequential_mlp();
  expect_error([&] { (*net)(lecture_input()); },
               {"parameter 'weight' of Dense(20 -> 256, relu)", "not initialized", "initialize()"});
}

TEST(Blocks, WrongInputSizeAfterInferenceIsAClearError) {
  auto net = lecture::sequential_mlp();
  net->initialize(init::uniform(), kCpu, 0);
  (*net)(lecture_input());
  expect_error(
      [&] {
        (*net)(Tensor::ones({2, 30}, kCpu));
      },
      {"Dense(20 -> 256, relu)", "30 features", "expected 20"});
  expect_error([&] { (*net)(Tensor::ones({20}, kCpu)); }, {"Dense", "(batch, features)"});
}

TEST(Blocks, ExplicitInUnitsNeedNoInference) {
  Dense dense(3, "", /*in_units=*/4);
  dense.initialize(init::ones(), kCpu, 0);
  EXPECT_FALSE(dense.weight()->is_deferred());
  const Tensor y = dense(Tensor::ones({1, 4}, kCpu));
  EXPECT_EQ(y.to_vector(), (std::vector<float>{4, 4, 4}));  // 4 ones; the bias keeps its zeros
}

TEST(Blocks, ConstantsAreSavedButNeverGivenGradients) {
  auto fancy = make<lecture::FancyMLP>();
  fancy->initialize(init::uniform(), kCpu, 0);
  const ParameterPtr constant = fancy->collect_params().at("rand_weight");
  EXPECT_TRUE(constant->is_constant());
  const std::vector<float> before = constant->data().to_vector();
  {
    autograd::RecordScope record;
    (*fancy)(lecture_input()).backward();
  }
  EXPECT_FALSE(constant->grad().defined());
  EXPECT_TRUE(fancy->collect_params().at("dense.weight")->grad().defined());
  EXPECT_EQ(fancy->collect_params().trainable().names(),
            (std::vector<std::string>{"dense.weight", "dense.bias"}));
  EXPECT_EQ(constant->data().to_vector(), before);
}

TEST(Blocks, AReusedLayerIsListedOnceAndItsGradientIsTheSumOfItsUses) {
  auto shared = make<Dense>(4, "tanh", 4);
  auto net = make<Sequential>();
  net->add(shared, make<Dense>(4, "", 4), shared);
  EXPECT_EQ(net->collect_params().names(),
            (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias"}));
  net->initialize(init::uniform(0.5f), kCpu, 3);
  const Tensor x = Tensor::uniform({3, 4}, -1, 1, 5, kCpu);

  // The same function written out with the layer's tensors used twice by hand.
  const Tensor w = shared->weight()->data(), b = shared->bias()->data();
  const auto middle = std::static_pointer_cast<Dense>((*net)[1]);
  Tensor by_hand_w = w.detach().clone(), by_hand_b = b.detach().clone();
  by_hand_w.attach_grad();
  by_hand_b.attach_grad();
  {
    autograd::RecordScope record;
    ops::sum((*net)(x)).backward();
    Tensor h = ops::tanh(ops::linear(x, by_hand_w, by_hand_b));
    h = ops::linear(h, middle->weight()->data().detach(), middle->bias()->data().detach());
    ops::sum(ops::tanh(ops::linear(h, by_hand_w, by_hand_b))).backward();
  }
  testing::expect_close(w.grad(), by_hand_w.grad(), 1e-6, 1e-5, "shared weight");
  testing::expect_close(b.grad(), by_hand_b.grad(), 1e-6, 1e-5, "shared bias");
}

TEST(Blocks, CollectParamsSelectsByPattern) {
  auto net = lecture::chimera();
  EXPECT_EQ(net->collect_params(".*bias").size(), 5u);
  EXPECT_EQ(net->collect_params("0\\.net\\..*").names(),
            (std::vector<std::string>{"0.net.0.weight", "0.net.0.bias", "0.net.1.weight",
                                      "0.net.1.bias"}));
  expect_error([&] { net->collect_params("(["); }, {"collect_params", "bad pattern"});
}

TEST(Blocks, PrintsAGluonStyleTree) {
  auto net = lecture::chimera();
  net->initialize(init::uniform(), kCpu, 0);
  (*net)(lecture_input());
  std::ostringstream out;
  out << *net;
  EXPECT_EQ(out.str(),
            "Sequential(\n"
            "  (0): NestMLP(\n"
            "    (net): Sequential(\n"
            "      (0): Dense(20 -> 64, relu)\n"
            "      (1): Dense(64 -> 32, relu)\n"
            "    )\n"
            "    (dense): Dense(32 -> 16, relu)\n"
            "  )\n"
            "  (1): Dense(16 -> 20, linear)\n"
            "  (2): FancyMLP(\n"
            "    (dense): Dense(20 -> 20, relu)\n"
            "  )\n"
            ")");
}

TEST(Blocks, IntermediatesRecordEveryBlockOutputByPath) {
  auto net = lecture::chimera();
  net->initialize(init::uniform(), kCpu, 0);
  Intermediates seen(*net);
  const Tensor y = (*net)(lecture_input());
  EXPECT_EQ(seen.output("0.net.0").shape(), (Shape{2, 64}));
  EXPECT_EQ(seen.output("0").shape(), (Shape{2, 16}));
  EXPECT_EQ(seen.outputs("2.dense").size(), 2u);  // the shared layer ran twice
  EXPECT_EQ(seen.output("").to_vector(), y.to_vector());
  expect_error([&] { seen.output("nope"); }, {"no output recorded for 'nope'", "'0.net.0'"});
}

TEST(Blocks, AFailedInitializerLeavesTheParameterUninitialised) {
  struct Scaled : Block {
    Scaled() : Block("Scaled") { scale = register_parameter("scale", {4}); }
    Tensor forward(const Tensor& x) override { return ops::mul(x, scale->data()); }
    ParameterPtr scale;
  } block;
  expect_error([&] { block.initialize(init::xavier(), kCpu, 0); },
               {"init::xavier", "'scale'", "at least 2 dimensions"});
  EXPECT_FALSE(block.scale->is_initialized());  // not holding garbage
  block.initialize(init::ones(), kCpu, 0);      // no force_reinit needed
  EXPECT_EQ(block(Tensor::full({1, 4}, 2.0f, kCpu)).to_vector(), (std::vector<float>(4, 2.0f)));
  EXPECT_TRUE(block.scale->grad().defined());
}

TEST(Blocks, RegistrationRejectsDuplicatesAndBadNames) {
  struct Bad : Block {
    Bad() : Block("Bad") {}
    Tensor forward(const Tensor& x) override { return x; }
    using Block::register_block;
  } bad;
  bad.register_block("a", make<Dense>(2));
  expect_error([&] { bad.register_block("a", make<Dense>(2)); }, {"Bad", "'a'", "already"});
  expect_error([&] { bad.register_block("x.y", make<Dense>(2)); }, {"'x.y'", "no '.'"});
  expect_error([&] { bad.register_parameter("a", {2}); }, {"'a'", "already"});
  expect_error([] { Dense(0); }, {"Dense", "units must be positive"});
  expect_error([] { Activation("swishh"); },
               {"unknown activation 'swishh'", "known: linear, relu"});
}

// The state_dict of PyTorch's nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), written
// by tests/data/make_safetensors_fixture.py, loads into the same network built from cairn blocks
// (the ReLU is child 1, so the names match), and computes what numpy computed in float64.
TEST(Blocks, LoadsAPyTorchStateDictWrittenByPython) {
  auto net = make<Sequential>();
  net->add(make<Dense>(3), make<Activation>("relu"), make<Dense>(2));  // in_units deferred
  net->load_parameters(std::string(CAIRN_TEST_DATA_DIR) + "/torch_mlp_state_dict.safetensors",
                       kCpu);
  EXPECT_EQ(net->collect_params().at("0.weight")->shape(), (Shape{3, 4}));
  const Tensor x = Tensor::from_vector({1, -2, 0.5f, 3, 0.25f, 0, -1, 2}, {2, 4}, kCpu);
  testing::expect_close(
      (*net)(x).to_vector(),
      {2.100000001490116f, -0.8250000029802322f, 1.1625000014901161f, -0.5437500029802322f}, 1e-6,
      1e-6, "output");
}

TEST(Blocks, SaveThenLoadRoundTripsEveryParameterAndConstant) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("cairn_roundtrip_" + std::to_string(::getpid()) + ".safetensors"))
                               .string();
  auto saved = lecture::chimera(/*seed=*/5);
  saved->initialize(init::uniform(0.3f), kCpu, 11);
  const Tensor y = (*saved)(lecture_input());
  saved->save_parameters(path);

  auto loaded = lecture::chimera(/*seed=*/99);  // another constant, and shapes still deferred
  loaded->load_parameters(path, kCpu);
  for (const auto& [name, parameter] : saved->collect_params()) {
    EXPECT_EQ(loaded->collect_params().at(name)->data().to_vector(), parameter->data().to_vector())
        << name;
  }
  EXPECT_EQ((*loaded)(lecture_input()).to_vector(), y.to_vector());

  // A file for another network: every difference is listed.
  expect_error([&] { lecture::sequential_mlp()->load_parameters(path, kCpu); },
               {"does not match the network", "'0.weight': missing from the file",
                "'0.net.0.weight': in the file but not in the network"});
  auto wrong_shape = make<Sequential>();
  wrong_shape->add(make<lecture::NestMLP>(), make<Dense>(21), make<lecture::FancyMLP>());
  expect_error([&] { wrong_shape->load_parameters(path, kCpu); },
               {"'1.weight': file has shape (20, 16)"});
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace cairn
