// Training checkpoints: a network's parameters and its trainer's state in one safetensors file, so
// that training stopped after step N and resumed from the file continues exactly (bit for bit) as
// if it had never stopped.
//
// Layout: the parameters under their collect_params() names ("0.weight"), the optimizer's slots
// under "optimizer.<parameter>.<slot>" ("optimizer.0.weight.momentum"), and in the header's
// metadata the trainer's counts, the optimizer's name and hyperparameters (see
// Trainer::state_metadata) plus the caller's own entries (an epoch, a data-loader position).
//
// The file is ordinary safetensors, readable by numpy or PyTorch. Block::load_parameters() refuses
// one that holds optimizer state (by default it is strict about names the network does not have):
// read it with load_checkpoint(), take just the weights with load_parameters() and
// LoadParametersOptions::ignore_extra, or export the bare parameters with Block::save_parameters().
// Checkpoints are always F32: a resumed run must continue bit for bit.
#pragma once

#include <map>
#include <string>

#include "cairn/blocks/block.h"
#include "cairn/blocks/trainer.h"
#include "cairn/core/device.h"

namespace cairn {

// Writes the checkpoint (crash-safe: a temporary file renamed into place). `extra_metadata` keys
// must not collide with the trainer's own ("optimizer", "optimizer.*", "trainer.*") nor with
// "producer" and "format".
void save_checkpoint(const std::string& path, const Block& net, const Trainer& trainer,
                     const std::map<std::string, std::string>& extra_metadata = {});

// Restores the network's parameters (initialised on `device` where they are not yet; initialised
// ones keep their device) and the trainer's state, and returns the file's metadata, the caller's
// extra entries included. Everything that does not match (missing or unknown parameters, shapes,
// another optimizer, malformed state) is reported in one cairn::Error before anything changes.
std::map<std::string, std::string> load_checkpoint(const std::string& path, Block& net,
                                                   Trainer& trainer,
                                                   const Device& device = default_device());

}  // namespace cairn
