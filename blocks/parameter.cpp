#include "cairn/blocks/parameter.h"

#include <algorithm>

#include "cairn/blocks/captured_state.h"
#include "cairn/base/error.h"

namespace cairn {

Parameter::Parameter(std::string name, Shape shape, GradReq grad_req)
    : name_(std::move(name)), shape_(std::move(shape)), grad_req_(grad_req) {
  for (int64_t dim : shape_) {
    CAIRN_CHECK(dim >= 0, "Parameter '", name_, "': negative dimension in ", shape_str(shape_));
  }
}

std::shared_ptr<Parameter> Parameter::constant(std::string name, const Tensor& value) {
  CAIRN_CHECK(value.defined(), "Parameter::constant '", name, "': value is undefined");
  auto parameter = std::make_shared<Parameter>(std::move(name), value.shape(), GradReq::kNull);
  parameter->constant_ = true;
  parameter->constant_value_ = value.detach();
  return parameter;
}

std::shared_ptr<Parameter> Parameter::state(std::string name, Shape shape, InitializerPtr init,
                                            DType dtype) {
  CAIRN_CHECK(dtype == DType::kFloat32 || dtype == DType::kInt32, "Parameter::state '", name,
              "': float32 or int32, got ", dtype_name(dtype));
  CAIRN_CHECK(dtype == DType::kFloat32 ? init != nullptr : init == nullptr, "Parameter::state '",
              name, "': a float32 state needs an initializer; an int32 one starts at zeros");
  auto parameter = std::make_shared<Parameter>(std::move(name), std::move(shape), GradReq::kNull);
  parameter->state_ = true;
  parameter->dtype_ = dtype;
  parameter->own_init_ = std::move(init);
  return parameter;
}

bool Parameter::shape_known() const {
  return std::all_of(shape_.begin(), shape_.end(), [](int64_t dim) { return dim > 0; });
}

void Parameter::set_grad_req(GradReq request) {
  if (constant_ || state_) return;
  grad_req_ = request;
  if (data_.defined()) data_.set_grad_req(request);
  captured_state_changed();  // which parameters a step updates has changed
}

std::string Parameter::describe_for_errors() const {
  std::string text = "parameter '" + name_ + "'";
  if (!owner_.empty()) text += " of " + owner_;
  return text;
}

void Parameter::allocate_and_fill(const InitializerPtr& init, const Device& device, uint64_t seed) {
  // Built aside and kept only once filled: an initializer that throws (a bad argument, xavier on
  // a 1-d parameter) leaves the parameter uninitialised, not holding garbage.
  Tensor value;
  if (constant_) {
    value = constant_value_.to(device).clone();
  } else if (dtype_ == DType::kInt32) {
    value = Tensor::from_int32(std::vector<int32_t>(size_t(checked_numel(shape_, "Parameter::state")), 0), shape_, device);
  } else {
    CAIRN_CHECK(init != nullptr, "initialize: no initializer for ", describe_for_errors());
    value = Tensor::empty(shape_, device);
    init->fill(value, name_, seed);
  }
  if (grad_req_ != GradReq::kNull) value.attach_grad(grad_req_);
  data_ = value;
  pending_init_ = nullptr;
  captured_state_changed();  // new addresses: graphs that read the old ones must re-capture
}

void Parameter::initialize(const InitializerPtr& given, const Device& device, uint64_t seed,
                           bool force_reinit) {
  if (is_initialized() && !force_reinit) return;
  const InitializerPtr& init = own_init_ != nullptr ? own_init_ : given;
  if (force_reinit && data_.defined()) {
    data_ = Tensor();
    captured_state_changed();
  }
  if (!shape_known()) {
    // Deferred: remember how, and finish in infer_shape() at the first forward.
    pending_init_ = init != nullptr ? init : init::uniform();
    pending_device_ = device;
    pending_seed_ = seed;
    return;
  }
  allocate_and_fill(init, device, seed);
}

void Parameter::infer_shape(const Shape& shape) {
  CAIRN_CHECK(shape.size() == shape_.size(), "infer_shape: ", describe_for_errors(), " has shape ",
              shape_str(shape_), ", cannot take ", shape_str(shape));
  for (size_t i = 0; i < shape.size(); ++i) {
    CAIRN_CHECK(shape_[i] == 0 || shape_[i] == shape[i], "shape mismatch: ", describe_for_errors(),
                " has shape ", shape_str(shape_), " but the input needs ", shape_str(shape));
  }
  shape_ = shape;
  if (pending_init_ != nullptr && !is_initialized()) {
    allocate_and_fill(pending_init_, pending_device_, pending_seed_);
  }
}

Tensor Parameter::data() const {
  if (!data_.defined()) {
    if (!shape_known() && pending_init_ == nullptr) {
      CAIRN_FAIL(describe_for_errors(), " is not initialized: call initialize() on the block ",
                 "before its first forward (its shape ", shape_str(shape_),
                 " is completed by that forward)");
    }
    if (!shape_known()) {
      CAIRN_FAIL(describe_for_errors(), " has a deferred shape ", shape_str(shape_),
                 ": run a forward pass first so that its input size is known");
    }
    CAIRN_FAIL(describe_for_errors(), " is not initialized: call initialize() on the block first");
  }
  return data_;
}

Tensor Parameter::grad() const { return data().grad(); }

Device Parameter::device() const { return data().device(); }

void Parameter::set_data(const Tensor& value, const Device& device) {
  CAIRN_CHECK(value.defined(), "set_data: undefined value for ", describe_for_errors());
  CAIRN_CHECK(value.dtype() == dtype_, "set_data: ", describe_for_errors(), " is ",
              dtype_name(dtype_), ", got ", dtype_name(value.dtype()));
  if (!shape_known() || !data_.defined()) infer_shape(value.shape());
  CAIRN_CHECK(value.shape() == shape_, "set_data: ", describe_for_errors(), " has shape ",
              shape_str(shape_), ", got ", shape_str(value.shape()));
  if (!data_.defined()) {
    data_ = value.to(device).clone();
    if (constant_) constant_value_ = value.to_host().clone();
    if (grad_req_ != GradReq::kNull) data_.attach_grad(grad_req_);
    pending_init_ = nullptr;
    captured_state_changed();
  } else {
    data_.copy_from(value);
    if (constant_) constant_value_ = value.to_host().clone();
  }
}

void Parameter::zero_grad() {
  if (data_.defined()) data_.zero_grad();
}

// ---- ParameterDict ----

void ParameterDict::insert(const std::string& name, const ParameterPtr& parameter) {
  for (const auto& entry : entries_) {
    if (entry.second == parameter) return;  // shared: listed once, under its first name
    CAIRN_CHECK(entry.first != name, "collect_params: two parameters are named '", name, "'");
  }
  entries_.emplace_back(name, parameter);
}

bool ParameterDict::contains(const std::string& name) const {
  return std::any_of(entries_.begin(), entries_.end(),
                     [&](const Entry& entry) { return entry.first == name; });
}

const ParameterPtr& ParameterDict::at(const std::string& name) const {
  for (const auto& entry : entries_) {
    if (entry.first == name) return entry.second;
  }
  std::string known;
  for (const auto& entry : entries_) known += (known.empty() ? "" : ", ") + entry.first;
  CAIRN_FAIL("ParameterDict: no parameter named '", name, "' (have: ", known, ")");
}

std::vector<std::string> ParameterDict::names() const {
  std::vector<std::string> out;
  for (const auto& entry : entries_) out.push_back(entry.first);
  return out;
}

ParameterDict ParameterDict::select(const std::string& pattern) const {
  std::regex regex;
  try {
    regex = std::regex(pattern);
  } catch (const std::regex_error& error) {
    CAIRN_FAIL("collect_params: bad pattern '", pattern, "': ", error.what());
  }
  ParameterDict out;
  for (const auto& entry : entries_) {
    if (std::regex_match(entry.first, regex)) out.entries_.push_back(entry);
  }
  return out;
}

ParameterDict ParameterDict::trainable() const {
  ParameterDict out;
  for (const auto& entry : entries_) {
    if (entry.second->trainable()) {
      out.entries_.push_back(entry);
    }
  }
  return out;
}

void ParameterDict::initialize(const InitializerPtr& init, const Device& device, uint64_t seed,
                               bool force_reinit) {
  for (const auto& [name, parameter] : entries_) {
    parameter->initialize(init, device, mix_seed(seed, name), force_reinit);
  }
}

void ParameterDict::zero_grad() {
  for (const auto& entry : entries_) entry.second->zero_grad();
}

}  // namespace cairn
