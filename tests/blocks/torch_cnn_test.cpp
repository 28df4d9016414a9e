// A CNN trained and saved by PyTorch (tests/data/make_torch_cnn_fixture.py: its state_dict as
// safetensors.torch.save_file wrote it, and its outputs) loads into the same network built from
// cairn blocks and computes what PyTorch computed: in prediction mode with the running statistics,
// and in training mode with batch statistics, where BatchNorm's running statistics must move as
// PyTorch's did (momentum 0.1, unbiased batch variance).
#include <gtest/gtest.h>

#include "cairn/blocks/conv.h"
#include "cairn/blocks/dropout.h"
#include "cairn/blocks/normalization.h"
#include "cairn/blocks/pooling.h"
#include <set>

#include "support/temp_dir.h"
#include "support/test_support.h"

namespace cairn {
namespace {

const std::string kStateDict = std::string(CAIRN_TEST_DATA_DIR) + "/torch_cnn_state_dict.safetensors";
const std::string kInputsOutputs = std::string(CAIRN_TEST_DATA_DIR) + "/torch_cnn_io.safetensors";

// make_torch_cnn_fixture.py's network(), layer for layer, so that the children's names ("0" to
// "13") are PyTorch's state_dict names.
std::shared_ptr<Sequential> the_fixtures_network() {
  auto net = make<Sequential>();
  Conv2DOptions first;
  first.padding = 2;
  Conv2DOptions grouped;
  grouped.stride = 2;
  grouped.padding = 1;
  grouped.groups = 2;
  grouped.use_bias = false;
  Pool2DOptions average;
  average.stride = Size2(2);
  average.padding = 1;
  average.ceil_mode = true;
  average.count_include_pad = false;
  net->add(make<Conv2D>(6, 5, first), make<BatchNorm>(), make<Activation>("relu"),
           make<MaxPool2D>(2), make<Conv2D>(8, 3, grouped), make<BatchNorm>(),
           make<Activation>("relu"), make<AvgPool2D>(3, average), make<Dropout>(0.25f),
           make<Flatten>(), make<Dense>(16), make<LayerNorm>(std::vector<int64_t>{16}),
           make<Activation>("relu"), make<Dense>(10));
  return net;
}

Tensor fixture_tensor(const SafetensorsFile& file, const std::string& name, const Device& device) {
  for (const auto& [key, tensor] : file.tensors) {
    if (key == name) return tensor.to(device);
  }
  ADD_FAILURE() << kInputsOutputs << " has no tensor " << name;
  return Tensor();
}

void check_matches_pytorch(const Device& device) {
  auto net = the_fixtures_network();
  const LoadParametersReport report = net->load_parameters(kStateDict, device);
  EXPECT_TRUE(report.complete()) << report;
  EXPECT_EQ(report.loaded.size(), 19u) << report;  // every tensor of the state_dict
  const SafetensorsFile io = load_safetensors(kInputsOutputs);
  const Tensor x = fixture_tensor(io, "input", device);

  // Prediction (outside recording): running statistics, dropout off.
  testing::expect_close((*net)(x).to(Device::cpu()), fixture_tensor(io, "eval_output", Device::cpu()),
                        2e-5, 1e-4, "eval output");

  // Training mode, dropout made the identity as the fixture did (p = 0 there): batch statistics.
  ASSERT_NE(dynamic_cast<Dropout*>((*net)[8].get()), nullptr);
  {
    autograd::TrainModeScope train;
    // Layers 0-7 and 9-13 around the dropout, which the fixture switched off for this forward.
    Tensor y = x;
    for (size_t i = 0; i < net->size(); ++i) {
      if (i != 8) y = (*(*net)[i])(y);
    }
    testing::expect_close(y.to(Device::cpu()), fixture_tensor(io, "train_output", Device::cpu()),
                          2e-5, 1e-4, "train output");
  }
  const ParameterDict params = net->collect_params();
  testing::expect_close(params.at("1.running_mean")->data().to(Device::cpu()),
                        fixture_tensor(io, "train_running_mean_1", Device::cpu()), 1e-6, 1e-5,
                        "running_mean after a training forward");
  testing::expect_close(params.at("1.running_var")->data().to(Device::cpu()),
                        fixture_tensor(io, "train_running_var_1", Device::cpu()), 1e-6, 1e-5,
                        "running_var after a training forward");
}

TEST(TorchCnn, APyTorchStateDictLoadsAndMatchesItsOutputsOnTheCpu) {
  check_matches_pytorch(Device::cpu());
}

class TorchCnnGpu : public testing::CudaTest {};
TEST_F(TorchCnnGpu, APyTorchStateDictLoadsAndMatchesItsOutputsOnTheGpu) {
  check_matches_pytorch(Device::cuda(0));
}

// What cairn saves from that network PyTorch's names: the same 19 names, so that
// model.load_state_dict(safetensors.torch.load_file(path)) takes it back.
class TorchCnnFiles : public testing::TempDirTest {};
TEST_F(TorchCnnFiles, SavedParametersKeepPyTorchsNames) {
  auto net = the_fixtures_network();
  net->load_parameters(kStateDict, Device::cpu());
  const std::string path = this->path("cnn.safetensors");
  net->save_parameters(path);
  const SafetensorsFile saved = load_safetensors(path);
  const SafetensorsFile original = load_safetensors(kStateDict);
  std::set<std::string> saved_names, original_names;
  for (const auto& entry : saved.tensors) saved_names.insert(entry.first);
  for (const auto& entry : original.tensors) original_names.insert(entry.first);
  EXPECT_EQ(saved_names, original_names);
}

}  // namespace
}  // namespace cairn
