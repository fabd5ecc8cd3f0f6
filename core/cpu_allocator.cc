// The CPU allocator and its cache of freed large blocks (see cpu_allocator.h for why).
#include "core/cpu_allocator.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "core/storage.h"

#if defined(__SANITIZE_ADDRESS__)
#define ACCEL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ACCEL_ASAN 1
#endif
#endif

namespace accel {

namespace {

constexpr size_t kAlignment = 64;
// glibc maps requests from 128 KiB up with mmap and unmaps them on free, so each one faults
// its pages in again; below that its own free lists reuse memory already touched.
constexpr size_t kCacheThreshold = 128 * 1024;
constexpr size_t kPageSize = 4096;

size_t cache_limit_from_environment() {
#ifdef ACCEL_ASAN
  constexpr size_t default_mb = 0;
#else
  constexpr size_t default_mb = 4096;
#endif
  const char* value = std::getenv("ACCEL_CPU_CACHE_MB");
  if (value == nullptr || *value == '\0') return default_mb << 20;
  char* end = nullptr;
  unsigned long long mb = std::strtoull(value, &end, 10);
  ACCEL_CHECK(*end == '\0' && value[0] != '-', "ACCEL_CPU_CACHE_MB: expected a whole number of megabytes, found '",
              value, "'");
  return static_cast<size_t>(mb) << 20;
}

class CachingCpuAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes, Device) override {
    if (nbytes == 0) return nullptr;
    const size_t block = detail::cpu_block_size(nbytes);
    std::lock_guard<std::mutex> lock(mutex_);
    void* ptr = nullptr;
    if (block >= kCacheThreshold) {
      auto it = free_blocks_.find(block);
      if (it != free_blocks_.end() && !it->second.empty()) {
        ptr = it->second.back();
        it->second.pop_back();
        cached_bytes_ -= block;
        ++stats_.cache_hits;
      } else {
        ++stats_.cache_misses;
      }
    }
    if (ptr == nullptr) ptr = system_allocate(block);
    stats_.allocated_bytes += block;
    stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
    update_reserved();
    return ptr;
  }

  void deallocate(void* ptr, size_t nbytes, Device) override {
    if (ptr == nullptr) return;
    const size_t block = detail::cpu_block_size(nbytes);
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.allocated_bytes -= block;
    if (block >= kCacheThreshold && cached_bytes_ + block <= limit_) {
      free_blocks_[block].push_back(ptr);
      cached_bytes_ += block;
    } else {
      std::free(ptr);
    }
    update_reserved();
  }

  CpuMemoryStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    CpuMemoryStats s = stats_;
    s.cache_limit_bytes = limit_;
    return s;
  }

  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.peak_allocated_bytes = stats_.allocated_bytes;
    stats_.peak_reserved_bytes = stats_.reserved_bytes;
  }

  void empty_cache() {
    std::lock_guard<std::mutex> lock(mutex_);
    release_cached();
    update_reserved();
  }

 private:
  // With the mutex held. A failed allocation first gives the cache back and tries again.
  void* system_allocate(size_t block) {
    void* ptr = std::aligned_alloc(kAlignment, block);
    if (ptr == nullptr && cached_bytes_ > 0) {
      release_cached();
      ptr = std::aligned_alloc(kAlignment, block);
    }
    ACCEL_CHECK(ptr != nullptr, "out of CPU memory: could not allocate ", block, " bytes (",
                stats_.allocated_bytes, " bytes already allocated to tensors)");
    return ptr;
  }

  void release_cached() {
    for (auto& [size, blocks] : free_blocks_) {
      for (void* ptr : blocks) std::free(ptr);
    }
    free_blocks_.clear();
    cached_bytes_ = 0;
  }

  void update_reserved() {
    stats_.reserved_bytes = stats_.allocated_bytes + cached_bytes_;
    stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, stats_.reserved_bytes);
  }

  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_blocks_;  // block size -> free blocks
  size_t cached_bytes_ = 0;
  const size_t limit_ = cache_limit_from_environment();
  CpuMemoryStats stats_;
};

// Never destroyed: tensors in other static objects may be freed after this file's statics.
CachingCpuAllocator& cpu_allocator() {
  static CachingCpuAllocator* allocator = new CachingCpuAllocator;
  return *allocator;
}

}  // namespace

namespace detail {

size_t cpu_block_size(size_t nbytes) {
  if (nbytes < kCacheThreshold) return (nbytes + kAlignment - 1) / kAlignment * kAlignment;
  const size_t step = std::bit_floor(nbytes) / 8;  // eight classes per power of two
  const size_t rounded = (nbytes + step - 1) / step * step;
  return (rounded + kPageSize - 1) / kPageSize * kPageSize;
}

Allocator* default_cpu_allocator() { return &cpu_allocator(); }

}  // namespace detail

CpuMemoryStats cpu_memory_stats() { return cpu_allocator().stats(); }
void cpu_reset_peak_memory_stats() { cpu_allocator().reset_peak(); }
void cpu_empty_cache() { cpu_allocator().empty_cache(); }

}  // namespace accel
