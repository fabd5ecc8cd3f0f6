// ZeRO's per-rank model-state formulas and the parameter-count parser behind
// `accel estimate-memory`.
#include "distributed/memory_estimate.h"

#include <cmath>
#include <cstdlib>

#include "core/error.h"

namespace accel::distributed {

namespace {
// Beyond this the byte counts (up to 16 bytes per parameter) would come near int64's range.
constexpr int64_t kMaxParameters = 1'000'000'000'000'000;  // 1e15
}  // namespace

StateBytesPerParameter adam_state_bytes(const std::string& dtype) {
  if (dtype == "fp32") return {4, 4, 8};
  if (dtype == "fp16" || dtype == "bf16") return {2, 2, 12};
  ACCEL_FAIL("memory estimate: unknown dtype \"", dtype, "\"; expected fp32, fp16 or bf16");
}

ModelStateMemory zero_model_state_memory(int64_t num_parameters, int64_t num_ranks, int zero_stage,
                                         const StateBytesPerParameter& bytes) {
  ACCEL_CHECK(num_parameters >= 1 && num_parameters <= kMaxParameters,
              "memory estimate: expected a parameter count between 1 and 1e15, got ", num_parameters);
  ACCEL_CHECK(num_ranks >= 1, "memory estimate: expected at least 1 process, got ", num_ranks);
  ACCEL_CHECK(zero_stage >= 0 && zero_stage <= 3, "memory estimate: ZeRO stage must be 0, 1, 2 or 3, got ",
              zero_stage);
  const int64_t shard = (num_parameters + num_ranks - 1) / num_ranks;  // ceil(Ψ / Nd) elements per rank
  ModelStateMemory memory;
  memory.zero_stage = zero_stage;
  memory.optimizer_bytes = bytes.optimizer * (zero_stage >= 1 ? shard : num_parameters);
  memory.gradient_bytes = bytes.gradient * (zero_stage >= 2 ? shard : num_parameters);
  memory.parameter_bytes = bytes.parameter * (zero_stage >= 3 ? shard : num_parameters);
  return memory;
}

int64_t parse_parameter_count(const std::string& text) {
  const char* begin = text.c_str();
  char* end = nullptr;
  const double value = std::strtod(begin, &end);
  ACCEL_CHECK(end != begin, "parameter count: expected a number such as 7.5e9, 7500000000, 7.5B or 110M, got \"",
              text, "\"");
  double scale = 1.0;
  const std::string suffix(end);
  if (suffix == "k" || suffix == "K") scale = 1e3;
  else if (suffix == "M") scale = 1e6;
  else if (suffix == "B" || suffix == "G") scale = 1e9;
  else if (suffix == "T") scale = 1e12;
  else ACCEL_CHECK(suffix.empty(), "parameter count: unknown suffix \"", suffix, "\" in \"", text,
                   "\"; expected k, M, B (or G) or T");
  const double count = value * scale;
  ACCEL_CHECK(std::isfinite(count) && count >= 1.0 && count <= static_cast<double>(kMaxParameters),
              "parameter count: expected a count between 1 and 1e15, got \"", text, "\"");
  return std::llround(count);
}

}  // namespace accel::distributed
