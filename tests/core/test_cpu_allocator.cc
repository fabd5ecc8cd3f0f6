// tests/core/test_cpu_allocator.cc: the caching CPU allocator (core/cpu_allocator.h). Size
// classes waste at most 12.5%; a freed large block is handed back to the next request of its
// class (same address, a cache hit) instead of going back to the system; statistics track
// allocated, reserved and peak bytes; empty_cache returns every cached block; small blocks
// are never cached. ACCEL_CPU_CACHE_MB=0 (caching off) is checked in a child process.
#include "core/cpu_allocator.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>

#include "core/ops.h"
#include "tests/test_util.h"

namespace accel {
namespace {

using testing::contains;
using testing::run_command;
using testing::CommandResult;

TEST(CpuAllocator, SizeClassesWasteAtMostAnEighth) {
  EXPECT_EQ(detail::cpu_block_size(1), 64u);
  EXPECT_EQ(detail::cpu_block_size(1000), 1024u);
  for (size_t n : {size_t{128 << 10}, size_t{(128 << 10) + 1}, size_t{1'000'003}, size_t{25'165'824},
                   size_t{25'165'825}, size_t{94'000'000}}) {
    const size_t block = detail::cpu_block_size(n);
    EXPECT_GE(block, n);
    EXPECT_LE(block, n + n / 8 + 4096) << n;
    EXPECT_EQ(block % 4096, 0u) << n;
    EXPECT_EQ(detail::cpu_block_size(block), block) << "a class size is its own class";
  }
}

TEST(CpuAllocator, ReusesAFreedLargeBlockAndCountsIt) {
  if (cpu_memory_stats().cache_limit_bytes == 0) GTEST_SKIP() << "caching is off (AddressSanitizer build)";
  cpu_empty_cache();
  const CpuMemoryStats before = cpu_memory_stats();
  const size_t block = detail::cpu_block_size(1'000'000 * sizeof(float));
  void* first = nullptr;
  {
    Tensor t = Tensor::empty({1'000'000});
    first = t.data_ptr();
    EXPECT_EQ(cpu_memory_stats().allocated_bytes, before.allocated_bytes + block);
  }
  CpuMemoryStats freed = cpu_memory_stats();
  EXPECT_EQ(freed.allocated_bytes, before.allocated_bytes);
  EXPECT_EQ(freed.reserved_bytes, before.reserved_bytes + block) << "the block stays reserved in the cache";
  {
    Tensor again = Tensor::empty({999'000});  // same size class
    EXPECT_EQ(again.data_ptr(), first);
  }
  CpuMemoryStats reused = cpu_memory_stats();
  EXPECT_EQ(reused.cache_hits, freed.cache_hits + 1);
  EXPECT_GE(reused.peak_allocated_bytes, before.allocated_bytes + block);
  cpu_empty_cache();
  EXPECT_EQ(cpu_memory_stats().reserved_bytes, cpu_memory_stats().allocated_bytes);
}

TEST(CpuAllocator, SmallBlocksAreNotCached) {
  cpu_empty_cache();
  const CpuMemoryStats before = cpu_memory_stats();
  { Tensor t = Tensor::empty({1000}); }
  const CpuMemoryStats after = cpu_memory_stats();
  EXPECT_EQ(after.reserved_bytes, before.reserved_bytes);
  EXPECT_EQ(after.cache_hits + after.cache_misses, before.cache_hits + before.cache_misses);
}

TEST(CpuAllocator, ResetPeakStartsFromTheCurrentValues) {
  { Tensor t = Tensor::empty({2'000'000}); }
  cpu_reset_peak_memory_stats();
  const CpuMemoryStats s = cpu_memory_stats();
  EXPECT_EQ(s.peak_allocated_bytes, s.allocated_bytes);
  EXPECT_EQ(s.peak_reserved_bytes, s.reserved_bytes);
}

// The environment is read once, at the first allocation, so these run in a child process.
TEST(CpuAllocator, CacheLimitComesFromTheEnvironment) {
  if (std::getenv("ACCEL_ALLOCATOR_CHILD") != nullptr) GTEST_SKIP() << "in the child";
  auto child = [](const std::string& env, const std::string& filter) {
    return run_command("ACCEL_ALLOCATOR_CHILD=1 " + env + " $(readlink /proc/" + std::to_string(getpid()) +
                       "/exe) --gtest_filter=" + filter);
  };
  CommandResult off = child("ACCEL_CPU_CACHE_MB=0", "CpuAllocatorChild.NothingIsCached");
  EXPECT_EQ(off.exit_code, 0) << off.output;
  EXPECT_TRUE(contains(off.output, "[  PASSED  ] 1 test")) << off.output;
  CommandResult bad = child("ACCEL_CPU_CACHE_MB=lots", "CpuAllocatorChild.NothingIsCached");
  EXPECT_NE(bad.exit_code, 0) << bad.output;
  EXPECT_TRUE(contains(bad.output, "ACCEL_CPU_CACHE_MB: expected a whole number of megabytes, found 'lots'"))
      << bad.output;
}

TEST(CpuAllocatorChild, NothingIsCached) {
  if (std::getenv("ACCEL_ALLOCATOR_CHILD") == nullptr) GTEST_SKIP() << "run by CacheLimitComesFromTheEnvironment";
  EXPECT_EQ(cpu_memory_stats().cache_limit_bytes, 0u);
  { Tensor t = Tensor::empty({1'000'000}); }
  EXPECT_EQ(cpu_memory_stats().reserved_bytes, cpu_memory_stats().allocated_bytes);
}

}  // namespace
}  // namespace accel
