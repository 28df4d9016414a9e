// Host memory for CPU tensors, under the same policy as the device's (allocator.h): a caching
// allocator in front of aligned_alloc, so that a CPU training step that asks for the same sizes
// every iteration stops calling malloc/free for its tensors after the first step. Without it every
// op's output was a fresh aligned_alloc: page faults on first touch and glibc trimming the heap
// each step cost about a tenth of an epoch (issue 13).
#pragma once

#include <cstddef>

#include "cairn/core/allocator.h"

namespace cairn {

// The process-wide host caching allocator (created on first use, never destroyed: tensors may
// still be freed during static destruction). All host blocks share one free list per bucket
// (the host has no streams); its stats() count the calls that reached aligned_alloc.
CachingAllocator& host_allocator();

// What Storage calls. 64-byte aligned (whole cache lines, wide enough for any vector load).
// Throws cairn::Error ("out of host memory ...") when the host cannot provide `bytes`.
// Under AddressSanitizer a cached block is poisoned while it waits in a free list, so a read
// through a dangling pointer still reports, as it did when every block went back to free().
void* host_allocate(size_t bytes);
void host_deallocate(void* ptr, size_t bytes) noexcept;

}  // namespace cairn
