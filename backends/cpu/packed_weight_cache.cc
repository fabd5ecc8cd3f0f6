// Packed weights for CPU inference GEMMs: the cache, its policy (core/weight_packing.h) and
// the controls. Entries are keyed by the B view (storage, offset, shape, strides, dtype); an
// entry remembers B's version at its last use and, from the second use at one version, the
// packed copy (one per weight, in the layout of the call that made it). Entries whose storage
// is gone are swept whenever a new one is added.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "backends/cpu/packed_weight_cache.h"
#include "core/weight_packing.h"

namespace accel {

namespace {

bool packing_from_environment() {
  const char* value = std::getenv("ACCEL_PACK_WEIGHTS");
  if (value == nullptr || *value == '\0') return true;
  ACCEL_CHECK(std::strcmp(value, "0") == 0 || std::strcmp(value, "1") == 0,
              "ACCEL_PACK_WEIGHTS: expected 0 (off) or 1 (on), found '", value, "'");
  return value[0] == '1';
}

std::atomic<bool>& packing_enabled() {
  static std::atomic<bool> enabled{packing_from_environment()};
  return enabled;
}

struct Key {
  const StorageImpl* storage;
  int64_t offset, rows, cols, row_stride, col_stride;
  DType dtype;
  bool operator==(const Key&) const = default;
};

struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = std::hash<const void*>()(k.storage);
    for (int64_t v : {k.offset, k.rows, k.cols, k.row_stride, k.col_stride, int64_t(k.dtype)}) {
      h = h * 1000003u ^ std::hash<int64_t>()(v);
    }
    return h;
  }
};

struct Entry {
  std::weak_ptr<StorageImpl> storage;  // tells a reused address from the storage keyed
  uint64_t version = 0;
  dnnl::memory::desc packed_desc;  // zero when nothing is packed
  Tensor packed_bytes;
};

class PackedWeightCache {
 public:
  static PackedWeightCache& instance() {
    static PackedWeightCache cache;
    return cache;
  }

  std::optional<cpu::PackedWeight> get(const Tensor& b, const dnnl::memory::desc& plain,
                                       const dnnl::memory::desc& packed, const dnnl::engine& engine) {
    const Key key = key_of(b);
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = entries_.find(key);
    if (it == entries_.end() || it->second.storage.lock() != b.storage()) {
      if (it != entries_.end()) drop(it->second);  // a new storage at a freed one's address
      sweep_freed_sources();
      entries_[key] = Entry{b.storage(), b.version(), {}, {}};
      return std::nullopt;
    }
    Entry& entry = it->second;
    if (entry.version != b.version()) {  // changed since its last use: a first use again
      drop(entry);
      entry.version = b.version();
      return std::nullopt;
    }
    // One copy per weight: a call whose primitive wants another layout (oneDNN's choice depends
    // on M too) multiplies B as it is rather than repack it back and forth.
    if (entry.packed_bytes.defined() && entry.packed_desc != packed) return std::nullopt;
    if (!entry.packed_bytes.defined()) {
      const size_t nbytes = packed.get_size();
      Tensor bytes = Tensor::empty({static_cast<int64_t>((nbytes + 3) / 4)}, kFloat32);
      dnnl::memory source(plain, engine, b.data_ptr());
      dnnl::memory target(packed, engine, bytes.data_ptr());
      dnnl::stream stream(engine);
      dnnl::reorder(source, target).execute(stream, source, target);
      stream.wait();
      entry.packed_desc = packed;
      entry.packed_bytes = bytes;
      packed_count_.fetch_add(1, std::memory_order_relaxed);
      packed_bytes_ += nbytes;
      ++packs_;
    }
    return cpu::PackedWeight{dnnl::memory(entry.packed_desc, engine, entry.packed_bytes.data_ptr()),
                             entry.packed_bytes};
  }

  void forget(const Tensor& b) {
    if (packed_count_.load(std::memory_order_relaxed) == 0) return;  // training's usual case
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = entries_.find(key_of(b));
    if (it == entries_.end()) return;
    drop(it->second);
    entries_.erase(it);
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [key, entry] : entries_) drop(entry);
    entries_.clear();
  }

  CpuPackedWeightStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {packed_count_.load(std::memory_order_relaxed), packed_bytes_, packs_};
  }

 private:
  static Key key_of(const Tensor& b) {
    return {b.storage().get(), b.storage_offset(), b.size(1), b.size(2), b.stride(1), b.stride(2), b.dtype()};
  }

  void drop(Entry& entry) {
    if (!entry.packed_bytes.defined()) return;
    packed_count_.fetch_sub(1, std::memory_order_relaxed);
    packed_bytes_ -= entry.packed_desc.get_size();
    entry.packed_bytes = Tensor();
    entry.packed_desc = dnnl::memory::desc();
  }

  void sweep_freed_sources() {
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (it->second.storage.expired()) {
        drop(it->second);
        it = entries_.erase(it);
      } else {
        ++it;
      }
    }
  }

  std::mutex mutex_;
  std::unordered_map<Key, Entry, KeyHash> entries_;
  std::atomic<size_t> packed_count_{0};
  size_t packed_bytes_ = 0, packs_ = 0;
};

}  // namespace

bool cpu_weight_packing() { return packing_enabled().load(); }

void set_cpu_weight_packing(bool enabled) {
  packing_enabled().store(enabled);
  if (!enabled) PackedWeightCache::instance().clear();
}

CpuPackedWeightStats cpu_packed_weight_stats() { return PackedWeightCache::instance().stats(); }

void cpu_release_packed_weights() { PackedWeightCache::instance().clear(); }

namespace cpu {

bool may_pack(const Tensor& b) {
  const bool one_matrix = b.size(0) == 1 || b.stride(0) == 0;
  return one_matrix && cpu_weight_packing() && !b.storage()->has_been_released();
}

std::optional<PackedWeight> packed_weight(const Tensor& b, const dnnl::memory::desc& plain,
                                          const dnnl::memory::desc& packed, const dnnl::engine& engine) {
  return PackedWeightCache::instance().get(b, plain, packed, engine);
}

void forget_packed_weight(const Tensor& b) { PackedWeightCache::instance().forget(b); }

}  // namespace cpu

}  // namespace accel
