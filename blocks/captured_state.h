// What a captured CUDA graph bakes in, and how it learns that it went stale.
//
// A graph replays its kernels with the raw addresses and host values they were captured with:
// the parameters', gradients' and optimizer slots' addresses, and the optimizer's hyperparameters
// (the learning rate, momentum, ...). Whatever replaces one of those tensors (initialize with
// force_reinit, a deferred shape completing, Trainer::load_state, load_checkpoint, slots created
// or moved) or changes a hyperparameter calls captured_state_changed(). Hybridized blocks and
// CapturedStep remember the epoch they captured under and, when it has moved by their next run,
// drop the graph and capture again. One counter for the process: a change anywhere re-captures
// every graph once, which costs a capture, never a wrong replay.
#pragma once

#include <cstdint>

namespace cairn {

uint64_t captured_state_epoch();
void captured_state_changed();

}  // namespace cairn
