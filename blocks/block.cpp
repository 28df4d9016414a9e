#include "cairn/blocks/block.h"

#include <functional>
#include <unordered_set>

#include "cairn/blocks/safetensors.h"
#include "cairn/core/cuda_graph.h"
#include "cairn/base/error.h"

namespace cairn {
namespace {

thread_local Intermediates* t_recorder = nullptr;

void print_tree(std::ostream& out, const Block& block, int indent) {
  out << block.describe();
  if (block.children().empty()) return;
  out << "(\n";
  for (const auto& [name, child] : block.children()) {
    out << std::string(size_t(indent + 2), ' ') << "(" << name << "): ";
    print_tree(out, *child, indent + 2);
    out << "\n";
  }
  out << std::string(size_t(indent), ' ') << ")";
}

// A file's shape fits a parameter's when the ranks agree and every known (non-zero) dimension
// matches: deferred dimensions are filled in from the file.
bool shape_fits(const Shape& expected, const Shape& found) {
  if (expected.size() != found.size()) return false;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (expected[i] != 0 && expected[i] != found[i]) return false;
  }
  return true;
}

// Whether `target` is `root` or one of its descendants. Iterative, with a visited set: trees can
// be deep and a block shared by many parents is walked once.
bool reaches(const Block& root, const Block* target) {
  std::vector<const Block*> pending{&root};
  std::unordered_set<const Block*> seen{&root};
  while (!pending.empty()) {
    const Block* block = pending.back();
    pending.pop_back();
    if (block == target) return true;
    for (const auto& [name, child] : block->children()) {
      if (seen.insert(child.get()).second) pending.push_back(child.get());
    }
  }
  return false;
}

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

}  // namespace

Tensor Block::operator()(const Tensor& x) {
  // While Intermediates records, a hybridized block runs eagerly: a captured graph's children
  // would be seen once, at capture, with outputs not yet computed, and never on replays.
  Tensor y = hybrid_ && t_recorder == nullptr
                 ? hybrid_->run(describe(), x, [this](const Tensor& in) { return forward(in); })
                 : forward(x);
  // Inside a capture (a CapturedStep) outputs are not computed yet: nothing to record.
  if (t_recorder != nullptr && cuda::capture_pool() == nullptr) t_recorder->notify(*this, y);
  return y;
}

void Block::add_child(const std::string& name, std::shared_ptr<Block> block) {
  CAIRN_CHECK(block != nullptr, type_name_, ": register_block('", name, "') got a null block");
  CAIRN_CHECK(!name.empty() && name.find('.') == std::string::npos, type_name_, ": child name '",
              name, "' must be non-empty and contain no '.'");
  for (const auto& [existing, child] : children_) {
    CAIRN_CHECK(existing != name, type_name_, ": a child named '", name, "' is already registered");
  }
  for (const auto& [existing, parameter] : parameters_) {
    CAIRN_CHECK(existing != name, type_name_, ": '", name, "' is already a parameter name");
  }
  // A cycle would make every walk of the tree (initialize, collect_params, printing) endless.
  CAIRN_CHECK(!reaches(*block, this), type_name_, ": register_block('", name,
              "') would make a cycle: ",
              block.get() == this ? "a block cannot contain itself"
                                  : "the block being added already contains this one");
  children_.emplace_back(name, std::move(block));
}

ParameterPtr Block::register_parameter(const std::string& name, const Shape& shape,
                                       GradReq grad_req) {
  check_parameter_name(name);
  auto parameter = std::make_shared<Parameter>(name, shape, grad_req);
  parameter->set_owner(type_name_);
  parameters_.emplace_back(name, parameter);
  return parameter;
}

void Block::check_parameter_name(const std::string& name) const {
  CAIRN_CHECK(!name.empty() && name.find('.') == std::string::npos, type_name_,
              ": parameter name '", name, "' must be non-empty and contain no '.'");
  for (const auto& [existing, other] : parameters_) {
    CAIRN_CHECK(existing != name, type_name_, ": a parameter named '", name,
                "' is already registered");
  }
  for (const auto& [existing, child] : children_) {
    CAIRN_CHECK(existing != name, type_name_, ": '", name, "' is already a child block's name");
  }
}

ParameterPtr Block::register_constant(const std::string& name, const Tensor& value) {
  check_parameter_name(name);
  auto parameter = Parameter::constant(name, value);
  parameter->set_owner(type_name_);
  parameters_.emplace_back(name, parameter);
  return parameter;
}

ParameterPtr Block::register_state(const std::string& name, const Shape& shape,
                                   InitializerPtr init, DType dtype) {
  check_parameter_name(name);
  auto parameter = Parameter::state(name, shape, std::move(init), dtype);
  parameter->set_owner(type_name_);
  parameters_.emplace_back(name, parameter);
  return parameter;
}

void Block::collect_into(ParameterDict& dict, const std::string& prefix) const {
  for (const auto& [name, parameter] : parameters_) dict.insert(join(prefix, name), parameter);
  for (const auto& [name, child] : children_) child->collect_into(dict, join(prefix, name));
}

ParameterDict Block::collect_params(const std::string& pattern) const {
  ParameterDict dict;
  collect_into(dict, "");
  return pattern.empty() ? dict : dict.select(pattern);
}

void Block::initialize(const InitializerPtr& init, const Device& device, uint64_t seed,
                       bool force_reinit) {
  collect_params().initialize(init, device, seed, force_reinit);
}

void Block::zero_grad() { collect_params().zero_grad(); }

void Block::save_parameters(const std::string& path, FloatFormat float_format) const {
  NamedTensors tensors;
  for (const auto& [name, parameter] : collect_params()) {
    tensors.emplace_back(name, parameter->data());
  }
  save_safetensors(path, tensors, {{"format", "pt"}, {"producer", "cairn"}}, float_format);
}

LoadParametersReport Block::load_parameters(const std::string& path, const Device& device,
                                            const LoadParametersOptions& options) {
  const SafetensorsFile file = load_safetensors(path);
  const ParameterDict params = collect_params();
  LoadParametersReport report;
  report.path = path;
  std::string problems;
  bool names_differ = false;  // worth a hint at the options
  for (const auto& [name, parameter] : params) {
    bool found = false;
    for (const auto& [file_name, tensor] : file.tensors) {
      if (file_name != name) continue;
      found = true;
      if (tensor.dtype() != parameter->dtype()) {
        problems += "\n  '" + name + "': file has " + dtype_name(tensor.dtype()) + ", expected " +
                    dtype_name(parameter->dtype());
      } else if (!shape_fits(parameter->shape(), tensor.shape())) {
        problems += "\n  '" + name + "': file has shape " + shape_str(tensor.shape()) +
                    ", the network expects " + shape_str(parameter->shape());
      } else {
        report.loaded.push_back(name);
      }
    }
    if (!found) {
      report.missing.push_back(name);
      if (!options.allow_missing) {
        problems += "\n  '" + name + "': missing from the file";
        names_differ = true;
      }
    }
  }
  for (const auto& [file_name, tensor] : file.tensors) {
    if (!params.contains(file_name)) {
      report.ignored.push_back(file_name);
      if (!options.ignore_extra) {
        problems += "\n  '" + file_name + "': in the file but not in the network";
        names_differ = true;
      }
    }
  }
  CAIRN_CHECK(problems.empty(), "load_parameters: ", path, " does not match the network:", problems,
              names_differ ? "\n(LoadParametersOptions::allow_missing and ignore_extra let "
                             "missing and extra names pass)"
                           : "");
  for (const auto& [file_name, tensor] : file.tensors) {
    if (!params.contains(file_name)) continue;
    const ParameterPtr& parameter = params.at(file_name);
    parameter->set_data(tensor, parameter->is_initialized() ? parameter->device() : device);
  }
  return report;
}

void Block::hybridize(bool enabled, HybridizeOptions options) {
  hybrid_ = enabled ? std::make_unique<HybridForward>(options) : nullptr;
}

HybridState Block::hybridize_state() const {
  CAIRN_CHECK(hybrid_ != nullptr, "hybridize_state: ", describe(), " is not hybridized");
  return hybrid_->state();
}

std::string Block::hybridize_reason() const {
  return hybrid_ ? hybrid_->eager_reason() : std::string("not hybridized");
}

std::ostream& operator<<(std::ostream& out, const LoadParametersReport& report) {
  auto list = [&out](const std::vector<std::string>& names) {
    for (size_t i = 0; i < names.size(); ++i) out << (i == 0 ? " '" : ", '") << names[i] << "'";
  };
  out << "loaded " << report.loaded.size() << " parameter" << (report.loaded.size() == 1 ? "" : "s")
      << " from " << report.path;
  if (!report.missing.empty()) {
    out << "; missing from the file (left as they were):";
    list(report.missing);
  }
  if (!report.ignored.empty()) {
    out << "; not in the network (ignored):";
    list(report.ignored);
  }
  return out;
}

std::ostream& operator<<(std::ostream& out, const Block& block) {
  print_tree(out, block, 0);
  return out;
}

// ---- Intermediates ----

Intermediates::Intermediates(const Block& root) : previous_(t_recorder) {
  // Every block's path, depth first; a block reachable twice keeps its first path.
  std::function<void(const Block&, const std::string&)> walk = [&](const Block& block,
                                                                   const std::string& path) {
    for (const auto& [known, name] : paths_) {
      if (known == &block) return;
    }
    paths_.emplace_back(&block, path);
    for (const auto& [name, child] : block.children()) walk(*child, join(path, name));
  };
  walk(root, "");
  t_recorder = this;
}

Intermediates::~Intermediates() { t_recorder = previous_; }

void Intermediates::notify(const Block& block, const Tensor& output) {
  for (const auto& [known, path] : paths_) {
    if (known == &block) {
      calls_.emplace_back(path, output);
      return;
    }
  }
}

std::vector<Tensor> Intermediates::outputs(const std::string& path) const {
  std::vector<Tensor> found;
  for (const auto& [call_path, output] : calls_) {
    if (call_path == path) found.push_back(output);
  }
  return found;
}

Tensor Intermediates::output(const std::string& path) const {
  const std::vector<Tensor> found = outputs(path);
  if (found.empty()) {
    std::string recorded;
    for (const auto& [call_path, output] : calls_) {
      recorded += (recorded.empty() ? "'" : ", '") + call_path + "'";
    }
    CAIRN_FAIL("Intermediates: no output recorded for '", path, "' (recorded: ", recorded, ")");
  }
  return found.back();
}

}  // namespace cairn
