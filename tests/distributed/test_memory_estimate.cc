// tests/distributed/test_memory_estimate.cc: ZeRO's per-rank model-state formulas. The paper's
// own example (Rajbhandari et al. 2020, figure 1: 7.5B parameters, 64 ranks, mixed-precision
// Adam) must give 120 / 31.4 / 16.6 / 1.9 GB for stages 0-3; fp32 uses p = g = 4, K = 8;
// shards round up; the parameter-count parser takes the usual spellings and rejects the rest.
// Plain GoogleTest, no MPI.
#include "distributed/memory_estimate.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace accel::distributed {
namespace {

std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(MemoryEstimate, ZeroPapersExample) {
  const StateBytesPerParameter mixed = adam_state_bytes("fp16");
  const int64_t psi = 7'500'000'000, ranks = 64;
  const std::vector<int64_t> expected_total = {120'000'000'000, 31'406'250'000, 16'640'625'000, 1'875'000'000};
  for (int stage = 0; stage <= 3; ++stage) {
    EXPECT_EQ(zero_model_state_memory(psi, ranks, stage, mixed).total_bytes(), expected_total[stage]) << stage;
  }
  const ModelStateMemory stage2 = zero_model_state_memory(psi, ranks, 2, mixed);
  EXPECT_EQ(stage2.parameter_bytes, 2 * psi);             // p Ψ, replicated
  EXPECT_EQ(stage2.gradient_bytes, 2 * psi / ranks);      // g Ψ / Nd
  EXPECT_EQ(stage2.optimizer_bytes, 12 * psi / ranks);    // K Ψ / Nd
  EXPECT_EQ(adam_state_bytes("bf16").optimizer, 12);
}

TEST(MemoryEstimate, Fp32AdamAndRoundedUpShards) {
  const StateBytesPerParameter fp32 = adam_state_bytes("fp32");
  EXPECT_EQ(fp32.parameter, 4);
  EXPECT_EQ(fp32.gradient, 4);
  EXPECT_EQ(fp32.optimizer, 8);
  // 10 parameters over 3 ranks: each rank holds a shard of 4 (the last padded).
  EXPECT_EQ(zero_model_state_memory(10, 3, 0, fp32).total_bytes(), 16 * 10);
  const ModelStateMemory stage1 = zero_model_state_memory(10, 3, 1, fp32);
  EXPECT_EQ(stage1.parameter_bytes, 40);
  EXPECT_EQ(stage1.gradient_bytes, 40);
  EXPECT_EQ(stage1.optimizer_bytes, 32);
  EXPECT_EQ(zero_model_state_memory(10, 3, 3, fp32).total_bytes(), 16 * 4);
  // One rank: every stage is plain data parallelism.
  EXPECT_EQ(zero_model_state_memory(10, 1, 3, fp32).total_bytes(), 160);
}

TEST(MemoryEstimate, BadArgumentsSayWhatWasExpected) {
  const StateBytesPerParameter fp32 = adam_state_bytes("fp32");
  EXPECT_NE(error_of([&] { zero_model_state_memory(10, 0, 0, fp32); }).find("at least 1 process, got 0"),
            std::string::npos);
  EXPECT_NE(error_of([&] { zero_model_state_memory(10, 2, 4, fp32); }).find("must be 0, 1, 2 or 3, got 4"),
            std::string::npos);
  EXPECT_NE(error_of([&] { zero_model_state_memory(0, 2, 0, fp32); }).find("got 0"), std::string::npos);
  EXPECT_NE(error_of([] { adam_state_bytes("int8"); }).find("unknown dtype \"int8\"; expected fp32, fp16 or bf16"),
            std::string::npos);
}

TEST(MemoryEstimate, ParsesParameterCounts) {
  EXPECT_EQ(parse_parameter_count("7.5e9"), 7'500'000'000);
  EXPECT_EQ(parse_parameter_count("7500000000"), 7'500'000'000);
  EXPECT_EQ(parse_parameter_count("7.5B"), 7'500'000'000);
  EXPECT_EQ(parse_parameter_count("110M"), 110'000'000);
  EXPECT_EQ(parse_parameter_count("22.7M"), 22'700'000);
  EXPECT_EQ(parse_parameter_count("340k"), 340'000);
  EXPECT_EQ(parse_parameter_count("1T"), 1'000'000'000'000);
  for (const char* bad : {"", "abc", "7.5X", "7.5 B", "-3", "0", "0.4", "1e300"}) {
    EXPECT_NE(error_of([bad] { parse_parameter_count(bad); }).find("parameter count"), std::string::npos) << bad;
  }
}

}  // namespace
}  // namespace accel::distributed
