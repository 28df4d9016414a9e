// Inverted dropout's mask, the math both twins run (kernels/cpu/dropout.cpp and
// kernels/cuda/dropout.cu): the same bits on the CPU and the GPU for the same (seed, offset).
//
// The generator's state is four 32-bit words in the tensor's device memory (DropoutGenerator,
// core/random_state.h): seed low, seed high, offset low, offset high. The kernels read it through
// a pointer rather than taking it by value, so that a captured CUDA graph, whose launches replay
// with the arguments they were captured with, reads the current state on every replay; a second
// launch then advances the offset on the device (every thread of the mask kernel has read the old
// value by then: launches on one stream run in order).
//
// Element i of a call with state (seed, offset) uses Philox word (offset + i): word
// (offset + i) % 4 of philox4x32(seed, (offset + i) / 4). It is kept when its uniform
// u = uniform_from_bits(word) in [0, 1) is >= rate, so with probability 1 - rate (to 2^-24), and
// then scaled by `scale` = 1 / (1 - rate). A call advances the offset by n rounded up to a
// multiple of 4, so that offsets stay multiples of 4, each call starts on a fresh Philox counter,
// and a thread can take the four words of one counter; calls never share a word.
#pragma once

#include <cstdint>

#include "cairn/kernels/common.h"
#include "cairn/kernels/philox.h"

namespace cairn::kernels {

constexpr int kDropoutStateWords = 4;

CAIRN_HOST_DEVICE inline uint64_t dropout_word_pair(const int32_t* state, int first) {
  return uint64_t(uint32_t(state[first])) | (uint64_t(uint32_t(state[first + 1])) << 32);
}
CAIRN_HOST_DEVICE inline uint64_t dropout_seed(const int32_t* state) {
  return dropout_word_pair(state, 0);
}
CAIRN_HOST_DEVICE inline uint64_t dropout_offset(const int32_t* state) {
  return dropout_word_pair(state, 2);
}
CAIRN_HOST_DEVICE inline void set_dropout_state(int32_t* state, uint64_t seed, uint64_t offset) {
  state[0] = int32_t(uint32_t(seed));
  state[1] = int32_t(uint32_t(seed >> 32));
  state[2] = int32_t(uint32_t(offset));
  state[3] = int32_t(uint32_t(offset >> 32));
}

// How far a call over n elements moves the offset.
CAIRN_HOST_DEVICE inline uint64_t dropout_offset_step(int64_t n) {
  return (uint64_t(n) + 3) / 4 * 4;
}

// The mask value of one element: `scale` when kept, 0 when dropped; y = x * mask.
CAIRN_HOST_DEVICE inline float dropout_mask_value(uint32_t word, float rate, float scale) {
  return uniform_from_bits(word) >= rate ? scale : 0.0f;
}

// The four Philox words of elements 4g .. 4g + 3 of a call whose state has offset `offset` (a
// multiple of 4).
CAIRN_HOST_DEVICE inline Philox4 dropout_words(uint64_t seed, uint64_t offset, int64_t group) {
  return philox4x32(seed, offset / 4 + uint64_t(group));
}

}  // namespace cairn::kernels
