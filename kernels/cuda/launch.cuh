// Launch configuration shared by the CUDA kernels.
#pragma once

#include <algorithm>
#include <cstdint>

namespace cairn::kernels::cuda {

constexpr int kBlockThreads = 256;
constexpr int kWarpThreads = 32;
// A grid-stride loop needs only enough blocks to fill the GPU: 4096 blocks of 256 threads is about
// 32 resident blocks' worth on each of 132 SMs (H100), and more than any current part can hold.
constexpr int64_t kMaxBlocks = 4096;

// Blocks for `work_items` items at `items_per_block` each, capped at kMaxBlocks.
inline int grid_size(int64_t work_items, int64_t items_per_block = kBlockThreads) {
  return static_cast<int>(
      std::min((work_items + items_per_block - 1) / items_per_block, kMaxBlocks));
}

// float4 loads and stores need 16-byte alignment.
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace cairn::kernels::cuda
