/// @file
/// The CUDA caching allocator (the scheme of PyTorch's CUDACachingAllocator, without block
/// splitting): freed blocks go back to a per-device pool instead of cudaFree, and a later
/// request on the same stream reuses the smallest cached block that fits with little waste.
/// Sizes round up to 512 B below 1 MiB and to multiples of 2 MiB above, so repeated shapes
/// hit the cache. A cudaMalloc that fails frees the cache and retries once. A block is
/// reused only on the stream it was allocated on (the current stream at allocation): memory
/// a tensor hands to another stream must be kept alive by the caller until that stream is
/// done, as with PyTorch's record_stream. Also: pinned host memory, cached the same way.
#pragma once

#include <cstddef>
#include <cstdint>

namespace accel::cuda {

struct MemoryStats {
  int64_t allocated_bytes = 0;       ///< held by live tensors (rounded sizes)
  int64_t reserved_bytes = 0;        ///< obtained from cudaMalloc: allocated + cached
  int64_t peak_allocated_bytes = 0;  ///< max of allocated_bytes since start or reset_peak_stats
  int64_t num_device_mallocs = 0;    ///< cudaMalloc calls made
  int64_t num_cache_hits = 0;        ///< requests served from the cache
  int64_t num_oom_retries = 0;       ///< cudaMalloc failures that emptied the cache and retried
};

MemoryStats memory_stats(int device);
void reset_peak_stats(int device);
/// Returns every cached (unused) block of every device to the driver.
void empty_cache();
/// The size a request of nbytes occupies (exposed for the tests).
size_t round_allocation_size(size_t nbytes);

/// Page-locked host memory for asynchronous copies; cached by size like device blocks.
void* allocate_pinned(size_t nbytes);
void free_pinned(void* ptr);

}  // namespace accel::cuda
