#include "cairn/blocks/checkpoint.h"

#include "cairn/blocks/safetensors.h"
#include "cairn/base/error.h"

namespace cairn {
namespace {

const std::string kSlotPrefix = "optimizer.";

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

// Keys the checkpoint itself writes; the caller's extra entries may not reuse them.
bool is_reserved_key(const std::string& key) {
  return key == "optimizer" || starts_with(key, "optimizer.") || starts_with(key, "trainer.") ||
         key == "producer" || key == "format";
}

// Whether set_data() will take `stored` for `parameter`: an initialised parameter needs its exact
// shape; a deferred one the same rank with every known (non-zero) dimension equal.
bool fits(const Parameter& parameter, const Shape& stored) {
  const Shape& expected = parameter.shape();
  if (parameter.is_initialized() || parameter.shape_known()) return stored == expected;
  if (stored.size() != expected.size()) return false;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (expected[i] != 0 && expected[i] != stored[i]) return false;
  }
  return true;
}

}  // namespace

void save_checkpoint(const std::string& path, const Block& net, const Trainer& trainer,
                     const std::map<std::string, std::string>& extra_metadata) {
  NamedTensors tensors;
  for (const auto& [name, parameter] : net.collect_params()) {
    // data() throws naming the parameter when it is not initialised: nothing to save yet.
    tensors.emplace_back(name, parameter->data());
  }
  for (auto& [name, slot] : trainer.state()) tensors.emplace_back(kSlotPrefix + name, slot);

  std::map<std::string, std::string> metadata = trainer.state_metadata();
  metadata["producer"] = "cairn";
  metadata["format"] = "pt";
  for (const auto& [key, value] : extra_metadata) {
    CAIRN_CHECK(!is_reserved_key(key), "save_checkpoint: metadata key '", key,
                "' is reserved for the checkpoint's own entries");
    metadata[key] = value;
  }
  save_safetensors(path, tensors, metadata);
}

std::map<std::string, std::string> load_checkpoint(const std::string& path, Block& net,
                                                   Trainer& trainer, const Device& device) {
  SafetensorsFile file = load_safetensors(path);
  const ParameterDict params = net.collect_params();

  // Split the file: the network's names first, so a parameter whose own name happens to start with
  // "optimizer." is still a parameter.
  NamedTensors parameters, slots;
  std::string problems;
  for (auto& [name, tensor] : file.tensors) {
    if (params.contains(name)) {
      parameters.emplace_back(name, tensor);
    } else if (starts_with(name, kSlotPrefix)) {
      slots.emplace_back(name.substr(kSlotPrefix.size()), tensor);
    } else {
      problems += "\n  '" + name + "': in the file but not in the network";
    }
  }
  for (const auto& [name, parameter] : params) {
    const Tensor* stored = nullptr;
    for (const auto& [file_name, tensor] : parameters) {
      if (file_name == name) stored = &tensor;
    }
    if (stored == nullptr) {
      problems += "\n  '" + name + "': missing from the file";
    } else if (stored->dtype() != parameter->dtype()) {
      problems += "\n  '" + name + "': file has " + dtype_name(stored->dtype()) + ", expected " +
                  dtype_name(parameter->dtype());
    } else if (!fits(*parameter, stored->shape())) {
      problems += "\n  '" + name + "': file has shape " + shape_str(stored->shape()) +
                  ", the network expects " + shape_str(parameter->shape());
    }
  }
  // The trainer compares a deferred parameter's slots by rank only (it cannot know the shape):
  // against the parameter's value in the same file they must match exactly.
  for (const auto& [slot_name, slot] : slots) {
    for (const auto& [name, tensor] : parameters) {
      if (starts_with(slot_name, name + ".") &&
          slot_name.find('.', name.size() + 1) == std::string::npos &&
          slot.shape() != tensor.shape()) {
        problems += "\n  '" + kSlotPrefix + slot_name + "': shape " + shape_str(slot.shape()) +
                    ", but the file's '" + name + "' has shape " + shape_str(tensor.shape());
      }
    }
  }
  CAIRN_CHECK(problems.empty(), "load_checkpoint: ", path,
              " does not match the network:", problems);
  try {
    trainer.check_state(slots, file.metadata);
  } catch (const Error& error) {
    CAIRN_FAIL("load_checkpoint: ", path, " does not match the trainer: ", error.what());
  }

  // Everything is checked: from here on nothing is expected to fail (short of memory).
  try {
    for (const auto& [name, tensor] : parameters) {
      const ParameterPtr& parameter = params.at(name);
      parameter->set_data(tensor, parameter->is_initialized() ? parameter->device() : device);
    }
    trainer.load_state(slots, file.metadata);
  } catch (const Error& error) {
    CAIRN_FAIL("load_checkpoint: ", path, ": ", error.what());
  }
  return file.metadata;
}

}  // namespace cairn
