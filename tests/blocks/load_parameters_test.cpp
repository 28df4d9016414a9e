// Block::load_parameters: strict by default, lenient on request (Gluon's allow_missing and
// ignore_extra, PyTorch's strict=False), always validating the whole file before changing
// anything, and saying what it skipped.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <sstream>

#include "cairn/blocks/checkpoint.h"
#include "cairn/blocks/layers.h"
#include "cairn/blocks/optimizer.h"
#include "cairn/blocks/safetensors.h"
#include "cairn/blocks/trainer.h"
#include "support/temp_dir.h"
#include "support/test_support.h"

namespace cairn {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;

const Device kCpu = Device::cpu();

// PyTorch's nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), with the ReLU as its own
// child so that the names line up with the state_dict's ("0.weight", "2.bias").
std::shared_ptr<Sequential> torch_like_mlp() {
  auto net = make<Sequential>();
  net->add(make<Dense>(3), make<Activation>("relu"), make<Dense>(2));
  return net;
}

const std::string kStateDict =
    std::string(CAIRN_TEST_DATA_DIR) + "/torch_mlp_state_dict.safetensors";

class LoadParameters : public testing::TempDirTest {
 protected:
  // The state_dict fixture plus or minus some tensors.
  std::string state_dict_with(const NamedTensors& extra, const std::string& without = "") {
    NamedTensors tensors;
    for (auto& [name, tensor] : load_safetensors(kStateDict).tensors) {
      if (name != without) tensors.emplace_back(name, tensor);
    }
    for (const auto& entry : extra) tensors.push_back(entry);
    const std::string file = path("edited.safetensors");
    save_safetensors(file, tensors);
    return file;
  }
};

TEST_F(LoadParameters, StrictByDefaultListsEveryDifferenceAndPointsAtTheOptions) {
  const std::string file =
      state_dict_with({{"num_batches_tracked", Tensor::from_int32({3}, {}, kCpu)}}, "2.bias");
  auto net = torch_like_mlp();
  expect_error([&] { net->load_parameters(file, kCpu); },
               {"load_parameters: " + file, "'2.bias': missing from the file",
                "'num_batches_tracked': in the file but not in the network",
                "allow_missing and ignore_extra"});
  EXPECT_FALSE(net->collect_params().at("0.weight")->is_initialized());  // nothing was set
}

TEST_F(LoadParameters, CompleteLoadReportsEveryParameterLoaded) {
  auto net = torch_like_mlp();
  const LoadParametersReport report = net->load_parameters(kStateDict, kCpu);
  EXPECT_TRUE(report.complete());
  EXPECT_EQ(report.loaded, (std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"}));
  std::ostringstream printed;
  printed << report;
  EXPECT_EQ(printed.str(), "loaded 4 parameters from " + kStateDict);
}

TEST_F(LoadParameters, IgnoreExtraSkipsWhatTheNetworkLacksAndSaysSo) {
  const std::string file =
      state_dict_with({{"num_batches_tracked", Tensor::from_int32({3}, {}, kCpu)},
                       {"head.weight", Tensor::zeros({5, 2}, kCpu)}});
  auto net = torch_like_mlp();
  LoadParametersOptions options;
  options.ignore_extra = true;
  const LoadParametersReport report = net->load_parameters(file, kCpu, options);
  EXPECT_EQ(report.ignored, (std::vector<std::string>{"num_batches_tracked", "head.weight"}));
  EXPECT_TRUE(report.missing.empty());
  EXPECT_EQ(report.loaded.size(), 4u);
  EXPECT_FALSE(report.complete());
  EXPECT_EQ(net->collect_params().at("2.bias")->data().to_vector(),
            (std::vector<float>{0.1f, -0.2f}));
  std::ostringstream printed;
  printed << report;
  EXPECT_EQ(printed.str(), "loaded 4 parameters from " + file +
                               "; not in the network (ignored): 'num_batches_tracked', "
                               "'head.weight'");
  // ignore_extra alone does not excuse a missing parameter.
  const std::string lacking = state_dict_with({}, "0.bias");
  expect_error([&] { torch_like_mlp()->load_parameters(lacking, kCpu, options); },
               {"'0.bias': missing from the file"});
}

TEST_F(LoadParameters, AllowMissingKeepsWhatTheNetworkHadAndInitializeFillsTheRest) {
  const std::string file = state_dict_with({}, "2.weight");
  // An initialised network keeps its own value for the missing parameter.
  auto trained = torch_like_mlp();
  trained->initialize(init::constant(0.5f), kCpu);
  (*trained)(Tensor::zeros({1, 4}, kCpu));
  LoadParametersOptions options;
  options.allow_missing = true;
  const LoadParametersReport report = trained->load_parameters(file, kCpu, options);
  EXPECT_EQ(report.missing, std::vector<std::string>{"2.weight"});
  EXPECT_EQ(report.loaded, (std::vector<std::string>{"0.weight", "0.bias", "2.bias"}));
  EXPECT_EQ(trained->collect_params().at("2.weight")->data().to_vector(),
            std::vector<float>(6, 0.5f));
  EXPECT_EQ(trained->collect_params().at("2.bias")->data().to_vector(),
            (std::vector<float>{0.1f, -0.2f}));
  std::ostringstream printed;
  printed << report;
  EXPECT_EQ(printed.str(), "loaded 3 parameters from " + file +
                               "; missing from the file (left as they were): '2.weight'");

  // A fresh one leaves it uninitialised, and initialize() fills only that one (its shape is
  // inferred at the first forward as usual).
  auto fresh = torch_like_mlp();
  fresh->load_parameters(file, options);  // on the default device (a GPU where there is one)
  EXPECT_FALSE(fresh->collect_params().at("2.weight")->is_initialized());
  fresh->initialize(init::constant(0.25f), default_device());
  const Tensor y = (*fresh)(Tensor::zeros({1, 4}, default_device()));
  EXPECT_EQ(fresh->collect_params().at("2.weight")->data().to_vector(),
            std::vector<float>(6, 0.25f));
  EXPECT_EQ(fresh->collect_params().at("0.bias")->data().to_vector(),
            (std::vector<float>{-0.5f, 0.0f, 0.5f}));
}

TEST_F(LoadParameters, ShapeAndDtypeMismatchesAreErrorsEvenWhenLenientAndNothingChanges) {
  LoadParametersOptions lenient;
  lenient.allow_missing = true;
  lenient.ignore_extra = true;
  auto net = torch_like_mlp();
  net->initialize(init::constant(0.5f), kCpu);
  (*net)(Tensor::zeros({1, 4}, kCpu));
  std::map<std::string, std::vector<float>> before;
  for (const auto& [name, parameter] : net->collect_params()) {
    before[name] = parameter->data().to_vector();
  }
  EXPECT_EQ(before.at("0.weight"), std::vector<float>(12, 0.5f));
  // 0.weight and 0.bias would load, but 2.weight has the wrong shape and 2.bias the wrong dtype:
  // the whole load is refused before any parameter changes.
  NamedTensors tensors;
  for (auto& [name, tensor] : load_safetensors(kStateDict).tensors) {
    if (name == "2.weight") {
      tensors.emplace_back(name, Tensor::zeros({3, 2}, kCpu));
    } else if (name == "2.bias") {
      tensors.emplace_back(name, Tensor::from_int32({1, 2}, {2}, kCpu));
    } else {
      tensors.emplace_back(name, tensor);
    }
  }
  save_safetensors(path("bad.safetensors"), tensors);
  expect_error([&] { net->load_parameters(path("bad.safetensors"), kCpu, lenient); },
               {"'2.weight': file has shape (3, 2), the network expects (2, 3)",
                "'2.bias': file has int32, expected float32"});
  for (const auto& [name, parameter] : net->collect_params()) {
    EXPECT_EQ(parameter->data().to_vector(), before.at(name)) << name;
  }
}

// A training checkpoint holds the optimizer's state too; ignore_extra takes just the weights.
TEST_F(LoadParameters, IgnoreExtraReadsTheWeightsOutOfATrainingCheckpoint) {
  auto net = torch_like_mlp();
  net->load_parameters(kStateDict, kCpu);
  Trainer trainer(net->collect_params(), std::make_shared<Adam>(1e-3f));
  Tensor loss;
  {
    autograd::RecordScope record;
    loss = ops::sum((*net)(Tensor::from_vector({1, -2, 0.5f, 3}, {1, 4}, kCpu)));
  }
  loss.backward();
  trainer.step(1);  // Adam's slots now exist
  ASSERT_FALSE(trainer.state().empty());
  save_checkpoint(path("checkpoint.safetensors"), *net, trainer, {{"epoch", "1"}});

  auto inference = torch_like_mlp();
  expect_error([&] { inference->load_parameters(path("checkpoint.safetensors"), kCpu); },
               {"'optimizer.0.weight.", "in the file but not in the network"});
  LoadParametersOptions options;
  options.ignore_extra = true;
  const LoadParametersReport report =
      inference->load_parameters(path("checkpoint.safetensors"), kCpu, options);
  EXPECT_EQ(report.loaded.size(), 4u);
  EXPECT_EQ(report.ignored.size(), trainer.state().size());
  for (const auto& [name, parameter] : net->collect_params()) {
    EXPECT_EQ(inference->collect_params().at(name)->data().to_vector(),
              parameter->data().to_vector())
        << name;
  }
}

}  // namespace
}  // namespace cairn
