// Parameters: a block's trainable weights, its constants and its state.
//
// A parameter may be created before its shape is fully known (a 0 dimension means "not known
// yet", as in Gluon): initialize() then defers the allocation until the layer's first forward
// calls infer_shape() with the input's size. A constant is a parameter with a fixed value and no
// gradient (Gluon's get_constant): it is saved with the others and never updated. A state is a
// buffer the block's ops update in place (BatchNorm's running statistics, PyTorch's
// register_buffer): saved and loaded with the parameters, never given a gradient, never updated by
// an optimizer; it may be int32 (a counter).
#pragma once

#include <cstdint>
#include <memory>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "cairn/blocks/initializer.h"
#include "cairn/core/tensor.h"

namespace cairn {

class Parameter {
 public:
  Parameter(std::string name, Shape shape, GradReq grad_req = GradReq::kWrite);
  // A constant: `value` (any device) is copied to the block's device by initialize().
  static std::shared_ptr<Parameter> constant(std::string name, const Tensor& value);
  // A state buffer, filled by its own `init` (which wins over initialize()'s, as for Gluon's
  // running_mean_initializer); an int32 one starts at zeros and takes no initializer.
  static std::shared_ptr<Parameter> state(std::string name, Shape shape, InitializerPtr init,
                                          DType dtype = DType::kFloat32);

  const std::string& name() const { return name_; }
  const Shape& shape() const { return shape_; }
  bool shape_known() const;
  bool is_constant() const { return constant_; }
  bool is_state() const { return state_; }
  DType dtype() const { return dtype_; }  // float32, except int32 states
  GradReq grad_req() const { return grad_req_; }
  void set_grad_req(GradReq request);  // constants and states keep kNull
  // Whether an optimizer updates it: not a constant, and its grad request is not kNull. The one
  // place that says so (Trainer, data parallel, ParameterDict::trainable).
  bool trainable() const { return !constant_ && !state_ && grad_req_ != GradReq::kNull; }
  // An initializer of the parameter's own that wins over the one initialize() is given, as
  // Gluon's Dense(bias_initializer='zeros') does for biases.
  void set_initializer(InitializerPtr init) { own_init_ = std::move(init); }
  // Who owns this parameter, for messages ("Dense(256, relu)"); set by Block::register_parameter.
  void set_owner(std::string owner) { owner_ = std::move(owner); }

  // Allocates on `device` and fills with `init` (constants take their value instead). With
  // unknown dimensions the work waits for infer_shape(). Already initialised parameters are left
  // alone unless force_reinit.
  void initialize(const InitializerPtr& init, const Device& device, uint64_t seed,
                  bool force_reinit = false);
  // Fills in the unknown dimensions (throws if a known one disagrees) and completes a deferred
  // initialisation.
  void infer_shape(const Shape& shape);
  bool is_initialized() const { return data_.defined(); }
  bool is_deferred() const { return pending_init_ != nullptr && !is_initialized(); }

  // The value, a leaf tensor with this parameter's grad request. Throws a cairn::Error that says
  // which parameter and why when it is not initialised yet.
  Tensor data() const;
  Tensor grad() const;  // undefined for constants and kNull
  Device device() const;
  // Replaces the value (same shape, or fills in unknown dimensions); keeps the device when
  // initialised, else takes `device`.
  void set_data(const Tensor& value, const Device& device);
  void zero_grad();

 private:
  std::string describe_for_errors() const;
  void allocate_and_fill(const InitializerPtr& init, const Device& device, uint64_t seed);

  std::string name_;
  Shape shape_;
  GradReq grad_req_;
  bool constant_ = false;
  bool state_ = false;
  DType dtype_ = DType::kFloat32;
  Tensor constant_value_;
  std::string owner_;
  InitializerPtr own_init_;
  Tensor data_;
  InitializerPtr pending_init_;
  Device pending_device_ = Device::cpu();
  uint64_t pending_seed_ = 0;
};

using ParameterPtr = std::shared_ptr<Parameter>;

// Parameters by hierarchical name ("0.weight", "hidden.bias", "net.1.weight"), in the order the
// blocks registered them, each listed once however many blocks share it: the same names and order
// as PyTorch's state_dict for the same network.
class ParameterDict {
 public:
  using Entry = std::pair<std::string, ParameterPtr>;

  void insert(const std::string& name, const ParameterPtr& parameter);  // skips a known parameter
  size_t size() const { return entries_.size(); }
  bool contains(const std::string& name) const;
  const ParameterPtr& at(const std::string& name) const;  // throws listing the known names
  std::vector<std::string> names() const;
  std::vector<Entry>::const_iterator begin() const { return entries_.begin(); }
  std::vector<Entry>::const_iterator end() const { return entries_.end(); }

  // The entries whose names match `pattern` (ECMAScript regex, whole-name match): ".*weight",
  // "hidden\\..*" (Gluon's collect_params('.*weight')).
  ParameterDict select(const std::string& pattern) const;
  // Only what an optimizer should update: not constants, not grad_req kNull.
  ParameterDict trainable() const;

  void initialize(const InitializerPtr& init, const Device& device, uint64_t seed,
                  bool force_reinit = false);
  void zero_grad();

 private:
  std::vector<Entry> entries_;
};

}  // namespace cairn
