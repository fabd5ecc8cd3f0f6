/// @file
/// The CPU allocator: 64-byte aligned blocks, with a cache of freed large blocks so that a
/// training or inference loop, which frees and allocates the same activation sizes every
/// step, reuses memory that is already mapped instead of paying the kernel's page faults on
/// every fresh tensor (a quarter of a MiniLM forward's time without it). Small blocks go
/// straight to malloc, which already reuses them. Statistics mirror the CUDA caching
/// allocator's: bytes allocated to tensors, bytes reserved (allocated plus cached), peaks.
///
/// The cache holds at most `ACCEL_CPU_CACHE_MB` megabytes of free blocks (default 4096;
/// 0 turns caching off). Builds with AddressSanitizer do not cache by default, so that a
/// use after free still reaches the sanitizer.
#pragma once

#include <cstddef>

namespace accel {

class Allocator;

struct CpuMemoryStats {
  size_t allocated_bytes = 0;       ///< in live tensors' storages
  size_t reserved_bytes = 0;        ///< allocated plus free blocks held in the cache
  size_t peak_allocated_bytes = 0;  ///< highest allocated_bytes since the last reset_peak
  size_t peak_reserved_bytes = 0;   ///< highest reserved_bytes since the last reset_peak
  size_t cache_hits = 0;            ///< large allocations served from the cache
  size_t cache_misses = 0;          ///< large allocations that went to the system
  size_t cache_limit_bytes = 0;     ///< most free bytes the cache keeps (0: caching off)
};

CpuMemoryStats cpu_memory_stats();
/// Peaks restart from the current values.
void cpu_reset_peak_memory_stats();
/// Returns every cached free block to the system (torch.cuda.empty_cache for the CPU).
void cpu_empty_cache();

namespace detail {
/// The size a request of nbytes is rounded up to: itself below the caching threshold, else
/// the next of eight classes per power of two (at most 12.5% more), in whole pages.
size_t cpu_block_size(size_t nbytes);
/// The allocator that storage.cc registers for DeviceType::CPU.
Allocator* default_cpu_allocator();
}  // namespace detail

}  // namespace accel
