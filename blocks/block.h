// Block: the unit networks are built from (Gluon's Block, LibTorch's Module).
//
// A user block is a class whose constructor registers its children and parameters and whose
// forward() is ordinary C++: loops and ifs on tensor values are fine. Children are kept in
// insertion order under their names; a block used twice shares its parameters, and backward adds
// both uses' gradients.
#pragma once

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "cairn/blocks/hybridize.h"
#include "cairn/blocks/initializer.h"
#include "cairn/blocks/parameter.h"
#include "cairn/blocks/safetensors.h"
#include "cairn/core/tensor.h"

namespace cairn {

// What Block::load_parameters lets pass, as Gluon's load_parameters(allow_missing, ignore_extra)
// and PyTorch's load_state_dict(strict=False) do. The default is strict. Either way a tensor the
// network does have must match its parameter's dtype and shape, or nothing is loaded.
struct LoadParametersOptions {
  // Parameters the file lacks keep what they hold; uninitialised ones stay uninitialised, for
  // initialize() to fill (it leaves the loaded ones alone).
  bool allow_missing = false;
  // Tensors the network has no parameter for are skipped: optimizer state in a checkpoint, a
  // classifier head the network replaced.
  bool ignore_extra = false;
};

// What Block::load_parameters did; print it to show a user ("loaded 4 parameters from ...").
struct LoadParametersReport {
  std::string path;
  std::vector<std::string> loaded;   // in the network's order
  std::vector<std::string> missing;  // the network's parameters the file lacks, in its order
  std::vector<std::string> ignored;  // the file's tensors the network lacks, in the file's order
  bool complete() const { return missing.empty() && ignored.empty(); }
};
std::ostream& operator<<(std::ostream& out, const LoadParametersReport& report);

class Block {
 public:
  explicit Block(std::string type_name) : type_name_(std::move(type_name)) {}
  virtual ~Block() = default;
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;

  // Runs forward(), letting an active Intermediates recorder see the result.
  Tensor operator()(const Tensor& x);
  virtual Tensor forward(const Tensor& x) = 0;

  // ---- Building (from a constructor) ----
  template <typename B>
  std::shared_ptr<B> register_block(const std::string& name, std::shared_ptr<B> block) {
    add_child(name, block);
    return block;
  }
  ParameterPtr register_parameter(const std::string& name, const Shape& shape,
                                  GradReq grad_req = GradReq::kWrite);
  // A constant (Gluon's get_constant): saved and loaded, never given a gradient, never updated.
  ParameterPtr register_constant(const std::string& name, const Tensor& value);
  // A state buffer (PyTorch's register_buffer, Gluon's grad_req='null' running statistics): saved
  // and loaded, never given a gradient, never updated by an optimizer; the block's ops update it
  // in place. `init` fills a float32 state (whatever initialize() is given); int32 starts at 0.
  ParameterPtr register_state(const std::string& name, const Shape& shape, InitializerPtr init,
                              DType dtype = DType::kFloat32);

  // ---- Inspecting ----
  const std::string& type_name() const { return type_name_; }
  const std::vector<std::pair<std::string, std::shared_ptr<Block>>>& children() const {
    return children_;
  }
  const std::vector<std::pair<std::string, ParameterPtr>>& own_parameters() const {
    return parameters_;
  }
  // All parameters of this block and its descendants under hierarchical names; with a pattern,
  // only the matching ones (see ParameterDict::select).
  ParameterDict collect_params(const std::string& pattern = "") const;
  // One line describing this block alone, for the printed tree: "Dense(20 -> 256, relu)".
  virtual std::string describe() const { return type_name_; }

  // ---- Using ----
  // Initialises every parameter on `device`; parameters whose shape is not known yet finish at the
  // first forward (deferred shape inference). Each parameter's seed is mixed from `seed` and its
  // name.
  void initialize(const InitializerPtr& init = init::uniform(),
                  const Device& device = default_device(), uint64_t seed = 0,
                  bool force_reinit = false);
  void zero_grad();

  // safetensors files named like PyTorch's state_dict ("0.weight", "hidden.bias"), written to a
  // temporary file and renamed into place, float32 values as F32 or, on request, F16 or BF16 (see
  // safetensors.h). Loading reads any dtype load_safetensors converts to float32 (F16, BF16, F64
  // included), checks names, shapes and dtypes, and reports every problem in one cairn::Error
  // before it changes anything: by default the names must match exactly; `options` may let
  // missing or extra names pass, and the report lists them. Newly set parameters are initialised
  // on `device`; initialised ones keep their device.
  void save_parameters(const std::string& path, FloatFormat float_format = FloatFormat::kF32) const;
  LoadParametersReport load_parameters(const std::string& path,
                                       const Device& device = default_device(),
                                       const LoadParametersOptions& options = {});
  LoadParametersReport load_parameters(const std::string& path,
                                       const LoadParametersOptions& options) {
    return load_parameters(path, default_device(), options);
  }

  // Captures this block's forward as a CUDA graph per input shape on a GPU (see hybridize.h).
  // Not while recording (training steps are captured whole with CapturedStep) and never on the
  // CPU. A forward that cannot be captured stays eager; hybridize_reason() says why.
  void hybridize(bool enabled = true, HybridizeOptions options = {});
  bool hybridized() const { return hybrid_ != nullptr; }
  std::string hybridize_reason() const;
  // Whether the last call replayed a graph, warmed up or ran eagerly (and then
  // hybridize_reason() says why). Throws when the block is not hybridized.
  HybridState hybridize_state() const;

 protected:
  void add_child(const std::string& name, std::shared_ptr<Block> block);

 private:
  void check_parameter_name(const std::string& name) const;
  void collect_into(ParameterDict& dict, const std::string& prefix) const;

  std::string type_name_;
  std::vector<std::pair<std::string, std::shared_ptr<Block>>> children_;
  std::vector<std::pair<std::string, ParameterPtr>> parameters_;
  std::unique_ptr<HybridForward> hybrid_;
};

using BlockPtr = std::shared_ptr<Block>;

// std::make_shared, shorter: make<Dense>(256, "relu").
template <typename B, typename... Args>
std::shared_ptr<B> make(Args&&... args) {
  return std::make_shared<B>(std::forward<Args>(args)...);
}

// The printed tree, Gluon style:
//   Sequential(
//     (0): Dense(20 -> 256, relu)
//     (1): Dense(256 -> 10, linear)
//   )
std::ostream& operator<<(std::ostream& out, const Block& block);

// Records the output of every block call under the block's path in `root` ("" for the root, "0",
// "hidden", "net.1") while alive: easy access to intermediate results. Hybridized blocks run
// eagerly while a recorder is alive, so their children are recorded too; calls captured into a
// CapturedStep's graph are not recorded (they compute nothing until replayed): record outside it.
//   Intermediates seen(*net);
//   net->forward(x);
//   Tensor hidden = seen.output("0");
class Intermediates {
 public:
  explicit Intermediates(const Block& root);
  ~Intermediates();
  Intermediates(const Intermediates&) = delete;
  Intermediates& operator=(const Intermediates&) = delete;

  // The latest output of the block at `path`; throws listing the recorded paths if none.
  Tensor output(const std::string& path) const;
  // Every output of that block, in call order (a shared block runs more than once).
  std::vector<Tensor> outputs(const std::string& path) const;
  // (path, output) for every call, in call order.
  const std::vector<std::pair<std::string, Tensor>>& all() const { return calls_; }

  void notify(const Block& block, const Tensor& output);  // called by Block::operator()

 private:
  std::vector<std::pair<const Block*, std::string>> paths_;
  std::vector<std::pair<std::string, Tensor>> calls_;
  Intermediates* previous_;
};

}  // namespace cairn
