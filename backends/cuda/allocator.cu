// The CUDA caching allocator and the pinned host pool (see allocator.h). Registered as
// core's CUDA allocator; nothing here touches the driver until the first CUDA tensor.
#include "backends/cuda/allocator.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/stream.h"
#include "core/storage.h"

namespace accel::cuda {

namespace {

constexpr size_t kSmallSize = 1 << 20;           // requests up to 1 MiB are "small"
constexpr size_t kSmallRounding = 512;
constexpr size_t kLargeRounding = 2 << 20;       // 2 MiB
constexpr int kMaxDevices = 64;

struct Block {
  void* ptr;
  size_t size;
  cudaStream_t stream;
};

// Cached blocks ordered by (stream, size, address): lower_bound finds the smallest fit.
struct BlockOrder {
  bool operator()(const Block& a, const Block& b) const {
    return std::tie(a.stream, a.size, a.ptr) < std::tie(b.stream, b.size, b.ptr);
  }
};

struct DevicePool {
  std::set<Block, BlockOrder> cached;
  std::unordered_map<void*, Block> live;
  MemoryStats stats;
};

class CachingAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes, Device device) override {
    if (nbytes == 0) return nullptr;
    const int count = device_count();
    ACCEL_CHECK(count > 0, "cannot allocate ", nbytes, " bytes on ", device.str(),
                ": no CUDA device is available (cudaGetDeviceCount found none)");
    ACCEL_CHECK(device.index >= 0 && device.index < count && device.index < kMaxDevices, "cannot allocate on ",
                device.str(), ": only ", count, " CUDA device(s) present");
    // [snippet:cache-lookup]
    const size_t size = round_allocation_size(nbytes);
    cudaStream_t stream = current_stream(device.index);
    std::lock_guard<std::mutex> lock(mutex_);
    DevicePool& pool = pools_[device.index];
    Block block{nullptr, size, stream};
    auto it = pool.cached.lower_bound(Block{nullptr, size, stream});
    // No splitting, so accept a cached block only if it wastes at most an eighth of itself.
    if (it != pool.cached.end() && it->stream == stream && it->size - size <= it->size / 8) {
      block = *it;
      pool.cached.erase(it);
      ++pool.stats.num_cache_hits;
    } else {
      block.ptr = device_malloc(device.index, size, pool);
    }
    // [end]
    pool.live.emplace(block.ptr, block);
    pool.stats.allocated_bytes += static_cast<int64_t>(block.size);
    pool.stats.peak_allocated_bytes = std::max(pool.stats.peak_allocated_bytes, pool.stats.allocated_bytes);
    return block.ptr;
  }

  void deallocate(void* ptr, size_t, Device device) override {
    if (ptr == nullptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    DevicePool& pool = pools_[device.index];
    auto it = pool.live.find(ptr);
    if (it == pool.live.end()) return;  // not ours: nothing sane to do in a destructor path
    pool.stats.allocated_bytes -= static_cast<int64_t>(it->second.size);
    pool.cached.insert(it->second);
    pool.live.erase(it);
  }

  MemoryStats stats(int device) {
    std::lock_guard<std::mutex> lock(mutex_);
    return pools_[checked(device)].stats;
  }
  void reset_peak(int device) {
    std::lock_guard<std::mutex> lock(mutex_);
    DevicePool& pool = pools_[checked(device)];
    pool.stats.peak_allocated_bytes = pool.stats.allocated_bytes;
  }
  void empty_cache() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (int d = 0; d < kMaxDevices; ++d) release_cached(d, pools_[d]);
  }

 private:
  static int checked(int device) {
    ACCEL_CHECK(device >= 0 && device < kMaxDevices, "CUDA device index ", device, " is out of range");
    return device;
  }

  // Frees a device's cached blocks; the caller holds mutex_. Synchronizes first: a cached
  // block may still be read by kernels queued before its tensor died.
  void release_cached(int device, DevicePool& pool) {
    if (pool.cached.empty()) return;
    DeviceGuard guard(device);
    ACCEL_CUDA_CHECK(cudaDeviceSynchronize());
    for (const Block& block : pool.cached) {
      ACCEL_CUDA_CHECK(cudaFree(block.ptr));
      pool.stats.reserved_bytes -= static_cast<int64_t>(block.size);
    }
    pool.cached.clear();
  }

  void* device_malloc(int device, size_t size, DevicePool& pool) {
    DeviceGuard guard(device);
    void* ptr = nullptr;
    cudaError_t status = cudaMalloc(&ptr, size);
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // clear it, free what the cache holds, try once more
      ++pool.stats.num_oom_retries;
      release_cached(device, pool);
      status = cudaMalloc(&ptr, size);
    }
    if (status != cudaSuccess) {
      cudaGetLastError();
      size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      ACCEL_FAIL("CUDA out of memory on cuda:", device, ": tried to allocate ", size, " bytes (",
                 cudaGetErrorString(status), "); ", pool.stats.allocated_bytes, " bytes allocated by tensors, ",
                 pool.stats.reserved_bytes, " reserved, ", free_bytes, " of ", total_bytes, " free on the device");
    }
    ++pool.stats.num_device_mallocs;
    pool.stats.reserved_bytes += static_cast<int64_t>(size);
    return ptr;
  }

  std::mutex mutex_;
  DevicePool pools_[kMaxDevices];
};

CachingAllocator& caching_allocator() {
  static CachingAllocator* allocator = new CachingAllocator();  // outlives every static tensor
  return *allocator;
}
const bool allocator_registered = (set_allocator(DeviceType::CUDA, &caching_allocator()), true);

// Pinned host blocks by exact size (callers ask for few distinct sizes: staging buffers).
std::mutex pinned_mutex;
std::multimap<size_t, void*> pinned_cached;
std::unordered_map<void*, size_t> pinned_live;

}  // namespace

size_t round_allocation_size(size_t nbytes) {
  if (nbytes <= kSmallSize) return std::max(kSmallRounding, (nbytes + kSmallRounding - 1) / kSmallRounding * kSmallRounding);
  return (nbytes + kLargeRounding - 1) / kLargeRounding * kLargeRounding;
}

MemoryStats memory_stats(int device) { return caching_allocator().stats(device); }
void reset_peak_stats(int device) { caching_allocator().reset_peak(device); }
void empty_cache() { caching_allocator().empty_cache(); }

void* allocate_pinned(size_t nbytes) {
  const size_t size = round_allocation_size(nbytes);
  std::lock_guard<std::mutex> lock(pinned_mutex);
  auto it = pinned_cached.find(size);
  void* ptr = nullptr;
  if (it != pinned_cached.end()) {
    ptr = it->second;
    pinned_cached.erase(it);
  } else {
    ACCEL_CUDA_CHECK(cudaHostAlloc(&ptr, size, cudaHostAllocPortable));
  }
  pinned_live.emplace(ptr, size);
  return ptr;
}

void free_pinned(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(pinned_mutex);
  auto it = pinned_live.find(ptr);
  ACCEL_CHECK(it != pinned_live.end(), "free_pinned: ", ptr, " was not allocated by allocate_pinned");
  pinned_cached.emplace(it->second, ptr);
  pinned_live.erase(it);
}

}  // namespace accel::cuda
